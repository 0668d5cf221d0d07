"""Speed where the model runs: latency and throughput of the shipped model on the runtime that verified it.

After the per-group check, the device verifier times the model at every batch size the bundle declares (its
engine profile: min/opt/max) and every batch a latency budget names, with the shared core
(pwdeploy.latency_core: warm-up, then runs until p50/p90/p99 settle). When the bundle carries the original
model (``package --with-original``) both are timed in turn on the same runtime, so the realized speed-up sits
beside the MAC ratio. Fresh sessions are opened for timing, with ONNX Runtime's thread-pool spinning off,
after the verification session is closed: nothing idles on the cores the timed session needs.

numpy plus one runtime; Python 3.8 compatible; no torch.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..latency_core import Settings, batch_of, time_pair, time_until_stable
from ..latency_gate import STATISTIC, BudgetCheck, batches_to_time, check_latency
from ..runners.onnxruntime_runner import OnnxRuntimeRunner
from ..runners.tensorrt_runner import TensorRTRunner

DEFAULT_SECONDS = 20.0  # the whole timing, all batches and sides together
_PROVIDERS = {"CPUExecutionProvider": "cpu", "CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "tensorrt"}


def declared_batches(manifest: Dict[str, Any]) -> List[int]:
    engine = manifest["engine"]
    return batches_to_time(manifest.get("latency"), [engine["min_batch"], engine["opt_batch"], engine["max_batch"]])


def _ort_opener(path: str, provider: str, input_name: Optional[str]) -> Callable[[], Any]:
    return lambda: OnnxRuntimeRunner(path, provider=provider, input_name=input_name, spinning=False)


def _openers(bundle_dir: str, manifest: Dict[str, Any], runtime: Dict[str, Any], engine_path: Optional[str]):
    """(open the shipped model, open the original or None, why the original is not timed or None)."""
    model = manifest["model"]
    original = (manifest.get("latency") or {}).get("original")
    if runtime.get("runtime") == "tensorrt" and engine_path:
        opener = lambda: TensorRTRunner(engine_path, model["input"]["name"], model["output"]["name"])  # noqa: E731
        why = "not timed: the original is timed on ONNX Runtime only (no TensorRT engine of it is built)" \
            if original else None
        return opener, None, why
    provider = _PROVIDERS.get(str(runtime.get("provider")), "cpu")
    opener = _ort_opener(os.path.join(bundle_dir, model["file"]), provider, model["input"]["name"])
    if not original:
        return opener, None, "the bundle has no original model (package --with-original)"
    return opener, _ort_opener(os.path.join(bundle_dir, original), provider, model["input"]["name"]), None


def measure_speed(bundle_dir: str, manifest: Dict[str, Any], images: np.ndarray, runtime: Dict[str, Any], *,
                  engine_path: Optional[str] = None, seconds: float = DEFAULT_SECONDS,
                  log: Callable[[str], None] = print) -> Dict[str, Any]:
    """The bundle's speed record: per batch, the model's (and the original's) latency and the speed-up."""
    open_model, open_original, why = _openers(bundle_dir, manifest, runtime, engine_path)
    limit = manifest["engine"]["max_batch"] if runtime.get("runtime") == "tensorrt" else None
    speed = time_models(open_model, open_original, images, declared_batches(manifest), seconds, max_batch=limit,
                        log=log)
    flops = manifest["model"].get("flops_reduction")
    speed["runtime"] = speed["runtime"] or dict(runtime)
    speed["macs_speedup"] = (1.0 / (1.0 - float(flops))) if isinstance(flops, (int, float)) and flops < 1 else None
    speed["original_note"] = why
    return speed


def time_models(open_model: Callable[[], Any], open_original: Optional[Callable[[], Any]], images: np.ndarray,
                batches: List[int], seconds: float, *, max_batch: Optional[int] = None,
                log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Time the runner ``open_model()`` opens (alternated with ``open_original()``'s when given) at each batch,
    ``seconds`` in all; the runners live only while timed. Used by the device verifier and `pwdeploy verify`."""
    sides = 2 if open_original else 1
    per_side = max(0.2, float(seconds) / (len(batches) * sides))
    settings = Settings(max_seconds=per_side, min_seconds=min(0.2, per_side))
    started = time.time()
    rows = []
    model_runner = open_model()
    original_runner = open_original() if open_original else None
    try:
        for batch in batches:
            if max_batch is not None and batch > max_batch:
                log("speed: batch {} is above the engine's max batch {}: not timed".format(batch, max_batch))
                continue
            rows.append(_time_batch(model_runner, original_runner, batch_of(images, batch), batch, settings))
    finally:
        model_runner.close()
        if original_runner is not None:
            original_runner.close()
    return {"method": settings.method(), "statistic": STATISTIC, "spinning": "off",
            "runtime": dict(getattr(model_runner, "description", {})), "batches": rows,
            "seconds": round(time.time() - started, 3)}


def time_onnx(model: str, original: Optional[str], images: np.ndarray, batches: List[int], seconds: float,
              provider: str = "auto") -> Dict[str, Any]:
    """`pwdeploy verify`'s timing of an ONNX artifact (and the run's original.onnx), with the device's code."""
    return time_models(_ort_opener(model, provider, None), _ort_opener(original, provider, None) if original else None,
                       images, batches, seconds)


def timed_and_gated(bundle_dir: str, manifest: Dict[str, Any], images: np.ndarray, verified_with, seconds: float,
                    log: Callable[[str], None]) -> Tuple[Optional[Dict[str, Any]], List[BudgetCheck]]:
    """(speed record or None when ``seconds`` is 0, the manifest's latency budgets checked against it).
    ``verified_with``: the (closed) runner that verified the bundle: its runtime, and its engine, are timed."""
    speed = None if seconds <= 0 else measure_speed(
        bundle_dir, manifest, images, dict(getattr(verified_with, "description", {})),
        engine_path=verified_with.path if getattr(verified_with, "kind", "") == "tensorrt" else None,
        seconds=seconds, log=log)
    return speed, check_latency(manifest.get("latency"), speed)


def _time_batch(model_runner, original_runner, x: np.ndarray, batch: int, settings: Settings) -> Dict[str, Any]:
    if original_runner is None:
        stats = time_until_stable(lambda: model_runner.run(x), batch, settings)
        return {"batch": batch, "model": stats.to_dict(), "original": None, "speedup": None}
    pair = time_pair(lambda: original_runner.run(x), lambda: model_runner.run(x), batch, settings)
    return {"batch": batch, "model": pair["b"].to_dict(), "original": pair["a"].to_dict(),
            "speedup": round(pair["speedup"], 4), "speedup_p25": round(pair["speedup_p25"], 4),
            "speedup_p75": round(pair["speedup_p75"], 4)}


def summary_lines(speed: Dict[str, Any]) -> List[str]:
    """The verifier's latency lines: p50/p90/p99 and throughput per batch, the speed-up beside the MAC ratio."""
    runtime = speed["runtime"]
    where = "{} {}".format(runtime.get("runtime", "?"), runtime.get("provider") or runtime.get("via") or "").strip()
    macs = ", MACs {:.2f}x fewer".format(speed["macs_speedup"]) if speed.get("macs_speedup") else ""
    lines = ["latency on {} ({:.1f} s of timing{}):".format(where, speed["seconds"], macs)]
    for row in speed["batches"]:
        m = row["model"]
        text = "  batch {:>3}: p50 {:.3f} ms, p90 {:.3f} ms, p99 {:.3f} ms, {:.0f} images/s".format(
            row["batch"], m["p50_ms"], m["p90_ms"], m["p99_ms"], m["throughput_ips"])
        if row.get("speedup") is not None:
            text += "; {:.2f}x the original ({:.3f} ms)".format(row["speedup"], row["original"]["p50_ms"])
        lines.append(text + ("" if m["stable"] else " (not settled within the time allowed)"))
    if speed.get("original_note"):
        lines.append("  speed-up: {}".format(speed["original_note"]))
    return lines
