"""Static check that a Q/DQ ONNX is what TensorRT 10/11 explicit quantization accepts, without TensorRT.

TensorRT takes symmetric INT8 only: every QuantizeLinear / DequantizeLinear has a zero point of 0 (or none)
and a positive, finite, constant scale; pre-quantized weights are INT8 in [-127, 127] feeding a
DequantizeLinear; a DequantizeLinear's input must be INT8 (INT32 bias DequantizeLinear nodes, which ONNX
Runtime writes unless ``QuantizeBias`` is off, are rejected by TensorRT's parser: onnx/onnx-tensorrt#850); and a
QuantizeLinear's consumers that dequantize must use the same scale and zero point (a Q/DQ pair is one
quantization, not two). Layers without Q/DQ around them run in float, which TensorRT accepts as they are.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import numpy_helper

from pwdeploy.calibration.quantize import LAYER_OP_TYPES
from pwdeploy.errors import PwdeployError


class QdqCheckError(PwdeployError):
    """The Q/DQ model would be rejected (or silently mis-built) by TensorRT."""


def check_qdq_for_tensorrt(path: str | os.PathLike) -> dict:
    """Raise QdqCheckError naming the first problems; return a summary (counts, quantized and float layers)."""
    model = onnx.load(str(path))
    consts = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:  # Constant nodes hold values too
        if node.op_type == "Constant" and node.attribute and node.attribute[0].HasField("t"):
            consts[node.output[0]] = node.attribute[0].t
    values = {}

    def value(name):
        if name not in values:
            values[name] = numpy_helper.to_array(consts[name]) if name in consts else None
        return values[name]

    problems, q_nodes, dq_nodes = [], [], []
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            (q_nodes if node.op_type == "QuantizeLinear" else dq_nodes).append(node)
            problems += _check_params(node, value)
    producers = {out: node for node in model.graph.node for out in node.output}
    for dq in dq_nodes:
        source = producers.get(dq.input[0])
        if source is not None and source.op_type == "QuantizeLinear" and not _same_params(source, dq, value):
            problems.append(f"{dq.name or dq.output[0]}: scale/zero point differ from its QuantizeLinear "
                            f"{source.name or source.output[0]}")
        elif source is None:
            weights = value(dq.input[0])
            if weights is not None and weights.dtype != np.int8:
                problems.append(f"{dq.name or dq.output[0]}: dequantizes a {weights.dtype} constant; TensorRT takes "
                                "INT8 only (quantize with QuantizeBias off)")
            elif weights is not None and weights.size and int(weights.min()) < -127:
                problems.append(f"{dq.name or dq.output[0]}: INT8 weights reach -128; TensorRT needs [-127, 127]")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise QdqCheckError(f"{os.path.basename(str(path))} is not a Q/DQ model TensorRT accepts: "
                            + "; ".join(problems[:3]) + more + ": re-export it with 'pwdeploy export RUN --target "
                            "trt-int8'")
    dequantized = {dq.output[0] for dq in dq_nodes}
    layers = [n for n in model.graph.node if n.op_type in LAYER_OP_TYPES]
    quantized = [n.name for n in layers if len(n.input) > 1 and n.input[1] in dequantized]  # by their weights
    return {"tensorrt_compatible": True, "quantize_nodes": len(q_nodes), "dequantize_nodes": len(dq_nodes),
            "quantized_layers": quantized, "float_layers": [n.name for n in layers if n.name not in quantized],
            "checked": "symmetric INT8 (zero points 0), positive scales, INT8 weights in [-127, 127], no INT32 "
                       "DequantizeLinear, matching Q/DQ pairs"}


def _check_params(node, value) -> list:
    name = node.name or node.output[0]
    scale = value(node.input[1]) if len(node.input) > 1 else None
    problems = []
    if scale is None:
        problems.append(f"{name}: its scale is not a constant")
    elif not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
        problems.append(f"{name}: scale not positive and finite")
    zero_point = value(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if len(node.input) > 2 and node.input[2] and zero_point is None:
        problems.append(f"{name}: its zero point is not a constant")
    elif zero_point is not None and (zero_point.dtype != np.int8 or np.any(zero_point != 0)):
        problems.append(f"{name}: zero point {zero_point.dtype} {zero_point.ravel()[:3].tolist()} (TensorRT needs "
                        "INT8 zero points of 0)")
    return problems


def _same_params(q, dq, value) -> bool:
    def params(node):
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        zp = value(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        return value(node.input[1]), zp, axis

    (s1, z1, a1), (s2, z2, a2) = params(q), params(dq)
    same_zero = (z1 is None and z2 is None) or (z1 is not None and z2 is not None and np.array_equal(z1, z2))
    return s1 is not None and s2 is not None and np.array_equal(s1, s2) and same_zero and (a1 == a2 or s1.size == 1)
