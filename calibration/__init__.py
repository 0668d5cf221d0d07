"""INT8 post-training calibration: a group-stratified calibration set, its provenance, and Q/DQ quantization.

Heavy imports (onnxruntime.quantization) live in ``pwdeploy.calibration.quantize`` and load only when quantizing.
"""

from .provenance import METADATA_KEY, StaleCalibrationError, check_fresh, indices_sha256, make_provenance
from .sampler import CalibrationSample, stratified_sample
from pwdeploy.targets import DEFAULT_CALIB_SIZE

METHODS = ("minmax", "entropy", "percentile")
DEFAULT_SIZE = DEFAULT_CALIB_SIZE  # owned by the targets registry

__all__ = ["CalibrationSample", "DEFAULT_SIZE", "METADATA_KEY", "METHODS", "StaleCalibrationError", "check_fresh",
           "indices_sha256", "make_provenance", "stratified_sample"]
