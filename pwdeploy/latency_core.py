"""Latency timing shared by the host and the device: warm-up, then runs until p50/p90/p99 settle.

numpy only, Python 3.8 compatible: bundles ship this file, and the device verifier and `pwdeploy verify` call
the same functions. A "run" is a callable that runs one batch to completion (outputs copied back), so the
numbers are what the application sees. Two rules from the speed benchmarks:
- nothing else spins while one side is timed: ONNX Runtime sessions are made with thread-pool spinning off
  (``ORT_NO_SPIN``, which the ONNX Runtime runner and pwdeploy.latency.timing set), and only the sessions being timed exist;
- a ratio (the realized speed-up) comes from the two sides run in turn in one process, round by round, so a
  load change on a shared machine hits both.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional

import numpy as np

METHOD = "warm-up, then runs until p50/p90/p99 move less than {tol:.0%} between checks (p99: twice that)"
ORT_NO_SPIN = ("session.intra_op.allow_spinning", "0")  # the session config entry timed ORT sessions set


@dataclass
class Settings:
    """How long to time one side: at least ``min_runs`` and ``min_seconds``, at most ``max_runs`` or
    ``max_seconds`` (whichever comes first); percentiles are compared every ``check_every`` runs."""
    warmup: int = 5
    min_runs: int = 30
    max_runs: int = 5000
    min_seconds: float = 0.2
    max_seconds: float = 5.0
    check_every: int = 25
    rel_tol: float = 0.05

    def method(self) -> str:
        return METHOD.format(tol=self.rel_tol)


@dataclass
class LatencyStats:
    batch: int
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput_ips: float  # images per second at this batch size
    stable: bool  # False: stopped by max_runs/max_seconds before the percentiles settled

    def to_dict(self) -> Dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _percentiles(times: List[float]) -> np.ndarray:
    return np.percentile(np.asarray(times) * 1000.0, [50, 90, 99])


def _settled(before: np.ndarray, now: np.ndarray, tol: float) -> bool:
    limits = np.array([tol, tol, 2 * tol])
    return bool(np.all(np.abs(now - before) <= limits * np.maximum(before, 1e-9)))


def stats_of(times: List[float], batch: int, stable: bool) -> LatencyStats:
    p50, p90, p99 = (float(v) for v in _percentiles(times))
    mean = float(np.mean(times) * 1000.0)
    return LatencyStats(batch=batch, runs=len(times), p50_ms=p50, p90_ms=p90, p99_ms=p99, mean_ms=mean,
                        throughput_ips=float(batch * 1000.0 / mean) if mean > 0 else 0.0, stable=stable)


def time_until_stable(run: Callable[[], object], batch: int, settings: Optional[Settings] = None) -> LatencyStats:
    """Latency of ``run()`` (one batch of ``batch`` images): ``warmup`` untimed runs, then timed runs until
    two checks in a row find p50/p90/p99 settled, or a limit is reached."""
    s = settings or Settings()
    for _ in range(s.warmup):
        run()
    times = []  # type: List[float]
    start = time.perf_counter()
    last, calm = None, 0
    while len(times) < s.max_runs and time.perf_counter() - start < s.max_seconds:
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
        if len(times) < s.min_runs or len(times) % s.check_every or time.perf_counter() - start < s.min_seconds:
            continue
        now = _percentiles(times)
        calm = calm + 1 if last is not None and _settled(last, now, s.rel_tol) else 0
        last = now
        if calm >= 2:
            return stats_of(times, batch, True)
    return stats_of(times, batch, False)


def time_pair(run_a: Callable[[], object], run_b: Callable[[], object], batch: int,
              settings: Optional[Settings] = None) -> Dict:
    """Both sides in turn (a, b, a, b, ...): each side's latency and the speed-up of ``b`` over ``a`` per round
    (median and interquartile range), which cancels most of a shared machine's load changes."""
    s = settings or Settings()
    for _ in range(s.warmup):
        run_a()
        run_b()
    ta, tb = [], []  # type: List[float]
    start = time.perf_counter()
    last, calm = None, 0
    while len(ta) < s.max_runs and time.perf_counter() - start < 2 * s.max_seconds:
        for run, times in ((run_a, ta), (run_b, tb)):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        if len(ta) < s.min_runs or len(ta) % s.check_every or time.perf_counter() - start < 2 * s.min_seconds:
            continue
        now = np.concatenate([_percentiles(ta), _percentiles(tb)])
        calm = calm + 1 if last is not None and _settled(last.reshape(2, 3)[0], now[:3], s.rel_tol) \
            and _settled(last.reshape(2, 3)[1], now[3:], s.rel_tol) else 0
        last = now
        if calm >= 2:
            break
    ratios = np.asarray(ta) / np.asarray(tb)
    return {"a": stats_of(ta, batch, calm >= 2), "b": stats_of(tb, batch, calm >= 2),
            "speedup": float(np.median(ratios)), "speedup_p25": float(np.percentile(ratios, 25)),
            "speedup_p75": float(np.percentile(ratios, 75)), "rounds": len(ta)}


def batch_of(images: np.ndarray, batch: int) -> np.ndarray:
    """A ``batch``-image input made of real verification images (repeated when there are fewer)."""
    if len(images) == 0:
        raise ValueError("no images to time with")
    reps = -(-batch // len(images))
    return np.ascontiguousarray(np.concatenate([images] * reps)[:batch], dtype=np.float32)
