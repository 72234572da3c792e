"""The paper's transforms, one channel from decode to the batch edge.

``create_transform(config, mode)`` is the one entry point (timm-style): ``"pretrain"`` (MAE:
RandomResizedCrop scale 0.5-1.0, bicubic, flip), ``"train"`` (fine-tuning: bicubic
RandomResizedCrop, flip, RandAugment ``rand-m6-mstd0.5-inc1``, optional random erasing) and
``"eval"`` (shortest edge ``image_size / crop_pct``, centre crop). Size, mean and std come from the
model config. ``batch_transform`` plugs them into ``Dataset.set_transform`` for raw rows (an
``image`` column) and cached rows (``pixels`` / ``height`` / ``width``) alike, and
``CXRCollator`` stacks the batch and expands the single channel to the model's three (a view).
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from datasets import Image as DatasetsImage
from PIL import Image
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

from ..constants import eval_resize_size
from .images import read_xray, to_grayscale

MODES = ("pretrain", "train", "eval")
# RandomResizedCrop's smallest area per recipe: the paper's 0.5 for MAE, timm's 0.08 after it.
CROP_MIN_SCALE = {"pretrain": 0.5, "finetune": 0.08, "linprobe": 0.08}
BICUBIC = InterpolationMode.BICUBIC

# The official pre-training normalises each source with its own statistics: NIH with its grey
# mean / std, CheXpert and MIMIC-CXR (read as RGB) with ImageNet's per-channel ones.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SOURCE_NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "nih14": ((0.5056,) * 3, (0.252,) * 3),
    "chexpert": (IMAGENET_MEAN, IMAGENET_STD),
    "mimic_cxr": (IMAGENET_MEAN, IMAGENET_STD),
}
# RandAugment's resampling: the official recipe passes timm a fixed bicubic; timm's own default
# draws bilinear or bicubic per operation ("random").
RANDAUG_INTERPOLATIONS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "random": None,
}


def to_uint8_tensor(image: Image.Image | np.ndarray | torch.Tensor) -> torch.Tensor:
    """Any PIL image / HxW array -> (1, H, W) uint8 tensor (no copy for arrays)."""
    if isinstance(image, torch.Tensor):
        return image if image.ndim == 3 else image[None]
    if isinstance(image, Image.Image):
        image = np.asarray(to_grayscale(image))
    if not image.flags.writeable:  # Arrow buffers are read-only; torch wants to own writable memory
        image = image.copy()
    return torch.from_numpy(image)[None]


class _Normalize:
    """uint8 grey ``(..., 1, H, W)`` -> float. Equal per-channel statistics keep one channel (the
    batch edge expands it); unequal ones (ImageNet's) give one channel per statistic, exactly what
    normalising the grey image replicated to RGB gives."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != len(std):
            raise ValueError(f"image_mean {list(mean)} and image_std {list(std)} differ in length.")
        if len(set(mean)) == 1 and len(set(std)) == 1:
            self.mean, self.std = float(mean[0]), float(std[0])
        else:
            self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
            self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255.0 - self.mean) / self.std


def create_transform(
    config: Any,
    mode: str,
    crop_scale: tuple[float, float] | None = None,
    hflip: float = 0.5,
    auto_augment: str | None = "rand-m6-mstd0.5-inc1",
    re_prob: float = 0.0,
    pre_resize: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    randaug_interpolation: str = "bicubic",
) -> Callable[[Image.Image | np.ndarray | torch.Tensor], torch.Tensor]:
    """Image (PIL, HxW uint8 array or (1,H,W) tensor) -> normalised (1, size, size) float tensor,
    or (3, size, size) when the per-channel ``mean`` / ``std`` differ (ImageNet's).

    ``config`` is any model config with ``image_size``, ``image_mean``, ``image_std`` and
    ``crop_pct`` (ours); ``mean`` / ``std`` override its statistics (per-source pre-training
    normalisation). ``crop_scale`` defaults to ``CROP_MIN_SCALE`` up to 1.0. ``pre_resize`` first shrinks the shortest side to that size
    (never enlarging), as the pixel cache does: set it to the cache size and raw files and the
    cache give identical results. ``randaug_interpolation`` is RandAugment's resampling:
    ``bicubic`` (the official recipe), ``bilinear`` or ``random`` (timm's default draw).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    if randaug_interpolation not in RANDAUG_INTERPOLATIONS:
        raise ValueError(
            f"randaug_interpolation must be one of {sorted(RANDAUG_INTERPOLATIONS)}, "
            f"got {randaug_interpolation!r}."
        )
    size = int(config.image_size)
    mean = tuple(config.image_mean if mean is None else mean)
    std = tuple(config.image_std if std is None else std)
    normalize = _Normalize(mean, std)
    if mode == "eval":
        ops = v2.Compose(
            [
                v2.Resize(eval_resize_size(config), interpolation=BICUBIC, antialias=True),
                v2.CenterCrop(size),
            ]
        )
        return lambda image: normalize(ops(resize_shortest(to_uint8_tensor(image), pre_resize)))
    scale = crop_scale or (CROP_MIN_SCALE["pretrain" if mode == "pretrain" else "finetune"], 1.0)
    geometric = v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=scale, interpolation=BICUBIC, antialias=True),
            v2.RandomHorizontalFlip(hflip),
        ]
    )
    if mode == "pretrain" or not auto_augment:
        return lambda image: normalize(
            geometric(resize_shortest(to_uint8_tensor(image), pre_resize))
        )
    from timm.data.auto_augment import rand_augment_transform
    from timm.data.random_erasing import RandomErasing

    # timm's create_transform breaks on mode-L images (tuple fill); this works on one channel.
    hparams: dict[str, Any] = {
        "translate_const": int(0.45 * size),
        "img_mean": round(mean[0] * 255),
    }
    if (resample := RANDAUG_INTERPOLATIONS[randaug_interpolation]) is not None:
        hparams["interpolation"] = resample
    augment = rand_augment_transform(auto_augment, hparams)
    erase = RandomErasing(re_prob, mode="pixel", device="cpu") if re_prob > 0 else None

    def train_transform(image: Image.Image | np.ndarray | torch.Tensor) -> torch.Tensor:
        cropped = geometric(resize_shortest(to_uint8_tensor(image), pre_resize))[0].numpy()
        out = normalize(to_uint8_tensor(np.asarray(augment(Image.fromarray(cropped)))))
        return erase(out) if erase is not None else out

    return train_transform


def ten_crop_transform(
    config: Any,
) -> Callable[[Image.Image | np.ndarray | torch.Tensor], torch.Tensor]:
    """Evaluation with ten crops (corners, centre and their mirrors) after the eval resize, as the
    official evaluation does: image -> normalised (10, 1, size, size)."""
    size = int(config.image_size)
    resize = v2.Resize(eval_resize_size(config), interpolation=BICUBIC, antialias=True)
    normalize = _Normalize(tuple(config.image_mean), tuple(config.image_std))
    return lambda image: normalize(torch.stack(TF.ten_crop(resize(to_uint8_tensor(image)), size)))


def example_image(batch: dict[str, list], i: int) -> Image.Image | np.ndarray:
    """Row ``i`` of a batch as an image: a PIL image (raw) or an HxW uint8 array (cache).

    An undecoded ``image`` (``{"path", "bytes"}``, see ``undecoded_images``) is read here, so that a
    file that fails to decode is reported with its path and row, not as a bare ``OSError``.
    """
    if "pixels" in batch:
        return np.frombuffer(batch["pixels"][i], dtype=np.uint8).reshape(
            batch["height"][i], batch["width"][i]
        )
    item = batch["image"][i]
    if not isinstance(item, dict):
        return item
    source = item["path"] if item.get("bytes") is None else io.BytesIO(item["bytes"])
    try:
        return read_xray(source)
    except Exception as err:
        raise ValueError(f"Cannot decode {describe_row(batch, i)}: {err}") from err


def describe_row(batch: dict[str, list], i: int) -> str:
    """Row ``i`` in words for error messages: its file, ``image_id`` and dataset row."""
    item = batch.get("image", [None] * (i + 1))[i]
    path = item.get("path") if isinstance(item, dict) else getattr(item, "filename", None)
    parts = [f"image {path}" if path else "an embedded image"]
    if "image_id" in batch:
        parts.append(f"image_id {batch['image_id'][i]!r}")
    if "row_id" in batch:
        parts.append(f"dataset row {batch['row_id'][i]}")
    return ", ".join(parts)


def undecoded_images(dataset):
    """The dataset with its ``image`` column left undecoded (``{"path", "bytes"}``).

    ``example_image`` then reads each file itself and names the file and row of any decode error
    (``datasets`` would raise a bare ``OSError: image file is truncated`` inside the training
    loop). Datasets without an ``image`` column (the pixel cache) are returned as they are.
    """
    feature = dataset.features.get("image")
    if isinstance(feature, DatasetsImage) and feature.decode:
        return dataset.cast_column("image", DatasetsImage(decode=False))
    return dataset


@contextmanager
def seeded_global_rngs(seed: int) -> Iterator[None]:
    """Seed torch's CPU, Python's ``random`` and NumPy's global RNGs from ``seed`` for the block,
    then put all three back as they were.

    Library transforms draw from these global states (torchvision: torch; timm's RandAugment:
    ``random`` and ``np.random.choice``; timm's RandomErasing: ``random`` and torch), so seeding
    all three makes every draw a function of ``seed`` alone.
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed % 2**63)
        random.seed(seed)
        # Legacy NumPy seeds take 32-bit words: spread the whole seed over several of them.
        np.random.seed(np.random.SeedSequence(seed).generate_state(4))
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


class AugmentationSeeds:
    """Seeds augmentation per sample from (base seed, epoch, ``row_id``).

    Each sample's random crop, flip, RandAugment and random erasing then depend on nothing else:
    not on the number of data workers, not on what the model drew in between, and a resumed run
    draws exactly what an uninterrupted one would. The global RNGs are left untouched. A Trainer
    callback (``EpochCallback``) keeps ``epoch`` current.
    """

    def __init__(self, seed: int) -> None:
        self.seed, self.epoch = seed, 0

    def sample_seed(self, row_id: int) -> int:
        """The seed of one sample's augmentation this epoch (non-negative)."""
        return ((self.seed * 1_000_003 + self.epoch) * 10_000_019 + int(row_id)) % 2**64

    def __call__(self, row_id: int, fn: Callable[[Any], torch.Tensor], image: Any) -> torch.Tensor:
        with seeded_global_rngs(self.sample_seed(row_id)):
            return fn(image)


def batch_transform(
    transform: Callable[[Any], torch.Tensor],
    label_names: Sequence[str] | None = None,
    seeds: AugmentationSeeds | None = None,
    source_transforms: Mapping[str, Callable[[Any], torch.Tensor]] | None = None,
) -> Callable[[dict[str, list]], dict[str, list]]:
    """A ``set_transform`` function: rows -> ``pixel_values`` (1,H,W) and ``labels`` tensors.

    Multi-label struct labels become float vectors in ``label_names`` order; ``ClassLabel``
    labels stay class indices. With ``seeds``, rows need a ``row_id`` column (``with_row_ids``)
    and each output row carries its ``aug_seed``, from which ``CXRCollator`` seeds mixup / CutMix.
    With ``source_transforms``, a row whose ``source`` column names one of its keys uses that
    transform (per-source normalisation in pre-training); other rows use ``transform``.
    """

    def pick(batch: dict[str, list], i: int) -> Callable[[Any], torch.Tensor]:
        if source_transforms and "source" in batch:
            return source_transforms.get(batch["source"][i], transform)
        return transform

    def apply(batch: dict[str, list]) -> dict[str, list]:
        n = len(batch["pixels"] if "pixels" in batch else batch["image"])
        out: dict[str, list] = {}
        if seeds is None:
            out["pixel_values"] = [pick(batch, i)(example_image(batch, i)) for i in range(n)]
        else:
            out["aug_seed"] = [seeds.sample_seed(row_id) for row_id in batch["row_id"]]
            out["pixel_values"] = [
                seeds(batch["row_id"][i], pick(batch, i), example_image(batch, i)) for i in range(n)
            ]
        if "labels" in batch and label_names is not None:
            out["labels"] = [
                torch.tensor([row[name] for name in label_names]) for row in batch["labels"]
            ]
        elif "label" in batch:
            out["labels"] = [torch.tensor(v) for v in batch["label"]]
        return out

    return apply


def with_row_ids(dataset):
    """The dataset with a ``row_id`` column (0..n-1), the key of per-sample augmentation seeds."""
    if "row_id" in dataset.column_names:
        return dataset
    return dataset.add_column("row_id", list(range(len(dataset))))


class CXRCollator:
    """Stack examples; expand one channel to ``num_channels`` (a view, no copy).

    A batch may mix one-channel rows with ``num_channels``-channel rows (per-source normalisation
    with ImageNet's per-channel statistics): the one-channel rows are then expanded before
    stacking.

    ``mixup_alpha`` / ``cutmix_alpha`` > 0 mix pairs within a training batch (images and their
    float targets alike; multi-hot and one-hot both work), off by default as in the paper's
    recipe. Only training rows are mixed: those carrying an ``aug_seed`` (``batch_transform`` with
    seeds). The draws come from those seeds, so they do not depend on the data workers, on
    prefetching or on where a run resumed. Evaluation batches (no ``aug_seed``) are never mixed.
    """

    def __init__(
        self,
        num_channels: int = 3,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        num_classes: int | None = None,
    ) -> None:
        self.num_channels = num_channels
        self.mixup_alpha, self.cutmix_alpha, self.num_classes = (
            mixup_alpha,
            cutmix_alpha,
            num_classes,
        )

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [e["pixel_values"] for e in examples]
        if len({row.shape[-3] for row in rows}) > 1:
            rows = [self._to_channels(row) for row in rows]
        batch = {"pixel_values": torch.stack(rows)}
        if "labels" in examples[0]:
            batch["labels"] = torch.stack([e["labels"] for e in examples])
        seeds = [e["aug_seed"] for e in examples if "aug_seed" in e]
        if (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and len(seeds) == len(examples):
            batch = self._mix(batch, np.random.default_rng([int(s) for s in seeds]))
        if batch["pixel_values"].ndim == 4 and batch["pixel_values"].shape[1] == 1:
            # (B, 1, H, W); ten-crop batches expand in the model
            batch["pixel_values"] = batch["pixel_values"].expand(-1, self.num_channels, -1, -1)
        return batch

    def _to_channels(self, row: torch.Tensor) -> torch.Tensor:
        channels = row.shape[-3]
        if channels == self.num_channels:
            return row
        if channels != 1:
            raise ValueError(
                f"A row has {channels} channels; the model takes {self.num_channels} (or 1, expanded)."
            )
        return row.expand(*row.shape[:-3], self.num_channels, *row.shape[-2:])

    def _mix(
        self, batch: dict[str, torch.Tensor], rng: np.random.Generator
    ) -> dict[str, torch.Tensor]:
        x = batch["pixel_values"].clone()
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or rng.random() < 0.5)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = float(rng.beta(alpha, alpha))
        flipped = x.flip(0)
        if use_cutmix:
            h, w = x.shape[-2:]
            ch, cw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
            cy, cx = int(rng.integers(h)), int(rng.integers(w))
            y0, y1, x0, x1 = (
                max(cy - ch // 2, 0),
                min(cy + ch // 2, h),
                max(cx - cw // 2, 0),
                min(cx + cw // 2, w),
            )
            x[..., y0:y1, x0:x1] = flipped[..., y0:y1, x0:x1]
            lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
        else:
            x = lam * x + (1 - lam) * flipped
        out = {"pixel_values": x}
        if "labels" in batch:
            y = batch["labels"]
            if y.ndim == 1:  # class indices -> one-hot for mixing
                y = torch.nn.functional.one_hot(y, self.num_classes).float()
            out["labels"] = lam * y + (1 - lam) * y.flip(0)
        return out


def resize_shortest(image: torch.Tensor, size: int | None) -> torch.Tensor:
    """Shrink a (1,H,W) uint8 image so its shortest side is ``size`` (never enlarges)."""
    h, w = image.shape[-2:]
    if size is None or min(h, w) <= size:
        return image
    return TF.resize(image, size, interpolation=BICUBIC, antialias=True)
