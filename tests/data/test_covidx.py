"""The COVIDx loader (``hf_cxr_mae.data.covidx``): its text split files and single-label classes."""

from helpers import write_images

from hf_cxr_mae.data import label_names, load_cxr_dataset


def test_covidx_split_files(tmp_path):
    write_images(
        tmp_path, [f"train/t{i}.png" for i in range(6)] + [f"test/s{i}.png" for i in range(2)]
    )
    (tmp_path / "train.txt").write_text(
        "\n".join(f"p{i} t{i}.png {'positive' if i % 2 else 'negative'} src" for i in range(6))
    )
    (tmp_path / "test.txt").write_text("q0 s0.png positive src\nq1 s1.png negative src\n")
    dd = load_cxr_dataset("covidx", tmp_path, validation_size=2)
    assert label_names(dd["test"]) == ["negative", "positive"]
    assert [r["label"] for r in dd["test"]] == [1, 0]
    labels = {r["image_id"]: r["label"] for s in dd.values() for r in s.remove_columns("image")}
    assert len(labels) == 8 and all(
        labels[next(k for k in labels if k.endswith(f"t{i}.png"))] == i % 2 for i in range(6)
    )
