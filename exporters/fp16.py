"""fp16 ONNX with onnxconverter-common's float16 converter, numerically sensitive ops kept in fp32.

The result (``model.fp16.onnx``) is what TensorRT 11 builds directly (networks are strongly typed: the
precision comes from the ONNX), and what TensorRT 10 builds with ``--fp16``.
"""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper
from onnxconverter_common import float16

# Ops whose fp16 results drift or overflow: normalisations (variance), exponentials and reductions over
# many elements. They stay fp32 with Casts around them; convolutions and GEMMs, where the speed is, go fp16.
SENSITIVE_OPS = [
    "BatchNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization",
    "Softmax", "LogSoftmax", "Exp", "Log", "Pow", "Sqrt", "Reciprocal", "Erf",
    "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp", "ReduceProd",
]
FP16_MAX = float(np.finfo(np.float16).max)


def convert_fp16(src: str | os.PathLike, dst: str | os.PathLike, *, keep_io_types: bool = True,
                 extra_block_list: list[str] | None = None) -> dict:
    """Convert the fp32 ONNX ``src`` to fp16 at ``dst`` (caller makes it atomic); inputs/outputs stay fp32
    by default so the same preprocessing and postprocessing apply. Returns what was done."""
    model = onnx.load(str(src))
    block = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(SENSITIVE_OPS) | set(extra_block_list or []))
    out_of_range = _count_out_of_range(model)
    converted = float16.convert_float_to_float16(model, keep_io_types=keep_io_types, op_block_list=block)
    onnx.checker.check_model(converted)
    onnx.save(converted, str(dst))
    kept = Counter(n.op_type for n in model.graph.node if n.op_type in block)
    return {
        "tool": "onnxconverter_common.float16.convert_float_to_float16",
        "keep_io_types": keep_io_types,
        "kept_fp32_ops": dict(sorted(kept.items())),
        # weights beyond fp16 range are clamped by the converter; a non-zero count is worth a look
        "weights_out_of_fp16_range": out_of_range,
    }


def _count_out_of_range(model) -> int:
    count = 0
    for init in model.graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            count += int((np.abs(numpy_helper.to_array(init)) > FP16_MAX).sum())
    return count
