"""Facts shared by the data, the models and the processing, below all of them (no imports)."""

from __future__ import annotations

from typing import Any

# The label of a finding to leave out of the loss and the metrics (uncertain, "ignore" policy).
IGNORE_LABEL = -1.0


def eval_resize_size(config: Any) -> int:
    """Shortest side before the evaluation centre crop: ``image_size / crop_pct`` (256 for 224)."""
    return round(config.image_size / getattr(config, "crop_pct", 224 / 256))
