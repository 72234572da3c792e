"""Predictions on image files and MAE reconstructions (the CLI's workhorses); Grad-CAM heatmaps
are in ``gradcam``."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from PIL import Image

from ..data.image_paths import IMAGE_SUFFIXES
from ..data.images import read_xray
from ..data.transforms import create_transform
from . import BACKENDS, Backend
from .output_safety import (  # noqa: F401 (importable from here)
    OutputError,
    check_writable,
    output_error,
    run_record,
)
from .prediction_file import (
    ResultWriter,
    check_resumable,
    done_paths,
    drop_failed_rows,
    drop_partial_row,
)

logger = logging.getLogger(__name__)


@dataclass
class Prediction:
    path: str
    probabilities: dict[str, float]
    heatmaps: list[str] = field(default_factory=list)
    flagged: dict[str, bool] | None = None  # findings at or above their stored operating point


def collect_images(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their PNG / JPEG / DICOM files (sorted, recursive;
    DICOM also without suffix), OS and tool junk (``.DS_Store``, AppleDouble ``._*``,
    ``.ipynb_checkpoints/``, ``__MACOSX/``, ``Thumbs.db``) ignored, other files named in a warning."""
    from ..data.imagefolder import visible_images
    from ..data.images import has_dicom_magic

    out: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            images, _, files = visible_images(item)
            is_dicom = {p: has_dicom_magic(item / p) for p in files}  # IM0001 from PACS
            dicoms = [p for p in files if is_dicom[p]]
            others = [p for p in files if not is_dicom[p]]
            out += sorted(item / p for p in images + dicoms)
            if others:
                logger.warning(
                    "Left out %d files in %s that are not %s: %s%s",
                    len(others), item, "/".join(IMAGE_SUFFIXES),
                    ", ".join(map(str, others[:10])),
                    f" and {len(others) - 10} more" if len(others) > 10 else "",
                )  # fmt: skip
        else:
            out.append(item)
    # The same file named twice (a folder and a file in it, or two spellings) is predicted once.
    unique, seen = [], set()
    for path in out:
        if path.resolve() not in seen:
            seen.add(path.resolve())
            unique.append(path)
    if len(unique) < len(out):
        logger.warning(
            "%d files were named more than once; each is predicted once.", len(out) - len(unique)
        )
    return unique


def load_classifier(model_name_or_path: str):
    """A classifier checkpoint (folder or Hub id), from safetensors only; a clear error for an
    encoder without a head or for weights that exist only as a pickle (``pytorch_model.bin``)."""
    from transformers import AutoConfig, AutoModelForImageClassification

    from ..safe_weights import no_safetensors_message, require_safetensors
    from .model_checks import check_model_location, check_unique_labels
    from .onnx_runtime import is_onnx_folder

    check_model_location(model_name_or_path)
    if is_onnx_folder(model_name_or_path):
        raise ValueError(
            f"{model_name_or_path} is an ONNX export without PyTorch weights: this needs the "
            "PyTorch classifier folder it was exported from (predict and demo run an export "
            "with --backend onnx)."
        )
    config = AutoConfig.from_pretrained(model_name_or_path)
    if not any(a.endswith("ForImageClassification") for a in config.architectures or []):
        raise ValueError(
            f"{model_name_or_path} is a {config.model_type!r} checkpoint without a classification head "
            f"({config.architectures}). Fine-tune it first (recipes/finetune.py) or pick a classifier."
        )
    check_unique_labels(config.id2label, model_name_or_path)
    require_safetensors(model_name_or_path)
    try:
        model = AutoModelForImageClassification.from_pretrained(
            model_name_or_path, use_safetensors=True
        )
    except OSError as err:  # a Hub repository without safetensors weights
        if message := no_safetensors_message(model_name_or_path, err):
            raise ValueError(message) from err
        raise
    return model.eval()


def load_model(model_name_or_path: str, backend: Backend = "auto"):
    """The classifier to predict with: a PyTorch model (``load_classifier``) or an exported ONNX
    folder run by ONNX Runtime (``onnx_runtime.OnnxClassifier``). ``auto``: ONNX for a folder holding
    an ``onnx/`` export and no PyTorch weights, PyTorch otherwise."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    if backend == "auto":
        from .onnx_runtime import is_onnx_folder

        backend = "onnx" if is_onnx_folder(model_name_or_path) else "torch"
    if backend == "onnx":
        from .onnx_runtime import OnnxClassifier

        return OnnxClassifier(model_name_or_path)
    return load_classifier(model_name_or_path)


def is_onnx(model) -> bool:
    from .onnx_runtime import OnnxClassifier

    return isinstance(model, OnnxClassifier)


def model_identity(model) -> str:
    """What predicted: the ONNX graph file, or the model folder (resolved) or Hub id, with a
    fingerprint of the weights files (a model re-trained into the same folder is another
    model); "" for an in-memory model without a name."""
    from .onnx_runtime import files_sha256, weights_files

    if is_onnx(model):
        graph = Path(model.path).resolve()
        return f"{graph} sha256:{files_sha256([graph])}"
    name = str(getattr(model, "name_or_path", "") or "")
    if not (name and Path(name).exists()):
        return name
    folder, weights = Path(name).resolve(), weights_files(name)
    return f"{folder} sha256:{files_sha256(weights)}" if weights else str(folder)


def _identity(model) -> str:
    """``model_identity``, or for a model built in memory (no folder, no Hub id) the fingerprint
    of its weights, so that two such models are told apart too."""
    import hashlib

    if identity := model_identity(model):
        return identity
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy())
    return f"in-memory {type(model).__name__} sha256:{digest.hexdigest()}"


def _settings(model):
    from ..processing import data_settings

    return data_settings(model)


def probabilities_of(logits: torch.Tensor, problem_type: str | None) -> torch.Tensor:
    """Softmax over classes (single-label), sigmoid per finding otherwise."""
    return logits.softmax(-1) if problem_type == "single_label_classification" else logits.sigmoid()


class _Images(torch.utils.data.Dataset):
    """Decodes and transforms one file (in a worker process); a bad file becomes its error."""

    def __init__(self, paths: Sequence[Path], transform) -> None:
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return index, self.transform(read_xray(self.paths[index])), None
        except Exception as err:  # a bad file must not stop the others
            return index, None, str(err) or type(err).__name__


def _collate(items):
    """(indices read, (n, C, H, W) batch or None, [(index, error)]), stacked in the worker."""
    good = [(i, x) for i, x, _ in items if x is not None]
    bad = [(i, err) for i, x, err in items if x is None]
    pixels = torch.stack([x for _, x in good]) if good else None
    return [i for i, _ in good], pixels, bad


def _runner(model, fast: bool):
    if is_onnx(model):
        return model
    if fast:
        from .inference import fast_classifier

        return fast_classifier(model)

    def run(pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(pixel_values=pixels).logits

    return run


def _processor_pixels(image: Image.Image, settings: dict) -> torch.Tensor:
    """One grey image through an exported folder's processor settings: (1, H, W) float32."""
    from .onnx_runtime import pixels_of

    return torch.from_numpy(pixels_of(image, settings, 1))


def iter_predictions(
    model,
    paths: Sequence[Path],
    batch_size: int = 16,
    fast: bool = True,
    num_workers: int = 0,
) -> Iterator[tuple[list[Prediction], list[tuple[str, str]]]]:
    """Per batch, in file order: (predictions, [(path, error)] for files that could not be read).
    Files are decoded by ``num_workers`` processes (``torch.utils.data.DataLoader``) while the
    model runs on the previous batch; ``model`` is a PyTorch classifier or an ``OnnxClassifier``."""
    from ..processing import flagged_findings

    settings = _settings(model)
    run = _runner(model, fast)
    config = model.config
    names = [config.id2label[i] for i in range(config.num_labels)]
    if is_onnx(model):  # an exported folder: its preprocessor_config.json, as predict_proba
        transform = partial(_processor_pixels, settings=model.processor)
    else:
        transform = create_transform(settings, "eval")
    loader = torch.utils.data.DataLoader(
        _Images(paths, transform),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
        prefetch_factor=4 if num_workers else None,
        persistent_workers=False,
    )
    for indices, pixels, bad in loader:
        failures = [(str(paths[i]), err) for i, err in bad]
        for path, err in failures:
            logger.error("Cannot read %s: %s", path, err)
        results = []
        if pixels is not None:
            logits = run(pixels.expand(-1, settings.num_channels, -1, -1))
            probs = probabilities_of(logits.float(), config.problem_type)
            _check_finite(model, logits, probs, [paths[i] for i in indices], names)
            for i, row in zip(indices, probs.tolist(), strict=True):
                scores = dict(zip(names, row, strict=True))
                results.append(
                    Prediction(str(paths[i]), scores, flagged=flagged_findings(config, scores))
                )
        yield results, failures


def _check_finite(model, logits, probs, paths: Sequence[Path], names: Sequence[str]) -> None:
    """A NaN or infinite output (damaged weights) is an error naming the model and the image:
    never a predicted row, nor a bare ``NaN`` in the JSON printout (``model_checks``)."""
    from .model_checks import check_finite

    name = str(model.path) if is_onnx(model) else getattr(model, "name_or_path", "")
    check_finite(
        logits.detach().float().cpu().numpy(), probs.detach().float().cpu().numpy(),
        name or type(model).__name__, names, paths,
    )  # fmt: skip


def predict_files(
    model, paths: Sequence[Path], batch_size: int = 16, fast: bool = True, num_workers: int = 0
) -> tuple[list[Prediction], list[tuple[str, str]]]:
    """Probabilities per finding for each readable file; unreadable ones are listed, not fatal."""
    results, failures = [], []
    for batch_results, batch_failures in iter_predictions(
        model, paths, batch_size, fast, num_workers
    ):
        results += batch_results
        failures += batch_failures
    return results, failures


def predict_to_file(
    model,
    paths: Sequence[Path],
    output: Path,
    batch_size: int = 32,
    fast: bool = True,
    num_workers: int | None = None,
    resume: bool = True,
    progress: bool = True,
) -> tuple[int, int, int]:
    """Predict ``paths`` into ``output`` (CSV, or JSON lines for ``.jsonl``) batch by batch,
    decoding in ``num_workers`` processes (default: the CPUs, at most 4) with a tqdm bar.
    With ``resume``, files already predicted in ``output`` are skipped (failed ones are tried
    again); ``<output>.model`` records the weights' fingerprint and how they ran (``run_record``:
    precision, backend), and a file other weights (or other run settings) wrote is refused, as is, before any change, a file
    predict did not write (``prediction_file.check_resumable``). A folder that cannot be written
    is named before any prediction; a full disk raises ``OutputError`` ("no space left on ...")
    with whole rows kept, so the same call finishes the file. Non-finite outputs raise ValueError
    (``iter_predictions``). Returns (predicted, failed, skipped)."""
    from tqdm.auto import tqdm

    output = Path(output)
    check_writable(output, "--output")
    config = model.config
    names = [config.id2label[i] for i in range(config.num_labels)]
    # The model a file's rows came from, beside it: a rerun with another model would otherwise
    # skip every image already there and leave the first model's numbers under the second's name.
    stamp, identity = Path(f"{output}.model"), run_record(model, fast)
    # Before anything changes: a file predict did not write, or another model's, is refused.
    check_resumable(output, names, identity if resume else None)
    if resume:
        drop_partial_row(output)
        drop_failed_rows(output)
    done = done_paths(output) if resume else set()
    if not resume and output.exists():
        output.unlink()
    # Also by absolute path: a rerun may name the same files from another folder.
    done |= {str(Path(d).resolve()) for d in done}
    todo = [p for p in paths if str(p) not in done and str(Path(p).resolve()) not in done]
    if num_workers is None:
        num_workers = min(4, os.cpu_count() or 1) if len(todo) > batch_size else 0
    # Before the first row, so that no row is ever without the record of its model; through a
    # temporary file, so that a full disk never leaves a cut record (which no model matches).
    if not (stamp.is_file() and stamp.read_text(encoding="utf-8").strip() == identity):
        temporary = Path(f"{stamp}.tmp")
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(identity + "\n", encoding="utf-8")
            os.replace(temporary, stamp)
        except OSError as err:
            temporary.unlink(missing_ok=True)
            raise output_error(stamp, err) from err
    writer = ResultWriter(output, names)
    predicted = failed = 0
    try:
        with tqdm(total=len(todo), unit="img", disable=not progress) as bar:
            for results, failures in iter_predictions(model, todo, batch_size, fast, num_workers):
                writer.write(results, failures)
                predicted, failed = predicted + len(results), failed + len(failures)
                bar.update(len(results) + len(failures))
    finally:
        writer.close()
    return predicted, failed, len(paths) - len(todo)


def reconstruct_figure(
    model_name_or_path: str, paths: Sequence[Path], mask_ratio: float | None = None, seed: int = 0
) -> Image.Image:
    """original | masked | reconstruction | visible + recon., a row per image, masked at
    ``mask_ratio`` (None: the MAE's own ``config.mask_ratio``)."""
    from transformers import AutoConfig

    from ..configuration import check_setting
    from ..figures import reconstruction_grid
    from ..modeling import CXRMAEForPreTraining
    from .model_checks import check_model_location

    check_model_location(model_name_or_path)
    config = AutoConfig.from_pretrained(model_name_or_path)
    if config.model_type != "vit_mae" or "ViTMAEForPreTraining" not in (config.architectures or []):
        raise ValueError(
            f"{model_name_or_path} is not a full MAE (encoder + decoder) checkpoint; reconstruct needs one."
        )
    if mask_ratio is not None:
        check_setting("mask_ratio", mask_ratio, flag="--mask-ratio")
    from ..safe_weights import require_safetensors

    require_safetensors(model_name_or_path)
    overrides = {} if mask_ratio is None else {"mask_ratio": mask_ratio}
    model = CXRMAEForPreTraining.from_pretrained(
        model_name_or_path, use_safetensors=True, **overrides
    ).eval()
    transform = create_transform(model.config, "eval")
    pixels = torch.stack([transform(read_xray(p)) for p in paths]).expand(
        -1, model.config.num_channels, -1, -1
    )
    return reconstruction_grid(
        model, pixels, seed=seed, scale=max(1, round(256 / model.config.image_size))
    )
