"""The export's check against PyTorch (``export.verify``) at its limits: the fp32 graph is refused
beyond ``FP32_LOGIT_TOLERANCE * max(1, max |PyTorch logit|)`` of max |logit difference|, an int8
graph beyond ``INT8_PROBABILITY_TOLERANCE`` of max |probability difference|; each sits here one
step on either side of its limit, with graph outputs chosen exactly (a stand-in ONNX session),
so a check measuring another quantity (logits for int8, the mean, another scale) fails."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import tiny_classifier

import hf_cxr_mae.serving.export as export
from hf_cxr_mae.serving.export import FP32_LOGIT_TOLERANCE, INT8_PROBABILITY_TOLERANCE, verify

NAMES = ["a", "b", "c"]


class FixedLogits(torch.nn.Module):
    """A 'PyTorch model' answering fixed logits, row i for the image whose pixels are all i."""

    def __init__(self, logits, problem_type="multi_label_classification", thresholds=None):
        super().__init__()
        self.table = torch.tensor(logits, dtype=torch.float32)
        self.config = SimpleNamespace(
            problem_type=problem_type,
            id2label=dict(enumerate(NAMES)),
            num_labels=3,
            operating_points={"thresholds": thresholds} if thresholds else None,
        )

    def forward(self, pixel_values):
        return SimpleNamespace(logits=self.table[pixel_values[:, 0, 0, 0].long()])


def fake_session(got):
    """An ONNX session stand-in answering the given logits (float64) by the same row code."""

    class Runner:
        def run(self, outputs, feeds):
            assert outputs == ["logits"]
            return [np.asarray(got, np.float64)[feeds["pixel_values"][:, 0, 0, 0].astype(int)]]

    return lambda graph: Runner()


def check(monkeypatch, expected, got, variant=None, tolerance=None, **model_kwargs):
    monkeypatch.setattr(export, "session", fake_session(got))
    pixels = np.broadcast_to(
        np.arange(len(expected), dtype=np.float32)[:, None, None, None], (len(expected), 3, 2, 2)
    ).copy()
    model = FixedLogits(expected, **model_kwargs)
    return verify("unused.onnx", model, pixels, variant, "test images", tolerance)


EXPECTED = [[8.0, 0.0, -3.0], [0.5, -1.0, 2.0]]  # float32-exact; the largest |logit| is 8
LIMIT = FP32_LOGIT_TOLERANCE * 8.0


@pytest.mark.parametrize(
    "row, col, difference, passed",
    [
        (0, 1, LIMIT, True),  # exactly at the limit (on a logit of 0: the difference is exact)
        (0, 1, np.nextafter(LIMIT, 0), True),
        (0, 1, np.nextafter(LIMIT, np.inf), False),
        (0, 0, LIMIT * (1 - 1e-9), True),  # on the largest logit itself: the scale is PyTorch's
        (0, 0, LIMIT * (1 + 1e-9), False),
        (1, 2, -LIMIT * (1 + 1e-9), False),  # a difference of either sign
    ],
)
def test_fp32_limit_is_relative_to_the_largest_pytorch_logit(
    monkeypatch, row, col, difference, passed
):
    """fp32: max |logit difference| <= 1e-4 x max(1, max |PyTorch logit|) passes, one step
    beyond is refused; the numbers recorded are the true max / mean differences."""
    got = np.array(EXPECTED)
    got[row, col] += difference
    result = check(monkeypatch, EXPECTED, got)
    assert result.passed is passed
    assert result.max_logit_difference == abs(got[row, col] - EXPECTED[row][col])
    expected_p, got_p = 1 / (1 + np.exp(-np.array(EXPECTED))), 1 / (1 + np.exp(-got))
    assert result.max_probability_difference == pytest.approx(np.abs(got_p - expected_p).max())
    assert result.mean_probability_difference == pytest.approx(np.abs(got_p - expected_p).mean())
    assert result.variant == "model.onnx" and result.images == 2


@pytest.mark.parametrize("difference, passed", [(1e-4, True), (1e-4 * (1 + 1e-9), False)])
def test_fp32_limit_is_absolute_below_a_largest_logit_of_one(monkeypatch, difference, passed):
    """Logits all within +-0.5: the scale is 1 (never below), so 1e-4 of absolute difference."""
    small = [[0.5, 0.0, -0.25], [0.125, -0.5, 0.0]]
    got = np.array(small)
    got[1, 2] += difference
    assert check(monkeypatch, small, got).passed is passed


def test_a_given_tolerance_replaces_the_default_and_zero_means_exact(monkeypatch):
    """``tolerance`` is the per-unit limit asked for: 1e-3 lets 5e-3 on a logit scale of 8 pass;
    0 asks for identical logits (it used to fall back to the default 1e-4)."""
    got = np.array(EXPECTED)
    got[0, 1] += 5e-3
    assert not check(monkeypatch, EXPECTED, got).passed
    assert check(monkeypatch, EXPECTED, got, tolerance=1e-3).passed
    tiny = np.array(EXPECTED)
    tiny[0, 1] = 1e-12
    assert check(monkeypatch, EXPECTED, np.array(EXPECTED), tolerance=0.0).passed
    assert not check(monkeypatch, EXPECTED, tiny, tolerance=0.0).passed
    assert not check(monkeypatch, EXPECTED, tiny, variant="dynamic", tolerance=0.0).passed


def logit(p):
    return np.log(p / (1 - p))


@pytest.mark.parametrize("variant", ["dynamic", "static"])
@pytest.mark.parametrize("scale, passed", [(1 - 1e-9, True), (1 + 1e-9, False)])
def test_int8_limit_is_on_the_largest_probability_difference(monkeypatch, variant, scale, passed):
    """int8: max |sigmoid difference| <= 0.05 passes, just beyond is refused, whatever the
    logits do: a saturated logit moved by 6 (a probability change of 2e-9) passes, and one
    large difference among small ones is not averaged away."""
    expected = [[0.0, 20.0, -3.0], [1.0, -1.0, 2.0]]
    got = np.array(expected)
    got[0, 0] = logit(0.5 + INT8_PROBABILITY_TOLERANCE * scale)
    got[0, 1] = 26.0
    result = check(monkeypatch, expected, got, variant=variant)
    assert result.passed is passed
    assert result.max_logit_difference == 6.0
    assert result.max_probability_difference == pytest.approx(
        INT8_PROBABILITY_TOLERANCE * scale, rel=1e-12
    )
    assert result.variant == f"model_int8_{variant}.onnx"


def test_agreement_counts_decisions_at_the_stored_thresholds(monkeypatch):
    """Agreement: the fraction of (image, finding) decisions that are the same, each finding at
    its stored threshold (0.5 where it has none); a probability equal to the threshold is
    flagged."""
    expected = [[0.0, 0.0, 0.0], [2.0, -2.0, 0.0]]
    got = np.array(expected)
    got[0, 0] = logit(0.3)  # a: 0.5 -> 0.3, threshold 0.4: flagged -> not flagged
    got[0, 1] = logit(0.55)  # b: 0.5 -> 0.55, threshold 0.55 (equal: flagged), was not flagged
    got[1, 2] = logit(0.45)  # c: no threshold (0.5): 0.5 flagged -> 0.45 not
    thresholds = {"a": 0.4, "b": float(1 / (1 + np.exp(-logit(0.55)))), "c": None}
    result = check(monkeypatch, expected, got, variant="dynamic", thresholds=thresholds)
    assert result.agreement == 3 / 6


def test_single_label_checks_softmax_and_the_top_class(monkeypatch):
    """Single-label: probabilities are the softmax over classes, agreement is on the top class."""
    expected = [[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]]
    got = np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    result = check(
        monkeypatch, expected, got, variant="dynamic", problem_type="single_label_classification"
    )
    soft = np.exp(expected) / np.exp(expected).sum(1, keepdims=True)
    soft_got = np.exp(got) / np.exp(got).sum(1, keepdims=True)
    assert result.max_probability_difference == pytest.approx(np.abs(soft - soft_got).max())
    assert result.agreement == 0.5


def test_the_fp32_graph_beside_an_int8_one_keeps_the_default_tolerance(tmp_path, monkeypatch):
    """A tolerance given with --int8 is the int8 graph's; the fp32 graph written beside it is
    still held to 1e-4 (a loose int8 tolerance must not loosen it)."""
    real = export.verify
    asked = []

    def spy(graph, model, pixels, variant, source, tolerance=None):
        asked.append((variant, tolerance))
        return real(graph, model, pixels, variant, source, tolerance)

    monkeypatch.setattr(export, "verify", spy)
    model = tiny_classifier(NAMES)
    export.export_onnx(model, tmp_path / "int8", int8="dynamic", tolerance=0.2)
    assert asked == [(None, None), ("dynamic", 0.2)]
    record = json.loads((tmp_path / "int8" / "onnx" / "export.json").read_text())
    assert record["model.onnx"]["tolerance"].startswith("max abs. logit difference <= ")
    assert (
        record["model_int8_dynamic.onnx"]["tolerance"] == "max abs. probability difference <= 0.2"
    )
