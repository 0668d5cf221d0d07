"""The run directory: the unit a user inspects, verifies, packages and ships (see ARCHITECTURE.md).

Every stage reads what the previous one wrote here; these names are the contract between stages. ``RunDir``
is the only reader and writer of config.json and report.json (tests/test_rundir_owner.py checks that no
other module opens them for writing). Where each fact lives:

- config.json: what decided the run: settings (data spec, model, pruning, target, INT8 options, seed, device),
  versions, the model's source and ``input_shape``.
- report.json: what the run produced: class/group names and preprocessing of the data as read, metrics per
  model and per exported target, MACs/params, ``artifacts`` (one ``ArtifactRecord`` per file), ``engine``,
  ``verification`` (one ``VerificationRecord`` per target) and what later commands add (int8_sensitivity).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Dict, List, Optional

from .errors import PwdeployError
from .fsutil import read_json, write_json
from .names import ENGINE, FP16_ONNX, INT8_ONNX, MODEL_ONNX, ORIGINAL_ONNX  # noqa: F401 - a run's file names

CONFIG = "config.json"
REPORT = "report.json"
REPORT_MD = "report.md"
ORIGINAL_PT = "original.pt"
PRUNED_PT = "pruned.pt"
CALIBRATION_JSON = "calibration.json"  # provenance of the INT8 scales
CALIBRATION_RANGES = "calibration_ranges.json"  # ONNX Runtime's calibrated tensor ranges (reusable cache)
COMPLETE = ".complete"  # written last: a directory without it is an interrupted run

REPORT_SCHEMA = "pwdeploy.report/1"
CONFIG_SCHEMA = "pwdeploy.config/1"


class _Record:
    """A typed JSON record: the named fields, plus ``details`` for what a producer adds beyond them
    (flattened into the same JSON object, so the file format does not change)."""

    details: dict

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "details"}
        out = {k: v for k, v in out.items() if v is not None}
        out.update(self.details)
        return out

    @classmethod
    def from_dict(cls, data: dict):
        names = {f.name for f in fields(cls)} - {"details"}
        return cls(**{k: v for k, v in data.items() if k in names},
                   details={k: v for k, v in data.items() if k not in names})


@dataclass
class ArtifactRecord(_Record):
    """One file of the run in report.json ``artifacts``: its content hash and what it is."""
    sha256: str
    precision: Optional[str] = None
    runtime: Optional[str] = None
    target: Optional[str] = None
    role: Optional[str] = None
    details: dict = field(default_factory=dict)  # e.g. calibration, quantization, group_protection, engine


@dataclass
class EngineRecord(_Record):
    """report.json ``engine``: the TensorRT engine built here, or why not and how to build it on the device."""
    built: bool
    precision: str
    build_script: str
    reason: Optional[str] = None
    verified_instead: Optional[str] = None
    details: dict = field(default_factory=dict)  # tensorrt_version, gpu, batches, ...


@dataclass
class VerificationRecord(_Record):
    """report.json ``verification[<target>]``: the gate result of `pwdeploy verify` for a run's own artifact."""
    artifact: str
    passed: bool
    failed_groups: List[str]
    tolerance: float
    max_group_drop: Optional[float]
    runner: Optional[dict]
    data: dict
    verify_json: str
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:  # max_group_drop and runner are recorded even when None
        out = asdict(self)
        out.update(out.pop("details"))
        return out


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

    @staticmethod
    def looks_like_run(path: str | Path) -> bool:
        """Has a config.json and a report.json (complete or not)."""
        path = Path(path)
        return (path / CONFIG).is_file() and (path / REPORT).is_file()

    def file(self, name: str) -> Path:
        return self.path / name

    # --- reading ---
    @property
    def config(self) -> dict:
        return read_json(self.path / CONFIG)

    @property
    def report(self) -> dict:
        return read_json(self.path / REPORT)

    @property
    def input_shape(self) -> tuple:
        """C, H, W of one input image (config.json is its only home)."""
        return tuple(self.config["input_shape"])

    def artifacts(self) -> Dict[str, ArtifactRecord]:
        return {name: ArtifactRecord.from_dict(r) for name, r in (self.report.get("artifacts") or {}).items()
                if isinstance(r, dict)}

    # --- writing (the only place config.json and report.json are written) ---
    def write_config(self, config: dict) -> None:
        write_json(self.path / CONFIG, {"schema": CONFIG_SCHEMA, **config})

    def write_report(self, report: dict) -> None:
        """report.json, and report.md / report.png rendered from it."""
        from .report import render_reports

        write_json(self.path / REPORT, {"schema": REPORT_SCHEMA, **report})
        render_reports(self.path, report)

    def update_report(self, change: Callable[[dict], None]) -> dict:
        """Read report.json, apply ``change`` to it in place, write it once. Returns the new report."""
        report = self.report
        change(report)
        self.write_report(report)
        return report
