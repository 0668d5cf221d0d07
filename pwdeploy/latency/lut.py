"""A per-layer-shape latency lookup table for the deploy runtime, built on demand and cached on disk.

Each Conv2d / Linear shape (channels, kernel, stride, padding, groups, input size, batch) is timed once as a
one-layer ONNX model (Conv + ReLU: the runtime fuses the activation, as in the real network) on the runtime
the user deploys to, and stored in a JSON file named by that runtime (ONNX Runtime version, provider, threads,
CPU model and SIMD flags), so later pruning runs on the same machine reuse it.

On a shared machine the load changes from minute to minute, so absolute timings taken at different times do
not add up. Each shape is therefore timed in turn with a fixed reference convolution, and stored as the median
per-run ratio times the reference's time when the table was started: entries stay comparable with each other
whatever the load was when each was taken.
"""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from ..cache_dirs import latency_cache_dir
from ..fsutil import read_json, write_json
from .timing import TimedSession, summarize

METHOD = "ratio-to-reference/3"  # /3: no thread-pool spinning (timing.session_options); /1, /2 were skewed by it
REFERENCE_KEY = "conv:64x64:k3x3:s1x1:p1x1:d1x1:g1:28x28:b1"
DEFAULT_CACHE = latency_cache_dir()


def _cpu_signature() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), platform.machine())
    flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
    simd = sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile"))
    return f"{model} [{' '.join(simd)}]"


def runtime_key(provider: str = "cpu", threads: int | None = None) -> str:
    """What the table's numbers are valid for."""
    return f"onnxruntime {ort.__version__} {provider} threads={threads or 'default'} on {_cpu_signature()}"


def layer_key(module: nn.Module, in_shape: tuple, batch: int) -> str | None:
    """The LUT key of a Conv2d / Linear given its batch-1 input shape; None for other modules."""
    if isinstance(module, nn.Conv2d):
        pad = module.padding if not isinstance(module.padding, str) else \
            tuple(0 if module.padding == "valid" else k // 2 for k in module.kernel_size)
        return ("conv:{}x{}:k{}x{}:s{}x{}:p{}x{}:d{}x{}:g{}:{}x{}:b{}".format(
            module.in_channels, module.out_channels, *module.kernel_size, *module.stride, *pad, *module.dilation,
            module.groups, in_shape[-2], in_shape[-1], batch))
    if isinstance(module, nn.Linear):
        return f"gemm:{module.in_features}x{module.out_features}:b{batch}"
    return None


def _layer_onnx(key: str) -> tuple[bytes, tuple]:
    """A one-layer ONNX model for ``key`` (random weights) and its input shape."""
    rng = np.random.default_rng(0)
    kind, *fields = key.split(":")
    batch = int(fields[-1][1:])
    if kind == "gemm":
        cin, cout = map(int, fields[0].split("x"))
        shape = (batch, cin)
        w = numpy_helper.from_array(rng.standard_normal((cout, cin)).astype(np.float32), "W")
        nodes = [helper.make_node("Gemm", ["x", "W"], ["y"], transB=1)]
        out_shape = [batch, cout]
    else:
        cin, cout = map(int, fields[0].split("x"))
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (tuple(map(int, f[1:].split("x"))) for f in fields[1:5])
        groups = int(fields[5][1:])
        h, w_ = map(int, fields[6].split("x"))
        shape = (batch, cin, h, w_)
        w = numpy_helper.from_array(rng.standard_normal((cout, cin // groups, kh, kw)).astype(np.float32) * 0.05, "W")
        nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], kernel_shape=[kh, kw], strides=[sh, sw],
                                  pads=[ph, pw, ph, pw], dilations=[dh, dw], group=groups),
                 helper.make_node("Relu", ["c"], ["y"])]
        out_shape = None
    inits = [w] + ([numpy_helper.from_array(np.zeros(cout, np.float32), "B")] if kind == "conv" else [])
    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString(), shape


class LatencyLUT:
    """Milliseconds per layer shape on one runtime; measured when first asked, then read from the cache."""

    def __init__(self, cache_dir: str | Path | None = None, *, provider: str = "cpu", threads: int | None = None,
                 min_runs: int = 15, min_seconds: float = 0.05):
        self.provider, self.threads = provider, threads
        self.min_runs, self.min_seconds = min_runs, min_seconds
        self.key = runtime_key(provider, threads)
        name = hashlib.sha256(self.key.encode()).hexdigest()[:16]
        self.path = Path(cache_dir or DEFAULT_CACHE) / f"{name}.json"
        stored = read_json(self.path) if self.path.is_file() else {}
        if stored.get("runtime") != self.key or stored.get("method") != METHOD:
            stored = {}  # another runtime's or an older format's table
        self.table: dict[str, float] = stored.get("layers", {})
        self.reference_ms: float | None = stored.get("reference_ms")
        self.measured = 0  # shapes timed by this object (the rest came from the cache)
        self._dirty = False
        self._reference = None

    def lookup(self, key: str) -> float:
        if key not in self.table:
            self.table[key] = self._measure(key)
            self.measured += 1
            self._dirty = True
        return self.table[key]

    def _session(self, key: str):
        blob, shape = _layer_onnx(key)
        session = TimedSession(blob, threads=self.threads, provider=self.provider)
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        session.run(x)  # first run allocates and picks kernels
        return lambda: session.run(x)

    def _measure(self, key: str) -> float:
        if self._reference is None:
            self._reference = self._session(REFERENCE_KEY)
        if self.reference_ms is None:
            self.reference_ms = summarize([self._reference() for _ in range(max(10, self.min_runs))])["median_ms"]
        run = self._session(key)
        ratios, spent = [], 0.0
        while len(ratios) < self.min_runs or spent < self.min_seconds:
            t, ref = run(), self._reference()
            ratios.append(t / ref)
            spent += t
        return float(np.median(ratios)) * self.reference_ms

    def save(self) -> None:
        if self._dirty:
            write_json(self.path, {"runtime": self.key, "method": METHOD, "reference": REFERENCE_KEY,
                                   "reference_ms": self.reference_ms, "layers": dict(sorted(self.table.items()))})
            self._dirty = False


def layer_keys(model: nn.Module, example_inputs: torch.Tensor, batch: int) -> dict[str, str]:
    """Module name -> LUT key for every Conv2d / Linear, from one forward pass at the example's size."""
    names = {m: n for n, m in model.named_modules()}
    keys: dict[str, str] = {}

    def hook(module, inputs, _output):
        key = layer_key(module, tuple(inputs[0].shape), batch)
        if key is not None:
            keys[names[module]] = key

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model.eval()(example_inputs[:1].to(device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return keys


class LatencyCost:
    """Estimated latency (ms) of a model at ``batch``: the sum of its layers' LUT entries (a pruning cost)."""

    def __init__(self, lut: LatencyLUT, example_inputs: torch.Tensor, batch: int = 1):
        self.lut, self.example_inputs, self.batch = lut, example_inputs, batch

    def per_layer(self, model: nn.Module) -> dict[str, float]:
        keys = layer_keys(model, self.example_inputs, self.batch)
        return {name: self.lut.lookup(key) for name, key in keys.items()}

    def __call__(self, model: nn.Module) -> float:
        total = sum(self.per_layer(model).values())
        self.lut.save()
        return total


def resize_key(key: str, *, cin: int | None = None, cout: int | None = None) -> str:
    """``key`` with other channel counts (a depthwise conv keeps groups == channels)."""
    kind, channels, *rest = key.split(":")
    old_in, old_out = map(int, channels.split("x"))
    new_in, new_out = cin or old_in, cout or old_out
    if kind == "conv":
        groups = int(rest[4][1:])
        if groups > 1 and groups == old_in == old_out:
            new_in = new_out = min(new_in, new_out)
            rest[4] = f"g{new_in}"
    return ":".join([kind, f"{new_in}x{new_out}", *rest])
