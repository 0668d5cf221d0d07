"""`pwdeploy verify`: run the exported artifact itself and gate every group's accuracy.

The artifact (ONNX on ONNX Runtime, a TensorRT engine, or a checkpoint) runs on the run's verification data;
its per-group accuracy is compared with the reference recorded at compress time (the pruned PyTorch model)
and with the original model, on the same images, so every change is paired sample by sample.

No torch import on this path: with a run's ``verification_set.npz`` (written by export) verify needs numpy and
onnxruntime only. ``--data`` / ``--data-root`` (or a run without that file) evaluate the dataset itself,
which needs torch, and then the reference and original logits are recomputed from pruned.pt / original.pt.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
from rich import box
from rich.table import Table

from pwdeploy.calibration.provenance import METADATA_KEY, check_fresh

from . import __version__, rundir
from .bootstrap import group_change_ci
from .errors import PwdeployError
from .data import DataSpec, create_dataset
from .fsutil import read_json, sha256_file, write_json
from .evaluate import evaluate_artifact
from .gate import tolerance_for
from .metrics import group_metrics, predict
from .names import ENGINE_SUFFIXES, VERIFICATION_SET
from .progress import console as default_console, task
from .runners import RUNNER_KINDS, create_runner, run_batches, runner_for_suffix, torch_importable
from .targets import ONNX_FOR_PRECISION, get_target, target_for_file
from .validate import COUNT, POINTS, Range, check
from .verification_set import load_verification_set
from .verify_speed import add_speed

SCHEMA = "pwdeploy.verify/1"
VERIFY_JSON = "verify.json"
ORT_PROVIDERS = ("auto", "cpu", "cuda", "tensorrt")


@dataclass
class Artifact:
    path: Path
    target: str
    precision: str
    in_run: bool  # lives in the run directory (its metrics go into the run's report.json)
    notes: list = field(default_factory=list)
    skip_reason: str = ""

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class EvalData:
    images: Any  # np.ndarray N×C×H×W, or a lazily loading stand-in with len() and slicing
    labels: np.ndarray
    groups: np.ndarray
    group_names: list
    source: dict  # what the data is, for verify.json
    reference_logits: Optional[np.ndarray] = None
    original_logits: Optional[np.ndarray] = None
    reference_from: str = ""
    full_test_split: bool = False


def verify(artifact, *, reference=None, target: Optional[str] = None, data: Optional[str] = None,
           data_root: Optional[str] = None, data_options: Optional[dict] = None,
           tolerance: Optional[float] = None, max_group_drop: Optional[float] = None, runner: str = "auto",
           ort_provider: str = "auto", bootstrap: int = 1000, seed: int = 0, batch_size: int = 64,
           console=None, update_report: bool = True, allow_empty_groups: bool = False, force: bool = False,
           speed_seconds: float = 0.0) -> dict:
    """Verify ``artifact`` (a run directory, .onnx, .plan/.engine or .pt). Writes verify.json next to it and,
    for a run's own artifacts, ``metrics[<target>]`` into its report.json. Returns the verify.json content: a
    failed gate is ``failure`` (text naming the failed groups, None when every artifact verified here passed),
    raised as GateFailed (exit 1) only by the CLI; bad input raises PwdeployError (exit 2). ``speed_seconds``
    > 0 also times each ONNX artifact with the device verifier's code (pwdeploy.verify_speed)."""

    console = console or default_console
    _check_options(tolerance, max_group_drop, bootstrap, runner, ort_provider, batch_size)
    path = Path(artifact)
    if not path.exists():
        raise PwdeployError(f"artifact not found: {path}: pass a run directory, .onnx, .plan/.engine or .pt")
    run = _reference_run(path, reference)
    foreign = _foreign_home(path, run, force)
    config, report = rundir.RunDir(run).config, rundir.RunDir(run).read_report()
    artifacts = _artifacts(path, run, report, target, runner)
    _check_not_stale(artifacts, run, report)
    if not any(not a.skip_reason for a in artifacts):
        reasons = "; ".join(f"{a.name}: {a.skip_reason}" for a in artifacts)
        raise PwdeployError(f"nothing can be verified here ({reasons})")

    evald = _eval_data(run, config, report, data=data, data_root=data_root, data_options=data_options,
                       batch_size=batch_size)
    recorded = report.metrics
    ref_metrics, orig_metrics = _comparison_metrics(evald, recorded, max_group_drop)
    logits, described = _run_artifacts_once(artifacts, evald, run, runner, ort_provider, batch_size)
    results = {}
    for art in artifacts:
        if art.skip_reason:
            results[art.name] = {"target": art.target, "precision": art.precision, "verified": False,
                                 "skipped": art.skip_reason, "notes": art.notes}
            console.print(f"[yellow]not verified:[/] {art.name}: {art.skip_reason}")
            continue
        results[art.name] = _evaluate(art, logits[art.name], evald, ref_metrics, orig_metrics, recorded,
                                      tolerance=tolerance, max_group_drop=max_group_drop, n_boot=bootstrap,
                                      seed=seed, allow_empty_groups=allow_empty_groups)
        _describe_result(art, results[art.name], described[art.name], evald, console)
    if speed_seconds > 0:
        add_speed(artifacts, results, run, evald.images, ort_provider, speed_seconds, console)

    out_dir = path if path.is_dir() else path.parent
    # in another run's folder, results go beside the artifact under its own name, never into that run's verify.json
    out_name = f"{path.name}.{VERIFY_JSON}" if foreign else VERIFY_JSON
    failed = {name: r for name, r in results.items() if r.get("verified") and not r["passed"]}
    failure = ("gate FAILED: " + "; ".join(_failure_text(name, r) for name, r in failed.items())) if failed else None
    summary = _write_verify_json(out_dir, results, run, evald, out_name, failure)
    if update_report:
        _update_report(run, artifacts, results, evald)
    if failure is None:
        verified = [n for n, r in results.items() if r.get("verified")]
        console.print(f"[bold green]PASSED[/]: {', '.join(verified)} (verify.json in {out_dir})")
    return summary


def _comparison_metrics(evald: "EvalData", recorded: dict, max_group_drop) -> tuple:
    """(reference, original) metrics on the verification data: from their logits (paired), else from report.json
    when the data is the full test split it was computed on."""
    ref_metrics = _metrics_of(evald.reference_logits, evald) if evald.reference_logits is not None else None
    orig_metrics = _metrics_of(evald.original_logits, evald) if evald.original_logits is not None else None
    if ref_metrics is None:
        if not evald.full_test_split or "pruned" not in recorded:
            raise PwdeployError("no reference predictions for this data: pass a run with pruned.pt (and torch) "
                                "or re-run 'pwdeploy export' to write verification_set.npz")
        ref_metrics, evald.reference_from = recorded["pruned"], "report.json metrics.pruned (unpaired)"
    if orig_metrics is None and evald.full_test_split and "original" in recorded:
        orig_metrics = recorded["original"]
    if max_group_drop is not None and orig_metrics is None:
        raise PwdeployError("--max-group-drop needs the original model's results: the run has neither "
                            "original.pt logits nor report.json metrics.original")
    return ref_metrics, orig_metrics


def _run_artifacts_once(artifacts: list, evald: "EvalData", run: Path, runner: str, ort_provider: str,
                        batch_size: int) -> tuple:
    """Every runnable artifact on the verification data in one pass: (logits by name, runner descriptions)."""
    runners, described = {}, {}
    try:
        for art in artifacts:
            if art.skip_reason:
                continue
            runners[art.name] = _make_runner(art, runner, ort_provider)
            _check_input_shape(art, runners[art.name], evald)
            described[art.name] = runners[art.name].describe()
            _check_embedded_calibration(art, runners[art.name], run)
        return _run_all(runners, evald, batch_size), described
    finally:
        for r in runners.values():
            r.close()


def _describe_result(art: Artifact, result: dict, runner: dict, evald: "EvalData", console) -> None:
    result["runner"] = runner
    result["data"] = evald.source
    if art.precision == "fp16" and runner.get("providers") == ["CPUExecutionProvider"]:
        result["notes"].append("ONNX Runtime's CPU provider runs fp16 ops it has no fp16 kernel for in fp32 "
                               "(with casts); on a GPU they run in fp16: verify on the target runtime too")
    console.print(_table(art, result, evald.group_names))
    for note in art.notes + result["notes"]:
        console.print(f"  [yellow]note:[/] {note}")


def _check_options(tolerance, max_group_drop, bootstrap, runner, ort_provider, batch_size) -> None:

    check("--tolerance", tolerance, POINTS)
    check("--max-group-drop", max_group_drop, POINTS)
    check("--bootstrap", bootstrap, Range(0, 1_000_000, integer=True), allow_none=False)
    check("--batch-size", batch_size, COUNT, allow_none=False)
    if runner not in RUNNER_KINDS:
        raise PwdeployError(f"unknown --runner {runner!r}: use one of {', '.join(RUNNER_KINDS)}")
    if ort_provider not in ORT_PROVIDERS:
        raise PwdeployError(f"unknown --ort-provider {ort_provider!r}: use one of {', '.join(ORT_PROVIDERS)}")


# --- what to verify --------------------------------------------------------------------------------------------

def _reference_run(path: Path, reference) -> Path:
    if path.is_dir():
        if reference is not None and Path(reference).resolve() != path.resolve():
            raise PwdeployError("--reference is for a bare artifact: a run directory is its own reference "
                                f"(verify {path} without it, or pass one of its files)")
        return rundir.RunDir.open(path).path
    if reference is not None:
        return rundir.RunDir.open(reference).path
    parent = path.parent
    if rundir.RunDir.looks_like_run(parent):
        return rundir.RunDir.open(parent).path
    raise PwdeployError(f"{path.name} is a bare artifact: pass --reference RUN_DIR (the run it was exported from) "
                        "for its reference metrics, data and preprocessing")


def _foreign_home(path: Path, run: Path, force: bool) -> Optional[Path]:
    """The other run directory a bare artifact lives in (None when it lives in the reference run or in no run).
    An artifact that other run records (same sha256) came from that run's model: comparing it with another
    run's reference is refused unless ``force`` (a copy the reference run records too is fine)."""
    home = path.resolve().parent
    if path.is_dir() or home == run.resolve() or not rundir.RunDir.looks_like_run(home):
        return None
    digest = sha256_file(path)
    there = rundir.RunDir(home).artifacts().get(path.name)
    recorded_there = there.sha256 if there else None
    recorded_here = {r.sha256 for r in rundir.RunDir(run).artifacts().values()}
    if recorded_there == digest and digest not in recorded_here and not force:
        raise PwdeployError(f"{path} was exported from the model of run {home} (its sha256 is recorded there), not "
                            f"from --reference {run}: verify it against its own run, or pass --force to compare "
                            "anyway")
    return home


def _artifacts(path: Path, run: Path, report: rundir.Report, target: Optional[str], runner: str) -> list:
    recorded = report.artifacts
    if not path.is_dir():
        in_run = path.resolve().parent == run.resolve()
        return [_file_artifact(path, run, recorded, in_run)]
    if runner == "torch":  # the PyTorch checkpoint itself, e.g. to check the runner against the stored logits
        return [_file_artifact(run / rundir.PRUNED_PT, run, recorded, True)]
    found = _run_artifacts(run, recorded, target)
    if runner != "auto":
        found = [a for a in found if runner_for_suffix(a.path) == runner]
        if not found:
            raise PwdeployError(f"{run} holds no artifact that --runner {runner} runs")
    return found


def _run_artifacts(run: Path, recorded: Dict[str, rundir.ArtifactRecord], target: Optional[str]) -> list:
    engine = run / rundir.ENGINE
    engine_precision = recorded[rundir.ENGINE].precision if rundir.ENGINE in recorded else None
    if target is None:
        found = [_file_artifact(run / name, run, recorded, True) for name in ONNX_FOR_PRECISION.values()
                 if (run / name).is_file()]
        if engine.is_file():
            found.append(_file_artifact(engine, run, recorded, True))
        return found
    spec = get_target(target)
    precision = spec.precision
    onnx = run / ONNX_FOR_PRECISION[precision]
    engine_note = "the TensorRT engine was not built here"
    if spec.builds_engine and engine.is_file() and engine_precision == precision:
        art = _file_artifact(engine, run, recorded, True)
        if not art.skip_reason:
            return [art]
        engine_note = f"{engine.name} cannot run here ({art.skip_reason})"
    if not onnx.is_file():
        raise PwdeployError(f"{run} has no {onnx.name} for --target {target}: make it with 'pwdeploy export "
                            f"{run} --target {target}'")
    art = _file_artifact(onnx, run, recorded, True)
    if spec.builds_engine:
        art.notes.append(f"{engine_note}; verified {onnx.name} instead (the ONNX the engine is built from); build "
                         "the engine on the target with build_engine.sh and verify model.plan there")
    return [art]


def _file_artifact(path: Path, run: Path, recorded: Dict[str, rundir.ArtifactRecord], in_run: bool) -> Artifact:
    suffix = path.suffix.lower()
    record = recorded.get(path.name) if in_run else None
    if record is None:  # a copy elsewhere: recognise it by content
        digest = sha256_file(path) if path.is_file() else None
        record = next((r for r in recorded.values() if r.sha256 == digest), None)
    recorded_precision = record.precision if record is not None else None
    if suffix in ENGINE_SUFFIXES:
        precision = recorded_precision or _precision_from_name(path.name)
        art = Artifact(path, f"trt-{precision}", precision, in_run)
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            art.skip_reason = "TensorRT is not importable here (verify engines on the device they were built for)"
        return art
    if suffix in (".pt", ".pth"):
        return Artifact(path, "torch-fp32", "fp32", in_run)
    if suffix != ".onnx":
        raise PwdeployError(f"cannot verify {path.name}: pass a run directory, .onnx, .plan/.engine or .pt")
    if path.name == rundir.ORIGINAL_ONNX and in_run:
        return Artifact(path, "original-onnx", "fp32", in_run)
    precision = recorded_precision or _precision_from_name(path.name)
    target = (record.target if record is not None else None) or target_for_file(path.name) or f"onnx-{precision}"
    art = Artifact(path, target, precision, in_run)
    if record is None:
        art.notes.append(f"{path.name} is not recorded in the reference run: precision {precision} was taken from "
                         "its file name (tolerance follows it; use --tolerance to set it)")
    return art


def _precision_from_name(name: str) -> str:
    lowered = name.lower()
    return "int8" if "int8" in lowered else "fp16" if "fp16" in lowered else "fp32"


def _check_not_stale(artifacts: list, run: Path, report: rundir.Report) -> None:
    """fp16/INT8 artifacts of a run must come from its current model.onnx (INT8 scales especially)."""
    model = run / rundir.MODEL_ONNX
    if not model.is_file():
        return
    current = None
    for art in artifacts:
        record = report.artifacts.get(art.name) if art.in_run else None
        source = record.details.get("source_sha256") if record is not None else None
        if not source:
            continue
        current = current or sha256_file(model)
        if record.calibration:
            check_fresh(record.calibration, current, what=f"INT8 calibration of {art.name}")
        if source != current:
            raise PwdeployError(f"{art.name} was exported from another model.onnx than the run holds now: re-run "
                                f"'pwdeploy export {run} --target {art.target}'")


def _check_embedded_calibration(art: Artifact, runner, run: Path) -> None:
    """An INT8 ONNX carries its calibration provenance: refuse it when the reference run's fp32 model differs
    (its scales were computed on another model), wherever the file was copied to."""
    meta = runner.metadata() if hasattr(runner, "metadata") else {}
    model = run / rundir.MODEL_ONNX

    if METADATA_KEY in meta and model.is_file():


        check_fresh(json.loads(meta[METADATA_KEY]), sha256_file(model), what=f"INT8 calibration of {art.name}")


# --- data ------------------------------------------------------------------------------------------------------

class _DatasetImages:
    """A dataset's images, loaded a batch at a time (a full split may not fit in memory)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: slice) -> np.ndarray:
        return np.stack([self.dataset.load_image(i) for i in range(*index.indices(len(self)))])


def _eval_data(run: Path, config: dict, report: rundir.Report, *, data, data_root, data_options,
               batch_size) -> EvalData:

    wants_dataset = data is not None or data_root is not None or bool(data_options)
    npz = run / VERIFICATION_SET
    if not wants_dataset and npz.is_file():
        return _from_verification_set(run, npz)
    if not torch_importable():
        why = "--data/--data-root were given" if wants_dataset else f"{run} has no {VERIFICATION_SET}"
        raise PwdeployError(f"{why} and torch is not importable here, so the dataset cannot be read: run verify "
                            f"without --data on a run that has {VERIFICATION_SET} (written by 'pwdeploy export'), "
                            "or install torch")
    return _from_dataset(run, config, data=data, data_root=data_root, data_options=data_options,
                         batch_size=batch_size)


def _from_verification_set(run: Path, npz: Path) -> EvalData:

    vs = load_verification_set(npz)
    pruned_pt = run / rundir.PRUNED_PT
    models = vs.meta.get("models", {})
    if pruned_pt.is_file() and models.get("pruned") and models["pruned"] != sha256_file(pruned_pt):
        raise PwdeployError(f"{VERIFICATION_SET} was made for another pruned.pt than the run holds: re-run "
                            f"'pwdeploy export {run}' to rewrite it")
    return EvalData(images=vs.images, labels=vs.labels, groups=vs.groups, group_names=list(vs.group_names),
                    source={"source": VERIFICATION_SET, **vs.describe()},
                    reference_logits=vs.logits.get("pruned"), original_logits=vs.logits.get("original"),
                    reference_from=f"PyTorch logits of pruned.pt stored in {VERIFICATION_SET}",
                    full_test_split=not vs.meta.get("subset", False))


def _from_dataset(run: Path, config: dict, *, data, data_root, data_options, batch_size) -> EvalData:
    from .runners.torch_runner import TorchRunner

    spec = DataSpec.from_dict(config["data"])
    same_dataset = data is None or data == spec.name
    if not same_dataset:
        spec = DataSpec(name=data, root=None, options={})
    if data_root is not None:
        spec.root = data_root
    if data_options:
        spec.options.update(data_options)
    test = create_dataset(spec, "test")
    if len(test) == 0:
        raise PwdeployError(f"the test split of {test.name} is empty: check --data-root")
    images = _DatasetImages(test)
    evald = EvalData(images=images, labels=test.labels, groups=test.groups, group_names=list(test.group_names),
                     source={"source": "dataset", "data": spec.to_dict(), "split": "test", "n": len(test),
                             "groups": test.group_counts(), "subset": False},
                     full_test_split=same_dataset and spec.options == config["data"].get("options", {}))
    runners = {}
    for key, file in (("reference", rundir.PRUNED_PT), ("original", rundir.ORIGINAL_PT)):
        if (run / file).is_file():
            runners[key] = TorchRunner(run / file, device="cpu")
    logits = _run_all(runners, evald, batch_size, description="reference models (PyTorch)")
    evald.reference_logits, evald.original_logits = logits.get("reference"), logits.get("original")
    evald.reference_from = "pruned.pt run now with PyTorch (CPU)" if "reference" in logits else ""
    return evald


# --- running and scoring ---------------------------------------------------------------------------------------

def _make_runner(art: Artifact, runner: str, ort_provider: str):

    return create_runner(art.path, runner, provider=ort_provider, device="auto")


def _check_input_shape(art: Artifact, runner, evald: EvalData) -> None:
    """A model whose fixed input dims differ from the verification images is bad input, not a crash."""
    shape = getattr(runner, "input_shape", None)
    if not shape or not len(evald.labels):
        return
    want = list(shape[1:])
    have = list(np.asarray(evald.images[:1]).shape[1:])
    if len(want) != len(have) or any(isinstance(w, int) and w > 0 and w != h for w, h in zip(want, have)):
        raise PwdeployError(f"{art.name} takes input {want} but the verification images are {have}: verify it "
                            "against the run it was exported from (--reference), or re-export it")


def _run_all(runners: dict, evald: EvalData, batch_size: int, description: str = "verifying") -> dict:
    """One pass over the data, every runner on every batch (images are decoded once)."""

    n = len(evald.labels)
    outputs = {name: [] for name in runners}
    with task(description, total=n) as bar:
        for start in range(0, n, batch_size):
            batch = np.ascontiguousarray(evald.images[start:start + batch_size], dtype=np.float32)
            for name, r in runners.items():
                outputs[name].append(run_batches(r, batch, batch_size=batch_size))
            bar.advance(len(batch))
    return {name: np.concatenate(chunks) for name, chunks in outputs.items() if chunks}


def _metrics_of(logits: np.ndarray, evald: EvalData) -> dict:
    return group_metrics(predict(logits), evald.labels, evald.groups, evald.group_names,
                         binary=bool(evald.labels.max(initial=0) <= 1))


def _evaluate(art: Artifact, logits: np.ndarray, evald: EvalData, ref_metrics: dict, orig_metrics: Optional[dict],
              recorded: dict, *, tolerance, max_group_drop, n_boot: int, seed: int,
              allow_empty_groups: bool = False) -> dict:
    tol = tolerance_for(art.precision) if tolerance is None else float(tolerance)
    shared = evaluate_artifact(logits, evald.labels, evald.groups, evald.group_names, ref_metrics, tolerance=tol,
                               original=orig_metrics, max_group_drop=max_group_drop,
                               allow_empty_groups=allow_empty_groups, reference_logits=evald.reference_logits)
    shared.pop("gate_result")
    notes = shared["notes"]
    correct = (predict(logits) == evald.labels).astype(np.float64)

    def ci(other_logits, other_metrics):
        if n_boot == 0 or other_metrics is None:
            return None
        num = len(evald.group_names)
        if other_logits is not None:
            other_correct = (predict(other_logits) == evald.labels).astype(np.float64)
            cis = group_change_ci(correct, evald.groups, num, reference_correct=other_correct, n_boot=n_boot,
                                  seed=seed)
        else:
            accs = [other_metrics["groups"].get(name, {}).get("accuracy") for name in evald.group_names]
            cis = group_change_ci(correct, evald.groups, num, reference_accuracy=accs, n_boot=n_boot, seed=seed)
        return {name: (list(c) if c is not None else None) for name, c in zip(evald.group_names, cis)}

    result = {
        "verified": True,
        "target": art.target,
        "precision": art.precision,
        "path": str(art.path),
        "sha256": sha256_file(art.path),
        **shared,
        "reference_metrics": ref_metrics,
        "original_metrics": orig_metrics,
        "reference_from": evald.reference_from,
        "bootstrap": {"n": n_boot, "level": 0.95, "paired": evald.reference_logits is not None,
                      "vs_reference": ci(evald.reference_logits, ref_metrics),
                      "vs_original": ci(evald.original_logits, orig_metrics)} if n_boot else None,
    }
    if evald.full_test_split and "pruned" in recorded and evald.reference_logits is not None:
        drift = _max_group_diff(ref_metrics, recorded["pruned"])
        result["reference_vs_recorded_max_diff"] = drift
        if drift is not None and drift > 1e-6:
            notes.append(f"the reference recomputed here differs from report.json by up to {drift:.2f} points "
                         "(compress may have evaluated on another device); the gate uses the one computed here, "
                         "on the same images")
    return result


def _max_group_diff(a: dict, b: dict) -> Optional[float]:
    diffs = []
    for name, entry in a["groups"].items():
        other = b.get("groups", {}).get(name, {}).get("accuracy")
        if entry.get("accuracy") is not None and other is not None:
            diffs.append(abs(entry["accuracy"] - other))
    return max(diffs) if diffs else None


def _failure_text(name: str, result: dict) -> str:
    reasons = ", ".join(f"group {c['group']!r} {c['reason']}" for c in result["gate"]["groups"] if not c["passed"])
    return f"{name} ({result['target']}): {reasons}"


# --- output ----------------------------------------------------------------------------------------------------

def _fmt1(value, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def _fmt_ci(ci) -> str:
    if not ci:
        return "-"
    digits = 0 if max(abs(ci[0]), abs(ci[1])) >= 10 else 1  # keeps the table within 80 columns
    return f"{ci[0]:+.{digits}f}..{ci[1]:+.{digits}f}"


def _table(art: Artifact, result: dict, group_names: list):
    """Compact enough for an 80-column terminal; the reasons and the full numbers are in verify.json."""

    status = "[bold green]PASSED[/]" if result["passed"] else "[bold red]FAILED[/]"
    runner = result.get("runner", {})
    where = runner.get("runner", "")
    if runner.get("providers"):
        where += " " + "/".join(p.replace("ExecutionProvider", "") for p in runner["providers"])
    limit = f"tolerance {result['tolerance']:g}" + (f", max drop {result['max_group_drop']:g}"
                                                    if result["max_group_drop"] is not None else "")
    table = Table(title=f"{status} {art.name} ({result['target']}, {where}; {limit})", box=box.SIMPLE_HEAD,
                  show_edge=False, padding=(0, 1), pad_edge=False)
    for col in ("group", "n", "acc %", "ref %", "Δ ref", "95% CI", "Δ orig", "agree %", "gate"):
        table.add_column(col, justify="left" if col in ("group", "gate") else "right", no_wrap=True)
    boot = result.get("bootstrap") or {}
    checks = {c["group"]: c for c in result["gate"]["groups"]}
    ref, agree = result["reference_metrics"], result["agreement"]
    vs_orig = result["changes"]["vs_original"]
    for name in group_names:
        m = result["metrics"]["groups"][name]
        ok = "[green]PASSED[/]" if checks.get(name, {}).get("passed", True) else "[bold red]FAILED[/]"
        table.add_row(name, str(m["n"]), _fmt1(m["accuracy"]), _fmt1(ref["groups"].get(name, {}).get("accuracy")),
                      _fmt1(result["changes"]["vs_reference"]["groups"].get(name), True),
                      _fmt_ci((boot.get("vs_reference") or {}).get(name)),
                      _fmt1(vs_orig["groups"].get(name), True) if vs_orig else "-",
                      _fmt1(agree["groups"].get(name)) if agree else "-",
                      ok if m["accuracy"] is not None else "[dim]no data[/]")
    m = result["metrics"]["overall"]
    table.add_row("overall", str(m["n"]), _fmt1(m["accuracy"]), _fmt1(ref["overall"]["accuracy"]),
                  _fmt1(result["changes"]["vs_reference"]["overall"], True), "",
                  _fmt1(vs_orig["overall"], True) if vs_orig else "-", _fmt1(agree["overall"]) if agree else "-", "",
                  style="bold")
    captions = [f"{c['group']}: {c['reason']}" for c in result["gate"]["groups"] if not c["passed"]]
    gaps = result["metrics"].get("rate_gaps")
    if gaps:
        ref_gaps = ref.get("rate_gaps") or {}
        captions.append(f"group gaps: TPR {_fmt1(gaps['tpr_gap'])} (ref {_fmt1(ref_gaps.get('tpr_gap'))}), "
                        f"FPR {_fmt1(gaps['fpr_gap'])} (ref {_fmt1(ref_gaps.get('fpr_gap'))}) points")
    table.caption = "\n".join(captions)
    return table


def _write_verify_json(out_dir: Path, results: dict, run: Path, evald: EvalData, name: str = VERIFY_JSON,
                       failure: Optional[str] = None) -> dict:
    path = out_dir / name
    summary = read_json(path) if path.is_file() else {}
    if summary.get("schema") != SCHEMA:
        summary = {"schema": SCHEMA}
    summary.update(pwdeploy_version=__version__,
                   created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                   reference_run=str(run), data=evald.source)
    summary.setdefault("artifacts", {}).update(results)
    verified = [r for r in summary["artifacts"].values() if r.get("verified")]
    summary["passed"] = bool(verified) and all(r["passed"] for r in verified)
    summary["failure"] = failure  # of the artifacts verified by this command
    write_json(path, summary)
    return summary


def _update_report(run: Path, artifacts: list, results: dict, evald: EvalData) -> None:
    """A run's own exported artifacts: metrics[<target>] and a verification entry in report.json."""
    own = [a for a in artifacts if a.in_run and results.get(a.name, {}).get("verified")
           and not a.target.startswith("torch")]
    if not own:
        return

    def record(report: rundir.Report) -> None:
        report.verification = report.verification or {}
        for art in own:
            r = results[art.name]
            report.metrics[art.target] = r["metrics"]
            report.verification[art.target] = rundir.VerificationRecord(
                artifact=art.name, passed=r["passed"], failed_groups=r["failed_groups"], tolerance=r["tolerance"],
                max_group_drop=r["max_group_drop"], runner=r.get("runner"), data=evald.source,
                verify_json=VERIFY_JSON)
        report.summarize()  # worst group and changes for the new artifacts too

    rundir.RunDir(run).update_record(record)  # report.md and report.png show the exported artifacts as well
