"""Checks of a classifier's location, labels and outputs, shared by predict, the demo and ONNX
serving.

Numpy only (no torch, no transformers), so that ``onnx_runtime`` may import it and stay light."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def check_model_location(name_or_path: str) -> None:
    """A model named by a path that does not exist is an error naming it: transformers would
    take it for a malformed Hub id and end in a traceback. A Hub id (``org/name``) passes."""
    text = str(name_or_path)
    looks_like_path = text.startswith(("/", ".", "~")) or "\\" in text or text.count("/") > 1
    if looks_like_path and not Path(text).expanduser().exists():
        raise FileNotFoundError(f"model {text}: no such folder (a Hub id reads org/name)")


def check_unique_labels(id2label: Mapping[Any, str], model: str) -> None:
    """Refuse (``ValueError``) a model whose ``id2label`` gives one name to several outputs:
    results are keyed by name, so one output's probability would stand in the other's place."""
    positions: dict[str, list[int]] = {}
    for index, name in sorted((int(k), v) for k, v in id2label.items()):
        positions.setdefault(name, []).append(index)
    repeated = {name: where for name, where in positions.items() if len(where) > 1}
    if repeated:
        said = "; ".join(
            f"{name!r} at {', '.join(map(str, where))}" for name, where in repeated.items()
        )
        raise ValueError(
            f"{model}: config.json's id2label names several outputs alike ({said}); each "
            "finding needs its own name, or one output's probability would be reported as "
            "another's. Fix id2label (and label2id) in its config.json."
        )


def check_finite(
    logits: Any, probs: Any, model: str, names: Sequence[str], images: Sequence[Any]
) -> None:
    """A NaN or infinite output (damaged weights) is a ``ValueError`` naming the model, the
    finding and the image: never a reported probability. ``logits``/``probs``: (images, findings)
    arrays (numpy, or anything ``np.asarray`` reads)."""
    logits = np.asarray(logits, dtype=np.float64).reshape(len(images), -1)
    probs = np.asarray(probs, dtype=np.float64).reshape(len(images), -1)
    bad = ~(np.isfinite(logits) & np.isfinite(probs))
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        raise ValueError(
            f"The model {model} gives {float(logits[i, j])} (logit) for {names[j]} on "
            f"{images[i]}: not a probability. Its weights may be damaged (NaN or infinite "
            "values); no prediction is reported."
        )
