"""The one TensorRT engine runner, host and device: Polygraphy's TrtRunner when installed, else TensorRT's own
Python bindings with a few libcudart calls (a Jetson often has TensorRT but not Polygraphy).

Portable core: numpy only at import, Python 3.8 compatible; TensorRT and Polygraphy are imported when an
engine is loaded. `pwdeploy verify` and the device verifier (bundles ship this file) use this class.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Any, Optional

import numpy as np

from .base import EngineIncompatible, Runner, RunnerError
from .gpu import gpu_info


def tensorrt_version() -> Optional[str]:
    """The installed TensorRT's version, or None when its Python package does not import."""
    try:
        import tensorrt
    except Exception:  # ImportError, or a broken install raising OSError on a missing library
        return None
    return str(getattr(tensorrt, "__version__", "unknown"))


class TensorRTRunner(Runner):
    """Runs a serialized TensorRT engine. ``input_name``/``output_name`` default to the engine's first input
    and output tensor."""

    kind = "tensorrt"

    def __init__(self, path: str | os.PathLike, input_name: Optional[str] = None,
                 output_name: Optional[str] = None):
        self.path = str(path)
        name = os.path.basename(self.path)
        if not os.path.isfile(self.path):
            raise RunnerError("engine file not found: {}".format(self.path))
        self._trt_version = tensorrt_version()
        if self._trt_version is None:
            raise RunnerError("running {} needs TensorRT and polygraphy (or TensorRT's own bindings): run verify "
                              "on the device the engine was built for, or verify the ONNX it was built "
                              "from".format(name))
        with open(self.path, "rb") as fh:
            data = fh.read()
        try:
            self._impl = _PolygraphyImpl(data)  # type: Any
        except ImportError:
            self._impl = _BindingsImpl(data)
        names = _io_names(self._impl.engine)
        self.input_name = input_name or names[0]
        self.output_name = output_name or names[1]
        self.max_batch = _profile_max_batch(self._impl.engine, self.input_name)
        self.description = {"runtime": "tensorrt", "version": self._trt_version, "via": self._impl.via,
                            "engine": name}

    def run(self, batch: np.ndarray) -> np.ndarray:
        out = self._impl.run(np.ascontiguousarray(batch, dtype=np.float32), self.input_name, self.output_name)
        return np.array(out, dtype=np.float32, copy=True)  # TrtRunner reuses its output buffers

    def describe(self) -> dict:
        return {"runner": self.kind, "tensorrt_version": self._trt_version, "device": "cuda", "gpu": gpu_info()}

    def close(self) -> None:
        impl = getattr(self, "_impl", None)
        if impl is not None:
            impl.close()


def _incompatible(exc: Optional[BaseException] = None) -> EngineIncompatible:
    detail = " ({})".format(exc) if exc is not None else ""
    return EngineIncompatible("TensorRT {} cannot load the engine{}: engines only run with the TensorRT version "
                              "and GPU they were built on; rebuild it here".format(tensorrt_version(), detail))


def _io_names(engine) -> tuple:
    """(first input, first output) tensor names of a TensorRT 10+ engine."""
    import tensorrt as trt

    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    return inputs[0], outputs[0]


def _profile_max_batch(engine, input_name: str) -> Optional[int]:
    """The largest batch the engine's first optimization profile accepts (None: a static batch)."""
    if engine.num_optimization_profiles > 0 and -1 in tuple(engine.get_tensor_shape(input_name)):
        return int(engine.get_tensor_profile_shape(input_name, 0)[2][0])
    return None


class _PolygraphyImpl:
    via = "polygraphy"

    def __init__(self, data: bytes):
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner  # ImportError -> own bindings

        try:
            self.engine = EngineFromBytes(data)()
        except Exception as exc:  # noqa: BLE001 - Polygraphy raises its own types when TensorRT refuses the plan
            raise _incompatible(exc) from exc
        if self.engine is None:
            raise _incompatible()
        self.runner = TrtRunner(self.engine)
        self.runner.activate()

    def run(self, batch: np.ndarray, input_name: str, output_name: str) -> np.ndarray:
        return self.runner.infer({input_name: batch})[output_name]

    def close(self) -> None:
        if self.runner.is_active:
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

    def __init__(self, data: bytes):
        import tensorrt as trt

        self.trt = trt
        self.cuda = _CudaRuntime()
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise _incompatible()
        self.context = self.engine.create_execution_context()
        self.stream = self.cuda.stream()

    def run(self, batch: np.ndarray, input_name: str, output_name: str) -> np.ndarray:
        in_dtype = np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(input_name)))
        out_dtype = np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(output_name)))
        x = np.ascontiguousarray(batch.astype(in_dtype, copy=False))
        self.context.set_input_shape(input_name, tuple(x.shape))
        out = np.empty(tuple(self.context.get_tensor_shape(output_name)), dtype=out_dtype)
        d_in, d_out = self.cuda.malloc(x.nbytes), self.cuda.malloc(out.nbytes)
        try:
            self.cuda.copy(d_in, x.ctypes.data, x.nbytes, _CudaRuntime.H2D)
            self.context.set_tensor_address(input_name, d_in)
            self.context.set_tensor_address(output_name, d_out)
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
