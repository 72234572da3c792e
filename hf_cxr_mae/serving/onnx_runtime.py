"""Running an exported classifier with ONNX Runtime: serving needs onnxruntime, numpy and Pillow
(pydicom for DICOM), not PyTorch or transformers.

A folder written by ``hf-cxr-mae export`` holds ``onnx/model.onnx`` (fp32) and optionally
``onnx/model_int8_dynamic.onnx`` / ``onnx/model_int8_static.onnx``; ``OnnxClassifier`` runs one::

    model = OnnxClassifier("out/finetune-onnx")
    probabilities = model.predict_proba(["a.png", "b.dcm"])  # (images, findings), numpy

Importing this module imports neither torch nor transformers (a serving process saves ~0.75 GB);
keep it so: ``tests/serving/test_onnx_runtime.py`` checks it in a fresh interpreter.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import sys
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from ..metrics.classification import probabilities
from .model_checks import check_finite, check_unique_labels

logger = logging.getLogger(__name__)

ONNX_DIR = "onnx"
FILES = {
    None: "model.onnx",
    "dynamic": "model_int8_dynamic.onnx",
    "static": "model_int8_static.onnx",
}
# What OnnxClassifier runs when not told: the fastest graph the folder holds. Dynamic int8 was
# faster than static QDQ in 3 of 4 side-by-side runs on the 2-core CPU (ViT-S and ViT-B).
PREFERENCE = ("dynamic", "static", None)


def session(path: Path | str, threads: int = 0):
    """An ONNX Runtime CPU session of one graph, all graph optimisations on."""
    from ..extras import require

    ort = require("onnxruntime", "Running an ONNX export")

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads  # 0: ONNX Runtime's choice (one per physical core)
    options.log_severity_level = 3  # its warnings about unused initializers are noise here
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_files(folder: str | PathLike) -> dict[str | None, Path]:
    """The graphs an exported folder holds, by variant (None: fp32)."""
    onnx_dir = Path(folder) / ONNX_DIR
    return {v: onnx_dir / name for v, name in FILES.items() if (onnx_dir / name).is_file()}


def weights_files(folder: str | PathLike) -> list[Path]:
    """A model folder's PyTorch weights files (safetensors or ``pytorch_model*.bin``), sorted."""
    folder = Path(folder)
    return sorted([*folder.glob("*.safetensors"), *folder.glob("pytorch_model*.bin")])


def files_sha256(paths: Sequence[Path]) -> str:
    """The first 16 hex digits of one SHA-256 over the files' bytes (about 1 s per GB): which
    weights a graph or a predictions file came from."""
    digest = hashlib.sha256()
    for path in paths:
        with Path(path).open("rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def check_graphs_match_weights(folder: str | PathLike) -> None:
    """Refuse a folder whose ``onnx/`` graphs were exported from other weights than the PyTorch
    weights beside them (a model re-trained into the folder after its export): running them
    would answer in the new model's name with the old model's numbers."""
    record_path = Path(folder) / ONNX_DIR / "export.json"
    weights = weights_files(folder)
    if not (weights and record_path.is_file()):
        return
    recorded = json.loads(record_path.read_text(encoding="utf-8")).get("source_weights_sha256")
    if not recorded:  # an export older than the record, or made from a model in memory
        logger.warning(
            "%s cannot be checked against the weights beside it (%s): its export.json does not "
            "record them. If the model was trained again after the export, export again.",
            Path(folder) / ONNX_DIR, ", ".join(p.name for p in weights),
        )  # fmt: skip
        return
    if recorded != files_sha256(weights):
        raise ValueError(
            f"{Path(folder) / ONNX_DIR} was exported from other weights than "
            f"{', '.join(p.name for p in weights)} in {folder} (changed since the export); "
            f"export again (`hf-cxr-mae export {folder} {folder}`), or use --backend torch."
        )


class FolderConfig:
    """A folder's ``config.json``, read-only, as transformers' config answers the questions
    predict, the demo and the reports ask: every key as an attribute (a missing one raises
    ``AttributeError``, so ``getattr(config, key, default)`` works), ``id2label`` with int keys,
    ``label2id``, ``num_labels``, ``problem_type`` and ``architectures`` (None when absent).
    Attributes are copies: changing one leaves the config as it is."""

    def __init__(self, values: dict[str, Any]) -> None:
        values = dict(values)
        # As PretrainedConfig: labels from id2label (keys as ints), else num_labels (default 2).
        id2label = values.get("id2label") or {
            i: f"LABEL_{i}" for i in range(int(values.get("num_labels", 2)))
        }
        values["id2label"] = {int(k): v for k, v in id2label.items()}
        values["label2id"] = values.get("label2id") or {v: k for k, v in values["id2label"].items()}
        values["num_labels"] = len(values["id2label"])
        values.setdefault("problem_type", None)
        values.setdefault("architectures", None)
        object.__setattr__(self, "_values", values)

    @classmethod
    def from_folder(cls, folder: str | PathLike) -> FolderConfig:
        return cls(json.loads(Path(folder, "config.json").read_text(encoding="utf-8")))

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("_values", {})
        if name not in values:
            raise AttributeError(f"config has no {name!r}")
        return copy.deepcopy(values[name])

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only (setting {name!r})")

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._values)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._values!r})"


def _image(item: Image.Image | str | PathLike) -> Image.Image:
    """One grey 8-bit image, read as ``predict`` reads files (16-bit by its range, DICOM windows,
    alpha on black): X-rays hold one channel, which the model sees in each of its channels."""
    if isinstance(item, Image.Image):  # upright by its EXIF tag, as transformers' load_image
        item = ImageOps.exif_transpose(item)
        if item.mode == "L":
            return item
    # Here, not at the top: pixel inputs never need the reader.
    from ..data.images import read_xray, to_grayscale

    if isinstance(item, np.ndarray):  # an image as numpy holds it: (H, W) grey or (H, W, C)
        if item.ndim not in (2, 3):
            raise ValueError(f"An image array must be (H, W) or (H, W, C), got {item.shape}.")
        item = Image.fromarray(item)
    if isinstance(item, Image.Image):
        return to_grayscale(item)
    if not isinstance(item, (str, PathLike)):
        raise TypeError(
            f"Images are file paths, PIL images or (H, W) / (H, W, C) arrays; got {type(item)}."
        )
    return read_xray(item)


# What preprocessing reads from preprocessor_config.json. transformers' processors default an
# absent key by their type (resample, centre crop, an int size as a square or a shortest side):
# rather than guess, an export without them is refused (``processor_settings``).
_REQUIRED = ("do_resize", "size", "resample", "do_rescale", "do_normalize")
# An absent do_center_crop is a 224 x 224 crop to BitImageProcessor (ours), DeiT's and CLIP's, no
# crop to BEiT's: required, except of the processors that have no crop step at all.
_NO_CROP_STEP = ("ViTImageProcessor", "ViTImageProcessorFast")


def processor_settings(folder: str | PathLike) -> dict[str, Any]:
    """A folder's ``preprocessor_config.json``, checked to say everything ``pixels_of`` needs."""
    path = Path(folder) / "preprocessor_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the folder's preprocessing is unknown.")
    settings = json.loads(path.read_text(encoding="utf-8"))
    missing = [key for key in _REQUIRED if key not in settings]
    crops_by_default = settings.get("image_processor_type") not in _NO_CROP_STEP
    if "do_center_crop" not in settings and crops_by_default:
        missing.append("do_center_crop")
    if settings.get("do_normalize"):
        missing += [key for key in ("image_mean", "image_std") if key not in settings]
    if settings.get("do_center_crop") and "crop_size" not in settings:
        missing.append("crop_size")
    if settings.get("do_rescale") and "rescale_factor" not in settings:
        missing.append("rescale_factor")
    if missing:
        raise ValueError(f"{path} does not say {', '.join(missing)}; write them in it.")
    for key in ("size", "crop_size"):
        if key in settings and not isinstance(settings[key], dict):
            raise ValueError(
                f"{path}: {key}={settings[key]!r} is an older form; write it as a dict "
                '(e.g. {"shortest_edge": 256} or {"height": 224, "width": 224}).'
            )
    return settings


def pixels_of(image: Image.Image, settings: dict[str, Any], channels: int) -> np.ndarray:
    """One grey image through an image processor's settings (``processor_settings``), as
    transformers' PIL image processor applies them: ``(channels, height, width)`` float32."""
    size, crop = settings.get("size") or {}, settings.get("crop_size") or {}
    if settings.get("do_resize"):
        width, height = image.size
        if "shortest_edge" in size and "longest_edge" not in size:
            # transformers' rule (torchvision's): the long side is truncated, not rounded.
            short, long = sorted((width, height))
            new = (size["shortest_edge"], int(size["shortest_edge"] * long / short))
            width, height = new if width <= height else new[::-1]
        elif {"height", "width"} <= set(size):
            width, height = size["width"], size["height"]
        else:
            raise ValueError(f"preprocess cannot resize to {size}; pass pixel values instead.")
        image = image.resize((width, height), Image.Resampling(settings.get("resample", 2)))
    pixels = np.asarray(image)
    if settings.get("do_center_crop"):
        top = (pixels.shape[0] - crop["height"]) // 2
        left = (pixels.shape[1] - crop["width"]) // 2
        if top < 0 or left < 0:
            raise ValueError(f"an image of {image.size} is smaller than the crop {crop}.")
        pixels = pixels[top : top + crop["height"], left : left + crop["width"]]
    pixels = np.repeat(pixels[None], channels, axis=0)
    if settings.get("do_rescale"):  # as transformers: scaled in float64, then float32
        pixels = (pixels.astype(np.float64) * settings["rescale_factor"]).astype(np.float32)
    if settings.get("do_normalize"):
        mean = np.asarray(settings["image_mean"], np.float32).reshape(-1, 1, 1)
        std = np.asarray(settings["image_std"], np.float32).reshape(-1, 1, 1)
        pixels = (pixels - mean) / std
    return pixels.astype(np.float32)


def _load_graph(path: Path, folder: str | PathLike, threads: int):
    """``session(path)``, with ONNX Runtime's refusal of a damaged graph (an empty, truncated or
    corrupt file: a copy cut short, a full disk during the export) said as a ``ValueError``
    naming the file and the fix."""
    from ..extras import require

    # Through require: without onnxruntime, the one line naming the extra, not a traceback.
    require("onnxruntime", "Running an ONNX export")
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    refusals = (ort_errors.Fail, ort_errors.InvalidArgument, ort_errors.InvalidGraph,
                ort_errors.InvalidProtobuf, ort_errors.NoSuchFile)  # fmt: skip
    try:
        return session(path, threads)
    except refusals as err:
        size = path.stat().st_size
        what = "is empty" if size == 0 else f"({size} bytes) is not a loadable ONNX graph"
        reason = " ".join(str(err).split(":")[-1].split()).rstrip(".") or type(err).__name__
        raise ValueError(
            f"{path} {what}: truncated or corrupt ({reason}). Export it again: "
            f"`hf-cxr-mae export MODEL {folder}`."
        ) from err


class OnnxClassifier:
    """An exported classifier run by ONNX Runtime on the CPU.

    ``model(pixel_values) -> logits`` (float32; a numpy array in gives numpy out, a torch tensor
    gives a torch tensor), ``model.predict_proba(images) -> probabilities``, ``model.config`` the
    folder's ``config.json`` (``FolderConfig``: labels, problem type, operating points).

    ``variant``: ``None`` picks the fastest graph present (int8 dynamic, int8 static, fp32);
    ``"fp32"``, ``"dynamic"`` or ``"static"`` ask for one. ``threads``: ONNX Runtime's intra-op
    threads (0: one per physical core)."""

    def __init__(
        self, folder: str | PathLike, variant: str | None = None, threads: int = 0
    ) -> None:
        check_graph_files(folder)
        files = onnx_files(folder)
        if not files:
            raise FileNotFoundError(
                f"{folder} holds no exported graph ({ONNX_DIR}/{FILES[None]}); make one with "
                "`hf-cxr-mae export MODEL OUT`."
            )
        key = None if variant == "fp32" else variant
        if variant is None:
            key = next(v for v in PREFERENCE if v in files)
        elif key not in files:
            raise FileNotFoundError(
                f"{folder} has no {variant} graph ({ONNX_DIR}/{FILES.get(key, variant)}); it has "
                f"{', '.join(p.name for p in files.values())}."
            )
        check_graphs_match_weights(folder)
        self.folder = Path(folder)
        self.path = files[key]
        self.variant = "fp32" if key is None else f"int8 {key}"
        self.config = FolderConfig.from_folder(folder)
        check_unique_labels(self.config.id2label, str(folder))
        self.session = _load_graph(self.path, folder, threads)

    def __call__(self, pixel_values: Any) -> Any:
        torch = sys.modules.get("torch")  # a tensor can only come from a process that has torch
        if torch is not None and isinstance(pixel_values, torch.Tensor):
            pixels = pixel_values.detach().to("cpu", torch.float32).contiguous().numpy()
            return torch.from_numpy(self._run(pixels))
        return self._run(np.ascontiguousarray(pixel_values, dtype=np.float32))

    @functools.cached_property
    def processor(self) -> dict[str, Any]:
        """The folder's checked ``preprocessor_config.json`` (``processor_settings``), read on
        first use: a model served on pixel values never needs one."""
        return processor_settings(self.folder)

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        (logits,) = self.session.run(["logits"], {"pixel_values": pixels})
        return logits

    def preprocess(self, images: Sequence[Any]) -> np.ndarray:
        """Pixel values ``(n, channels, height, width)`` float32 of files (PNG, JPEG, DICOM), PIL
        images or image arrays, by the folder's ``preprocessor_config.json`` as transformers' PIL
        image processor applies it: resize (its ``size``, ``resample``), centre crop, rescale,
        normalise; the grey image is repeated over the model's ``num_channels``. ``predict``
        preprocesses an ONNX folder the same way."""
        settings = self.processor
        channels = int(getattr(self.config, "num_channels", 3))
        images = list(images)
        if not images:
            raise ValueError("No images given.")
        return np.stack([pixels_of(_image(item), settings, channels) for item in images])

    def predict_proba(self, images: Any) -> np.ndarray:
        """Probabilities ``(n, num_labels)`` float32 of images or files (``preprocess``), or of
        float pixel values (a 4-D array, one channel repeated over the model's): sigmoid per
        finding, softmax for a single-label model (a fitted temperature is already folded into
        the graph's head)."""
        if isinstance(images, (str, PathLike, Image.Image)) or getattr(images, "ndim", 0) in (2, 3):
            images = [images]
        if getattr(images, "ndim", None) == 4:
            pixels = self._checked_pixels(images)
        else:
            pixels = self.preprocess(images)
        logits = self(pixels)
        probs = probabilities(logits, self.config.problem_type).astype(np.float32)
        names = [self.config.id2label[i] for i in range(self.config.num_labels)]
        named = isinstance(images, (list, tuple))
        inputs = images if named else [f"image {i}" for i in range(len(probs))]
        check_finite(logits, probs, str(self.path), names, inputs)
        return probs

    def _checked_pixels(self, pixels: Any) -> np.ndarray:
        """Normalised float pixels of the model's shape; one channel is repeated (as predict does)."""
        if hasattr(pixels, "detach"):  # a torch tensor
            pixels = pixels.detach().cpu().numpy()
        if not np.issubdtype(pixels.dtype, np.floating):
            raise ValueError(
                f"Pixel values of dtype {pixels.dtype} are raw pictures, not normalised pixel "
                "values: pass the images (files, PIL images or arrays) to predict_proba, or "
                "preprocess(...) them first."
            )
        channels = int(getattr(self.config, "num_channels", 3))
        size = getattr(self.config, "image_size", None)
        if pixels.shape[1] == 1 and channels > 1:
            pixels = np.repeat(pixels, channels, axis=1)
        if pixels.shape[1] != channels or (size and tuple(pixels.shape[2:]) != (size, size)):
            raise ValueError(
                f"Pixel values of shape {tuple(pixels.shape)}: this model takes (n, {channels}, "
                f"{size}, {size}); pass the images to predict_proba to have them preprocessed."
            )
        return np.ascontiguousarray(pixels, dtype=np.float32)


def is_onnx_folder(model: str | PathLike) -> bool:
    """An exported folder without PyTorch weights (what ``--backend auto`` runs with ONNX)."""
    folder = Path(model)
    if folder.is_dir():
        check_graph_files(folder)
    return folder.is_dir() and bool(onnx_files(folder)) and not weights_files(folder)


def check_graph_files(folder: str | PathLike) -> None:
    """Refuse (``ValueError``) a graph's name in ``onnx/`` that is not a file (a folder): it
    would otherwise be passed over and the folder's error be about something else."""
    for name in FILES.values():
        path = Path(folder) / ONNX_DIR / name
        if path.exists() and not path.is_file():
            raise ValueError(
                f"{path} is not a file (a folder?): an ONNX graph is one file. Export again "
                f"(`hf-cxr-mae export MODEL {folder}`) or remove it."
            )
