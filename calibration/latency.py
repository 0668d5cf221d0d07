"""What keeping layers in float costs: ONNX Runtime latency of several models, measured in alternation.

Each round runs every model once on the same input, so a slow moment of a shared machine hits all of them; the
result is each model's median and its ratio to the first model. TensorRT timings come from the device.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

from pwdeploy.runners.onnxruntime_runner import OnnxRuntimeRunner


def compare_latency(models: dict, input_shape: tuple, *, batch: int = 1, rounds: int = 50, warmup: int = 5,
                    provider: str = "cpu", threads: int | None = None) -> dict:
    """``models``: label -> ONNX path. Returns ``{label: {"median_ms", "ratio"}}`` plus the settings used; ratios
    are against the first label."""
    x = np.random.default_rng(0).standard_normal((batch, *input_shape)).astype(np.float32)
    runners = {label: OnnxRuntimeRunner(path, provider=provider, threads=threads) for label, path in models.items()}
    times = {label: [] for label in runners}
    for i in range(warmup + rounds):
        for label, runner in runners.items():
            t0 = time.perf_counter()
            runner.run(x)
            if i >= warmup:
                times[label].append(time.perf_counter() - t0)
    medians = {label: 1000.0 * statistics.median(t) for label, t in times.items()}
    first = next(iter(medians.values()))
    out = {label: {"median_ms": ms, "ratio": ms / first if first else None} for label, ms in medians.items()}
    return {"runtime": "onnxruntime", "provider": provider, "batch": batch, "rounds": rounds,
            "threads": threads or os.cpu_count(), "relative_to": next(iter(models)), "models": out}
