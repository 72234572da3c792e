"""External validation: a model fine-tuned on NIH ChestX-ray14 scored on CheXpert's label rows
and on a class-folder layout through the harmonised label space (``--label_map``), its stored
thresholds tested on the new data against its own test report, the card's external results,
and ``compare`` of the model's own test split against an external set (not paired)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import save_classifier, tiny_classifier
from PIL import Image
from sklearn.metrics import roc_auc_score

from hf_cxr_mae.cli import main as cli
from hf_cxr_mae.data import NIH14_LABELS, read_xray
from hf_cxr_mae.data.transforms import create_transform
from hf_cxr_mae.processing import data_settings

# The NIH finding each CheXpert column is scored as (the table's seven shared findings).
SHARED = {
    "Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly", "Effusion": "Pleural Effusion",
    "Pneumonia": "Pneumonia", "Pneumothorax": "Pneumothorax", "Consolidation": "Consolidation",
    "Edema": "Edema",
}  # fmt: skip
SCORED = [n for n in NIH14_LABELS if n in SHARED]
THRESHOLDS = {n: 0.35 + 0.02 * i for i, n in enumerate(NIH14_LABELS)}
RUN = ["--report_to", "none", "--dataloader_num_workers", "0", "--per_device_eval_batch_size",
       "16", "--bootstrap_resamples", "50", "--pixel_cache", "false", "--bf16", "false"]  # fmt: skip


@pytest.fixture
def nih_model(tmp_path) -> Path:
    """A tiny classifier with NIH's 14 findings and stored operating points, as a run leaves it."""
    points = {"method": "youden", "fitted_on": "validation", "thresholds": THRESHOLDS}
    model = tiny_classifier(NIH14_LABELS, head_std=2.0, operating_points=points)
    return save_classifier(model, tmp_path / "nih-model")


@pytest.fixture
def chexpert_root(shared_data, tmp_path) -> tuple[Path, list[dict[str, str]]]:
    """CheXpert's first 80 real label rows with a made-up image each (unique bytes)."""
    src = shared_data / "chexpert-labels-sample" / "train.csv"
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))[:80]
    root = tmp_path / "chexpert" / "CheXpert-v1.0-small"
    rng = np.random.default_rng(0)
    for r in rows:
        path = root.parent / r["Path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 32), dtype=np.uint8)).save(path, quality=90)
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    return root, rows


def _expected_cell(raw: str, name: str, policy: str) -> float:
    """A CheXpert cell under a policy, written out: blank 0, -1 by the policy's rule."""
    if raw == "":
        return 0.0
    if float(raw) != -1:
        return float(raw)
    return {"ignore": -1.0, "paper": 1.0 if name in ("Edema", "Atelectasis") else 0.0}[policy]


def _spy(monkeypatch) -> list:
    from hf_cxr_mae.evaluation import reports

    captured, original = [], reports.write_report

    def spy(*args, **kwargs):
        captured.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(reports, "write_report", spy)
    return captured


def _logits_by_hand(model_dir: Path, files: list[Path]) -> np.ndarray:
    """The saved model's 14 logits per file: read, evaluation transform, forward (fp32)."""
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    transform = create_transform(data_settings(model), "eval")
    pixels = torch.stack([transform(read_xray(f)) for f in files]).expand(-1, 3, -1, -1)
    with torch.no_grad():
        return model(pixel_values=pixels).logits.double().numpy()


def _evaluate(model: Path, out: Path, *data: str) -> dict:
    cli(["evaluate", "--model_name_or_path", str(model), *data, "--output_dir", str(out), *RUN])
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("policy", ["ignore", "paper"])
def test_nih_model_on_chexpert_rows_scores_the_shared_findings_exactly(
    nih_model, nih_dir, chexpert_root, tmp_path, monkeypatch, policy
):
    """The model's own test report first (NIH sample, into its folder, as fine-tuning leaves
    it), then every CheXpert row: only the seven shared findings are scored, each against its
    CheXpert column under the loader's uncertainty policy, with the model's output for it; the
    stored thresholds' rates are counted on the new images and set against the source test."""
    own = _evaluate(nih_model, nih_model, "--dataset", "nih14", "--data_dir", str(nih_dir),
                    "--image_dir", "images", "--split", "test")  # fmt: skip
    root, rows = chexpert_root
    captured = _spy(monkeypatch)
    out = tmp_path / f"external-{policy}"
    report = _evaluate(nih_model, out, "--dataset", "chexpert", "--data_dir", str(root),
                       "--findings", "all", "--frontal_only", "false", "--uncertainty", policy,
                       "--split", "all", "--label_map", "auto")  # fmt: skip
    (_, logits, labels, names, *_), _ = captured[-1]
    assert names == SCORED and report["num_images"] == len(rows) == 80
    # Targets: the CSV's cells, row by row in image-id order, under the policy.
    by_id = sorted(rows, key=lambda r: r["Path"].split("/", 1)[1])
    expected = [[_expected_cell(r[SHARED[n]], SHARED[n], policy) for n in SCORED] for r in by_id]
    np.testing.assert_array_equal(np.asarray(labels), np.asarray(expected))
    # Scores: the model's own outputs for those findings, computed here from the files.
    files = [root / r["Path"].split("/", 1)[1] for r in by_id]
    columns = [NIH14_LABELS.index(n) for n in SCORED]
    np.testing.assert_allclose(logits, _logits_by_hand(nih_model, files)[:, columns], atol=1e-5)
    # AUROC per finding with its interval, on the labelled (non-ignored) images.
    probabilities = 1 / (1 + np.exp(-np.asarray(logits)))
    targets = np.asarray(labels)
    for j, name in enumerate(SCORED):
        keep = targets[:, j] != -1
        y = targets[keep, j]
        if 0 < y.sum() < y.size:
            assert report["auroc"][name] == pytest.approx(roc_auc_score(y, probabilities[keep, j]))
            low, high = report["auroc_ci95"][name]
            assert low <= report["auroc"][name] <= high
        # The stored threshold (from config.json), its counts on these images.
        rates = report["operating_points"]["rates"][name]
        flagged = probabilities[keep, j] >= THRESHOLDS[name]
        assert rates["threshold"] == pytest.approx(THRESHOLDS[name])
        assert (rates["tp"], rates["fp"], rates["fn"], rates["tn"]) == (
            int((flagged & (y == 1)).sum()), int((flagged & (y == 0)).sum()),
            int((~flagged & (y == 1)).sum()), int((~flagged & (y == 0)).sum()),
        )  # fmt: skip
    block = report["external_validation"]
    assert block["data_source"]["uncertainty"] == {
        "policy": policy, "given": True, "rule": block["data_source"]["uncertainty"]["rule"]
    }  # fmt: skip
    assert block["model_source"]["dataset"] == "nih14 (by its 14 finding names)"
    assert block["label_map"]["sources"] == {n: [SHARED[n]] for n in SCORED}
    assert list(block["label_map"]["left_out_model"]) == [
        "Infiltration", "Mass", "Nodule", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"
    ]  # fmt: skip
    assert "Lung Opacity" in block["label_map"]["left_out_dataset"]
    # Against the model's own test report: the same findings, both sides as measured.
    against = block["against_source_test"]
    assert against["paired"] is False and against["p_value"] is None
    assert against["num_images"] == own["num_images"] == 100
    for name in SCORED:
        entry = against["findings"][name]
        assert entry["auroc"]["source"] == own["auroc"][name]
        assert entry["auroc"]["external"] == report["auroc"][name]
        if own["auroc"][name] is not None and report["auroc"][name] is not None:
            assert entry["auroc"]["drop"] == pytest.approx(own["auroc"][name] - report["auroc"][name])  # fmt: skip
        there = own["operating_points"]["rates"][name]["sensitivity"]["value"]
        here = report["operating_points"]["rates"][name]["sensitivity"]["value"]
        assert entry["sensitivity"]["source"] == there and entry["sensitivity"]["external"] == here
    markdown = (out / "report.md").read_text()
    assert "## External validation" in markdown and "| Effusion | Pleural Effusion |" in markdown
    assert "| Pleural_Thickening | Doubtful, so left out" in markdown
    assert "### Against the model's own test split" in markdown and "no p-value" in markdown
    assert f"policy `{policy}`" in markdown


def _folder(root: Path, counts: dict[str, int]) -> Path:
    """Class folders of made-up PNGs, every file's bytes unique."""
    rng = np.random.default_rng(1)
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (48, 40), dtype=np.uint8)).save(
                root / name / f"{name.lower()}_{i}.png"
            )
    return root


def test_folder_layout_pneumonia_positives_normal_negatives_covid_left_out(
    nih_model, tmp_path, monkeypatch
):
    """PNEUMONIA / NORMAL / COVID-19 folders with no split of their own (``--split all``): the
    PNEUMONIA images are Pneumonia's positives, the NORMAL ones its negatives, the COVID-19 ones
    left out and counted; no test report beside the model is said so."""
    folder = _folder(tmp_path / "hospital", {"COVID-19": 3, "NORMAL": 7, "PNEUMONIA": 6})
    captured = _spy(monkeypatch)
    out = tmp_path / "folder-eval"
    report = _evaluate(nih_model, out, "--dataset", "imagefolder", "--data_dir", str(folder),
                       "--split", "all", "--label_map", "auto")  # fmt: skip
    (_, logits, labels, names, *_), _ = captured[-1]
    assert names == ["Pneumonia"] and report["num_images"] == 13
    files = sorted(p for c in ("NORMAL", "PNEUMONIA") for p in (folder / c).glob("*.png"))
    np.testing.assert_array_equal(
        np.asarray(labels)[:, 0], [float(p.parent.name == "PNEUMONIA") for p in files]
    )
    pneumonia = NIH14_LABELS.index("Pneumonia")
    np.testing.assert_allclose(
        np.asarray(logits)[:, 0], _logits_by_hand(nih_model, files)[:, pneumonia], atol=1e-5
    )
    block = report["external_validation"]
    assert block["images_left_out"] == {"COVID-19": 3}
    assert block["label_map"]["normal"] == ["NORMAL"]
    assert list(block["label_map"]["left_out_dataset"]) == ["COVID-19"]
    assert block["against_source_test"] is None
    assert report["positives"] == {"Pneumonia": 6} and report["negatives"] == {"Pneumonia": 7}
    assert (
        "Images left out (their class maps to no finding): 3 of COVID-19."
        in (out / "report.md").read_text()
    )


def test_a_wrong_or_partial_label_map_is_refused_naming_the_names(nih_model, tmp_path):
    """A hospital's own names through a FILE: unknown labels or findings and labels it leaves
    out are refused (one line, no traceback) before anything is scored, each named; without
    --label_map the label sets' difference is refused with the way out."""
    folder = _folder(tmp_path / "site", {"normal_cxr": 3, "pna": 3})
    data = ["--dataset", "imagefolder", "--data_dir", str(folder), "--split", "all"]
    wrong = tmp_path / "map.json"
    wrong.write_text(json.dumps({"pna": "Pneumonias", "normal": "No Finding"}))
    with pytest.raises(SystemExit) as err:
        _evaluate(nih_model, tmp_path / "o1", *data, "--label_map", str(wrong))
    message = str(err.value)
    assert message.startswith(f"evaluate: --label_map {wrong} does not fit: ")
    assert "unknown dataset label(s) ['normal']" in message
    assert "unknown model finding(s) ['Pneumonias']" in message
    assert "no entry for the dataset label(s) ['normal_cxr']" in message
    partial = tmp_path / "map.yaml"
    partial.write_text("pna: Pneumonia\n")
    with pytest.raises(SystemExit, match=r"no entry for the dataset label\(s\) \['normal_cxr'\]"):
        _evaluate(nih_model, tmp_path / "o2", *data, "--label_map", str(partial))
    with pytest.raises(SystemExit, match=r"differ from the dataset's .*--label_map auto"):
        _evaluate(nih_model, tmp_path / "o3", *data)
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3"))  # nothing scored
    good = tmp_path / "good.yaml"
    good.write_text("pna: Pneumonia\nnormal_cxr: No Finding\n")
    report = _evaluate(nih_model, tmp_path / "o4", *data, "--label_map", str(good))
    assert report["external_validation"]["label_map"]["sources"] == {"Pneumonia": ["pna"]}
    assert report["negatives"] == {"Pneumonia": 3}


def test_split_all_is_refused_on_the_models_own_training_data(nih_model, tmp_path):
    """``--split all`` scores every image: on the folder the model was trained on (its
    training_args.json) that would include training images."""
    folder = _folder(tmp_path / "trainset", {"NORMAL": 3, "PNEUMONIA": 3})
    (nih_model / "training_args.json").write_text(
        json.dumps({"dataset": ["imagefolder"], "data_dir": ["trainset"]})
    )
    with pytest.raises(SystemExit, match=r"--split all would score every image .*trained on"):
        _evaluate(nih_model, tmp_path / "o", "--dataset", "imagefolder", "--data_dir",
                  str(folder), "--split", "all", "--label_map", "auto")  # fmt: skip


def test_single_label_scores_are_the_models_softmax_probabilities():
    """A single-label model's class scored as one finding: the sigmoid of what is handed on is
    that class's softmax probability over all the model's classes."""
    from hf_cxr_mae.evaluation.external import SharedFindings

    model = tiny_classifier(["COVID-19", "normal", "pneumonia"], head_std=3.0)
    model.config.problem_type = "single_label_classification"
    x = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        softmax = model(pixel_values=x).logits.softmax(-1).double().numpy()
        shared = SharedFindings(model, [2, 0], model.config.problem_type)(pixel_values=x).logits
    np.testing.assert_allclose(
        torch.sigmoid(shared.double()).numpy(), softmax[:, [2, 0]], atol=1e-6
    )
    assert shared.shape == (5, 2) and model.config.problem_type == "single_label_classification"


def test_compare_own_test_and_external_set_is_not_paired(nih_model, nih_dir, chexpert_root,
                                                        tmp_path, capsys):  # fmt: skip
    """The same model on its own test split (NIH) and on CheXpert rows: other images, so both
    AUROCs with their own intervals and no p-value, with the reason; each AUROC is sklearn's on
    the scores and labels it writes."""
    root, _ = chexpert_root
    out = tmp_path / "cmp"
    cli(["compare", str(nih_model), "--dataset", "nih14", "--data_dir", str(nih_dir),
         "--image_dir", "images", "--split", "test", "--dataset_b", "chexpert", "--data_dir_b",
         str(root), "--split_b", "all", "--findings", "all", "--frontal_only", "false",
         "--label_map", "auto", "--output_dir", str(out), "--bootstrap_resamples", "50"])  # fmt: skip
    printed = capsys.readouterr().out
    assert "no p-value: A and B are scored on other images" in printed
    result = json.loads((out / "compare.json").read_text())
    assert result["paired"] is False and result["num_images_a"] == 100
    assert result["num_images_b"] == 80 and list(result["findings"]) == SCORED
    for side in ("a", "b"):
        scores = pd.read_csv(out / f"predictions_{side}.csv")
        labels = pd.read_csv(out / f"labels_{side}.csv")
        assert list(scores["image_id"]) == list(labels["image_id"])
        for name, entry in result["findings"].items():
            assert entry["p_value"] is None
            keep = labels[name] != -1
            y, s = labels.loc[keep, name], scores.loc[keep, name]
            if 0 < y.sum() < len(y):
                assert entry[f"auroc_{side}"] == pytest.approx(roc_auc_score(y, s))
                low, high = entry[f"ci95_{side}"]
                assert low <= entry[f"auroc_{side}"] <= high
    assert result["mean"]["p_value"] is None and result["mean"]["ci95_b"] is not None
    markdown = (out / "compare.md").read_text()
    assert "# Not a paired comparison" in markdown and "**No p-value.**" in markdown


def test_compare_two_models_on_a_folder_through_the_label_map(nih_model, tmp_path):
    """Two NIH models on a hospital folder: paired (the same images), compared on the one
    finding the folder defines, its targets the folder's classes."""
    other = save_classifier(tiny_classifier(NIH14_LABELS, head_std=1.0), tmp_path / "other")
    folder = _folder(tmp_path / "site", {"NORMAL": 8, "PNEUMONIA": 7, "COVID-19": 2})
    out = tmp_path / "cmp2"
    cli(["compare", str(nih_model), str(other), "--dataset", "imagefolder", "--data_dir",
         str(folder), "--split", "all", "--label_map", "auto", "--output_dir", str(out),
         "--bootstrap_resamples", "50"])  # fmt: skip
    result = json.loads((out / "compare.json").read_text())
    assert list(result["findings"]) == ["Pneumonia"] and result["num_images"] == 15
    assert result["findings"]["Pneumonia"]["p_value"] is not None  # DeLong: paired images
    labels = pd.read_csv(out / "labels.csv")
    assert labels["Pneumonia"].tolist() == [0] * 8 + [1] * 7
    assert "## Label map" in (out / "compare.md").read_text()


def test_model_card_lists_external_results(nih_model, tmp_path):
    """An external evaluation's metrics.json becomes a row of the card's external results."""
    from hf_cxr_mae.evaluation.external_report import external_result
    from hf_cxr_mae.model_card import CardData, render_card
    from hf_cxr_mae.modeling import CXRViTForImageClassification

    folder = _folder(tmp_path / "site", {"NORMAL": 5, "PNEUMONIA": 5})
    out = tmp_path / "ext"
    report = _evaluate(nih_model, out, "--dataset", "imagefolder", "--data_dir", str(folder),
                       "--split", "all", "--label_map", "auto")  # fmt: skip
    entry = external_result(out / "metrics.json")
    assert entry["dataset"] == "imagefolder" and entry["findings"] == ["Pneumonia"]
    config = CXRViTForImageClassification.from_pretrained(nih_model).config
    data = CardData(kind="classifier", config=config, model_name="m", datasets=["nih14"])
    data.external_results = [entry]
    card = render_card(data)
    text = str(card)
    assert "### External validation" in text
    assert f"| imagefolder | all | 10 | Pneumonia | {report['mauc']:.3f} |" in text
    assert "### External validation" not in str(
        render_card(CardData(kind="classifier", config=config, model_name="m"))
    )


def test_split_all_is_refused_on_the_training_folder_by_link_and_without_label_map(
    nih_model, tmp_path
):
    """The check ran only with --label_map and compared folder names as written: a symlink of
    another name to the trained-on folder passed, and so did the folder itself without
    --label_map. Now every --split all is checked, with links resolved."""
    folder = _folder(tmp_path / "trainset", {"NORMAL": 3, "PNEUMONIA": 3})
    link = tmp_path / "hospital_link"
    link.symlink_to(folder)
    (nih_model / "training_args.json").write_text(
        json.dumps({"dataset": ["imagefolder"], "data_dir": ["trainset"]})
    )
    for data_dir, extra in ((link, ["--label_map", "auto"]), (folder, [])):
        with pytest.raises(
            SystemExit,
            match=rf"--split all would score every image of imagefolder at {data_dir} \(real "
            r"folder trainset\), which .* names imagefolder at trainset\)",
        ):
            _evaluate(nih_model, tmp_path / "o", "--dataset", "imagefolder", "--data_dir",
                      str(data_dir), "--split", "all", *extra)  # fmt: skip


def test_compare_own_test_split_against_all_names_the_overlap(nih_model, nih_dir, tmp_path,
                                                              capsys):  # fmt: skip
    """One model on NIH's test split and on --split_b all of the same folder: the 100 test
    images are in both, which the message said were 'other images ... none' scored by both."""
    out = tmp_path / "cmp"
    cli(["compare", str(nih_model), "--dataset", "nih14", "--data_dir", str(nih_dir),
         "--image_dir", "images", "--split", "test", "--dataset_b", "nih14", "--data_dir_b",
         str(nih_dir), "--split_b", "all", "--label_map", "auto", "--output_dir", str(out),
         "--bootstrap_resamples", "20"])  # fmt: skip
    result = json.loads((out / "compare.json").read_text())
    total = result["num_images_b"]
    assert (result["shared_images"], result["num_images_a"]) == (100, 100)
    assert result["why"].startswith(
        f"All 100 images of A are among the {total} of B: one model's scores of those images "
        "are the same on both sides, so there is no paired comparison to make"
    )
    assert f"no p-value: All 100 images of A are among the {total} of B" in capsys.readouterr().out


def test_unpaired_reason_for_two_models_on_overlapping_sets():
    """Two models on partly shared images: the overlap is counted and the way to a paired test
    named; disjoint sets keep the 'other images' reason."""
    from hf_cxr_mae.evaluation.external_compare import UNPAIRED_WHY, unpaired_why

    assert unpaired_why(0, 5, 7, same_model=False) == UNPAIRED_WHY
    assert unpaired_why(3, 5, 7, same_model=False).startswith(
        "3 images are scored by both (of 5 in A, 7 in B): this run still compares the sets as "
        "unpaired (no p-value; the intervals are not independent): for a paired test of the two "
        "models, score both on one dataset"
    )


def test_unpaired_mean_interval_is_over_the_findings_defined_on_both_sides(tmp_path, monkeypatch):
    """B's images hold no positive of C: the mean compares A and B on A and B only, so A's mean
    interval is the bootstrap of A's A and B columns alone (same seed), not of all three."""
    from types import SimpleNamespace

    from hf_cxr_mae.evaluation import external_compare
    from hf_cxr_mae.evaluation.paired_files import Labels
    from hf_cxr_mae.evaluation.reports import bootstrap_auroc
    from hf_cxr_mae.serving.prediction_file import Predictions

    rng = np.random.default_rng(7)
    names = ["A", "B", "C"]
    sides = []
    for side in ("a", "b"):
        ids = [f"{side}{i}.png" for i in range(40)]
        targets = rng.integers(0, 2, (40, 3)).astype(np.float64)
        if side == "b":
            targets[:, 2] = 0  # no positive of C on B's images
        scores = np.clip(0.3 * targets + 0.7 * rng.random((40, 3)), 0, 1)
        predictions = Predictions(ids, names, scores, f"model_{side}")
        sides.append((predictions, Labels(ids, names, targets, side)))
    (a, labels_a), (b, labels_b) = sides
    setup = SimpleNamespace(block=None)
    monkeypatch.setattr(external_compare, "_unpaired_markdown", lambda result: "")  # numbers only
    result = external_compare._unpaired(
        tmp_path, a, b, labels_a, labels_b, setup, setup, "A's set", "B's set", 50, 3
    )
    assert result["mean"]["findings"] == ["A", "B"] and result["undefined"] == ["C"]
    c = result["findings"]["C"]
    assert c["auroc_b"] is None and c["auroc_a"] is not None
    two = bootstrap_auroc(a.probabilities[:, :2], labels_a.targets[:, :2], 50, 3)[1]
    assert result["mean"]["ci95_a"] == two
    assert two != bootstrap_auroc(a.probabilities, labels_a.targets, 50, 3)[1]  # C would move it
    two_b = bootstrap_auroc(b.probabilities[:, :2], labels_b.targets[:, :2], 50, 3)[1]
    assert result["mean"]["ci95_b"] == two_b
    assert result["mean"]["auroc_a"] == np.mean([result["findings"][f]["auroc_a"] for f in "AB"])
