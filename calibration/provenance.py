"""What a calibration was computed from, recorded with the INT8 artifact; a stale one is refused.

Scales computed on one fp32 model are wrong for another (different weights give different activation
ranges), and nothing in a Q/DQ graph says so. The provenance ties them to the model's sha256.
"""

from __future__ import annotations

import hashlib

import numpy as np

from pwdeploy.errors import PwdeployError

SCHEMA = "pwdeploy.calibration/1"
METADATA_KEY = "pwdeploy.calibration"  # ONNX metadata_props key holding the provenance JSON


class StaleCalibrationError(PwdeployError):
    """Calibration computed on a different fp32 model than the one being quantized or verified."""


def indices_sha256(indices: np.ndarray) -> str:
    """Hash of the calibration sample indices (int64 little-endian), stable across platforms."""
    return hashlib.sha256(np.asarray(indices, dtype="<i8").tobytes()).hexdigest()


def make_provenance(*, method: str, model_sha256: str, indices: np.ndarray, per_group: dict, seed: int,
                    split: str, dataset: str, notes: list | None = None, **extra) -> dict:
    return {
        "schema": SCHEMA,
        "method": method,
        "model_sha256": model_sha256,
        "n": int(len(indices)),
        "per_group": per_group,
        "indices_sha256": indices_sha256(indices),
        "seed": int(seed),
        "split": split,
        "dataset": dataset,
        "notes": list(notes or []),
        **extra,
    }


def check_fresh(provenance: dict, model_sha256: str, *, what: str = "calibration") -> None:
    """Raise StaleCalibrationError when ``provenance`` was computed on another fp32 model."""
    recorded = provenance.get("model_sha256")
    if recorded != model_sha256:
        raise StaleCalibrationError(
            f"stale {what}: it was computed on fp32 model {str(recorded)[:12]}… but model.onnx is now "
            f"{model_sha256[:12]}…: re-export with 'pwdeploy export RUN_DIR --target onnx-int8 --recalibrate'")
