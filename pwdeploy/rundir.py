"""The run directory: the unit a user inspects, verifies, packages and ships (see ARCHITECTURE.md).

Every stage reads what the previous one wrote here; these names are the contract between stages. ``RunDir``
is the only reader and writer of config.json and report.json (tests/test_rundir_owner.py checks that no
other module opens them for writing). Where each fact lives:

- config.json: what decided the run: settings (data spec, model, pruning, target, INT8 options, seed, device),
  versions, the model's source and ``input_shape``.
- report.json: what the run produced, the typed ``pwdeploy.records.Report``: class/group names and
  preprocessing of the data as read, metrics per model and per exported target, MACs/params, ``artifacts`` (one
  ``ArtifactRecord`` per file), ``engine``, ``verification`` (one ``VerificationRecord`` per target) and what
  later commands add (int8_sensitivity).

Records become JSON here and nowhere else (``read_report`` / ``write_report``, through
``pwdeploy.records.to_json`` / ``from_json``); ``read_report`` also reads the previous schema version.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Union

from .errors import PwdeployError
from .fsutil import read_json, write_json
from .names import ENGINE, FP16_ONNX, INT8_ONNX, MODEL_ONNX, ORIGINAL_ONNX  # noqa: F401 - a run's file names
from .records import (ArtifactRecord, EngineRecord, Report, RunProvenance, Speed, Stopping, VerificationRecord,
                      from_json, to_json)
from .report import render_reports

__all__ = ["ArtifactRecord", "EngineRecord", "Report", "RunDir", "VerificationRecord"]

CONFIG = "config.json"
REPORT = "report.json"
REPORT_MD = "report.md"
ORIGINAL_PT = "original.pt"
PRUNED_PT = "pruned.pt"
CALIBRATION_JSON = "calibration.json"  # provenance of the INT8 scales
CALIBRATION_RANGES = "calibration_ranges.json"  # ONNX Runtime's calibrated tensor ranges (reusable cache)
COMPLETE = ".complete"  # written last: a directory without it is an interrupted run

REPORT_SCHEMA = "pwdeploy.report/2"
PREVIOUS_REPORT_SCHEMA = "pwdeploy.report/1"  # still read: it also had latency_ms (= speed.latency.batch_1)
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
        """report.json as plain JSON (upgraded to the current schema), for callers that print or diff it."""
        return {"schema": REPORT_SCHEMA, **to_json(self.read_report())}

    def read_report(self) -> Report:
        """report.json as the typed record; a report of the previous schema version is upgraded on the way."""
        return parse_report(read_json(self.path / REPORT), self.path / REPORT)

    @property
    def input_shape(self) -> tuple:
        """C, H, W of one input image (config.json is its only home)."""
        return tuple(self.config["input_shape"])

    def artifacts(self) -> Dict[str, ArtifactRecord]:
        """report.json's artifact records alone (also of a report too incomplete for ``read_report``)."""
        recorded = read_json(self.path / REPORT).get("artifacts") or {}
        return from_json(Dict[str, ArtifactRecord], {k: v for k, v in recorded.items() if isinstance(v, dict)})

    def provenance(self) -> RunProvenance:
        """config.json's versions, model source, input shape and distributed set-up (not settings)."""
        config = self.config
        try:
            return from_json(RunProvenance, {f: config.get(f) for f in RunProvenance.__dataclass_fields__})
        except (TypeError, AttributeError) as exc:
            raise PwdeployError(f"{self.path / CONFIG} lacks what compress records ({exc}): re-run compress") from None

    # --- writing (the only place config.json and report.json are written) ---
    def write_config(self, settings: dict, provenance: RunProvenance) -> None:
        """config.json: the settings (pwdeploy.config.RunConfig.to_dict) and the run's provenance."""
        write_json(self.path / CONFIG, {"schema": CONFIG_SCHEMA, **settings, **to_json(provenance)})

    def write_report(self, report: Union[Report, dict]) -> None:
        """report.json, and report.md / report.png rendered from it."""
        record = report if isinstance(report, Report) else parse_report(report, self.path / REPORT)
        write_json(self.path / REPORT, {"schema": REPORT_SCHEMA, **to_json(record)})
        render_reports(self.path, record)

    def update_report(self, change: Callable[[dict], None]) -> dict:
        """Read report.json, apply ``change`` to its JSON form in place, write it once. Returns the new report."""
        report = self.report
        change(report)
        self.write_report(report)
        return report

    def update_record(self, change: Callable[[Report], None]) -> Report:
        """Read the typed report, apply ``change`` to it, write it once. Returns the new record."""
        record = self.read_report()
        change(record)
        self.write_report(record)
        return record


def parse_report(data: dict, where: Union[Path, str] = REPORT) -> Report:
    """The reader: report.json's content (this schema or the previous one) as a ``Report``."""
    data = dict(data)
    schema = data.pop("schema", REPORT_SCHEMA)
    if schema == PREVIOUS_REPORT_SCHEMA:
        data = _upgrade_v1(data)
    elif schema != REPORT_SCHEMA:
        raise PwdeployError(f"{where} has schema {schema!r}, which this pwdeploy does not read (it reads "
                            f"{REPORT_SCHEMA} and {PREVIOUS_REPORT_SCHEMA}): upgrade pwdeploy or re-run compress")
    data["artifacts"] = {k: v for k, v in (data.get("artifacts") or {}).items() if isinstance(v, dict)}
    try:
        return from_json(Report, data)
    except (TypeError, KeyError, AttributeError) as exc:
        raise PwdeployError(f"{where} is not a complete pwdeploy report ({exc}): re-run compress") from None


def parse_speed(record: dict) -> Speed:
    """pwdeploy.speed's record (channel rounding, allocation, latency) as the typed ``Speed``."""
    return from_json(Speed, record)


def parse_stopping(record: Optional[dict]) -> Optional[Stopping]:
    """pwdeploy.trajectory's record of pruning in rounds as the typed ``Stopping`` (None: one round)."""
    return from_json(Optional[Stopping], record)


def _upgrade_v1(data: dict) -> dict:
    """Schema 1 stated the batch-1 latency twice (``latency_ms`` and ``speed.latency.batch_1``): keep one."""
    latency_ms = data.pop("latency_ms", None)
    speed = dict(data.get("speed") or {})
    if latency_ms is not None and not speed.get("latency"):
        batch = {"batch": 1, "original_ms": latency_ms["original"], "pruned_ms": latency_ms["pruned"],
                 "speedup": latency_ms["speedup"]}
        speed["latency"] = {"runtime": "unknown", "batches": {"1": batch}}
    data["speed"] = speed
    return data
