"""Graph rewriting and int8 quantisation of an exported classifier (ONNX, ONNX Runtime).

Speed choices, each measured on a 2-core AVX-512-VNNI CPU (batch 32, ViT-S): the graph is exported
with plain (mask-free) attention maths, whose ``Softmax`` blocks are then replaced by ONNX
Runtime's fused ``com.microsoft.MultiHeadAttention`` (fewer transposes and copies); only ``MatMul``
weights are quantised (an int8 ``ConvInteger`` patch embedding is several times slower than the
fp32 ``Conv``); ``onnxruntime.transformers`` fusions (SkipLayerNormalization, BiasGelu) are not
used: on this CPU they were slower than ONNX Runtime's own kernels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


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


def quantize(src: Path, dst: Path, mode: str, calibration: np.ndarray | None) -> None:
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
