"""External validation: scoring a classifier trained on one source on a dataset of another,
through the harmonised label space (``data.label_space``, ``data.label_map``).

``prepare_external`` resolves ``--label_map auto|FILE`` for a model and a dataset split, checks
that ``--split all`` is not the model's own training data, and returns what the evaluation needs:
the relabelled split (the model's scored findings as targets), the model's output columns for
them (a ``SharedFindings`` module for the Trainer, ``scores`` for probabilities in hand) and the
``external_validation`` block of metrics.json (the sources of model and data, the mapping, what
was left out and why). Serving-side: models and data, never the training package.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.label_map import LabelMap, apply_label_map, label_map_for
from ..data.label_space import NO_FINDING, SOURCE_NOTES
from ..data.splits import ALL_SPLITS

logger = logging.getLogger("hf_cxr_mae")

MULTI_LABEL = "multi_label_classification"
SINGLE_LABEL = "single_label_classification"

POLICY_RULES = {
    "ones": "uncertain (-1) read as positive",
    "zeros": "uncertain (-1) read as negative",
    "ignore": "uncertain (-1) left out of that finding's metrics",
    "paper": "uncertain (-1) positive for Edema and Atelectasis, negative for the others "
    "(the paper's rule, by the dataset's names)",
}


class SharedFindings(torch.nn.Module):
    """A classifier's outputs for the scored findings only, as logits of its own probabilities:
    the columns themselves (multi-label: sigmoid per finding), or for a single-label model
    ``z_j - logsumexp(z_others)``, whose sigmoid is the softmax probability of class ``j``. The
    config says multi-label, so the Trainer's loss and the report read the scores per finding."""

    def __init__(self, model: torch.nn.Module, columns: list[int], problem_type: str | None):
        super().__init__()
        self.model, self.columns = model, list(columns)
        self.single = problem_type == SINGLE_LABEL
        self.config = copy.copy(model.config)
        self.config.problem_type = MULTI_LABEL

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None):
        from transformers.modeling_outputs import ImageClassifierOutput

        logits = self.model(pixel_values=pixel_values).logits
        if not self.single:
            return ImageClassifierOutput(logits=logits[:, self.columns])
        out = []
        for j in self.columns:
            others = torch.cat([logits[:, :j], logits[:, j + 1 :]], dim=1)
            out.append(logits[:, j] - torch.logsumexp(others, dim=1))
        return ImageClassifierOutput(logits=torch.stack(out, dim=1))


def model_findings(model) -> list[str]:
    return [model.config.id2label[i] for i in range(model.config.num_labels)]


def _model_file(model_path: str, name: str) -> dict[str, Any] | None:
    """A JSON file a run leaves beside the model (training_args.json, metrics.json), if local."""
    path = Path(model_path) / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        logger.warning("%s is not readable JSON: ignored.", path)
        return None


def model_source(model_path: str, findings: list[str]) -> dict[str, Any]:
    """Where the model was trained: its training_args.json's ``dataset`` / ``data_dir`` (paths
    kept as their last part, as the run wrote them), else what its finding names say."""
    from ..data.labels import CHEXPERT14_LABELS, NIH14_LABELS

    args = _model_file(model_path, "training_args.json") or {}
    if args.get("dataset"):
        return {
            "model": str(model_path),
            "dataset": ", ".join(args["dataset"]),
            "data_dir": ", ".join(map(str, args.get("data_dir") or [])) or None,
            "from": "training_args.json",
        }
    guess = None
    if findings == NIH14_LABELS:
        guess = "nih14 (by its 14 finding names)"
    elif set(findings) <= set(CHEXPERT14_LABELS):
        guess = "chexpert / mimic_cxr (by CheXpert's finding names)"
    return {"model": str(model_path), "dataset": guess, "data_dir": None, "from": "finding names"}


def uncertainty_of(source: str | None, options: dict[str, Any]) -> dict[str, Any] | None:
    """The uncertainty policy the dataset's loader applied (given, or its default), or None for a
    source without uncertain labels."""
    from ..data.loading import SOURCES, loader_default, loader_options

    if source not in SOURCES or "uncertainty" not in loader_options(source):
        return None
    policy = options.get("uncertainty", loader_default(source, "uncertainty"))
    return {
        "policy": policy,
        "given": "uncertainty" in options,
        "rule": POLICY_RULES.get(policy, policy),
    }


def _folder_names(data_dir: str) -> set[str]:
    """The names a data folder goes by: as written, and its real folder's (links resolved)."""
    return {Path(str(data_dir)).name, Path(os.path.realpath(str(data_dir))).name} - {""}


def check_not_training_data(model_path: str, source: str | None, data_dir: str | None) -> None:
    """``--split all`` scores every image of a dataset: refused on the data the model was trained
    on, where it would score training images. training_args.json keeps only the last part of an
    absolute data_dir (local paths are scrubbed), so folders are compared by name, after resolving
    links (a symlink or ``..`` path to the trained-on folder is caught) and, where the recorded
    path still resolves from here, by real path. The model records no image list, so a copy of
    the data in a folder of another name is not detected."""
    args = _model_file(model_path, "training_args.json") or {}
    if source is None or data_dir is None:
        return
    real = os.path.realpath(str(data_dir))
    names = _folder_names(data_dir)
    for trained_source, trained_dir in zip(
        args.get("dataset") or [], args.get("data_dir") or [], strict=False
    ):
        same = os.path.realpath(str(trained_dir)) == real or _folder_names(trained_dir) & names
        if trained_source == source and same:
            raise ValueError(
                f"--split {ALL_SPLITS} would score every image of {source} at {data_dir} (real "
                f"folder {Path(real).name}), which {model_path} was trained on (its "
                f"training_args.json names {source} at {trained_dir}): evaluate its test split "
                "instead."
            )


@dataclass
class ExternalSetup:
    """What an external evaluation needs: the mapping, the model's columns, the report block."""

    label_map: LabelMap
    columns: list[int]
    problem_type: str | None
    block: dict[str, Any] = field(default_factory=dict)

    @property
    def findings(self) -> list[str]:
        return self.label_map.findings

    def apply(self, dataset):
        """The split relabelled with the model's scored findings (rows of unmapped classes out)."""
        relabelled, dropped = apply_label_map(dataset, self.label_map)
        if dropped:
            logger.warning(
                "Left out %s: their class maps to no finding of the model (see the label map).",
                ", ".join(f"{n} images of {c!r}" for c, n in dropped.items()),
            )
        self.block["images_left_out"] = dropped
        self.block["num_images"] = len(relabelled)
        if len(relabelled) == 0:
            raise ValueError("No image is left to score: every class maps to no finding.")
        return relabelled

    def wrap(self, module: torch.nn.Module) -> SharedFindings:
        return SharedFindings(module, self.columns, self.problem_type)

    def scores(self, probabilities: np.ndarray) -> np.ndarray:
        """The scored findings' columns of the model's probabilities ``(n, k)``."""
        return np.asarray(probabilities)[:, self.columns]


def prepare_external(
    model,
    model_path: str,
    dataset,
    spec: str,
    source: str | None,
    data_dir: str | None,
    split: str,
    options: dict[str, Any] | None = None,
) -> ExternalSetup:
    """Resolve ``--label_map`` (``spec``) for this model and dataset split, log what is scored
    and what is left out (and why), and build the ``external_validation`` block."""
    if split == ALL_SPLITS:
        check_not_training_data(model_path, source, data_dir)
    findings = model_findings(model)
    label_map = label_map_for(spec, dataset, findings, source)
    kind = label_map.dataset_kind
    normal = NO_FINDING.get(kind)
    block = {
        "model_source": {**model_source(model_path, findings), "findings": findings},
        "data_source": {
            "dataset": source or "the DEMO data",
            "data_dir": None if data_dir is None else str(data_dir),
            "split": split,
            "uncertainty": uncertainty_of(source, options or {}),
            "no_finding": {"names": list(normal.names), "meaning": normal.meaning}
            if normal
            else None,
            "note": SOURCE_NOTES.get(source or ""),
        },
        "label_map": label_map.as_dict(),
    }
    logger.info(
        "External evaluation (--label_map %s): scoring %s",
        spec,
        ", ".join(f"{f} <- {' / '.join(label_map.sources[f])}" for f in label_map.findings),
    )
    for side, left in (
        ("model", label_map.left_out_model),
        ("dataset", label_map.left_out_dataset),
    ):
        for name, why in left.items():
            logger.info("Left out, of the %s: %s. %s", side, name, why)
    if note := SOURCE_NOTES.get(source or ""):
        trained_on_nih = "nih14" in str(block["model_source"]["dataset"])
        logger.log(logging.WARNING if source == "covidx" and trained_on_nih else logging.INFO, note)
    columns = [findings.index(f) for f in label_map.findings]
    return ExternalSetup(label_map, columns, model.config.problem_type, block)
