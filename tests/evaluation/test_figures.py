"""The clinical evaluation's figures (``hf_cxr_mae.figures``): the subgroup forest plot and
reliability diagrams render and mark the flagged subgroup."""

from __future__ import annotations

import numpy as np
from helpers import sigmoid

from hf_cxr_mae.metrics.subgroups import subgroup_report


def _red_pixels(path) -> int:
    from PIL import Image

    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=int)
    return int(((rgb[..., 0] > 180) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)).sum())


def test_figures_render_and_mark_the_flagged_subgroup(tmp_path):
    from PIL import Image

    from hf_cxr_mae.figures import reliability_figure, subgroup_figure

    rng = np.random.default_rng(0)
    n = 400
    view = np.where(rng.random(n) < 0.5, "AP", "PA")
    targets = (rng.random((n, 2)) < 0.3).astype(float)
    strength = np.where(view == "PA", 3.0, 0.0)[:, None]  # the model fails on AP films
    scores = sigmoid(strength * (targets - 0.5) + rng.normal(size=(n, 2)))
    report = subgroup_report(scores, targets, ["a", "b"], {"view": view}, n_resamples=200)
    assert report["groups"]["view"]["AP"]["below_overall"]
    subgroup_figure(report, tmp_path / "flagged.png")
    report["groups"]["view"]["AP"]["below_overall"] = False
    subgroup_figure(report, tmp_path / "unflagged.png")
    assert (
        _red_pixels(tmp_path / "flagged.png") > 50 and _red_pixels(tmp_path / "unflagged.png") == 0
    )
    reliability_figure(targets, scores, ["a", "b"], tmp_path / "reliability.png")
    with Image.open(tmp_path / "reliability.png") as image:
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert image.width > 500 and pixels.std() > 10
