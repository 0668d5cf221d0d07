"""Typed records of a run directory: what report.json holds, as dataclasses.

``Report`` is report.json; the records inside it (``Sizes``, ``Speed``, ``ArtifactRecord``, ``EngineRecord``,
``VerificationRecord``, ``WorstGroup``, ``Change``, ``Stopping``, ...) are the values other modules read by
attribute. They become JSON in one place: ``pwdeploy.rundir`` (``RunDir.read_report`` / ``write_report``) with
``to_json`` / ``from_json`` below, the one serializer. Per-group metrics (``metrics[model]``) stay the mapping
``pwdeploy.metrics.group_metrics`` returns: that shape is shared with the device code (numpy-only, no records).

Each record may carry ``details``: what a producer adds beyond the named fields, flattened into the same JSON
object, so a newer writer's extra keys survive a read and a write by older code.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Dict, List, Optional

from .metrics import accuracy_change, worst_group, worst_group_drop

_OMIT = {"omit_none": True}


def optional(default=None):
    """A field left out of the JSON while it is None (older files do not have it either)."""
    return field(default=default, metadata=_OMIT)


# --- the serializer (used by pwdeploy.rundir only) -----------------------------------------------------------

def to_json(value: Any) -> Any:
    """A record (and everything inside it) as JSON-ready dicts, lists and scalars."""
    if is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in fields(value):
            item = getattr(value, f.name)
            if f.name == "details" or (item is None and f.metadata.get("omit_none")):
                continue
            out[f.name] = to_json(item)
        out.update(to_json(getattr(value, "details", None) or {}))
        return out
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


def from_json(cls: type, data: Any) -> Any:
    """``data`` (parsed JSON) as an instance of the type ``cls`` (a record, Optional/List/Dict of records)."""
    origin, args = typing.get_origin(cls), typing.get_args(cls)
    if origin is typing.Union:  # Optional[X]
        if data is None:
            return None
        return from_json(next(a for a in args if a is not type(None)), data)
    if origin in (list, List) and args:
        return [from_json(args[0], v) for v in data]
    if origin in (dict, Dict) and args:
        return {k: from_json(args[1], v) for k, v in data.items()}
    if isinstance(cls, type) and is_dataclass(cls) and isinstance(data, dict):
        return _record_from(cls, data)
    return data


def _record_from(cls: type, data: dict):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)} - {"details"}
    values = {k: from_json(hints[k], v) for k, v in data.items() if k in names}
    if any(f.name == "details" for f in fields(cls)):
        values["details"] = {k: v for k, v in data.items() if k not in names}
    return cls(**values)


class _Record:
    """Compatibility for producers that still hand records over as dicts (the exporters)."""

    def to_dict(self) -> dict:
        return to_json(self)

    @classmethod
    def from_dict(cls, data: dict):
        return from_json(cls, data)


# --- artifacts, engine, verification ---------------------------------------------------------------------------

@dataclass
class ArtifactRecord(_Record):
    """One file of the run in report.json ``artifacts``: its content hash and what it is."""
    sha256: str
    precision: Optional[str] = optional()
    runtime: Optional[str] = optional()
    target: Optional[str] = optional()
    role: Optional[str] = optional()
    details: dict = field(default_factory=dict)  # e.g. calibration, quantization, group_protection, engine

    @property
    def calibration(self) -> Optional[dict]:
        """INT8: the provenance of the scales (pwdeploy.calibration.make_provenance, its own schema)."""
        return self.details.get("calibration") if isinstance(self.details.get("calibration"), dict) else None

    @property
    def group_protection(self) -> Optional[dict]:
        """INT8 --protect-groups: the layers kept in float, worst groups, latency."""
        value = self.details.get("group_protection")
        return value if isinstance(value, dict) else None

    @property
    def engine(self) -> Optional["EngineRecord"]:
        """model.plan: how it was built; the ONNX of a trt-* target: why no engine was built here."""
        value = self.details.get("engine")
        if not isinstance(value, dict):
            return None
        return EngineRecord.from_dict({"built": self.runtime == "tensorrt", **value})


@dataclass
class EngineRecord(_Record):
    """report.json ``engine``: the TensorRT engine built here, or why not and how to build it on the device."""
    built: bool
    precision: Optional[str] = optional()
    build_script: Optional[str] = optional()
    reason: Optional[str] = optional()
    verified_instead: Optional[str] = optional()
    details: dict = field(default_factory=dict)  # tensorrt_version, gpu, batches, ...

    @property
    def tensorrt_version(self) -> Optional[str]:
        version = self.details.get("tensorrt_version")
        return str(version) if version else None

    @property
    def gpu_name(self) -> Optional[str]:
        gpu = self.details.get("gpu")  # {"name", "compute_capability"}; older files: the name alone
        return gpu.get("name") if isinstance(gpu, dict) else (str(gpu) if gpu else None)


@dataclass
class VerificationRecord(_Record):
    """report.json ``verification[<target>]``: the gate result of `pwdeploy verify` for a run's own artifact.
    ``failed_groups`` names the groups that failed (empty when none did, also when there were none to check)."""
    artifact: str
    passed: bool
    failed_groups: List[str]
    tolerance: float
    max_group_drop: Optional[float]  # recorded even when None
    runner: Optional[dict]
    data: dict
    verify_json: str
    details: dict = field(default_factory=dict)


# --- metrics summaries -----------------------------------------------------------------------------------------

@dataclass
class WorstGroup:
    """report.json ``worst_group[model]``: the group with the lowest accuracy."""
    group: Optional[str]
    accuracy: Optional[float]


@dataclass
class GroupDrop:
    group: Optional[str]
    points: Optional[float]  # positive: the group lost accuracy against the original


@dataclass
class Change:
    """report.json ``changes[model]``: accuracy points against the original model, overall and per group."""
    overall: Optional[float]
    groups: Dict[str, Optional[float]]
    worst_group_drop: GroupDrop


@dataclass
class Score:
    """Accuracy (percent; None for a group with no samples) and sample count of one group or overall."""
    accuracy: Optional[float]
    n: int
    details: dict = field(default_factory=dict)  # tpr, fpr of a binary task


@dataclass
class ModelResult:
    """One model or exported target of a run, by group (as fairlearn's MetricFrame: overall, by_group, the
    worst group, the change against the original). A view of ``Report``'s metrics, changes and worst_group."""
    overall: Score
    by_group: Dict[str, Score]
    worst_group: Optional[WorstGroup]
    change: Optional[Change]  # None for the original itself


# --- what compress measured ------------------------------------------------------------------------------------

@dataclass
class Sizes:
    """MACs or parameters of the original and the pruned model."""
    original: int
    pruned: int


@dataclass
class LatencyPoint:
    original: float
    pruned: float
    speedup: float


@dataclass
class Latency:
    """report.json ``speed.latency``: measured on this machine's ONNX Runtime, per batch size. The flat
    ``batch_N`` entries of the file are derived from ``batches`` when written."""
    runtime: str
    batches: Dict[str, dict]  # "1" -> {batch, threads, provider, rounds, original_ms, pruned_ms, speedup}
    details: dict = field(default_factory=dict)

    def at(self, batch: int) -> Optional[LatencyPoint]:
        timing = self.batches.get(str(batch))
        if timing is None:
            return None
        return LatencyPoint(timing["original_ms"], timing["pruned_ms"], timing["speedup"])

    def __post_init__(self):  # one owner: batch_N is a view of batches, never a second copy to keep in step
        for name in [k for k in self.details if k.startswith("batch_")]:
            del self.details[name]
        for batch in self.batches:
            point = self.at(int(batch))
            self.details[f"batch_{batch}"] = dataclasses.asdict(point)


@dataclass
class Speed:
    """report.json ``speed``: channel rounding, allocation, the latency target and the measured latency."""
    round_to: Optional[dict] = optional()
    allocation: Optional[str] = optional()
    allocation_source: Optional[str] = optional()
    latency_target: Optional[dict] = optional()
    latency: Optional[Latency] = optional()
    details: dict = field(default_factory=dict)


@dataclass
class Stopping:
    """report.json ``stopping``: pruning in rounds (--max-group-drop, --flops-reduction auto, gradual)."""
    rule: str
    max_group_drop: Optional[float]
    target: float
    rounds: List[dict]
    reached: float
    stopped_early: bool
    met: bool
    schedule: Optional[str] = optional()
    curve: Optional[List[dict]] = optional()
    details: dict = field(default_factory=dict)


# --- config.json: what is not a setting ---------------------------------------------------------------------

@dataclass
class Versions:
    """The packages that produced the run."""
    pwdeploy: str
    torch: str
    torchvision: str
    torch_pruning: str
    onnx: str
    onnxruntime: str
    details: dict = field(default_factory=dict)


@dataclass
class ModelSource:
    """Where the input model came from: its path and how it was read (checkpoint, pickle, ...)."""
    path: str
    kind: str
    details: dict = field(default_factory=dict)


@dataclass
class RunProvenance:
    """config.json beside the settings: versions, the model's source, ``input_shape``, the distributed set-up."""
    versions: Versions
    input_shape: List[int]
    model_source: ModelSource
    distributed: dict  # pwdeploy.distributed.describe


# --- the report ------------------------------------------------------------------------------------------------

@dataclass
class Report:
    """report.json: what the run produced (config.json holds what decided it). The first fields are what every
    later stage reads; compress writes all of them, a hand-made or older report may lack the optional ones."""
    method: str
    loss: str
    flops_reduction: float
    input_name: str
    output_name: str
    dataset: str
    class_names: List[str]
    group_names: List[str]
    preprocessing: dict
    metrics: Dict[str, dict]  # model or target -> pwdeploy.metrics.group_metrics (the device's format too)
    artifacts: Dict[str, ArtifactRecord] = field(default_factory=dict)
    created: Optional[str] = optional()
    pwdeploy_version: Optional[str] = optional()
    pw: Optional[dict] = optional()  # the PW settings of the method used
    pw_applies_to: Optional[str] = optional()
    group_balanced: Optional[bool] = optional()
    group_balance_strength: Optional[float] = optional()
    flops_reduction_target: Optional[float] = optional()  # --flops-reduction auto: what the stopping rule chose
    macs: Optional[Sizes] = optional()
    params: Optional[Sizes] = optional()
    speed: Optional[Speed] = optional()
    data_notes: Optional[List[str]] = optional()
    device: Optional[str] = optional()  # as resolved (config.json has what was asked, e.g. auto)
    metrics_before_retraining: Optional[dict] = optional()
    onnx_parity_max_abs: Optional[float] = optional()
    retrain_loss_history: Optional[List[float]] = optional()
    timings_s: Optional[Dict[str, float]] = optional()
    prune_budget: Optional[dict] = None  # pwdeploy.prune.budget.PruneBudget.to_dict (null: not planned)
    importance: Optional[dict] = optional()  # registered plug-ins by name and settings (pwdeploy.registry)
    loss_fn: Optional[dict] = optional()
    pseudo_groups: Optional[str] = optional()
    select: Optional[str] = optional()
    checkpoint_selection: Optional[dict] = None  # --select worst-group (null: the last epoch ships)
    metrics_validation: Optional[Dict[str, dict]] = optional()
    recipes: Optional[dict] = optional()  # --recipes: pwdeploy.selection
    stopping: Optional[Stopping] = optional()
    pseudo_groups_found: Optional[dict] = optional()  # pwdeploy.run_groups.pseudo_report
    changes: Dict[str, Change] = field(default_factory=dict)
    worst_group: Dict[str, WorstGroup] = field(default_factory=dict)
    targets: Optional[List[str]] = optional()
    engine: Optional[EngineRecord] = optional()
    verification: Optional[Dict[str, VerificationRecord]] = optional()
    int8_sensitivity: Optional[dict] = optional()
    details: dict = field(default_factory=dict)  # keys a newer pwdeploy wrote

    @property
    def latency(self) -> Optional[LatencyPoint]:
        """Batch-1 latency of the original and the pruned model (None where it was not measured)."""
        return self.speed.latency.at(1) if self.speed is not None and self.speed.latency is not None else None

    def result(self, name: str) -> ModelResult:
        """``name`` (original, pruned, or an exported target such as onnx-int8) by group."""
        metrics = self.metrics[name]
        return ModelResult(from_json(Score, metrics["overall"]), from_json(Dict[str, Score], metrics["groups"]),
                           self.worst_group.get(name), self.changes.get(name))

    @property
    def retraining_settings(self) -> dict:
        """The settings of the retraining loss as registered (pwdeploy.loss.LossFn.record)."""
        return retraining_settings(self.loss_fn)

    def summarize(self) -> None:
        """Fill ``changes`` and ``worst_group`` from ``metrics`` (after a model or target was added)."""
        self.changes, self.worst_group = summarize(self.metrics)


def retraining_settings(loss_fn: Optional[dict]) -> dict:
    retraining = (loss_fn or {}).get("retraining")
    return (retraining.get("settings") if isinstance(retraining, dict) else None) or {}


def label_view(report) -> Any:
    """A ``Report``, or for a mapping (a fabricated or partly filled report) the same attributes, absent ones
    None: what the labels in pwdeploy.report need."""
    if isinstance(report, Report):
        return report
    view = types.SimpleNamespace(**{f.name: report.get(f.name) for f in fields(Report)})
    view.retraining_settings = retraining_settings(view.loss_fn)
    return view


def summarize(metrics: Dict[str, dict]) -> tuple:
    """(changes, worst_group) of every model in ``metrics`` against ``metrics["original"]``."""
    original = metrics["original"]
    changes, worst = {}, {}
    for name, m in metrics.items():
        worst[name] = WorstGroup(*worst_group(m))
        if name != "original":
            change = accuracy_change(m, original)
            changes[name] = Change(change["overall"], change["groups"], GroupDrop(*worst_group_drop(m, original)))
    return changes, worst


def _type_name(hint) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "").replace(f"{__name__}.", "").replace("NoneType", "None")


def schema_table(cls: type = Report) -> str:
    """A markdown table of ``cls``'s fields (the docs' record schema is generated from it)."""
    hints = typing.get_type_hints(cls)
    rows = ["| field | type | in the file |", "|---|---|---|"]
    for f in fields(cls):
        if f.name != "details":
            optional = type(None) in typing.get_args(hints[f.name])
            when = "when set" if f.metadata.get("omit_none") else "always (may be null)" if optional else "always"
            rows.append(f"| `{f.name}` | `{_type_name(hints[f.name])}` | {when} |")
    return "\n".join(rows)


DOCUMENTED = ("Report", "ModelResult", "Score", "Sizes", "Speed", "Latency", "Change", "GroupDrop", "WorstGroup",
              "ArtifactRecord",
              "EngineRecord", "VerificationRecord", "Stopping", "RunProvenance", "Versions", "ModelSource")


def schema_markdown() -> str:
    """The record schema section of docs/concepts/run-directory.md (tests/test_records.py keeps it in step)."""
    parts = []
    for name in DOCUMENTED:
        cls = globals()[name]
        doc = " ".join((cls.__doc__ or "").split())
        parts += [f"### `{name}`", "", doc, "", schema_table(cls), ""]
    return "\n".join(parts)
