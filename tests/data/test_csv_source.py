"""The generic CSV loader (``hf_cxr_mae.data.csv_source``): labels as one delimited column or one
column per finding."""

from helpers import write_images

from hf_cxr_mae.data import label_names, load_cxr_dataset


def test_csv_delimited_and_per_column_labels(tmp_path):
    write_images(tmp_path, [f"img/{i}.png" for i in range(6)])
    (tmp_path / "delim.csv").write_text(
        "file,findings,pid\n"
        + "\n".join(f"img/{i}.png,{'A|B' if i % 2 else 'No Finding'},p{i}" for i in range(6))
    )
    dd = load_cxr_dataset(
        "csv",
        tmp_path,
        csv_file="delim.csv",
        image_column="file",
        label_column="findings",
        patient_column="pid",
        validation_size=2,
    )
    assert label_names(dd["train"]) == ["A", "B"]
    rows = {r["image_id"]: r["labels"] for s in dd.values() for r in s}
    assert rows["img/1.png"] == {"A": 1.0, "B": 1.0} and rows["img/2.png"] == {"A": 0.0, "B": 0.0}
    (tmp_path / "cols.csv").write_text(
        "path,X,Y,split\nimg/0.png,1,,train\nimg/1.png,-1,0,train\nimg/2.png,0,1,test\n"
    )
    dd = load_cxr_dataset(
        "csv",
        tmp_path,
        csv_file="cols.csv",
        split_column="split",
        uncertainty="ones",
        validation_size=1,
    )
    assert label_names(dd["test"]) == ["X", "Y"] and dd["test"][0]["labels"] == {"X": 0.0, "Y": 1.0}
    train_rows = {r["image_id"]: r["labels"] for s in ("train", "validation") for r in dd[s]}
    assert train_rows["img/1.png"] == {"X": 1.0, "Y": 0.0}
