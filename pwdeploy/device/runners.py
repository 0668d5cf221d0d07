"""Runtimes the device verifier can use: TensorRT (Polygraphy, or TensorRT's own bindings) or ONNX Runtime
(pwdeploy.runners' OnnxRuntimeRunner, the same one `pwdeploy verify` and `pwdeploy package` use).

numpy only at import time; each runtime is imported when chosen. Python 3.8 compatible.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Any, Dict, Optional

import numpy as np

from ..runners.base import EngineIncompatible, RunnerError, run_batches  # noqa: F401 - the device's names
from ..runners.onnxruntime_runner import OnnxRuntimeRunner
from .build_engine import ENGINE_NAME, build_engine
from .state import record_engine, recorded_engine, state_dir as state_dir_of


def tensorrt_version() -> Optional[str]:
    try:
        import tensorrt  # noqa: F401
    except Exception:  # ImportError, or a broken install raising OSError on a missing library
        return None
    return str(getattr(tensorrt, "__version__", "unknown"))


class TensorRTRunner:
    """A TensorRT engine through Polygraphy when installed, else TensorRT's Python bindings + libcudart."""

    def __init__(self, engine_path: str, input_name: str, output_name: str):
        self.input_name, self.output_name = input_name, output_name
        self.engine_path = engine_path
        with open(engine_path, "rb") as fh:
            data = fh.read()
        try:
            self._impl = _PolygraphyImpl(data, input_name, output_name)  # type: Any
        except ImportError:
            self._impl = _BindingsImpl(data, input_name, output_name)
        self.description = {"runtime": "tensorrt", "version": tensorrt_version(), "via": self._impl.via,
                            "engine": os.path.basename(engine_path)}

    def run(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._impl.run(np.ascontiguousarray(batch)), dtype=np.float32)

    def close(self) -> None:
        self._impl.close()


class _PolygraphyImpl:
    via = "polygraphy"

    def __init__(self, data: bytes, input_name: str, output_name: str):
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner  # ImportError -> own bindings

        try:
            engine = EngineFromBytes(data)()
        except Exception:  # Polygraphy raises its own exception when TensorRT refuses the plan
            engine = None
        if engine is None:
            raise EngineIncompatible("the engine does not load with this TensorRT/GPU")
        self.runner = TrtRunner(engine)
        self.runner.activate()
        self.input_name, self.output_name = input_name, output_name

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.runner.infer({self.input_name: batch})[self.output_name]

    def close(self) -> None:
        self.runner.deactivate()


class _CudaRuntime:
    """The few libcudart calls inference needs (what Polygraphy does through ctypes, without Polygraphy)."""

    H2D, D2H = 1, 2

    def __init__(self):
        candidates = [ctypes.util.find_library("cudart"), "libcudart.so", "libcudart.so.13", "libcudart.so.12",
                      "/usr/local/cuda/lib64/libcudart.so"]
        self.lib = None
        for name in candidates:
            if not name:
                continue
            try:
                self.lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
        if self.lib is None:
            raise RunnerError("libcudart not found: add /usr/local/cuda/lib64 to LD_LIBRARY_PATH or "
                              "`pip3 install polygraphy`")

    def _ok(self, rc: int, what: str) -> None:
        if rc != 0:
            raise RunnerError("CUDA {} failed with error {}".format(what, rc))

    def malloc(self, nbytes: int) -> int:
        ptr = ctypes.c_void_p()
        self._ok(self.lib.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(max(nbytes, 1))), "cudaMalloc")
        return int(ptr.value)

    def free(self, ptr: int) -> None:
        self.lib.cudaFree(ctypes.c_void_p(ptr))

    def copy(self, dst: int, src: int, nbytes: int, kind: int) -> None:
        self._ok(self.lib.cudaMemcpy(ctypes.c_void_p(dst), ctypes.c_void_p(src), ctypes.c_size_t(nbytes),
                                     ctypes.c_int(kind)), "cudaMemcpy")

    def stream(self) -> int:
        handle = ctypes.c_void_p()
        self._ok(self.lib.cudaStreamCreate(ctypes.byref(handle)), "cudaStreamCreate")
        return int(handle.value or 0)

    def sync(self, stream: int) -> None:
        self._ok(self.lib.cudaStreamSynchronize(ctypes.c_void_p(stream)), "cudaStreamSynchronize")


class _BindingsImpl:
    """TensorRT 10/11 tensor-address API (set_input_shape, set_tensor_address, execute_async_v3)."""

    via = "tensorrt bindings"

    def __init__(self, data: bytes, input_name: str, output_name: str):
        import tensorrt as trt

        self.trt = trt
        self.cuda = _CudaRuntime()
        logger = trt.Logger(trt.Logger.ERROR)
        self.runtime = trt.Runtime(logger)
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise EngineIncompatible("the engine does not load with this TensorRT/GPU")
        self.context = self.engine.create_execution_context()
        self.input_name, self.output_name = input_name, output_name
        self.in_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(input_name)))
        self.out_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(output_name)))
        self.stream = self.cuda.stream()

    def run(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch.astype(self.in_dtype, copy=False))
        self.context.set_input_shape(self.input_name, tuple(x.shape))
        out = np.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=self.out_dtype)
        d_in, d_out = self.cuda.malloc(x.nbytes), self.cuda.malloc(out.nbytes)
        try:
            self.cuda.copy(d_in, x.ctypes.data, x.nbytes, _CudaRuntime.H2D)
            self.context.set_tensor_address(self.input_name, d_in)
            self.context.set_tensor_address(self.output_name, d_out)
            if not self.context.execute_async_v3(self.stream):
                raise RunnerError("TensorRT execute_async_v3 failed")
            self.cuda.sync(self.stream)
            self.cuda.copy(out.ctypes.data, d_out, out.nbytes, _CudaRuntime.D2H)
        finally:
            self.cuda.free(d_in)
            self.cuda.free(d_out)
        return out

    def close(self) -> None:
        self.context = None
        self.engine = None


def select_runner(bundle_dir: str, manifest: Dict[str, Any], runner: str = "auto", *, log=print,
                  build_timeout: float = 3600.0, state_dir: Optional[str] = None, manifest_sha256: str = ""):
    """The runner to verify with and a note on why. 'auto': TensorRT when installed (engine built here when
    missing or not loadable), else ONNX Runtime on the shipped ONNX, said out loud. Only two engines are
    ever loaded: the one the manifest lists (hashed), or one built here into the state folder and recorded
    there (state/engine.json); an engine file anywhere else is never used."""
    if runner not in ("auto", "tensorrt", "onnxruntime"):
        raise RunnerError("--runner must be auto, tensorrt or onnxruntime, got {!r}".format(runner))
    model = manifest["model"]
    model_path = os.path.join(bundle_dir, model["file"])
    trt_version = tensorrt_version()
    if runner == "onnxruntime" or (runner == "auto" and trt_version is None):
        note = "onnxruntime requested" if runner == "onnxruntime" else \
            "TensorRT is not installed here: running the shipped ONNX with ONNX Runtime instead"
        log(note)
        return OnnxRuntimeRunner(model_path, provider="auto", input_name=model["input"]["name"]), note
    if trt_version is None:
        raise RunnerError("--runner tensorrt: the tensorrt Python package is not importable here: install "
                          "TensorRT (JetPack ships it) or use --runner onnxruntime")
    engine = manifest["engine"]
    shipped = engine["file"]
    candidates = []
    if shipped and engine["tensorrt"] == trt_version:
        candidates.append((os.path.join(bundle_dir, shipped), "engine shipped in the bundle"))
    state = state_dir_of(bundle_dir, state_dir)
    built = os.path.join(state, ENGINE_NAME)
    stale = recorded_engine(state, built, trt_version, manifest_sha256) if os.path.lexists(built) else "absent"
    if stale is None:
        candidates.append((built, "engine built earlier on this device"))
    elif stale != "absent":
        log("not using {}: {}: rebuilding".format(built, stale))
    for path, origin in candidates:
        try:
            r = TensorRTRunner(path, model["input"]["name"], model["output"]["name"])
            log("TensorRT {}: using the {} ({})".format(trt_version, origin, os.path.basename(path)))
            return r, origin
        except EngineIncompatible:
            log("the {} does not load with TensorRT {} on this GPU: rebuilding".format(origin, trt_version))
    if shipped and engine["tensorrt"] != trt_version:
        log("the shipped engine was built with TensorRT {}, this device has {}: rebuilding".format(
            engine["tensorrt"], trt_version))
    os.makedirs(state, exist_ok=True)
    path = build_engine(bundle_dir, manifest, engine_path=built, timeout=build_timeout, log=log, state_dir=state)
    record_engine(state, path, trt_version, manifest_sha256)
    note = "engine built on this device with TensorRT {}".format(trt_version)
    log(note)
    return TensorRTRunner(path, model["input"]["name"], model["output"]["name"]), note


def describe(runner) -> Dict[str, Any]:
    return dict(getattr(runner, "description", {}))
