"""Setting a run up: logging and the experiment trackers, the Trainer settings that follow from
the data (no validation split, an undefined validation mAUC) and the per-save push."""

from __future__ import annotations

import difflib
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import datasets
import transformers
from datasets import DatasetDict

from ..data import label_names
from ..extras import EXTRA_OF
from ..hub import BackgroundPusher
from ..processing import problem_type_of
from .callbacks import HubPushCallback
from .data_setup import drop_empty_splits, load_labelled_data

if TYPE_CHECKING:
    from .arguments import CXRTrainingArguments

logger = logging.getLogger("hf_cxr_mae")


def setup_logging(training_args) -> None:
    """Console logging for this process, then the experiment trackers (``setup_trackers``)."""
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    level = training_args.get_process_log_level()
    # Our own messages (label counts, resume, metrics) are INFO and must show by default on the
    # main process; "passive" otherwise inherits transformers' WARNING verbosity and hides them.
    ours = (
        logging.INFO if training_args.should_log and training_args.log_level == "passive" else level
    )
    logger.setLevel(ours)
    logging.getLogger("hf_cxr_mae.data").setLevel(ours)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)
    setup_trackers(training_args)


PROJECT = "hf-cxr-mae"


def setup_trackers(training_args) -> None:
    """Check the ``--report_to`` trackers (one, or several comma-separated) before any data is
    read, and name the run for them.

    An unknown name, or TensorBoard / trackio not installed, is refused here with the fix, not
    after minutes of data loading when the Trainer builds its callbacks. The run is named after
    ``output_dir`` unless ``--run_name`` says otherwise (trackio re-opens the run by name for the
    metrics logged after training; unnamed, they would land in a second, randomly named run) by
    its folder's name only (trackio files a run's images under its name: a path would put them
    outside trackio's folder), and trackio's project is ``hf-cxr-mae`` unless ``--project``
    names another.
    """
    from transformers.integrations import integration_utils as hf_trackers

    known = hf_trackers.INTEGRATION_TO_CALLBACK
    # The command line gives one string: `--report_to tensorboard,trackio` names several.
    names = [n.strip() for entry in training_args.report_to or [] for n in entry.split(",")]
    training_args.report_to = [n for n in names if n and n != "none"]
    if "all" in training_args.report_to:
        training_args.report_to = hf_trackers.get_available_reporting_integrations()
    for name in training_args.report_to:
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"--report_to {name!r} is not a tracker transformers knows ({', '.join(known)}, "
                f"'all' or 'none').{hint}"
            )
        extra = EXTRA_OF.get(name)  # the trackers this package documents: their extra
        if extra and not getattr(hf_trackers, f"is_{name}_available")():
            raise ImportError(
                f"--report_to {name} needs the {name} package, which is not installed: "
                f"pip install 'hf-cxr-mae[{extra}]' (or pass --report_to none)."
            )
    if training_args.run_name is None and training_args.output_dir:
        training_args.run_name = Path(training_args.output_dir).resolve().name
    default_project = transformers.TrainingArguments.__dataclass_fields__["project"].default
    if training_args.project == default_project:
        training_args.project = PROJECT


def take_push(training_args: CXRTrainingArguments) -> BackgroundPusher | None:
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


def push_callbacks(pusher: BackgroundPusher | None, training_args) -> list:
    """A per-save push for ``--hub_strategy`` every_save / checkpoint / all_checkpoints."""
    strategy = str(getattr(training_args.hub_strategy, "value", training_args.hub_strategy))
    if pusher is None or strategy == "end":
        return []
    return [HubPushCallback(pusher)]


def without_validation(training_args) -> None:
    """No validation split: no evaluation during training and no best-model selection (never on
    test), with a warning; the final model is the last step's."""
    from transformers.trainer_utils import IntervalStrategy

    if (
        training_args.eval_strategy == IntervalStrategy.NO
        and not training_args.load_best_model_at_end
    ):
        return
    logger.warning(
        "There is no validation data: evaluation during training and best-model selection are "
        "off; the saved model is the last step's."
    )
    training_args.eval_strategy = IntervalStrategy.NO
    training_args.load_best_model_at_end = False


def select_on_defined_metric(data: DatasetDict, names: list[str], problem_type: str, args) -> None:
    """Pick the best model on validation loss when validation's mAUC can never be defined (no
    finding with both positive and negative images, e.g. a tiny split): the Trainer would
    otherwise stop at the first evaluation, after a whole epoch, on a missing ``eval_mauc``."""
    if "validation" not in data or args.metric_for_best_model not in ("mauc", "eval_mauc"):
        return
    validation = data["validation"]
    if problem_type == "single_label_classification":
        defined = len(set(validation["label"])) > 1
    else:
        rows = validation["labels"]
        defined = any(
            {1.0, 0.0} <= {row[n] for row in rows} for n in names
        )  # -1 (uncertain) counts as neither
    if defined:
        return
    logger.warning(
        "No finding has both positive and negative images in the validation split (%d images): "
        "its mAUC is undefined, so the best model is picked on validation loss instead.",
        len(validation),
    )
    args.metric_for_best_model, args.greater_is_better = "loss", False


def classification_data(data_args, training_args) -> tuple[DatasetDict, bool, list[str], str]:
    """A classification run's labelled splits (empty ones dropped, no validation handled), whether
    the dataset had a test split, the label names and the problem type."""
    data = load_labelled_data(data_args, training_args.seed)
    had_test = "test" in data
    data = drop_empty_splits(data, data_args.describe())
    if "validation" not in data:
        without_validation(training_args)
    return data, had_test, label_names(data["train"]), problem_type_of(data["train"])
