"""ONNX export of a classifier (fp32, int8 dynamic or int8 static QDQ), checked against PyTorch.

    hf-cxr-mae export MODEL OUT [--int8 dynamic|static] [--calibration DATASET --data_dir DIR]

Layout written (the Hub convention: an ``onnx/`` folder beside ``config.json``)::

    OUT/config.json                  the transformers config (labels, calibration, operating points)
    OUT/preprocessor_config.json     the image processor (same preprocessing as the PyTorch model)
    OUT/README.md                    the source's card (when it has one) + an "ONNX export" section
    OUT/onnx/model.onnx              fp32 graph: input ``pixel_values`` (batch, 3, H, W), output
                                     ``logits`` (batch, labels), dynamic batch
    OUT/onnx/model_int8_dynamic.onnx int8 weights, activations quantised at run time (--int8 dynamic)
    OUT/onnx/model_int8_static.onnx  int8 QDQ, activation ranges calibrated on X-rays (--int8 static)
    OUT/onnx/export.json             what was checked against PyTorch, with the numbers

The graph rewrite and the quantisation live in ``onnx_graph``; running a folder in
``onnx_runtime`` (``OnnxClassifier``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..metrics.classification import probabilities
from ..model_card import add_onnx_section, onnx_card_section
from .onnx_graph import fuse_attention, quantize
from .onnx_runtime import FILES, ONNX_DIR, files_sha256, onnx_files, session, weights_files

logger = logging.getLogger(__name__)

# Refusal thresholds. fp32: max |logit difference| <= FP32_LOGIT_TOLERANCE * max(1, max |logit|).
# int8: max |probability difference| <= INT8_PROBABILITY_TOLERANCE on the check images.
FP32_LOGIT_TOLERANCE = 1e-4
INT8_PROBABILITY_TOLERANCE = 0.05
ATTENTION = "onnx_export"


@dataclass
class Verification:
    """How the exported graph compares with the PyTorch model on the check images."""

    variant: str
    images: int
    image_source: str
    max_logit_difference: float
    max_probability_difference: float
    mean_probability_difference: float
    agreement: float  # fraction of decisions (finding x image, or top class) that are the same
    tolerance: str
    passed: bool


def _export_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """softmax(q k^T * scale) v without a mask: a classifier never gets one, and the all-zero mask
    transformers builds while tracing would cost an Add per layer and hide the fusable pattern."""
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    weights = torch.softmax(torch.matmul(query, key.transpose(-1, -2)) * scale, dim=-1)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), None


def _register_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, _export_attention)


class _Logits(torch.nn.Module):
    """``pixel_values -> logits``: the graph's one input and one output, named as on the Hub."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def _export_graph(model: torch.nn.Module, path: Path) -> None:
    """fp32 graph with a dynamic batch (the dynamo exporter: the TorchScript one traces BEiT's
    position-embedding interpolation into a bicubic Resize that changes the numbers)."""
    export_copy = copy.deepcopy(model).float().eval()
    if hasattr(export_copy, "set_attn_implementation"):
        _register_attention()
        export_copy.set_attn_implementation(ATTENTION)
    cfg = model.config
    size, channels = getattr(cfg, "image_size", 224), getattr(cfg, "num_channels", 3)
    example = torch.zeros(2, channels, size, size)
    torch.onnx.export(
        _Logits(export_copy).eval(),
        (example,),
        str(path),
        input_names=["pixel_values"],
        output_names=["logits"],
        dynamic_shapes={"pixel_values": {0: torch.export.Dim("batch", min=1)}},
        dynamo=True,
        external_data=False,
        verbose=False,
    )


def _decisions(probs: np.ndarray, config: Any) -> np.ndarray:
    """Top class (single-label), or each finding above its operating point (0.5 without one)."""
    if config.problem_type == "single_label_classification":
        return probs.argmax(-1)
    points = (getattr(config, "operating_points", None) or {}).get("thresholds") or {}
    names = [config.id2label[i] for i in range(config.num_labels)]
    # A finding without a threshold (undefined on validation) is stored as None: 0.5 then.
    limits = [0.5 if points.get(name) is None else points[name] for name in names]
    return probs >= np.array(limits, dtype=np.float64)


def verify(
    graph: Path | str,
    model: torch.nn.Module,
    pixels: np.ndarray,
    variant: str | None,
    image_source: str,
    tolerance: float | None = None,
) -> Verification:
    """Run the graph and the PyTorch model (fp32) on ``pixels`` and compare; ``passed`` says
    whether it is within the tolerance (``FP32_LOGIT_TOLERANCE`` relative to the largest logit
    for fp32, ``INT8_PROBABILITY_TOLERANCE`` absolute on probabilities for int8)."""
    with torch.no_grad():
        expected = model.float()(pixel_values=torch.from_numpy(pixels)).logits.double().numpy()
    runner = session(graph)
    got = np.concatenate(
        [
            runner.run(["logits"], {"pixel_values": pixels[i : i + 16]})[0]
            for i in range(0, len(pixels), 16)
        ]
    ).astype(np.float64)
    logit_diff = float(np.abs(got - expected).max())
    p_got = probabilities(got, model.config.problem_type)
    p_expected = probabilities(expected, model.config.problem_type)
    prob_diff = np.abs(p_got - p_expected)
    agreement = float(
        (_decisions(p_got, model.config) == _decisions(p_expected, model.config)).mean()
    )
    if variant is None:
        # ``is None``, not ``or``: a tolerance of 0 asks for identical logits.
        per_unit = FP32_LOGIT_TOLERANCE if tolerance is None else tolerance
        limit = per_unit * max(1.0, float(np.abs(expected).max()))
        passed, stated = logit_diff <= limit, f"max abs. logit difference <= {limit:.3g}"
    else:
        limit = INT8_PROBABILITY_TOLERANCE if tolerance is None else tolerance
        passed = float(prob_diff.max()) <= limit
        stated = f"max abs. probability difference <= {limit:g}"
    return Verification(
        variant=FILES[variant],
        images=len(pixels),
        image_source=image_source,
        max_logit_difference=logit_diff,
        max_probability_difference=float(prob_diff.max()),
        mean_probability_difference=float(prob_diff.mean()),
        agreement=agreement,
        tolerance=stated,
        passed=bool(passed),
    )


def synthetic_check_images(config: Any, count: int = 16, seed: int = 0) -> np.ndarray:
    """Pixel values of synthetic chest pictures (the DEMO renderer) through the eval transform:
    the check images when no dataset is named (closer to X-rays than noise)."""
    from ..data.demo import render_chest
    from ..data.transforms import create_transform
    from ..processing import data_settings

    settings = data_settings(config)
    transform = create_transform(settings, "eval")
    rng = np.random.default_rng(seed)
    names = ["Cardiomegaly", "Effusion", "Nodule", "Pneumothorax"]
    images = [
        transform(render_chest({n: bool(rng.integers(2)) for n in names}, rng, size=256))
        for _ in range(count)
    ]
    return torch.stack(images).expand(-1, settings.num_channels, -1, -1).numpy().copy()


def dataset_pixels(
    dataset: str,
    data_dir: str | PathLike | None,
    config: Any,
    count: int,
    options: dict[str, Any] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """``count`` X-rays (drawn at random, fixed seed) from the training split of a dataset
    (``load_cxr_dataset``), through the model's eval transform: calibration / check images."""
    from ..data import load_cxr_dataset
    from ..data.transforms import create_transform
    from ..processing import data_settings

    data = load_cxr_dataset(dataset, data_dir, **(options or {}))
    split = data["train"] if "train" in data else next(iter(data.values()))
    if len(split) == 0:
        raise ValueError(f"Dataset {dataset} ({data_dir}) has no images to calibrate on.")
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(split), size=min(count, len(split)), replace=False)
    settings = data_settings(config)
    transform = create_transform(settings, "eval")
    images = [transform(split[int(i)]["image"]) for i in sorted(rows)]
    return torch.stack(images).expand(-1, settings.num_channels, -1, -1).numpy().copy()


def export_onnx(
    model_or_path: torch.nn.Module | str | PathLike,
    out_dir: str | PathLike,
    *,
    int8: str | None = None,
    calibration: np.ndarray | None = None,
    check_images: np.ndarray | None = None,
    image_source: str | None = None,
    tolerance: float | None = None,
    fuse: bool = True,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Export a classifier to ``out_dir/onnx/`` (fp32 always; plus an int8 graph with
    ``int8="dynamic"`` or ``"static"``), check each graph against the PyTorch model and write it
    only when within tolerance (``ValueError`` with the numbers otherwise); returns the path of
    the graph asked for. File names: see the module docstring.

    ``calibration``: pixel values (N, C, H, W) the static graph's activation ranges are fitted
    on. ``check_images``: pixel values the graphs are compared on (default: the last quarter of
    ``calibration``, held out of the fit, else synthetic chest pictures). ``image_source``
    names them in the card and the error messages (e.g. "nih14 images")."""
    from ..extras import require

    for module in ("onnx", "onnxscript", "onnxruntime"):  # all three, before the model loads
        require(module, "Exporting to ONNX")
    from onnx import load, save

    from .predict import load_classifier

    if int8 not in FILES:
        raise ValueError(f"int8 must be None, 'dynamic' or 'static', got {int8!r}.")
    say = progress or logger.info
    source = None if isinstance(model_or_path, torch.nn.Module) else str(model_or_path)
    model = load_classifier(source) if source else model_or_path
    model = copy.deepcopy(model).float().eval()
    config = model.config
    if image_source is None:
        given = check_images is not None or calibration is not None
        image_source = "given images" if given else "synthetic chest pictures"
    if calibration is not None and check_images is None and len(calibration) >= 8:
        held = max(4, len(calibration) // 4)
        calibration, check_images = calibration[:-held], calibration[-held:]
        image_source = f"{image_source}, held out of calibration"
    if check_images is None:
        check_images, image_source = synthetic_check_images(config), "synthetic chest pictures"
    check_images = np.ascontiguousarray(check_images, dtype=np.float32)
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        say("exporting the fp32 graph (torch.onnx.export, dynamo)")
        _export_graph(model, work / FILES[None])
        fused = 0
        if fuse and getattr(config, "num_attention_heads", None):
            proto = load(work / FILES[None])
            fused = fuse_attention(proto, config.num_attention_heads)
            save(proto, work / FILES[None])
        # ``tolerance`` is for the graph asked for; the fp32 one beside an int8 keeps its own.
        fp32_tolerance = None if int8 else tolerance
        checks = [
            verify(work / FILES[None], model, check_images, None, image_source, fp32_tolerance)
        ]
        if int8:
            say(f"quantising to int8 ({int8})")
            quantize(work / FILES[None], work / FILES[int8], int8, calibration)
            checks.append(
                verify(work / FILES[int8], model, check_images, int8, image_source, tolerance)
            )
        for check in checks:
            say(
                f"{check.variant}: max logit diff {check.max_logit_difference:.3g}, max prob diff "
                f"{check.max_probability_difference:.4f}, agreement {check.agreement:.4f}"
            )
        failed = [c for c in checks if not c.passed]
        if failed:
            raise ValueError(
                "; ".join(
                    f"The exported {c.variant} disagrees with the PyTorch model on {c.images} "
                    f"{c.image_source}: max |logit difference| {c.max_logit_difference:.3g}, max "
                    f"|probability difference| {c.max_probability_difference:.4f}, decisions "
                    f"agreeing {c.agreement:.4f}; allowed: {c.tolerance}. Nothing was written."
                    for c in failed
                )
            )
        target = out_dir / ONNX_DIR
        target.mkdir(parents=True, exist_ok=True)
        record_path = target / "export.json"
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
        weights = _weights_sha256(model)
        if record.get("weights_sha256") != weights:
            # Graphs of another model (or of an unrecorded one) beside this model's config
            # would be run in its name: ``OnnxClassifier`` picks the fastest graph present.
            stale = [f for v, f in onnx_files(out_dir).items() if v != int8 and v is not None]
            for path in stale:
                logger.warning("Removing %s: it was exported from another model.", path)
                path.unlink()
            record = {}
        for check in checks:
            shutil.move(work / check.variant, target / check.variant)
    record["weights_sha256"] = weights
    if source and weights_files(source):  # checked by OnnxClassifier against the files beside it
        record["source_weights_sha256"] = files_sha256(weights_files(source))
    record.update({c.variant: asdict(c) | {"attention_blocks_fused": fused} for c in checks})
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    config.save_pretrained(out_dir)
    _save_processor(model, source, out_dir)
    section = onnx_card_section(
        [asdict(c) for c in checks], fused, FILES[int8], int8, source or type(model).__name__
    )
    add_onnx_section(out_dir, source, section)
    return target / FILES[int8]


def _weights_sha256(model: torch.nn.Module) -> str:
    """A fingerprint of the weights: which model the graphs in a folder were exported from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _save_processor(model: torch.nn.Module, source: str | None, out_dir: Path) -> None:
    """The source's image processor, or ours built from the config (BEiT classifiers)."""
    if source and Path(source, "preprocessor_config.json").is_file():
        if Path(source).resolve() != out_dir.resolve():
            shutil.copy(Path(source, "preprocessor_config.json"), out_dir)
        return
    if getattr(model.config, "model_type", None) == "beit":
        from ..processing import build_image_processor

        build_image_processor(model.config).save_pretrained(out_dir)
