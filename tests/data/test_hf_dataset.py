"""A ``datasets`` object as a source (``hf_cxr_mae.data.hf_dataset``): ClassLabel and label-list
columns."""

from datasets import ClassLabel, Dataset, Features, Sequence
from datasets import Image as HFImage
from helpers import write_images

from hf_cxr_mae.data import label_names, load_cxr_dataset


def test_datasets_object_with_classlabel_lists(tmp_path):
    write_images(tmp_path, ["a.png", "b.png"])
    features = Features({"img": HFImage(), "findings": Sequence(ClassLabel(names=["x", "y", "z"]))})
    ds = Dataset.from_dict(
        {"img": [str(tmp_path / "a.png"), str(tmp_path / "b.png")], "findings": [[0, 2], []]},
        features=features,
    )
    dd = load_cxr_dataset(ds, image_column="img", labels_column="findings")
    assert label_names(dd["train"]) == ["x", "y", "z"]
    assert dd["train"][0]["labels"] == {"x": 1.0, "y": 0.0, "z": 1.0}
    assert dd["train"][1]["image"].size == (24, 24)
