"""The paper's transforms (``hf_cxr_mae.data.transforms``): three channels at the batch edge, mixup
/ cutmix drawn from each row's seed and sparing evaluation batches, RandAugment resampling
bicubic as PIL does, augmentation depending on the sample seed only, and an image that fails to
decode during training named by file and row."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from conftest import TINY
from PIL import Image as PILImage
from recipe_utils import recipe

from hf_cxr_mae import CXRMAEConfig
from hf_cxr_mae.data.cache import build_cache
from hf_cxr_mae.data.transforms import CXRCollator, batch_transform, create_transform
from hf_cxr_mae.training.arguments import DataArguments


def test_set_transform_and_collator_feed_three_channels(twelve_nih_test_images, tmp_path):
    config = CXRMAEConfig.from_preset("vit-test-patch8-dec32d1b")
    names = list(twelve_nih_test_images.features["labels"])
    for data in (twelve_nih_test_images, build_cache(twelve_nih_test_images, size=128, cache_dir=tmp_path)):
        ds = data.with_transform(batch_transform(create_transform(config, "train"), names))
        batch = CXRCollator(num_channels=3)([ds[i] for i in range(4)])
        assert batch["pixel_values"].shape == (4, 3, 64, 64)
        assert batch["pixel_values"].stride(1) == 0  # expanded view, not a copy
        expected = torch.tensor([[twelve_nih_test_images[i]["labels"][n] for n in names] for i in range(4)])
        torch.testing.assert_close(batch["labels"], expected)


def test_mixup_mixes_images_and_targets():
    torch.manual_seed(0)
    examples = [
        {
            "pixel_values": torch.full((1, 8, 8), float(i)),
            "labels": torch.tensor([float(i % 2), 1.0]),
            "aug_seed": i,  # training rows carry their augmentation seed; only they are mixed
        }
        for i in range(4)
    ]
    batch = CXRCollator(mixup_alpha=0.8)(examples)
    x = batch["pixel_values"][:, 0, 0, 0]
    # Pair (0, 3): x0 = lam * 0 + (1 - lam) * 3 -> lam from the image, then check the targets.
    lam = 1 - x[0].item() / 3
    assert 0 < lam < 1
    torch.testing.assert_close(batch["labels"][0], torch.tensor([lam * 0 + (1 - lam) * 1, 1.0]))


def _draw_everything_at_once(image):
    """What a training transform may draw from: NumPy's, Python's and torch's global RNGs."""
    import random

    import numpy as np

    return (np.random.random(), random.random(), torch.rand(()).item(), image)


def test_sample_augmentation_depends_on_the_sample_seed_only():
    import random

    import numpy as np
    from PIL import Image

    from hf_cxr_mae.configuration import CXRClassifierConfig
    from hf_cxr_mae.data.transforms import AugmentationSeeds, create_transform

    seeds = AugmentationSeeds(7)
    draws = []
    for state in (1, 2):  # whatever the global states are (another worker, another prefetch)
        np.random.seed(state), random.seed(state), torch.manual_seed(state)
        before = (np.random.get_state()[1].copy(), random.getstate(), torch.get_rng_state())
        draws.append(seeds(3, _draw_everything_at_once, None)[:3])
        after = (np.random.get_state()[1], random.getstate(), torch.get_rng_state())
        assert (before[0] == after[0]).all() and before[1] == after[1]  # global states untouched
        assert torch.equal(before[2], after[2])
    assert draws[0] == draws[1]
    assert seeds(4, _draw_everything_at_once, None)[:3] != draws[0]  # another row, other draws
    # The paper's fine-tuning transform (RandAugment picks its ops with np.random.choice).
    config = CXRClassifierConfig.from_preset(TINY)
    transform = create_transform(config, "train", re_prob=0.25)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 96), dtype=np.uint8))
    outputs = []
    for state in range(4):
        np.random.seed(state), random.seed(state), torch.manual_seed(state)
        outputs.append(seeds(3, transform, image))
    for out in outputs[1:]:
        assert torch.equal(out, outputs[0])


def test_truncated_png_during_training_names_the_file_and_row(tmp_path):
    import numpy as np
    from PIL import Image

    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["path,A,B"]
    for i in range(16):
        Image.fromarray(rng.integers(0, 255, (72, 72), dtype=np.uint8)).save(data / f"img/{i}.png")
        rows.append(f"img/{i}.png,{i % 2},{(i // 2) % 2}")
    (data / "labels.csv").write_text("\n".join(rows) + "\n")
    bad = data / "img" / "5.png"
    bad.write_bytes(
        bad.read_bytes()[:2000]
    )  # the header is intact: the default 'open' check passes
    argv = [
        "--dataset", "csv", "--data_dir", str(data), "--preset", TINY, "--output_dir", str(tmp_path / "out"),
        "--pixel_cache", "false", "--per_device_train_batch_size", "8", "--max_steps", "2",
        "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
        "--report_to", "none", "--dataloader_num_workers", "0",
    ]  # fmt: skip
    with pytest.raises(ValueError, match=r"5\.png.*dataset row \d+") as caught:
        recipe("finetune").main(argv)
    assert "truncated" in str(caught.value)


def test_mixing_draws_from_the_rows_seeds_and_spares_evaluation_batches():
    from hf_cxr_mae.data.transforms import CXRCollator

    def rows(seeds):
        return [
            {
                "pixel_values": torch.full((1, 8, 8), float(i)),
                "labels": torch.tensor([float(i % 2)]),
            }
            | ({} if s is None else {"aug_seed": s})
            for i, s in enumerate(seeds)
        ]

    collate = CXRCollator(num_channels=1, mixup_alpha=0.8, cutmix_alpha=1.0)
    torch.manual_seed(0)
    first = collate(rows([11, 12, 13, 14]))
    torch.manual_seed(1)  # another global state (another worker, another prefetch)
    again = collate(rows([11, 12, 13, 14]))
    assert torch.equal(first["pixel_values"], again["pixel_values"])
    assert torch.equal(first["labels"], again["labels"])
    assert not torch.equal(first["pixel_values"], collate(rows([11, 12, 13, 15]))["pixel_values"])
    # Evaluation rows carry no seed: never mixed (mixed labels would break the metrics).
    plain = collate(rows([None] * 4))
    assert torch.equal(
        plain["pixel_values"], torch.stack([r["pixel_values"] for r in rows([None] * 4)])
    )
    assert torch.equal(plain["labels"], torch.tensor([[0.0], [1.0], [0.0], [1.0]]))


def _randaug_ops(transform) -> list:
    """The timm RandAugment ops inside a ``create_transform(..., "train")`` closure."""
    cells = [c.cell_contents for c in transform.__closure__ or ()]
    augment = next(c for c in cells if type(c).__name__ == "RandAugment")
    return augment.ops


def test_randaugment_resamples_bicubic_by_default():
    config = CXRMAEConfig.from_preset(TINY)
    ops = _randaug_ops(create_transform(config, "train"))
    geometric = [op for op in ops if op.name in ("Rotate", "ShearX", "ShearY")]
    assert geometric, [op.name for op in ops]
    for op in ops:
        assert op.kwargs["resample"] == PILImage.Resampling.BICUBIC, op.name
    random_ops = _randaug_ops(create_transform(config, "train", randaug_interpolation="random"))
    assert isinstance(random_ops[0].kwargs["resample"], (tuple, list))  # timm's own draw
    data = DataArguments()
    assert data.randaug_interpolation == "bicubic"


def test_randaugment_rotation_output_matches_pil_bicubic():
    """A rotation through our RandAugment op equals PIL's bicubic rotation of the same image."""
    config = CXRMAEConfig.from_preset(TINY)
    rotate = next(
        op for op in _randaug_ops(create_transform(config, "train")) if op.name == "Rotate"
    )
    rng = np.random.default_rng(0)
    image = PILImage.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8))
    rotate.prob, rotate.magnitude_std = 1.0, 0
    random.seed(1)
    out = np.asarray(rotate(image))
    random.seed(1)  # same sign draw
    sign = -1 if random.random() > 0.5 else 1
    angle = sign * rotate.magnitude / 10 * 30
    fill = rotate.kwargs["fillcolor"]
    reference = np.asarray(
        image.rotate(angle, resample=PILImage.Resampling.BICUBIC, fillcolor=fill)
    )
    np.testing.assert_array_equal(out, reference)
