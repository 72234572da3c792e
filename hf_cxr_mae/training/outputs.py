"""What a run leaves behind: the model, processor, card and arguments right after training, the
test metrics (metrics.json), all_results.json, then the card with the metrics and the push."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..hub import CardData, publish, write_run_card
from ..metrics.classification import metrics_for
from ..reports import write_metrics_json


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


def full_metrics(trainer, dataset, names: list[str], problem_type: str) -> dict[str, Any]:
    """Per-finding metrics (AUROC, AP, counts, undefined) of a split, for metrics.json."""
    prediction = trainer.predict(dataset, metric_key_prefix="predict")
    out = metrics_for(problem_type)(prediction.predictions, prediction.label_ids, names)
    out["num_images"] = len(prediction.label_ids)
    return out


def skipped_test(had_test: bool) -> dict[str, Any]:
    """metrics.json (and the card) of a run whose test split was empty or absent."""
    why = "the test split is empty" if had_test else "the dataset has no test split"
    return {"split": None, "num_images": 0, "skipped": f"No test evaluation: {why}"}


def write_test_metrics(
    trainer, splits: dict, names: list[str], problem_type: str, had_test: bool, metrics: dict
) -> dict[str, Any]:
    """Test metrics (into ``metrics``) and metrics.json, once, with the model chosen on
    validation; without test images, a metrics.json that says there was no test evaluation."""
    if "test" in splits:
        metrics.update(trainer.evaluate(splits["test"], metric_key_prefix="test"))
        report = {**full_metrics(trainer, splits["test"], names, problem_type), "split": "test"}
    else:
        report = skipped_test(had_test)
    if trainer.is_world_process_zero():
        write_metrics_json(trainer.args.output_dir, report)
    return report


def finish(trainer, metrics: dict[str, Any], card: CardData, arg_objects: tuple, pusher) -> None:
    """After evaluation: all_results.json, then the card with metrics and the push."""
    trainer.log_metrics("all", metrics)
    trainer.save_metrics("all", metrics, combined=False)
    if trainer.is_world_process_zero():
        args = trainer.args
        publish(Path(args.output_dir), card, arg_objects, pusher, args.push_timeout)


def run_card(kind: str, config, data_args, training_args, pusher, **fields: Any) -> CardData:
    """The card of this run: its model, data and the repo it is pushed to."""
    return CardData(
        kind=kind,
        config=config,
        model_name=training_args.hub_model_id or Path(training_args.output_dir).name,
        datasets=data_args.dataset or ["demo"],
        repo_id=pusher.repo_id if pusher else None,
        **fields,
    )
