"""ONNX export of a classifier (fp32, int8 dynamic or int8 static QDQ) and its runtime wrapper.

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

Speed choices, each measured on a 2-core AVX-512-VNNI CPU (batch 32, ViT-S): the graph is exported
with plain (mask-free) attention maths, whose ``Softmax`` blocks are then replaced by ONNX
Runtime's fused ``com.microsoft.MultiHeadAttention`` (fewer transposes and copies); only ``MatMul``
weights are quantised (an int8 ``ConvInteger`` patch embedding is several times slower than the
fp32 ``Conv``); ``onnxruntime.transformers`` fusions (SkipLayerNormalization, BiasGelu) are not
used: on this CPU they were slower than ONNX Runtime's own kernels.
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
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from .metrics.classification import probabilities

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


def fuse_attention(model_proto: Any, num_heads: int) -> int:
    """Replace each ``Softmax(MatMul(q, k^T) * scale) @ v`` block (with its head split and merge
    reshapes) by one ``com.microsoft.MultiHeadAttention`` on the projected (batch, tokens,
    hidden) q / k / v; returns how many were fused (0 leaves the graph as it was)."""
    from onnx import helper, numpy_helper

    graph = model_proto.graph
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)

    def made_by(name: str, op: str):
        node = producer.get(name)
        return node if node is not None and node.op_type == op else None

    def only_consumer(name: str, op: str):
        nodes = consumers.get(name, [])
        return nodes[0] if len(nodes) == 1 and nodes[0].op_type == op else None

    def heads_input(name: str) -> tuple[str, list] | None:
        """(batch, tokens, hidden) tensor under ``Transpose(Reshape(x))``."""
        transpose = made_by(name, "Transpose")
        reshape = transpose and made_by(transpose.input[0], "Reshape")
        return (reshape.input[0], [transpose, reshape]) if reshape else None

    replacements, dead = {}, set()
    for softmax in [n for n in graph.node if n.op_type == "Softmax"]:
        mul = made_by(softmax.input[0], "Mul")
        scores = mul and made_by(mul.input[0], "MatMul")
        scale = constants.get(mul.input[1]) if mul else None
        weighted = only_consumer(softmax.output[0], "MatMul")
        merge = weighted and only_consumer(weighted.output[0], "Transpose")
        merged = merge and only_consumer(merge.output[0], "Reshape")
        if not (scores and merged) or scale is None or scale.size != 1:
            continue
        q, k, v = (heads_input(name) for name in (*scores.input, weighted.input[1]))
        if not (q and k and v):
            continue
        fused = helper.make_node(
            "MultiHeadAttention",
            [q[0], k[0], v[0]],
            [merged.output[0]],
            domain="com.microsoft",
            name=f"MultiHeadAttention_{len(replacements)}",
            num_heads=num_heads,
            scale=float(scale.reshape(())),
        )
        replacements[id(merged)] = fused
        dead |= {id(n) for n in (softmax, mul, scores, weighted, merge)}
    if not replacements:
        return 0
    nodes = [replacements.get(id(n), n) for n in graph.node if id(n) not in dead]
    while True:  # drop what only fed the replaced blocks (the head split reshapes)
        used = {name for node in nodes for name in node.input} | {o.name for o in graph.output}
        kept = [node for node in nodes if any(out in used for out in node.output)]
        if len(kept) == len(nodes):
            break
        nodes = kept
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    unused = [t for t in graph.initializer if t.name not in used]
    for tensor in unused:
        graph.initializer.remove(tensor)
    if not any(o.domain == "com.microsoft" for o in model_proto.opset_import):
        model_proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(replacements)


class _Batches:
    """onnxruntime's CalibrationDataReader over an array of pixel values."""

    def __init__(self, pixels: np.ndarray, batch_size: int = 16) -> None:
        self.batches = iter([pixels[i : i + batch_size] for i in range(0, len(pixels), batch_size)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {"pixel_values": batch}


def _quantize(src: Path, dst: Path, mode: str, calibration: np.ndarray | None) -> None:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    # MatMul only: the patch embedding as an int8 ConvInteger is slower than the fp32 Conv; the
    # head's Gemm is a rounding error in time and kept exact.
    if mode == "dynamic":
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
        return
    if calibration is None or len(calibration) == 0:
        raise ValueError("--int8 static needs calibration images (--calibration DATASET).")
    quantize_static(
        src,
        dst,
        _Batches(calibration.astype(np.float32)),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )


def _session(path: Path | str, threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads  # 0: ONNX Runtime's choice (one per physical core)
    options.log_severity_level = 3  # its warnings about unused initializers are noise here
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _decisions(probs: np.ndarray, config: Any) -> np.ndarray:
    """Top class (single-label), or each finding above its operating point (0.5 without one)."""
    if config.problem_type == "single_label_classification":
        return probs.argmax(-1)
    points = (getattr(config, "operating_points", None) or {}).get("thresholds") or {}
    names = [config.id2label[i] for i in range(config.num_labels)]
    return probs >= np.array([points.get(name, 0.5) for name in names])


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
    session = _session(graph)
    got = np.concatenate(
        [
            session.run(["logits"], {"pixel_values": pixels[i : i + 16]})[0]
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
        limit = (tolerance or FP32_LOGIT_TOLERANCE) * max(1.0, float(np.abs(expected).max()))
        passed, stated = logit_diff <= limit, f"max abs. logit difference <= {limit:.3g}"
    else:
        limit = tolerance or INT8_PROBABILITY_TOLERANCE
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
    from .data.demo import render_chest
    from .data.transforms import create_transform
    from .processing import data_settings

    settings = data_settings(SimpleNamespace(config=config))
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
    from .data import load_cxr_dataset
    from .data.transforms import create_transform
    from .processing import data_settings

    data = load_cxr_dataset(dataset, data_dir, **(options or {}))
    split = data["train"] if "train" in data else next(iter(data.values()))
    if len(split) == 0:
        raise ValueError(f"Dataset {dataset} ({data_dir}) has no images to calibrate on.")
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(split), size=min(count, len(split)), replace=False)
    settings = data_settings(SimpleNamespace(config=config))
    transform = create_transform(settings, "eval")
    images = [transform(split[int(i)]["image"]) for i in sorted(rows)]
    return torch.stack(images).expand(-1, settings.num_channels, -1, -1).numpy().copy()


def _card_section(checks: list[Verification], fused: int, variant: str | None, source: str) -> str:
    import onnxruntime

    rows = "\n".join(
        f"| `onnx/{c.variant}` | {c.images} ({c.image_source}) | {c.max_logit_difference:.2e} | "
        f"{c.max_probability_difference:.4f} | {c.agreement:.4f} | {c.tolerance} |"
        for c in checks
    )
    return f"""{CARD_START}
## ONNX export

Exported from `{source}` by `hf-cxr-mae export` (torch {torch.__version__}, onnxruntime
{onnxruntime.__version__}). Input `pixel_values` (batch, channels, height, width) preprocessed by
`preprocessor_config.json`; output `logits` (batch, labels): sigmoid per finding (multi-label) or
softmax. {fused} attention blocks run as `com.microsoft.MultiHeadAttention`, so the graph needs
ONNX Runtime (CPU). Int8 graphs quantise the MatMul weights (`{FILES[variant]}`{
        ", activation ranges calibrated on the images named below" if variant == "static" else ""
    }).

Checked against the PyTorch model (fp32) before writing; a graph outside its tolerance is refused:

| graph | check images | max logit diff. | max prob. diff. | decisions agreeing | tolerance |
|---|---|--:|--:|--:|---|
{rows}

```python
from hf_cxr_mae.export import OnnxClassifier
model = OnnxClassifier("path/to/this/folder")   # the fastest graph here; model.config: labels
logits = model(pixel_values)                      # torch.Tensor in, torch.Tensor out
```
Or `hf-cxr-mae predict --model path/to/this/folder images/` (Grad-CAM heatmaps need PyTorch).
{CARD_END}
"""


CARD_START, CARD_END = "<!-- onnx-export -->", "<!-- /onnx-export -->"


def _write_card(out_dir: Path, source: str | None, section: str) -> None:
    """The source's card (if any) with the ONNX section added, or replaced when already there."""
    card = out_dir / "README.md"
    text = None
    if card.is_file():
        text = card.read_text(encoding="utf-8")
    elif source and (Path(source) / "README.md").is_file():
        text = (Path(source) / "README.md").read_text(encoding="utf-8")
    if text is None:
        text = f"# {Path(source or 'model').name} (ONNX)\n"
    if CARD_START in text and CARD_END in text:
        before, _, rest = text.partition(CARD_START)
        text = before + rest.partition(CARD_END)[2].lstrip("\n")
    card.write_text(text.rstrip("\n") + "\n\n" + section, encoding="utf-8")


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
            _quantize(work / FILES[None], work / FILES[int8], int8, calibration)
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
    record.update({c.variant: asdict(c) | {"attention_blocks_fused": fused} for c in checks})
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    config.save_pretrained(out_dir)
    _save_processor(model, source, out_dir)
    _write_card(out_dir, source, _card_section(checks, fused, int8, source or type(model).__name__))
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
        from .processing import build_image_processor

        build_image_processor(model.config).save_pretrained(out_dir)


def onnx_files(folder: str | PathLike) -> dict[str | None, Path]:
    """The graphs an exported folder holds, by variant (None: fp32)."""
    onnx_dir = Path(folder) / ONNX_DIR
    return {v: onnx_dir / name for v, name in FILES.items() if (onnx_dir / name).is_file()}


class OnnxClassifier:
    """An exported classifier run by ONNX Runtime on the CPU: ``model(pixel_values) -> logits``
    (torch tensors, float32), ``model.config`` the transformers config of the folder.

    ``variant``: ``None`` picks the fastest graph present (int8 dynamic, int8 static, fp32);
    ``"fp32"``, ``"dynamic"`` or ``"static"`` ask for one. ``threads``: ONNX Runtime's intra-op
    threads (0: one per physical core)."""

    def __init__(
        self, folder: str | PathLike, variant: str | None = None, threads: int = 0
    ) -> None:
        from transformers import AutoConfig

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
        self.path = files[key]
        self.variant = "fp32" if key is None else f"int8 {key}"
        self.config = AutoConfig.from_pretrained(folder)
        self.session = _session(self.path, threads)

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixels = pixel_values.detach().to("cpu", torch.float32).contiguous().numpy()
        (logits,) = self.session.run(["logits"], {"pixel_values": pixels})
        return torch.from_numpy(logits)


def is_onnx_folder(model: str | PathLike) -> bool:
    """An exported folder without PyTorch weights (what ``--backend auto`` runs with ONNX)."""
    folder = Path(model)
    has_weights = any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin"))
    return folder.is_dir() and bool(onnx_files(folder)) and not has_weights
