"""Two-process DDP on CPU through accelerate: each rank sees its own share of the training images."""

import json
import os
import subprocess
import sys

from conftest import TESTS_DIR


def test_two_process_ddp_on_cpu(tmp_path):
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "true",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", str(TESTS_DIR / "ddp_script.py"), str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    seen = [set(r["train_ids"]) for r in ranks]
    assert seen[0] and seen[1] and not seen[0] & seen[1]  # each rank its own samples
    assert ranks[0]["checksum"] == ranks[1]["checksum"]  # parameters identical after DDP steps
    # Every evaluation (step 3, final validation, test: predicted once for its metrics and
    # report) sees each of the 21 images exactly once: 21 is odd, so padding duplicates would
    # show up as 22.
    assert ranks[0]["eval_counts"] == ranks[1]["eval_counts"] == [21] * 3
    assert ranks[0]["num_validation"] == 21
    assert (tmp_path / "out" / "model.safetensors").is_file()
    # Thresholds fitted on the gathered validation predictions, saved once by the main process.
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["operating_points"]["fitted_on"] == "validation"
