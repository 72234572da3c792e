"""What a run leaves behind: the model, processor, card and arguments right after training, the
test metrics (metrics.json), all_results.json, then the card with the metrics and the push."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data.demo import make_demo_dataset
from ..data.loading import SOURCES, loader_default, loader_options
from ..hub import BackgroundPusher
from ..model_card import CardData, write_run_card


def save_outputs(trainer, model, processor, card: CardData, arg_objects: tuple) -> None:
    """The trained model, its processor, card and arguments at the root of ``output_dir``, right
    after training: nothing that runs later (evaluation, metrics, push) can lose them."""
    output_dir = trainer.args.output_dir
    if model is None:
        trainer.save_model()  # the final (or best) model
    elif trainer.is_world_process_zero():
        model.save_pretrained(output_dir)
    if trainer.is_world_process_zero():
        processor.save_pretrained(output_dir)
        write_run_card(output_dir, card, *arg_objects)


def skipped_test(had_test: bool) -> dict[str, Any]:
    """metrics.json (and the card) of a run whose test split was empty or absent."""
    why = "the test split is empty" if had_test else "the dataset has no test split"
    return {"split": None, "num_images": 0, "skipped": f"No test evaluation: {why}"}


def publish(
    output_dir: str | Path,
    card: CardData,
    arg_objects: tuple,
    pusher: BackgroundPusher | None,
    push_timeout: float,
) -> None:
    """The card again (now with the metrics) and, when asked, the push; waits a bounded time for
    the pushes still running in the background and logs how they went. Main process only."""
    write_run_card(output_dir, card, *arg_objects)
    if pusher is None:
        return
    example = make_demo_dataset(num_train=1, num_validation=0, num_test=0, size=256)["train"][0]
    example["image"].save(Path(output_dir) / "example.png")  # the widget's: synthetic, no patient
    pusher.submit(output_dir, "Upload model from hf-cxr-mae")
    pusher.close(push_timeout)


def finish(trainer, metrics: dict[str, Any], card: CardData, arg_objects: tuple, pusher) -> None:
    """After evaluation: all_results.json, then the card with metrics and the push."""
    trainer.log_metrics("all", metrics)
    trainer.save_metrics("all", metrics, combined=False)
    if trainer.is_world_process_zero():
        args = trainer.args
        publish(Path(args.output_dir), card, arg_objects, pusher, args.push_timeout)


def used_source_option(data_args, option: str) -> Any:
    """What the loaders get for ``option``: the run's value, else the default every source that
    takes it shares (its own signature's); None where no source takes it or they disagree."""
    given = data_args.source_options().get(option)
    if given is not None:
        return given
    defaults = [
        loader_default(name, option)
        for name in data_args.dataset or []
        if name in SOURCES and option in loader_options(name)
    ]
    return defaults[0] if defaults and all(d == defaults[0] for d in defaults) else None


def run_card(kind: str, config, data_args, training_args, pusher, **fields: Any) -> CardData:
    """The card of this run: its model, data and the repo it is pushed to. A classifier's card
    names the uncertainty policy its labels really got, given or the loader's default."""
    if kind == "classifier" and fields.get("uncertainty") is None:
        fields["uncertainty"] = used_source_option(data_args, "uncertainty")
    return CardData(
        kind=kind,
        config=config,
        model_name=training_args.hub_model_id or Path(training_args.output_dir).name,
        datasets=data_args.dataset or ["demo"],
        repo_id=pusher.repo_id if pusher else None,
        **fields,
    )
