"""Setting a run up: logging, the Trainer settings that follow from the data (no validation
split, an undefined validation mAUC) and the per-save push."""

from __future__ import annotations

import logging
import sys

import datasets
import transformers
from datasets import DatasetDict

from ..data import label_names
from ..data.recipe_data import drop_empty_splits, load_labelled_data, source_name
from ..hub import BackgroundPusher
from ..processing import problem_type_of
from .trainer import HubPushCallback

logger = logging.getLogger("hf_cxr_mae")


def setup_logging(training_args) -> None:
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
    data = drop_empty_splits(data, source_name(data_args))
    if "validation" not in data:
        without_validation(training_args)
    return data, had_test, label_names(data["train"]), problem_type_of(data["train"])
