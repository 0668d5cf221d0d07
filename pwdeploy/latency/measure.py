"""Measured end-to-end latency of a PyTorch model on the deploy runtime, against the original, alternately."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from torch import nn

from pwdeploy.exporters.onnx_export import export_onnx

from .timing import TimedSession, time_alternating


def measure_pair(original, pruned, input_shape: tuple, *, batch: int = 1, threads: int | None = None,
                 rounds: int = 20, provider: str = "cpu") -> dict:
    """Latency of ``original`` and ``pruned`` (nn.Modules or ONNX paths) at ``batch``, timed in turn.

    ``pruned_ms`` is the original's median divided by the median per-round speed-up: on a shared machine the
    per-round ratio is steadier than two separate medians.
    """
    with tempfile.TemporaryDirectory(prefix="pwdeploy-lat-") as tmp:
        paths = [_as_onnx(m, Path(tmp) / f"{side}.onnx", input_shape) for side, m in
                 (("original", original), ("pruned", pruned))]
        sessions = {side: TimedSession(p, threads=threads, provider=provider)
                    for side, p in zip(("original", "pruned"), paths)}
        x = np.random.default_rng(0).standard_normal((batch, *input_shape)).astype(np.float32)
        timed = time_alternating(sessions, x, rounds=rounds)
    orig, pr = timed["original"], timed["pruned"]
    return {"batch": batch, "threads": threads, "provider": provider, "rounds": rounds,
            "original_ms": orig["median_ms"], "pruned_ms": orig["median_ms"] / pr["speedup_median"],
            "speedup": pr["speedup_median"], "speedup_p25": pr["speedup_p25"], "speedup_p75": pr["speedup_p75"],
            "pruned_median_ms": pr["median_ms"]}


def _as_onnx(model, path: Path, input_shape: tuple) -> Path:
    if isinstance(model, nn.Module):
        return export_onnx(model, path, tuple(input_shape))
    return Path(model)
