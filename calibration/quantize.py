"""Explicit INT8 quantization: a Q/DQ ONNX made with ONNX Runtime's ``quantize_static``.

Settings follow the runtime that executes the model (``ACTIVATIONS``). For TensorRT (trt-int8): QDQ format,
signed INT8 activations and weights, symmetric (zero point 0: TensorRT's only supported scheme), per-channel
weight scales. For ONNX Runtime (onnx-int8): the same weights, but unsigned asymmetric (UINT8) activations:
ONNX Runtime's CPU provider fuses DequantizeLinear -> Conv -> QuantizeLinear into its INT8 QLinearConv (NHWC,
u8 x s8 kernels: VNNI / AMX where the CPU has them) for every conv only with UINT8 activations. With signed
ones, the convs fed by a tensor that a residual Add also reads (the first conv of every ResNet block) stayed
float Convs between Q/DQ pairs: on resnet18 at 218x178, batch 8, ONNX Runtime 1.32 on a VNNI/AMX Xeon, 86 of
the INT8 model's 140 ms kernel time were float convolutions, and the INT8 model ran at 151 ms against 49 ms
with UINT8 activations (docs/guides/speed.md; benchmarks/speedup.py profiles it). ``DedicatedQDQPair`` did not
change that, and per-tensor weight scales were no faster than per-channel.

Weights use 7 bits by default (``reduce_range``, still symmetric with zero point 0, so TensorRT takes them):
ONNX Runtime's x86 INT8 kernels on CPUs without VNNI multiply u8×s8 pairs into saturating 16-bit sums, and
with full 8-bit weights that silently corrupts results. On this project's CI CPU (AVX2, no VNNI) a pruned
SmallCNN lost 17.8 points on one group that way while the same Q/DQ graph, evaluated without the fused
kernels, lost nothing. ``full_range_weights=True`` gives TensorRT-only deployments the last bit back.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

from pwdeploy.errors import PwdeployError

from .provenance import METADATA_KEY

# Activation type per runtime (see above): what the runtime's INT8 kernels take.
ACTIVATIONS = {"onnxruntime": "uint8", "tensorrt": "int8"}
_QUANT_TYPES = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}


def activations_for(runtime: str) -> str:
    """The activation type for models that ``runtime`` executes (signed symmetric where unknown)."""
    return ACTIVATIONS.get(runtime, "int8")

ORT_METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
# Batches per calibration pass: histogram calibrators keep every activation of a pass in memory.
BATCHES_PER_PASS = 4


class IndexedCalibrationReader(CalibrationDataReader):
    """Feeds ``load(i)`` images for the chosen indices in batches; supports ORT's strided (chunked) passes."""

    def __init__(self, load: Callable[[int], np.ndarray], indices: np.ndarray, input_name: str,
                 batch_size: int = 32, on_batch: Callable[[int], None] | None = None):
        self._load, self._input, self._on_batch = load, input_name, on_batch
        idx = np.asarray(indices, dtype=np.int64)
        self._batches = [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
        self.set_range(0, len(self._batches))

    def __len__(self) -> int:
        return len(self._batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._pending = iter(self._batches[start_index:end_index])

    def get_next(self):
        batch = next(self._pending, None)
        if batch is None:
            return None
        if self._on_batch is not None:
            self._on_batch(len(batch))
        return {self._input: np.stack([self._load(int(i)) for i in batch]).astype(np.float32)}


class RecordedRangesOnly:
    """The calibration reader when recorded ranges (``ranges_cache``) are reused: it feeds nothing."""

    def __len__(self) -> int:
        return 0

    def get_next(self):
        return None


def _stride(num_batches: int) -> int:
    """Largest batch count <= BATCHES_PER_PASS dividing ``num_batches`` (ORT requires an exact split)."""
    return max(d for d in range(1, min(BATCHES_PER_PASS, num_batches) + 1) if num_batches % d == 0)


def quantize_int8(fp32_onnx: str | os.PathLike, out_path: str | os.PathLike, reader: IndexedCalibrationReader,
                  *, method: str = "minmax", ranges_cache: str | os.PathLike | None = None,
                  full_range_weights: bool = False, float_nodes: list | None = None,
                  prepared: str | os.PathLike | None = None, activations: str = "int8") -> dict:
    """Write a Q/DQ INT8 model of ``fp32_onnx`` to ``out_path`` (the caller makes it atomic).

    ``ranges_cache``: ORT's JSON of calibrated tensor ranges; reused when present (the caller checks it is
    not stale), written after calibrating otherwise. ``float_nodes``: names of nodes (in the pre-processed
    graph, see ``prepare``) left in float (ORT's ``nodes_to_exclude``): float weights, output not quantized;
    their input keeps the Q/DQ of a quantized op feeding it (e.g. a MaxPool). ``prepared``: an
    already pre-processed copy of ``fp32_onnx`` (saves the pass when quantizing many variants).
    ``activations``: "int8" (symmetric, TensorRT) or "uint8" (asymmetric, ONNX Runtime's fused kernels; see
    ``activations_for``). Returns the settings used.
    """
    if method not in ORT_METHODS:
        raise PwdeployError(f"unknown calibration method {method!r}: use one of {', '.join(ORT_METHODS)}")
    if len(reader) == 0 and not (ranges_cache and Path(ranges_cache).is_file()):
        raise PwdeployError("the calibration set is empty: check the training split of the run's dataset")
    if activations not in _QUANT_TYPES:
        raise PwdeployError(f"unknown INT8 activation type {activations!r}: use one of {', '.join(_QUANT_TYPES)}")
    symmetric = activations == "int8"
    extra = {
        "ActivationSymmetric": symmetric,
        "WeightSymmetric": True,
        "CalibStridedMinMax": _stride(max(1, len(reader))),  # chunked passes (any method), bounded memory
        # Biases stay float: TensorRT's parser rejects INT32 DequantizeLinear (onnx/onnx-tensorrt#850), and ORT
        # still fuses Conv/Gemm into its INT8 kernels (it quantizes a float bias itself).
        "QuantizeBias": False,
    }
    settings = {"format": "QDQ", "activation_type": activations, "weight_type": "int8", "symmetric": symmetric,
                "weight_symmetric": True,
                "per_channel": True, "weight_bits": 8 if full_range_weights else 7, "method": method,
                "bias": "float", "tool": "onnxruntime.quantization.quantize_static"}
    if float_nodes:
        settings["float_nodes"] = list(float_nodes)
    with tempfile.TemporaryDirectory(prefix="pwdeploy-int8-") as tmp:
        if prepared is None:
            prepared = Path(tmp) / "prepared.onnx"
            settings["pre_process"] = prepare(fp32_onnx, prepared)
        else:
            settings["pre_process"] = Path(prepared) != Path(fp32_onnx)
        with _quiet():
            quantize_static(str(prepared), str(out_path), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=not full_range_weights, activation_type=_QUANT_TYPES[activations],
                            weight_type=QuantType.QInt8,
                            calibrate_method=ORT_METHODS[method], extra_options=extra,
                            nodes_to_exclude=list(float_nodes or []) or None,
                            calibration_cache_path=str(ranges_cache) if ranges_cache else None)
    return settings


def prepare(fp32_onnx: str | os.PathLike, out_path: str | os.PathLike) -> bool:
    """ORT's recommended pre-processing (shape inference + graph optimisation) into ``out_path``; node names in
    it are the ones ``float_nodes`` refers to. Falls back to a plain copy (returns False) if the symbolic shape
    pass cannot handle a graph."""
    with _quiet():
        try:
            quant_pre_process(str(fp32_onnx), str(out_path))
            done = True
        except Exception:  # noqa: BLE001 - optional step
            shutil.copyfile(fp32_onnx, out_path)
            done = False
    _name_layers(out_path)
    return done


def _name_layers(path: str | os.PathLike) -> None:
    """Give every unnamed node a unique name: ORT excludes nodes from quantization by name only."""
    model = onnx.load(str(path))
    taken = {node.name for node in model.graph.node if node.name}
    unnamed = [node for node in model.graph.node if not node.name]
    for i, node in enumerate(unnamed):
        name = f"{node.op_type}_{i}"
        while name in taken:
            name += "_"
        node.name = name
        taken.add(name)
    if unnamed:
        onnx.save(model, str(path))


# Op types ORT's QDQ quantizer puts Q/DQ around that carry weights: the layers one can keep in float.
LAYER_OP_TYPES = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def quantizable_layers(prepared_onnx: str | os.PathLike) -> list:
    """Names of the weighted layers (Conv/Gemm/MatMul) of a pre-processed model, in graph order."""
    model = onnx.load(str(prepared_onnx))
    return [node.name for node in model.graph.node if node.op_type in LAYER_OP_TYPES]


def stamp_provenance(path: str | os.PathLike, provenance: dict) -> None:
    """Store the calibration provenance in the model's metadata (``pwdeploy.calibration``), so a copy of the
    file still says which fp32 model its scales belong to."""
    model = onnx.load(str(path))
    for prop in list(model.metadata_props):
        if prop.key == METADATA_KEY:
            model.metadata_props.remove(prop)
    model.metadata_props.add(key=METADATA_KEY, value=json.dumps(provenance, sort_keys=True))
    onnx.save(model, str(path))


@contextlib.contextmanager
def _quiet():
    """The entropy/percentile calibrators print progress to stdout; keep the CLI's output clean."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)  # ORT logs a pre-processing hint through the root logger
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)
