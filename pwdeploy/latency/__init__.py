"""Latency on the runtime the user deploys to: end-to-end timing, per-layer profiles, a per-layer-shape lookup
table (cached on disk) and a latency target for pruning. ONNX Runtime CPU here; the same interfaces take the
CUDA provider where a GPU is."""

from .lut import LatencyLUT, LatencyCost, runtime_key
from .timing import TimedSession, profile_ops, time_alternating

__all__ = ["LatencyCost", "LatencyLUT", "TimedSession", "profile_ops", "runtime_key", "time_alternating"]
