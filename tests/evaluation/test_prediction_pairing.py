"""``compare`` pairs two models' predictions, and predictions with labels, by the full image id:
two sites holding the same file names are two sets of images, never merged or swapped by file
name. A path from predict still meets a dataset's relative image_id when that pairing is one to
one under one folder; anything ambiguous is refused, saying how to make the ids match."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from hf_cxr_mae.cli import main as cli
from hf_cxr_mae.evaluation.paired_files import Labels, align_labels, pair_predictions
from hf_cxr_mae.serving.prediction_file import Predictions

NAMES = ["Effusion"]


def _predictions(ids, values, source="A"):
    return Predictions(list(ids), NAMES, np.asarray(values, dtype=float)[:, None], source)


def _labels(ids, values):
    return Labels(list(ids), NAMES, np.asarray(values, dtype=float)[:, None], "labels.csv")


def test_two_sites_with_the_same_file_names_are_not_paired_by_name():
    """A scored site 1's x0 and site 2's x1, B site 2's x0 and site 1's x1: no image in common.
    Paired by file name they used to be compared as if they were the same two images."""
    a = _predictions(["/data/site1/x0.png", "/data/site2/x1.png"], [0.1, 0.2])
    b = _predictions(["/data/site2/x0.png", "/data/site1/x1.png"], [0.3, 0.4], "B")
    with pytest.raises(ValueError, match=r"not paired: image '/data/site1/x0.png' is in A"):
        pair_predictions(a, b)


def test_labels_of_one_site_are_not_given_to_the_other_sites_images():
    """Predictions on site 2, labels of site 1 with the same file names: each prediction used to
    get the label of another patient's image."""
    predictions = _predictions(["/data/site2/x0.png", "/data/site2/x1.png"], [0.1, 0.9])
    labels = _labels(["site1/x0.png", "site1/x1.png"], [1, 0])
    with pytest.raises(ValueError, match=r"Image '/data/site2/x0.png' of A has no label"):
        align_labels(predictions, labels)


def test_relative_labels_meet_full_paths_of_two_sites_one_to_one():
    """A dataset's image_ids relative to its folder (site1/x0.png) against predict's absolute
    paths of both sites: each image gets its own label, in any order."""
    paths = [f"/data/{site}/x{i}.png" for site in ("site1", "site2") for i in range(2)]
    predictions = _predictions(paths, [0.1, 0.2, 0.3, 0.4])
    relative = ["site2/x1.png", "site1/x0.png", "site2/x0.png", "site1/x1.png"]
    labels = _labels(relative, [4, 1, 3, 2])  # the label says which image it belongs to
    assert align_labels(predictions, labels).ravel().tolist() == [1, 2, 3, 4]


def test_file_names_alone_that_could_be_either_site_are_refused():
    """Labels listing bare file names against two sites' images: 'x0.png' is two images, so
    the pairing is refused with how to make the ids match."""
    paths = [f"/data/{site}/x{i}.png" for site in ("site1", "site2") for i in range(2)]
    predictions = _predictions(paths, [0.1, 0.2, 0.3, 0.4])
    labels = _labels(["x0.png", "x1.png"], [1, 0])
    with pytest.raises(
        ValueError,
        match=r"'x0.png' of labels.csv matches both '/data/site1/x0.png' and '/data/site2/x0.png' "
        r"of A: they are different images. Image ids must name each image in full",
    ):
        align_labels(predictions, labels)


def test_matches_under_two_different_folders_are_refused():
    """Each file name is unique, but x0 sits in site1 and x1 in site2: labels relative to one
    folder cannot be both (old code paired them by file name)."""
    predictions = _predictions(["/data/site1/x0.png", "/data/site2/x1.png"], [0.1, 0.9])
    labels = _labels(["x0.png", "x1.png"], [1, 0])
    with pytest.raises(
        ValueError,
        match=r"match under different folders: '/data/site1/x0.png' ~ 'x0.png' but "
        r"'/data/site2/x1.png' ~ 'x1.png'",
    ):
        align_labels(predictions, labels)


def _site_files(tmp_path, b_sites):
    """Labels for site1 and site2 (image_id relative to /data), A scored on both sites, B on
    ``b_sites``; every image its own label and score."""
    rng = np.random.default_rng(0)
    ids = [f"{site}/x{i:02d}.png" for site in ("site1", "site2") for i in range(20)]
    targets = (rng.random(40) < 0.5).astype(int)
    pd.DataFrame({"image_id": ids, "Effusion": targets}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    a = 1 / (1 + np.exp(-(2.0 * targets + rng.normal(size=40))))
    pd.DataFrame({"path": [f"/data/{i}" for i in ids], "Effusion": a}).to_csv(
        tmp_path / "a.csv", index=False
    )
    b_ids = [f"{site}/x{i:02d}.png" for site in b_sites for i in range(20)]
    b = rng.random(len(b_ids))
    pd.DataFrame({"path": [f"/data/{i}" for i in b_ids], "Effusion": b}).to_csv(
        tmp_path / "b.csv", index=False
    )
    return targets, a, b


def _compare(tmp_path, out="out"):
    cli(
        [
            "compare",
            "--predictions_a", str(tmp_path / "a.csv"),
            "--predictions_b", str(tmp_path / "b.csv"),
            "--labels", str(tmp_path / "labels.csv"),
            "--output_dir", str(tmp_path / out),
            "--bootstrap_resamples", "20",
        ]
    )  # fmt: skip
    return json.loads((tmp_path / out / "compare.json").read_text())


def test_compare_two_sites_end_to_end(tmp_path):
    """Both models on both sites, labels relative to the data folder: the AUROCs are those of
    the correctly paired images (the old basename fallback refused this labels file)."""
    targets, a, b = _site_files(tmp_path, ["site1", "site2"])
    result = _compare(tmp_path)
    assert result["num_images"] == 40
    entry = result["findings"]["Effusion"]
    assert entry["auroc_a"] == pytest.approx(roc_auc_score(targets, a), abs=1e-12)
    assert entry["auroc_b"] == pytest.approx(roc_auc_score(targets, b), abs=1e-12)


def test_compare_refuses_model_b_scored_on_the_other_site(tmp_path):
    """B scored site 2 only, A site 1 only (same file names): the old code paired them image by
    image by file name, as if they were the same images."""
    _site_files(tmp_path, ["site2"])
    frame = pd.read_csv(tmp_path / "a.csv")
    frame.iloc[:20].to_csv(tmp_path / "a.csv", index=False)  # A: site 1 only
    with pytest.raises(SystemExit, match=r"compare: .*image '/data/site1/x00.png' is in A"):
        _compare(tmp_path)
