"""Our models load by repo id from the Hub's cache layout with no network: AutoModel,
AutoModelForImageClassification and pipeline."""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image


def test_offline_load_by_repo_id_from_the_hub_cache(trained, tmp_path):
    """The Hub's cache layout, no network: AutoModel, AutoModelForImageClassification, pipeline."""
    cache = tmp_path / "hf_home" / "hub"
    for repo, folder in (
        ("org/cxr-mae", trained / "mae"),
        ("org/cxr-vit", trained / "ft"),
    ):
        root = cache / f"models--{repo.replace('/', '--')}"
        snapshot = root / "snapshots" / ("b" * 40)
        snapshot.mkdir(parents=True)
        for file in ("config.json", "model.safetensors", "preprocessor_config.json", "README.md"):
            (snapshot / file).write_bytes((folder / file).read_bytes())
        (root / "refs").mkdir()
        (root / "refs" / "main").write_text("b" * 40)
    image = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 80), dtype=np.uint8)).save(image)
    script = (
        "import json\n"
        "from transformers import AutoModel, AutoModelForImageClassification, pipeline\n"
        "enc = AutoModel.from_pretrained('org/cxr-mae')\n"
        "clf = AutoModelForImageClassification.from_pretrained('org/cxr-vit')\n"
        f"scores = pipeline('image-classification', model='org/cxr-vit', top_k=4)({str(image)!r})\n"
        "print('RESULT', json.dumps({'enc': type(enc).__name__, 'clf': type(clf).__name__, 'scores': scores}))\n"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert result["enc"] == "ViTMAEModel" and result["clf"] == "BeitForImageClassification"
    assert len(result["scores"]) == 4 and all(0 < s["score"] < 1 for s in result["scores"])
    assert abs(sum(s["score"] for s in result["scores"]) - 1) > 1e-3  # sigmoids, not a softmax
