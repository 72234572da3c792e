"""The Hub: model cards from the real run (packaged templates), and a push that cannot hurt a run.

Cards are rendered with ``huggingface_hub.ModelCard`` from ``model_cards/model_card.md.jinja``
(shipped inside the package as ``hf_cxr_mae.model_cards``); their metadata carries ``model-index``
results built from the run's own metrics. ``push_folder`` uploads only what a model repo needs,
retries with backoff, reports failures and never raises, so a network problem never stops
training and never touches the local checkpoint. ``BackgroundPusher`` runs those pushes on one
worker thread, so their retries never stall training either.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

logger = logging.getLogger(__name__)

PAPER = "Delving into Masked Autoencoders for Multi-Label Thorax Disease Classification (Xiao et al., WACV 2023)"
PAPER_URL = "https://arxiv.org/abs/2210.12843"
TAGS = ["chest-x-ray", "medical-imaging", "masked-autoencoder", "vision-transformer"]
# What the paper reports (mean AUROC, %), for converted checkpoints: reported, not measured here.
REPORTED = {
    ("vit-small-patch16", "nih14"): 82.3,
    ("vit-base-patch16", "nih14"): 83.0,
}
# Only these files go to a model repo (never optimizer states, pickles, caches or previews).
PUSH_PATTERNS = [
    "config.json", "*.safetensors", "model.safetensors.index.json", "preprocessor_config.json",
    "README.md", "training_args.json", "metrics.json", "all_results.json", "report.md", "roc.png",
    "confusion_matrix.png", "example.png",
]  # fmt: skip
_SECRET_FIELDS = {"hub_token", "push_to_hub_token", "token", "hub_model_id_token"}


def template_path() -> Path:
    return Path(str(resources.files("hf_cxr_mae.model_cards") / "model_card.md.jinja"))


def scrub(value: Any) -> Any:
    """Local absolute paths -> their last part (no user names, mount points or patient folders)."""
    if isinstance(value, str) and os.path.isabs(value):
        return Path(value).name
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if k not in _SECRET_FIELDS}
    return value


# TrainingArguments fields that describe the recipe (the rest is plumbing transformers derives).
RECIPE_FIELDS = {
    "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "warmup_steps", "lr_scheduler_type",
    "seed", "bf16", "fp16", "max_grad_norm", "label_smoothing_factor", "metric_for_best_model",
}  # fmt: skip


def _plain(value: Any) -> Any:
    value = getattr(value, "value", value)  # enums
    return value if isinstance(value, (int, float, str, bool, list, type(None))) else str(value)


def non_default_args(*arg_objects: Any) -> dict[str, Any]:
    """Recipe settings that differ from their class defaults (scrubbed of paths and secrets).

    From ``TrainingArguments`` only ``RECIPE_FIELDS`` and the fields our subclasses add count.
    """
    from transformers import TrainingArguments

    base_fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    out: dict[str, Any] = {}
    for obj in arg_objects:
        for f in dataclasses.fields(obj):
            if (
                f.name.startswith("_")
                or f.name in _SECRET_FIELDS
                or (f.name in base_fields and f.name not in RECIPE_FIELDS)
            ):
                continue
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = None
            value = _plain(getattr(obj, f.name, None))
            if value != _plain(default):
                out[f.name] = scrub(value)
    if hasattr(arg_objects[-1], "effective_batch_size"):
        out["effective batch size"] = arg_objects[-1].effective_batch_size
    return out


def _is_hub_id(name: str | None) -> bool:
    return (
        bool(name) and not os.path.exists(name) and not os.path.isabs(name) and name.count("/") == 1
    )


def _eval_result(dataset: str, split: str | None, name: str, value: float) -> EvalResult:
    return EvalResult(
        task_type="image-classification",
        dataset_type=dataset,
        dataset_name=dataset,
        dataset_split=split,
        metric_type="roc_auc",
        metric_name=name,
        metric_value=round(value, 4),
    )


@dataclasses.dataclass
class CardData:
    """What a model card says, filled from the run as it happens and rendered once by
    ``render_card``: the model (``config``), its data, the recipe settings that differ from the
    defaults, the test report once there is one, and where it started from / goes to."""

    kind: str  # "pretrain", "classifier" or "conversion"
    config: Any
    model_name: str
    datasets: list[str] = dataclasses.field(default_factory=list)
    hyperparameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    report: dict[str, Any] | None = None
    base_model: str | None = None
    uncertainty: str | None = None
    source: str | None = None  # the converted checkpoint's name (conversions only)
    repo_id: str | None = None  # the Hub repo pushed to: the widget's example image lives there


def render_card(card: CardData) -> ModelCard:
    """A card for a ``pretrain`` encoder, a ``classifier`` or a ``conversion`` (``source`` set)."""
    config, datasets, report = card.config, card.datasets, card.report
    base_model, source, repo_id = card.base_model, card.source, card.repo_id
    classifier = getattr(config, "model_type", "") == "beit" or card.kind == "classifier"
    labels = [config.id2label[i] for i in range(config.num_labels)] if classifier else []
    preset = (getattr(config, "preset", None) or "").split("-dec")[0]
    eval_results = []
    split = (report or {}).get("split")
    if report and report.get("auroc"):
        dataset = datasets[0] if datasets else "chest-x-ray"
        results = [(f"AUROC {n}", v) for n, v in report["auroc"].items()] + [
            ("mAUC (mean AUROC)", report.get("mauc"))
        ]
        eval_results = [
            _eval_result(dataset, split, name, value)
            for name, value in results
            if value is not None
        ]
    widget = (
        [
            {
                "src": f"https://huggingface.co/{repo_id}/resolve/main/example.png",
                "example_title": "synthetic example",
            }
        ]
        if repo_id
        else None
    )
    card_data = ModelCardData(
        library_name="transformers",
        license="apache-2.0",
        pipeline_tag="image-classification" if classifier else "image-feature-extraction",
        tags=TAGS,
        datasets=[d for d in datasets if d != "demo"] or None,
        base_model=base_model if _is_hub_id(base_model) else None,
        model_name=card.model_name,
        eval_results=eval_results or None,
        widget=widget,
    )
    reported = REPORTED.get((preset, "nih14")) if source else None
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path()),
        repo_name=card.model_name,
        kind="conversion" if source else card.kind,
        classifier=classifier,
        labels=labels,
        config=config,
        preset=preset or "custom",
        datasets_text=", ".join(datasets) if datasets else "unknown",
        hyperparameters=scrub(card.hyperparameters),
        report=report,
        uncertainty=card.uncertainty,
        base_model_note=None
        if base_model is None or _is_hub_id(base_model)
        else "a local checkpoint",
        source=source,
        reported=reported,
        paper=PAPER,
        paper_url=PAPER_URL,
        demo="demo" in datasets,
    )


def write_card(output_dir: str | Path, card: CardData) -> Path:
    """README.md: the rendered card."""
    path = Path(output_dir) / "README.md"
    render_card(card).save(path)
    return path


def write_conversion_card(output_dir: Path, config: Any, kind: str, source_name: str) -> Path:
    return write_card(
        output_dir,
        CardData(kind=kind, config=config, model_name=output_dir.name, source=source_name),
    )


def write_run_card(output_dir: str | Path, card: CardData, *arg_objects: Any) -> None:
    """A run's README.md (the card, its recipe the settings that differ from the defaults) and
    training_args.json (scrubbed of secrets and local paths)."""
    write_training_args(output_dir, *arg_objects)
    card.hyperparameters = non_default_args(*arg_objects)
    write_card(output_dir, card)


def take_push(training_args) -> BackgroundPusher | None:
    """Our own push (retries, never raising, on a background thread), or None; the Trainer's own
    push is switched off. The token leaves ``training_args`` here, before the Trainer pickles them
    into ``training_args.bin`` (at the root and in every checkpoint): only the pusher keeps it."""
    token, training_args.hub_token = training_args.hub_token, None
    push, training_args.push_to_hub = bool(training_args.push_to_hub), False
    if not push:
        return None
    repo_id = training_args.hub_model_id or Path(training_args.output_dir).name
    return BackgroundPusher(
        repo_id, training_args.hub_private_repo, token, training_args.push_retries
    )


def publish(
    output_dir: str | Path, card: CardData, arg_objects: tuple, pusher, push_timeout: float
) -> None:
    """The card again (now with the metrics) and, when asked, the push; waits a bounded time for
    the pushes still running in the background and logs how they went. Main process only."""
    from .data.demo import make_demo_dataset

    write_run_card(output_dir, card, *arg_objects)
    if pusher is None:
        return
    example = make_demo_dataset(num_train=1, num_validation=0, num_test=0, size=256)["train"][0]
    example["image"].save(Path(output_dir) / "example.png")  # the widget's: synthetic, no patient
    pusher.submit(output_dir, "Upload model from hf-cxr-mae")
    pusher.close(push_timeout)


def write_training_args(output_dir: str | Path, *arg_objects: Any) -> Path:
    """``training_args.json``: every argument, scrubbed of secrets and local paths (JSON, not pickle)."""
    merged: dict[str, Any] = {}
    for obj in arg_objects:
        raw = obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj)
        merged.update({k: v for k, v in raw.items() if not k.startswith("_")})
    path = Path(output_dir) / "training_args.json"
    path.write_text(json.dumps(scrub(merged), indent=2, default=str))
    return path


def check_push_folder(folder: str | Path) -> None:
    """Refuse, before any network call, a folder that does not exist or holds no model files
    (``config.json`` and ``*.safetensors`` weights): retrying could never make it pushable."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist (or is not a folder): nothing to push.")
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    if "config.json" not in names or not any(n.endswith(".safetensors") for n in names):
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "") or "no files"
        raise ValueError(
            f"{folder} holds no model files (config.json and *.safetensors weights); it has: "
            f"{shown}. Point at a folder written by a recipe or `hf-cxr-mae convert`."
        )


def push_folder(
    folder: str | Path,
    repo_id: str,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload model from hf-cxr-mae",
    retries: int = 4,
    backoff: float = 2.0,
    shown_as: str | Path | None = None,
) -> str | None:
    """Upload a model folder's publishable files; retry with exponential backoff.

    Returns the commit URL, or None after reporting the failure (never raises, never deletes).
    ``shown_as`` names the folder in messages when ``folder`` is a temporary snapshot of it.
    """
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(folder)
    shown = shown_as or folder
    try:
        check_push_folder(folder)
    except (FileNotFoundError, ValueError) as err:
        logger.error("Nothing pushed to %s: %s", repo_id, err)
        return None
    api = HfApi(token=token)
    for attempt in range(retries + 1):
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            info = api.upload_folder(
                folder_path=folder,
                repo_id=repo_id,
                allow_patterns=PUSH_PATTERNS,
                ignore_patterns=["*/*"],  # top-level files only: no checkpoints, previews, caches
                commit_message=commit_message,
            )
            url = getattr(info, "commit_url", None) or str(info)
            logger.info("Pushed %s to %s (%s)", shown, repo_id, url)
            return url
        except Exception as err:  # network, HTTP, auth: reported, never raised
            status = getattr(getattr(err, "response", None), "status_code", None)
            final = attempt == retries or (
                isinstance(err, HfHubHTTPError) and status in (401, 403, 404)
            )
            if final:
                logger.error(
                    "Push of %s to %s failed: %s. The local copy is intact; push later with `hf-cxr-mae push %s %s`.",
                    shown,
                    repo_id,
                    err,
                    shown,
                    repo_id,
                )
                return None
            wait = backoff * 2**attempt
            logger.warning(
                "Push to %s failed (attempt %d/%d: %s); retrying in %.1fs.",
                repo_id,
                attempt + 1,
                retries + 1,
                err,
                wait,
            )
            time.sleep(wait)
    return None


_STAGING = ".hub-push-"


def _snapshot(folder: Path) -> Path:
    """Hard links (copies where links fail) to ``folder``'s publishable files, in a hidden sibling
    folder: a checkpoint rotated away while its push waits or retries is still pushed whole."""
    staged = Path(tempfile.mkdtemp(prefix=_STAGING, dir=folder.parent))
    for path in folder.iterdir():
        if path.is_file() and any(fnmatch.fnmatch(path.name, p) for p in PUSH_PATTERNS):
            try:
                os.link(path, staged / path.name)
            except OSError:
                shutil.copy2(path, staged / path.name)
    return staged


class BackgroundPusher:
    """Hub pushes on one background thread, so a slow or failing Hub never stalls training.

    Pushes run one at a time in the order submitted; a push still waiting its turn when a newer
    one arrives is dropped (the latest wins: it holds the newer weights). ``close`` waits a
    bounded time and logs the outcome. The token stays on this object, which nothing writes to
    disk (the Trainer pickles its arguments into every checkpoint, so the token is not kept there).
    """

    def __init__(self, repo_id: str, private: bool | None, token: str | None, retries: int) -> None:
        self.repo_id, self.private, self.retries = repo_id, private, retries
        self._token = token
        self._cond = threading.Condition()
        self._pending: tuple[Path, str, Path | None] | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self._cleaned: set[Path] = set()
        self.results: list[tuple[str, str | None]] = []

    def submit(self, folder: str | Path, message: str, snapshot: bool = False) -> None:
        """Queue a push of ``folder`` (of a snapshot of it, when its files may change or go)."""
        folder = Path(folder)
        staged = None
        if snapshot:
            self._clean_stale(folder.parent)
            staged = _snapshot(folder)
        with self._cond:
            if self._closed:
                _discard(staged)
                raise RuntimeError(f"push {message!r} submitted after the pusher was closed")
            if self._pending is not None:
                logger.info("Hub push %r skipped: superseded by %r.", self._pending[1], message)
                _discard(self._pending[2])
            self._pending = (folder, message, staged)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="hub-push", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _clean_stale(self, parent: Path) -> None:
        """Snapshots left by a run killed mid-push (once per folder, before our first one)."""
        if parent not in self._cleaned:
            self._cleaned.add(parent)
            for stale in parent.glob(f"{_STAGING}*"):
                _discard(stale)

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._pending is None:
                    return
                folder, message, staged = self._pending
                self._pending = None
            try:
                url = push_folder(
                    staged or folder, self.repo_id, self.private, self._token, message,
                    self.retries, shown_as=folder,
                )  # fmt: skip
            except Exception:  # push_folder never raises; a bug must not kill the worker
                logger.exception("Hub push %r failed unexpectedly.", message)
                url = None
            finally:
                _discard(staged)
            with self._cond:
                self.results.append((message, url))

    def close(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for queued pushes; log the outcome. False: still running."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning(
                "A Hub push to %s is still running after %.0fs (network slow or down?); not "
                "waiting longer. The local copy is intact; push it later with `hf-cxr-mae push`.",
                self.repo_id,
                timeout,
            )
            return False
        failed = [m for m, url in self.results if url is None]
        if failed:
            logger.warning(
                "%d of %d Hub pushes to %s failed (%s); the local copy is intact.",
                len(failed), len(self.results), self.repo_id, "; ".join(failed),
            )  # fmt: skip
        else:
            logger.info("All %d Hub pushes to %s done.", len(self.results), self.repo_id)
        return True


def _discard(staged: Path | None) -> None:
    if staged is not None:
        shutil.rmtree(staged, ignore_errors=True)
