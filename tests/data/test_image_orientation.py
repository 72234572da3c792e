"""EXIF orientation: a file stored sideways with an orientation tag (as phones, scanners and some
PACS exports write them) is read upright by ``read_xray``, and so by the loaders and the pixel
cache, exactly as transformers' ``load_image`` and ``datasets`` read it."""

from __future__ import annotations

import io

import numpy as np
import pytest
from datasets import Dataset
from datasets import Image as HFImage
from PIL import Image, ImageOps

from hf_cxr_mae.data import load_cxr_dataset, read_xray
from hf_cxr_mae.data.cache import build_cache
from hf_cxr_mae.data.transforms import example_image, undecoded_images

# What the viewer must do to the stored pixels (EXIF 0x0112), and so how to store an upright
# picture for it: 6 = turn 90 degrees clockwise to view, 8 = counter-clockwise.
STORED = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def upright_picture() -> np.ndarray:
    """90 x 120 (wider than tall), a bright block at the top left: any turn or flip shows."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(60, 120, (90, 120), dtype=np.uint8)
    pixels[:20, :30] = 250
    return pixels


def save_sideways(path, orientation: int, **options) -> np.ndarray:
    """Write the upright picture stored sideways with its orientation tag; return the picture."""
    upright = upright_picture()
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(upright).transpose(STORED[orientation]).save(path, exif=exif, **options)
    return upright


@pytest.mark.parametrize("orientation", [6, 8])
def test_read_xray_applies_the_exif_orientation(tmp_path, orientation):
    """Lossless PNG: the pixels read are the upright picture exactly; JPEG: exactly what
    transformers' load_image decodes (Image.open + ImageOps.exif_transpose)."""
    png = tmp_path / "sideways.png"
    upright = save_sideways(png, orientation)
    assert Image.open(png).size == (90, 120)  # stored sideways
    image = read_xray(png)
    assert image.size == (120, 90)
    np.testing.assert_array_equal(np.asarray(image), upright)

    jpeg = tmp_path / "sideways.jpg"
    save_sideways(jpeg, orientation, quality=90)
    with Image.open(jpeg) as opened:
        reference = ImageOps.exif_transpose(opened).convert("L")
    assert read_xray(jpeg).size == (120, 90)
    np.testing.assert_array_equal(np.asarray(read_xray(jpeg)), np.asarray(reference))
    # A file object reads the same as the path.
    np.testing.assert_array_equal(np.asarray(read_xray(io.BytesIO(jpeg.read_bytes()))), reference)


def test_loaders_and_the_pixel_cache_read_upright(tmp_path):
    """A CSV source's sideways PNG: the training transform's image, the cache's pixels and the
    cache's perceptual hash all come from the upright picture."""
    from hf_cxr_mae.data.near_duplicates import perceptual_hash

    (tmp_path / "img").mkdir()
    upright = save_sideways(tmp_path / "img" / "a.png", 6)
    rng = np.random.default_rng(1)
    for name in ("b.png", "c.png"):
        Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(
            tmp_path / "img" / name
        )
    (tmp_path / "labels.csv").write_text(
        "path,A,split\nimg/a.png,1,train\nimg/b.png,0,validation\nimg/c.png,0,test\n"
    )
    train = load_cxr_dataset("csv", tmp_path, split_column="split")["train"]
    batch = undecoded_images(train)[:1]
    np.testing.assert_array_equal(np.asarray(example_image(batch, 0)), upright)
    cached = build_cache(train, size=512, cache_dir=tmp_path / "cache")  # 90 px: kept as is
    row = cached[0]
    assert (row["height"], row["width"]) == (90, 120)
    np.testing.assert_array_equal(
        np.frombuffer(row["pixels"], dtype=np.uint8).reshape(90, 120), upright
    )
    assert row["perceptual_hash"] == perceptual_hash(Image.fromarray(upright))


def test_datasets_decoding_agrees_with_read_xray(tmp_path):
    """``datasets.Image`` applies the tag too: rows decoded by datasets and rows read by us are
    the same picture."""
    path = tmp_path / "sideways.png"
    upright = save_sideways(path, 8)
    decoded = Dataset.from_dict({"image": [str(path)]}).cast_column("image", HFImage())[0]["image"]
    np.testing.assert_array_equal(np.asarray(decoded.convert("L")), upright)
    np.testing.assert_array_equal(np.asarray(read_xray(path)), upright)
