"""End-to-end ONNX Runtime timing (sides alternated in one process) and per-node profiles.

Timing on a shared machine is noisy: the sides are run in turn (A, B, A, B, ...) so that load changes hit both,
and medians with the interquartile spread are reported. Thread-pool spinning is off in every timed session:
otherwise the side that just ran keeps its threads spinning on the cores the other side needs.
"""

from __future__ import annotations

import collections
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..latency_core import ORT_NO_SPIN

PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def session_options(threads: int | None, profile_prefix: str | None = None):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Sessions timed in turn in one process: with spinning on, the idle session's pool keeps spinning on the
    # cores the timed one needs (resnet18 b8 on 2 cores: 2.4x measured instead of 3.6x, and LUT entries off by
    # up to 100x). A deployed model runs alone, so this timing is the one that predicts it.
    options.add_session_config_entry(*ORT_NO_SPIN)
    if threads:
        options.intra_op_num_threads = int(threads)
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return options


class TimedSession:
    """One ONNX model (path or serialized bytes) ready to time on a fixed input."""

    def __init__(self, model, *, threads: int | None = None, provider: str = "cpu", profile_prefix: str | None = None):
        source = str(model) if isinstance(model, (str, Path)) else model
        self.session = ort.InferenceSession(source, sess_options=session_options(threads, profile_prefix),
                                            providers=PROVIDERS[provider])
        self.input_name = self.session.get_inputs()[0].name

    def run(self, x: np.ndarray) -> float:
        """Seconds for one run."""
        t0 = time.perf_counter()
        self.session.run(None, {self.input_name: x})
        return time.perf_counter() - t0


def summarize(times: list[float]) -> dict:
    q = np.percentile(np.asarray(times) * 1000, [25, 50, 75])
    return {"median_ms": float(q[1]), "p25_ms": float(q[0]), "p75_ms": float(q[2]), "runs": len(times)}


def time_alternating(sessions: dict, x: np.ndarray, *, rounds: int = 20, warmup: int = 2,
                     min_seconds: float = 0.0) -> dict:
    """Median latency of each session on ``x``, the sides taken in turn; also each side's ratio against the
    first side measured round by round (median and spread), which cancels most of the shared-load noise."""
    for s in sessions.values():
        for _ in range(warmup):
            s.run(x)
    times = {name: [] for name in sessions}
    start = time.perf_counter()
    while len(next(iter(times.values()))) < rounds or time.perf_counter() - start < min_seconds:
        for name, s in sessions.items():
            times[name].append(s.run(x))
    first = next(iter(times))
    out = {}
    for name, t in times.items():
        ratios = [a / b for a, b in zip(times[first], t)]  # speed-up of ``name`` over the first side, per round
        out[name] = {**summarize(t), "speedup_median": statistics.median(ratios),
                     "speedup_p25": float(np.percentile(ratios, 25)), "speedup_p75": float(np.percentile(ratios, 75))}
    return out


def profile_ops(model, x: np.ndarray, *, threads: int | None = None, runs: int = 10) -> dict:
    """Per-node kernel time (median µs over ``runs``) from ONNX Runtime's profiler, keyed by node name, with
    its op type, after the runtime's own graph rewrites (so fused and NCHWc-converted convs show as such)."""
    with tempfile.TemporaryDirectory(prefix="pwdeploy-prof-") as tmp:
        s = TimedSession(model, threads=threads, profile_prefix=os.path.join(tmp, "ort"))
        for _ in range(3 + runs):
            s.run(x)
        events = json.loads(Path(s.session.end_profiling()).read_text())
    per_node = collections.defaultdict(list)
    ops = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            name = e["name"][: -len("_kernel_time")]
            per_node[name].append(e["dur"])
            ops[name] = e.get("args", {}).get("op_name", "?")
    return {name: {"op": ops[name], "us": statistics.median(d[-runs:])} for name, d in per_node.items()}


def by_op(profile: dict) -> dict:
    """Total µs per op type of a profile_ops result, largest first."""
    totals = collections.Counter()
    for node in profile.values():
        totals[node["op"]] += node["us"]
    return dict(totals.most_common())
