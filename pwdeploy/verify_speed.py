"""`pwdeploy verify --speed-seconds S`: the verified ONNX artifacts timed with the device verifier's code.

The same core as on the device (pwdeploy.device.speed.time_models: fresh sessions with spinning off, warm-up,
runs until p50/p90/p99 settle, the run's original.onnx alternated with each artifact for the speed-up), on
this machine's ONNX Runtime, at the engine batch sizes a bundle declares. Recorded as ``speed`` in each
artifact's verify.json entry and printed in the verifier's latency lines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import rundir
from .device.speed import summary_lines, time_onnx
from .targets import ENGINE_BATCHES


def add_speed(artifacts: list, results: dict, run: Path, images, provider: str, seconds: float, console) -> None:
    """Time every verified ONNX artifact of ``artifacts``; ``results[name]["speed"]`` gets the record."""
    batches = sorted(set(ENGINE_BATCHES))
    sample = np.asarray(images[:max(batches)], dtype=np.float32)
    original = Path(run) / rundir.ORIGINAL_ONNX
    for art in artifacts:
        if art.skip_reason or art.path.suffix != ".onnx" or not results.get(art.name, {}).get("verified", True):
            continue
        other = str(original) if original.is_file() and original.resolve() != art.path.resolve() else None
        speed = time_onnx(str(art.path), other, sample, batches, seconds, provider=provider)
        speed["original_note"] = None if other else "the run has no original.onnx to time against"
        results[art.name]["speed"] = speed
        for line in summary_lines(speed):
            console.print(f"{art.name}: {line}" if not line.startswith(" ") else line, markup=False, highlight=False)
