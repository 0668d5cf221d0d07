"""The runner interface and the batching loop every backend shares (host and device: numpy only, Python 3.8)."""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from ..errors import PwdeployError


class RunnerError(PwdeployError):
    """The requested runtime is missing or cannot load the model."""


class EngineIncompatible(RunnerError):
    """A TensorRT engine was built for another GPU or TensorRT version."""


class Runner:
    """Runs one model artifact: ``run(batch float32 NCHW) -> logits float32 (N, K)``."""

    kind = "base"
    max_batch: Optional[int] = None  # an engine's profile limit; None = any

    def run(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> dict:
        return {"runner": self.kind}

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_batches(runner, images: np.ndarray, *, batch_size: int = 64,
                on_batch: Optional[Callable[[int], None]] = None) -> np.ndarray:
    """Logits for all ``images`` (N×C×H×W), in batches no larger than the runner accepts."""
    max_batch = getattr(runner, "max_batch", None)
    if max_batch is not None:
        batch_size = min(batch_size, max_batch)
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = np.ascontiguousarray(images[start:start + batch_size], dtype=np.float32)
        logits = np.asarray(runner.run(batch), dtype=np.float32)
        outputs.append(logits.reshape(len(batch), -1))
        if on_batch is not None:
            on_batch(len(batch))
    if not outputs:
        return np.zeros((0, 1), np.float32)
    return np.concatenate(outputs)
