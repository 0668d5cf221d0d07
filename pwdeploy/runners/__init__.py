"""Runners: one interface (``run(batch) -> logits``) over PyTorch, ONNX Runtime and TensorRT engines.

Each backend is imported only when its runner is created, so verifying an ONNX needs onnxruntime and
numpy alone (no torch).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import PwdeployError
from ..names import ENGINE_SUFFIXES
from .base import Runner, run_batches

RUNNER_KINDS = ("auto", "onnxruntime", "tensorrt", "torch")


def runner_for_suffix(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return "onnxruntime"
    if suffix in ENGINE_SUFFIXES:
        return "tensorrt"
    if suffix in (".pt", ".pth"):
        return "torch"
    raise PwdeployError(f"cannot tell how to run {Path(path).name}: pass a .onnx, .plan/.engine or .pt file")


def create_runner(path: str | Path, kind: str = "auto", *, provider: str = "auto", device: str = "auto") -> Runner:
    """A runner for the artifact at ``path``. ``kind`` auto picks by suffix; ``provider`` is ONNX Runtime's
    execution provider (auto, cpu, cuda, tensorrt); ``device`` is torch's (auto, cpu, cuda)."""
    if kind not in RUNNER_KINDS:
        raise PwdeployError(f"unknown --runner {kind!r}: use one of {', '.join(RUNNER_KINDS)}")
    natural = runner_for_suffix(path)
    kind = natural if kind == "auto" else kind
    if kind != natural:
        raise PwdeployError(f"--runner {kind} cannot run {Path(path).name} (a {natural} artifact): use "
                            f"--runner {natural} or auto")
    if kind == "onnxruntime":
        from .onnxruntime_runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, provider=provider)
    if kind == "tensorrt":
        from .tensorrt_runner import TensorRTRunner

        return TensorRTRunner(path)
    from .torch_runner import TorchRunner

    return TorchRunner(path, device=device)


def torch_importable() -> bool:
    """Whether torch really imports here (asked only where torch is about to be used)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


__all__ = ["RUNNER_KINDS", "Runner", "create_runner", "run_batches", "runner_for_suffix", "torch_importable"]
