"""The GPU benchmark script (benchmarks/gpu_pretrain.py) runs end to end: its CPU dry run prints
the full tables with finite numbers (not timed)."""

import math
import os
import subprocess

from conftest import REPO_ROOT

ROOT = REPO_ROOT


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _number(cell: str) -> float:
    """The leading number of a cell such as ``12.3``, ``1.50x``, ``4.0%`` or ``2.3 (compile ...)``."""
    return float(cell.split()[0].rstrip("x%"))


def test_gpu_script_dry_run_prints_every_row_with_finite_numbers():
    # One model keeps it short (each row is a fresh Python process); ViT-B is the one the goals
    # name, so the goal lines are computed too. A tiny peak gives the tiny model a visible MFU.
    done = subprocess.run(
        ["bash", "benchmarks/gpu.sh", "--device", "cpu", "--dry_run", "--models", "vit-b",
         "--peak_tflops", "0.001"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    model_rows = [_cells(x) for x in lines if x.startswith("| vit-b |") and "autocast" in x]
    # official fp16, ours bf16 eager, ours bf16 compiled, in that order
    assert [(r[2], r[3]) for r in model_rows] == [
        ("fp16 autocast", "no"),
        ("bf16 autocast", "no"),
        ("bf16 autocast", "yes"),
    ], done.stdout
    assert "official-style" in model_rows[0][1] and "hf-cxr-mae" in model_rows[1][1]
    for row in model_rows:  # images/s, vs official, MFU, GFLOP/image
        values = [_number(c) for c in row[4:8]]
        assert all(math.isfinite(v) and v > 0 for v in values), row
    assert _number(model_rows[0][5]) == 1.0  # the official row is its own reference
    data_rows = [_cells(x) for x in lines if x.startswith("| vit-b | bf16 + compile |")]
    assert len(data_rows) == 1, done.stdout  # one worker count in the dry run
    workers, alone, fed, waiting = data_rows[0][2:6]
    assert workers == "1"
    assert all(math.isfinite(_number(c)) for c in (alone, fed, waiting)), data_rows[0]
    assert 0 <= _number(waiting) <= 100
    goals = [x for x in lines if x.startswith("- ")]
    assert len(goals) == 3 and not any("not measured" in g for g in goals), goals
