"""Predictions on image files, Grad-CAM heatmaps and MAE reconstructions (the CLI's workhorses)."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .data.image_paths import IMAGE_SUFFIXES
from .data.images import read_xray
from .data.transforms import create_transform

logger = logging.getLogger(__name__)


@dataclass
class Prediction:
    path: str
    probabilities: dict[str, float]
    heatmaps: list[str] = field(default_factory=list)
    flagged: dict[str, bool] | None = None  # findings at or above their stored operating point


BACKENDS = ("auto", "torch", "onnx")


def collect_images(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their PNG / JPEG / DICOM files (sorted, recursive;
    DICOM also without suffix), OS and tool junk (``.DS_Store``, AppleDouble ``._*``,
    ``.ipynb_checkpoints/``, ``__MACOSX/``, ``Thumbs.db``) ignored, other files named in a warning."""
    from .data.imagefolder import visible_images
    from .data.images import has_dicom_magic

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
    """A classifier checkpoint (folder or Hub id); a clear error for an encoder without a head."""
    from transformers import AutoConfig, AutoModelForImageClassification

    from .onnx_runtime import is_onnx_folder

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
    return AutoModelForImageClassification.from_pretrained(model_name_or_path).eval()


def load_model(model_name_or_path: str, backend: str = "auto"):
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


def _settings(model):
    from .processing import data_settings

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
    from .processing import flagged_findings

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
            for i, row in zip(indices, probs.tolist(), strict=True):
                scores = dict(zip(names, row, strict=True))
                results.append(
                    Prediction(str(paths[i]), scores, flagged=flagged_findings(config, scores))
                )
        yield results, failures


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


def done_paths(output: Path) -> set[str]:
    """The files a previous run already predicted into ``output`` (CSV or JSON lines): skipped
    on rerun. Rows that failed (an ``error``) are not done: see ``drop_failed_rows``."""
    return {row["path"] for row in _rows(output) if row.get("path") and not row.get("error")}


def _rows(output: Path) -> list[dict]:
    """The rows of a results file (JSON lines: a line cut short by a crash is left out)."""
    if not output.is_file():
        return []
    if output.suffix == ".jsonl":
        rows = []
        for line in output.read_text(encoding="utf-8-sig").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:  # a line cut short by a crash: predicted again
                continue
        return rows
    with output.open(newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def drop_failed_rows(output: Path) -> int:
    """Remove the rows of images that could not be read from ``output`` (rewritten through a
    temporary file, so a crash leaves the old file), so that a rerun tries them again without
    leaving two rows for one image; returns how many were removed."""
    if not output.is_file():
        return 0
    temporary = output.with_name(output.name + ".rewrite")
    if output.suffix == ".jsonl":
        with output.open("rb") as f:
            lines = f.read().splitlines(keepends=True)
        keep = [line for line in lines if not _is_error_line(line)]
        removed = len(lines) - len(keep)
        if removed:
            temporary.write_bytes(b"".join(keep))
    else:  # csv.reader: an error message may span lines inside its quotes
        with output.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
        keep = rows[:1] + [row for row in rows[1:] if len(row) < 2 or not row[1]]
        removed = len(rows) - len(keep)
        if removed:
            with temporary.open("w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerows(keep)
    if removed:
        os.replace(temporary, output)
        logger.warning("%s: %d images that failed before are tried again.", output, removed)
    return removed


def _is_error_line(line: bytes) -> bool:
    try:
        return bool(json.loads(line).get("error"))
    except (ValueError, AttributeError):
        return False


def drop_partial_row(output: Path) -> None:
    """Cut a last line that lacks its newline (a run killed while writing it), so that its image
    is predicted again and the next row does not continue that line."""
    if not output.is_file():
        return
    data = output.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    logger.warning(
        "%s ends in a row cut short (%r): dropped, its image is predicted again.",
        output, data[keep:][:80].decode("utf-8", "replace"),
    )  # fmt: skip
    with output.open("r+b") as f:
        f.truncate(keep)


class ResultWriter:
    """Appends each batch's rows to a CSV (``path``, ``error``, one column per finding,
    ``flagged``: the findings at or above their operating point, ``;``-separated) or a JSON lines
    file (``.jsonl``), flushed per batch, so an interrupted run keeps what it predicted."""

    def __init__(self, output: Path, names: Sequence[str]) -> None:
        self.output, self.names = Path(output), list(names)
        self.jsonl = self.output.suffix == ".jsonl"
        fresh = not self.output.is_file() or self.output.stat().st_size == 0
        if not fresh and not self.jsonl:
            with self.output.open(newline="", encoding="utf-8-sig") as f:
                header = next(csv.reader(f), [])
            if header != self._header():
                raise ValueError(
                    f"{self.output} holds results with other columns ({', '.join(header[:6])}...); "
                    "pass another --output or delete it."
                )
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.file = self.output.open("a", newline="", encoding="utf-8")
        self.csv = None if self.jsonl else csv.writer(self.file)
        if fresh and self.csv:
            self.csv.writerow(self._header())

    def _header(self) -> list[str]:
        return ["path", "error", *self.names, "flagged"]

    def write(self, results: Sequence[Prediction], failures: Sequence[tuple[str, str]]) -> None:
        for result in results:
            flagged = [n for n, f in (result.flagged or {}).items() if f]
            if self.jsonl:
                row = {"path": result.path, "probabilities": result.probabilities}
                if result.flagged is not None:
                    row["flagged"] = flagged
                self.file.write(json.dumps(row) + "\n")
            else:
                # 9 significant digits give a float32 back exactly: fixed decimals turned a
                # confident model's small probabilities into tied zeros (another AUROC).
                values = [f"{result.probabilities[n]:.9g}" for n in self.names]
                marks = ";".join(flagged) if result.flagged is not None else ""
                self.csv.writerow([result.path, "", *values, marks])
        for path, error in failures:
            if self.jsonl:
                self.file.write(json.dumps({"path": path, "error": error}) + "\n")
            else:
                self.csv.writerow([path, error, *[""] * len(self.names), ""])
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


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
    again); ``<output>.model`` records the model and its weights' fingerprint, and a file another
    model (or an earlier state of this folder) wrote is refused. Returns (predicted, failed,
    skipped)."""
    from tqdm.auto import tqdm

    output = Path(output)
    if resume:
        drop_partial_row(output)
        drop_failed_rows(output)
    done = done_paths(output) if resume else set()
    if not resume and output.exists():
        output.unlink()
    # The model a file's rows came from, beside it: a rerun with another model would otherwise
    # skip every image already there and leave the first model's numbers under the second's name.
    stamp, identity = Path(f"{output}.model"), model_identity(model)
    previous = stamp.read_text(encoding="utf-8").strip() if stamp.is_file() and done else ""
    if identity and previous and previous != identity:
        raise ValueError(
            f"{output} holds predictions of another model ({previous}), not of {identity}; "
            f"pass another --output, or delete {output} and {stamp}."
        )
    # Also by absolute path: a rerun may name the same files from another folder.
    done |= {str(Path(d).resolve()) for d in done}
    todo = [p for p in paths if str(p) not in done and str(Path(p).resolve()) not in done]
    if num_workers is None:
        num_workers = min(4, os.cpu_count() or 1) if len(todo) > batch_size else 0
    config = model.config
    writer = ResultWriter(output, [config.id2label[i] for i in range(config.num_labels)])
    if identity:
        stamp.write_text(identity + "\n", encoding="utf-8")
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


def grad_cam(model, pixel_values: torch.Tensor, index: int) -> np.ndarray:
    """Grad-CAM on the output tokens of the last transformer block: a (grid, grid) map in [0, 1]."""
    if getattr(model.config, "model_type", None) != "beit":
        raise ValueError(
            "Heatmaps are implemented for ViT classifiers (BEiT checkpoints from hf-cxr-mae)."
        )
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        out = model(pixel_values=pixel_values, output_hidden_states=True)
        tokens = out.hidden_states[-1]
        tokens.retain_grad()
        out.logits[0, index].backward()
    patches, grads = tokens[0, 1:].detach(), tokens.grad[0, 1:]
    cam = torch.relu((patches * grads.mean(0)).sum(-1))
    grid = math.isqrt(cam.numel())
    cam = cam.reshape(grid, grid)
    return (cam / cam.max()).numpy() if cam.max() > 0 else cam.numpy()


def heatmap_overlay(
    image: Image.Image, cam: np.ndarray, settings, max_side: int = 1024
) -> Image.Image:
    """The X-ray (its own aspect ratio) with the map drawn over the centre crop the model saw."""
    import matplotlib

    width, height = image.size
    shrink = min(1.0, max_side / max(width, height))
    shown = image.convert("L").resize(
        (max(1, round(width * shrink)), max(1, round(height * shrink))), Image.BICUBIC
    )
    w, h = shown.size
    # The eval transform: shortest side -> image_size / crop_pct, then a centre crop of image_size.
    crop = min(w, h) * settings.crop_pct
    left, top = (w - crop) / 2, (h - crop) / 2
    heat = np.zeros((h, w), dtype=np.float32)
    box = (round(left), round(top), round(left + crop), round(top + crop))
    patch = Image.fromarray((cam * 255).astype(np.uint8)).resize(
        (box[2] - box[0], box[3] - box[1]), Image.BICUBIC
    )
    heat[box[1] : box[3], box[0] : box[2]] = np.asarray(patch, dtype=np.float32) / 255
    colored = matplotlib.colormaps["inferno"](heat)[..., :3]
    base = np.asarray(shown, dtype=np.float32)[..., None] / 255
    alpha = 0.55 * heat[..., None]
    mixed = (1 - alpha) * base + alpha * colored
    return Image.fromarray((mixed * 255).round().astype(np.uint8))


def write_heatmaps(model, prediction: Prediction, out_dir: Path, top: int = 3) -> list[str]:
    """One PNG per top finding: ``<stem>_<finding>.png``."""
    settings = _settings(model)
    image = read_xray(prediction.path)
    pixels = create_transform(settings, "eval")(image)[None].expand(
        -1, settings.num_channels, -1, -1
    )
    names = list(prediction.probabilities)
    best = sorted(names, key=prediction.probabilities.get, reverse=True)[:top]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in best:
        cam = grad_cam(model, pixels, names.index(name))
        path = out_dir / f"{Path(prediction.path).stem}_{name.replace(' ', '_')}.png"
        heatmap_overlay(image, cam, settings).save(path)
        written.append(str(path))
    return written


def reconstruct_figure(
    model_name_or_path: str, paths: Sequence[Path], mask_ratio: float, seed: int = 0
) -> Image.Image:
    """original | masked | reconstruction | visible + recon., a row per image."""
    from transformers import AutoConfig

    from .configuration import check_setting
    from .modeling import CXRMAEForPreTraining
    from .visualization import reconstruction_grid

    config = AutoConfig.from_pretrained(model_name_or_path)
    if config.model_type != "vit_mae" or "ViTMAEForPreTraining" not in (config.architectures or []):
        raise ValueError(
            f"{model_name_or_path} is not a full MAE (encoder + decoder) checkpoint; reconstruct needs one."
        )
    check_setting("mask_ratio", mask_ratio, flag="--mask-ratio")
    model = CXRMAEForPreTraining.from_pretrained(model_name_or_path, mask_ratio=mask_ratio).eval()
    transform = create_transform(model.config, "eval")
    pixels = torch.stack([transform(read_xray(p)) for p in paths]).expand(
        -1, model.config.num_channels, -1, -1
    )
    return reconstruction_grid(
        model, pixels, seed=seed, scale=max(1, round(256 / model.config.image_size))
    )
