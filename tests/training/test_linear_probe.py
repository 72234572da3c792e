"""The linear probe: its defaults are the official script's, and it refuses post-processing flags
it would drop."""

from __future__ import annotations

import pytest

# main_linprobe_chestxray.py's defaults (the paper reports no linear probe; its repository has one).
OFFICIAL_LINPROBE = {
    "per_device_train_batch_size": 512, "num_train_epochs": 90, "warmup_epochs": 10, "blr": 0.1,
    "min_lr": 0.0, "weight_decay": 0.0, "dataloader_drop_last": True,
}  # fmt: skip


def test_linear_probe_defaults_are_the_official_scripts():
    from hf_cxr_mae.training.arguments import LinprobeArguments

    args = LinprobeArguments(output_dir="unused")
    got = {name: getattr(args, name) for name in OFFICIAL_LINPROBE}
    assert got == OFFICIAL_LINPROBE


@pytest.mark.parametrize("flag", [{"temperature_scaling": True}, {"operating_point": "youden"}])
def test_linear_probe_refuses_postprocessing_it_would_drop(tmp_path, flag):
    from hf_cxr_mae.training.arguments import LinprobeArguments

    with pytest.raises(ValueError, match="fine-tuning options"):
        LinprobeArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", **flag)
    assert (
        LinprobeArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none").operating_point
        == "none"
    )
