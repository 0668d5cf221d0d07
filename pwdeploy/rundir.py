"""The run directory: the unit a user inspects, verifies, packages and ships (see DESIGN.md).

Every stage reads what the previous one wrote here; these names are the contract between stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import PwdeployError
from .fsutil import read_json

CONFIG = "config.json"
REPORT = "report.json"
REPORT_MD = "report.md"
ORIGINAL_PT = "original.pt"
PRUNED_PT = "pruned.pt"
MODEL_ONNX = "model.onnx"
ORIGINAL_ONNX = "original.onnx"
FP16_ONNX = "model.fp16.onnx"
INT8_ONNX = "model.int8.onnx"
ENGINE = "model.plan"
COMPLETE = ".complete"  # written last: a directory without it is an interrupted run

REPORT_SCHEMA = "pwdeploy.report/1"
CONFIG_SCHEMA = "pwdeploy.config/1"


@dataclass
class RunDir:
    path: Path

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        path = Path(path)
        if not (path / CONFIG).is_file() or not (path / REPORT).is_file():
            raise PwdeployError(f"{path} is not a pwdeploy run directory (no {CONFIG}/{REPORT}): pass the "
                                "--out folder of a finished 'pwdeploy compress'")
        if not (path / COMPLETE).exists():
            raise PwdeployError(f"{path} is an interrupted run (no {COMPLETE} marker): run compress again")
        return cls(path)

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def config(self) -> dict:
        return read_json(self.path / CONFIG)

    @property
    def report(self) -> dict:
        return read_json(self.path / REPORT)
