"""Quantize variants of one model with one calibration, some layers left in float, and score each per group.

The sensitivity table and the group-aware mixed precision both ask the same question of many variants: "with
these layers kept in float (no Q/DQ around them), how accurate is each group, against the fp32 model on the
same images?" An ``Int8Probe`` answers it on ONNX Runtime, reusing one set of calibrated ranges (the run's
``calibration_ranges.json``), so every variant differs only in which layers are quantized.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pwdeploy.data import DataSpec, create_dataset
from pwdeploy.errors import DataError
from pwdeploy.gate import check_groups
from pwdeploy.metrics import group_metrics, predict
from pwdeploy.runners import run_batches
from pwdeploy.runners.onnxruntime_runner import OnnxRuntimeRunner
from pwdeploy.verification_set import choose_indices

from .quantize import RecordedRangesOnly, prepare, quantizable_layers, quantize_int8


@dataclass
class ProbeData:
    """Preprocessed images (N×C×H×W float32) with labels and groups: the split the variants are scored on."""

    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    group_names: list
    split: str

    def describe(self) -> dict:
        counts = np.bincount(self.groups, minlength=len(self.group_names))
        return {"split": self.split, "n": int(len(self.labels)),
                "groups": {g: int(c) for g, c in zip(self.group_names, counts)}}


@dataclass
class Score:
    """One variant's per-group result against the fp32 reference on the same images."""

    float_layers: tuple
    metrics: dict  # report schema
    change: dict  # group -> accuracy points vs the fp32 reference (None: group has no samples)
    logit_error: dict  # group -> mean |logit - fp32 logit|: a continuous tie-breaker for small groups
    passed: bool
    failed_groups: list = field(default_factory=list)

    @property
    def worst_group(self) -> str:
        scored = [(v, g) for g, v in self.change.items() if v is not None]
        return min(scored)[1]

    @property
    def worst_change(self) -> float:
        return self.change[self.worst_group]

    def to_dict(self) -> dict:
        return {"float_layers": list(self.float_layers), "metrics": self.metrics, "change_vs_fp32": self.change,
                "logit_error": self.logit_error, "passed": self.passed, "failed_groups": self.failed_groups,
                "worst_group": self.worst_group, "worst_change": self.worst_change}


def score_logits(logits: np.ndarray, reference_logits: np.ndarray, data: ProbeData, *, tolerance: float,
                 float_layers: tuple = ()) -> Score:
    """Per-group accuracy change and logit error of ``logits`` against ``reference_logits``; the gate's check."""
    binary = bool(data.labels.max(initial=0) <= 1)
    metrics = group_metrics(predict(logits), data.labels, data.groups, data.group_names, binary=binary)
    reference = group_metrics(predict(reference_logits), data.labels, data.groups, data.group_names, binary=binary)
    gate = check_groups(metrics, reference, tolerance=tolerance)
    err = np.abs(np.asarray(logits, np.float64) - np.asarray(reference_logits, np.float64)).mean(axis=1)
    change, logit_error = {}, {}
    for g, name in enumerate(data.group_names):
        mask = data.groups == g
        acc, ref = metrics["groups"][name]["accuracy"], reference["groups"][name]["accuracy"]
        change[name] = None if acc is None or ref is None else float(acc - ref)
        logit_error[name] = float(err[mask].mean()) if mask.any() else None
    return Score(tuple(float_layers), metrics, change, logit_error, gate.passed, gate.failed_groups)


class Int8Probe:
    """INT8 variants of ``model_onnx`` with the calibrated ranges in ``ranges``, scored on ``data``.

    ``weight_bits`` 7 or 8 (see pwdeploy.calibration.quantize); ``provider`` the ONNX Runtime provider the variants run
    on (the fp32 reference runs on the same one). Use as a context manager: variants live in a temp folder.
    """

    def __init__(self, model_onnx: str | os.PathLike, ranges: str | os.PathLike, data: ProbeData, *,
                 method: str = "minmax", weight_bits: int = 7, tolerance: float = 2.0, provider: str = "cpu",
                 activations: str = "int8"):
        self.model_onnx, self.ranges, self.data = Path(model_onnx), Path(ranges), data
        self.method, self.full_range, self.tolerance, self.provider = method, weight_bits == 8, tolerance, provider
        self.activations = activations  # pwdeploy.calibration.quantize.ACTIVATIONS: as the exported model
        self._tmp = tempfile.TemporaryDirectory(prefix="pwdeploy-probe-")
        self.prepared = Path(self._tmp.name) / "prepared.onnx"
        prepare(self.model_onnx, self.prepared)
        self.layers = quantizable_layers(self.prepared)
        self.reference_logits = self._run(self.model_onnx)
        self._scores: dict = {}

    def __enter__(self) -> "Int8Probe":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._tmp.cleanup()

    def quantize(self, float_layers, out: str | os.PathLike) -> dict:
        """Write the Q/DQ model with ``float_layers`` left in float to ``out``; returns the settings."""
        unknown = sorted(set(float_layers) - set(self.layers))
        if unknown:
            raise ValueError(f"not a quantizable layer of this model: {unknown[0]}")
        return quantize_int8(self.model_onnx, out, RecordedRangesOnly(), method=self.method,
                             ranges_cache=self.ranges, full_range_weights=self.full_range,
                             float_nodes=sorted(float_layers), prepared=self.prepared, activations=self.activations)

    def score(self, float_layers=()) -> Score:
        """The variant with ``float_layers`` in float, scored per group (cached: variants are deterministic)."""
        key = tuple(sorted(float_layers))
        if key not in self._scores:
            path = Path(self._tmp.name) / "variant.onnx"
            self.quantize(key, path)
            logits = self._run(path)
            self._scores[key] = score_logits(logits, self.reference_logits, self.data, tolerance=self.tolerance,
                                             float_layers=key)
        return self._scores[key]

    def _run(self, path: Path) -> np.ndarray:
        with OnnxRuntimeRunner(path, provider=self.provider) as runner:
            return run_batches(runner, self.data.images, batch_size=256)


def load_split(config: dict, split: str, *, max_samples: int = 2000, seed: int = 0) -> ProbeData:
    """``split`` of the run's dataset, preprocessed (a group-stratified subset above ``max_samples``)."""
    dataset = create_dataset(DataSpec.from_dict(config["data"]), split)
    if len(dataset) == 0:
        raise DataError(f"the {split} split of {dataset.name} is empty: the per-group INT8 analysis needs it "
                        "(check --data-root)")
    shape = tuple(config["input_shape"])
    indices = choose_indices(dataset.groups, len(dataset.group_names), 4 * int(np.prod(shape)), seed=seed,
                             max_samples=max_samples)
    images = np.stack([dataset.load_image(int(i)) for i in indices]).astype(np.float32)
    return ProbeData(images=images, labels=np.asarray(dataset.labels)[indices],
                     groups=np.asarray(dataset.groups)[indices], group_names=list(dataset.group_names), split=split)
