"""Precision targets for a run directory: fp32 / fp16 / INT8 Q/DQ ONNX and, where possible, a TensorRT engine.

``make_target`` writes every artifact of a target atomically and returns its records (sha256, precision,
provenance); compress puts them into the report it writes once, ``export_target`` (`pwdeploy export`) into the
run's report.json through RunDir. It also writes ``verification_set.npz`` (the test
images with the PyTorch models' logits) so `pwdeploy verify` can check the artifacts without torch.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pwdeploy import rundir
from pwdeploy.calibration import METHODS, check_fresh, make_provenance, stratified_sample
from pwdeploy.calibration.protect import DEFAULT_MAX_FLOAT_LAYERS
from pwdeploy.calibration.quantize import (IndexedCalibrationReader, RecordedRangesOnly, activations_for,
                                           quantize_int8, stamp_provenance)
from pwdeploy.data import DataSpec, create_dataset
from pwdeploy.errors import PwdeployError
from pwdeploy.fsutil import atomic_path, read_json, sha256_file, write_json
from pwdeploy.progress import console as default_console, task
from pwdeploy.rundir import ArtifactRecord, EngineRecord, Report, RunDir
from pwdeploy.runners import run_batches
from pwdeploy.runners.torch_runner import TorchRunner
from pwdeploy.targets import Target, get_target
from pwdeploy.verification_set import FILENAME as VERIFICATION_SET
from pwdeploy.verification_set import (VerificationSet, choose_indices, load_verification_set,
                                       write_verification_set)

from .fp16 import convert_fp16
from .int8_analysis import protect_int8
from .qdq_check import check_qdq_for_tensorrt
from .tensorrt import BUILD_SCRIPT, build_engine, tensorrt_status, write_build_script

CALIBRATION_JSON, CALIBRATION_RANGES = rundir.CALIBRATION_JSON, rundir.CALIBRATION_RANGES  # named in rundir


@dataclass
class InMemoryResults:
    """What compress already holds: the test split and both models' logits on all of it, so the verification
    set is cut from them instead of reloading the checkpoints and running the test set again."""
    test_set: Any  # pwdeploy.data.GroupedDataset
    logits: dict  # {"pruned": N×K array, "original": N×K array}


def target_precision(target: str) -> str:
    return get_target(target).precision


def check_target(target: str) -> None:
    get_target(target)


def export_target(run_dir: str | os.PathLike, target: str, *, calib_size: int | None = None,
                  calib_method: str = "minmax", seed: int = 0, console=None, recalibrate: bool = False,
                  calib_shares: dict | None = None, int8_full_range: bool = False, protect_groups: bool = False,
                  max_float_layers: int | None = None) -> dict:
    """`pwdeploy export`: make ``target``'s artifacts in an existing run and record them in its report.json
    (written once, through RunDir). Returns what ``make_target`` returns."""
    run = RunDir.open(run_dir)
    report = run.report
    info = make_target(run.path, run.config, report, target, calib_size=calib_size, calib_method=calib_method,
                       seed=seed, console=console, recalibrate=recalibrate, calib_shares=calib_shares,
                       int8_full_range=int8_full_range, protect_groups=protect_groups,
                       max_float_layers=max_float_layers)
    run.update_record(lambda r: record_target(r, info))
    return info


def record_target(report: Report, info: dict) -> None:
    """Put ``make_target``'s records into ``report`` (in memory; the caller writes it once)."""
    report.artifacts = {name: ArtifactRecord.from_dict(r) for name, r in info["all_artifacts"].items()}
    report.targets = sorted(set(report.targets or []) | {info["target"]})
    if info["engine"] is not None:
        report.engine = EngineRecord.from_dict(info["engine"])


def make_target(run: Path, config: dict, report: dict, target: str, *, calib_size: int | None = None,
                calib_method: str = "minmax", seed: int = 0, console=None, recalibrate: bool = False,
                calib_shares: dict | None = None, int8_full_range: bool = False, protect_groups: bool = False,
                max_float_layers: int | None = None, results: InMemoryResults | None = None) -> dict:
    """Write ``target``'s artifacts into ``run`` (atomically) and return their records, without touching
    report.json: ``{"target", "precision", "artifact", "verify", "engine", "artifacts", "all_artifacts"}`` where
    ``verify`` is the file `pwdeploy verify` checks (the engine if built here, else the ONNX it is built from).
    ``calib_size`` None: the target's own (``Target.calib_size``)."""
    spec = get_target(target)
    calib_size = spec.calib_size if calib_size is None else int(calib_size)
    if calib_method not in METHODS:
        raise PwdeployError(f"unknown --calib-method {calib_method!r}: use one of {', '.join(METHODS)}")
    max_float_layers = _check_protection(spec, protect_groups, max_float_layers)
    console = console or _default_console()
    model_onnx = run / rundir.MODEL_ONNX
    if not model_onnx.is_file():
        raise PwdeployError(f"{run} has no {rundir.MODEL_ONNX}: re-run 'pwdeploy compress' to recreate the run")
    input_shape, input_name = tuple(config["input_shape"]), report["input_name"]
    model_sha = sha256_file(model_onnx)

    artifacts = dict(report.get("artifacts", {}))
    artifacts[rundir.MODEL_ONNX] = ArtifactRecord(model_sha, "fp32", "onnxruntime", "onnx-fp32", "pruned").to_dict()
    if (run / rundir.ORIGINAL_ONNX).is_file():
        artifacts[rundir.ORIGINAL_ONNX] = ArtifactRecord(sha256_file(run / rundir.ORIGINAL_ONNX), "fp32",
                                                         "onnxruntime", role="original").to_dict()
    vs_record = ensure_verification_set(run, config, seed=seed, console=console, results=results)
    if vs_record is not None:
        artifacts[VERIFICATION_SET] = vs_record

    onnx_name = spec.onnx_file
    if spec.precision == "fp16":
        artifacts[onnx_name] = _export_fp16(run, model_onnx, model_sha, console)
    elif spec.precision == "int8":
        artifacts[onnx_name] = _export_int8(run, config, model_onnx, model_sha, input_name, spec.runtime,
                                            calib_size=calib_size,
                                            method=calib_method, seed=seed, recalibrate=recalibrate,
                                            shares=calib_shares, full_range=int8_full_range, console=console,
                                            protect=protect_groups, max_float_layers=max_float_layers)
    artifacts[onnx_name]["target"] = f"onnx-{spec.precision}"

    engine, verify_name = None, onnx_name
    if spec.builds_engine:
        engine, verify_name = _record_engine(run, spec, artifacts, input_name, input_shape, console)
    return {"target": target, "precision": spec.precision, "artifact": onnx_name, "verify": verify_name,
            "engine": engine, "artifacts": {k: artifacts[k] for k in (onnx_name, verify_name)},
            "all_artifacts": artifacts}


def _record_engine(run: Path, spec: Target, artifacts: dict, input_name: str, input_shape: tuple,
                   console) -> tuple:
    """Build (or script) the TensorRT engine and record it; returns (engine record, file verify checks)."""
    onnx_name = spec.onnx_file
    engine = _engine(run, onnx_name, spec, input_name, input_shape, console)
    verify_name = onnx_name
    if engine["built"]:
        artifacts[rundir.ENGINE] = ArtifactRecord(sha256_file(run / rundir.ENGINE), spec.precision, "tensorrt",
                                                  spec.name, details={"engine": engine}).to_dict()
        verify_name = rundir.ENGINE
    else:
        artifacts[onnx_name]["engine"] = engine
        artifacts.pop(rundir.ENGINE, None)
    artifacts["build_engine.sh"] = {"sha256": sha256_file(run / "build_engine.sh"), "role": "engine build "
                                    "script for the target device", "from": onnx_name, "precision": spec.precision}
    return engine, verify_name


# --- fp16 -----------------------------------------------------------------------------------------------------

def _export_fp16(run: Path, model_onnx: Path, model_sha: str, console) -> dict:
    with atomic_path(run / rundir.FP16_ONNX) as tmp:
        info = convert_fp16(model_onnx, tmp)
    kept = ", ".join(info["kept_fp32_ops"]) or "none present"
    console.print(f"wrote {rundir.FP16_ONNX} (fp16 weights and activations, fp32 inputs/outputs; kept in fp32: "
                  f"{kept})")
    if info["weights_out_of_fp16_range"]:
        console.print(f"[yellow]warning:[/] {info['weights_out_of_fp16_range']} weights exceed the fp16 range and "
                      "were clamped: check the fp16 verification closely")
    return {"sha256": sha256_file(run / rundir.FP16_ONNX), "precision": "fp16", "runtime": "onnxruntime",
            "source_sha256": model_sha, "conversion": info}


# --- INT8 ------------------------------------------------------------------------------------------------------

def _check_protection(target: Target, protect: bool, max_float_layers: int | None) -> int:
    """--protect-groups applies to INT8 targets only; the float-layer budget is >= 0."""
    if protect and target.precision != "int8":
        raise PwdeployError(f"--protect-groups keeps INT8 layers in float: use it with --target onnx-int8 or "
                            f"trt-int8, not {target.name}")
    budget = DEFAULT_MAX_FLOAT_LAYERS if max_float_layers is None else int(max_float_layers)
    if budget < 0:
        raise PwdeployError(f"--max-float-layers must be >= 0, got {budget}")
    return budget


def _export_int8(run: Path, config: dict, model_onnx: Path, model_sha: str, input_name: str, runtime: str, *,
                 calib_size: int,
                 method: str, seed: int, recalibrate: bool, shares: dict | None, full_range: bool,
                 console, protect: bool = False, max_float_layers: int = 0) -> dict:
    activations = activations_for(runtime)  # UINT8 for ONNX Runtime's fused kernels, symmetric INT8 for TensorRT

    calib_json, ranges = run / CALIBRATION_JSON, run / CALIBRATION_RANGES
    previous = read_json(calib_json) if calib_json.is_file() else None
    if previous is not None and not recalibrate:
        check_fresh(previous, model_sha)  # scales from another fp32 model are refused, never reused
    reuse = (previous is not None and not recalibrate and ranges.is_file()
             and previous.get("model_sha256") == model_sha and previous.get("method") == method
             and previous.get("requested_size") == calib_size and previous.get("seed") == seed
             and previous.get("shares") == shares and previous.get("ranges_sha256") == sha256_file(ranges))

    with atomic_path(run / rundir.INT8_ONNX) as out:
        if reuse:
            provenance = previous
            settings = quantize_int8(model_onnx, out, RecordedRangesOnly(), method=method, ranges_cache=ranges,
                                     full_range_weights=full_range, activations=activations)
            what = f"reusing this model's recorded {method} calibration ({provenance['n']} images)"
        else:
            provenance, settings = _calibrate(run, config, model_onnx, model_sha, input_name, out,
                                              calib_size=calib_size, method=method, seed=seed, shares=shares,
                                              full_range=full_range, console=console, activations=activations)
            counts = ", ".join(f"{g} {e['drawn']}" for g, e in provenance["per_group"].items())
            what = f"{method} calibration on {provenance['n']} training images stratified by group: {counts}"
        protection = None
        if protect:  # replaces the plain INT8 model with the group-aware mixed one
            protection = protect_int8(run, config, out, method=method, weight_bits=settings["weight_bits"],
                                      budget=max_float_layers, console=console, activations=activations)
            settings["float_nodes"] = protection["float_layers"]
        stamp_provenance(out, provenance)  # the provenance travels inside the file too
        # what TensorRT's parser would refuse, caught here; an ONNX Runtime model (UINT8) is not for TensorRT
        trt_check = check_qdq_for_tensorrt(out) if activations == "int8" else \
            {"skipped": f"UINT8 activations for {runtime}: export --target trt-int8 for TensorRT"}
    floats = f"; {len(settings['float_nodes'])} layers kept in float" if settings.get("float_nodes") else ""
    kind = "symmetric INT8" if settings["symmetric"] else "UINT8 (ONNX Runtime's fused kernels)"
    console.print(f"wrote {rundir.INT8_ONNX} (Q/DQ, {kind} activations, per-channel {settings['weight_bits']}-bit "
                  f"weights{floats}; {what})")
    record = {"sha256": sha256_file(run / rundir.INT8_ONNX), "precision": "int8", "runtime": "onnxruntime",
              "source_sha256": model_sha, "quantization": settings, "calibration": provenance,
              "tensorrt_check": trt_check}
    if protection is not None:
        record["group_protection"] = protection
    return record


def _calibrate(run: Path, config: dict, model_onnx: Path, model_sha: str, input_name: str, out: Path, *,
               calib_size: int, method: str, seed: int, shares: dict | None, full_range: bool, console,
               activations: str = "int8"):
    """Draw the stratified calibration set, quantize into ``out``, record ranges and provenance."""
    train = create_dataset(DataSpec.from_dict(config["data"]), "train")
    sample = stratified_sample(train.groups, train.group_names, calib_size, seed=seed, shares=shares)
    for note in sample.notes:
        console.print(f"[yellow]calibration:[/] {note}")
    with task(f"INT8 calibration ({method})", total=len(sample.indices)) as bar, \
            tempfile.TemporaryDirectory(prefix="pwdeploy-calib-") as tmpdir:
        reader = IndexedCalibrationReader(train.load_image, sample.indices, input_name, batch_size=32,
                                          on_batch=bar.advance)
        cache = Path(tmpdir) / CALIBRATION_RANGES
        settings = quantize_int8(model_onnx, out, reader, method=method, ranges_cache=cache,
                                 full_range_weights=full_range, activations=activations)
        with atomic_path(run / CALIBRATION_RANGES) as tmp:
            tmp.write_bytes(cache.read_bytes())
    provenance = make_provenance(
        method=method, model_sha256=model_sha, indices=sample.indices, per_group=sample.per_group, seed=seed,
        split="train", dataset=train.name, notes=sample.notes, requested_size=calib_size, shares=shares,
        ranges_sha256=sha256_file(run / CALIBRATION_RANGES), ranges_file=CALIBRATION_RANGES)
    write_json(run / CALIBRATION_JSON, provenance)
    return provenance, settings


# --- TensorRT --------------------------------------------------------------------------------------------------

def _engine(run: Path, onnx_name: str, spec: Target, input_name: str, input_shape: tuple, console) -> dict:
    """Build the engine with the target's batch profile where TensorRT is here; the build script either way."""
    precision = spec.precision
    write_build_script(run, onnx_name=onnx_name, precision=precision, input_name=input_name,
                       input_shape=input_shape, batches=spec.engine_batches)
    status = tensorrt_status()
    if status["available"]:
        info = build_engine(run / onnx_name, run / rundir.ENGINE, precision=precision, input_name=input_name,
                            input_shape=input_shape, batches=spec.engine_batches)
        gpu = info.get("gpu") or {}
        console.print(f"built {rundir.ENGINE} from {onnx_name} with TensorRT {info['tensorrt_version']} on "
                      f"{gpu.get('name')} (compute capability {gpu.get('compute_capability')}); for another device "
                      f"run {BUILD_SCRIPT} there")
        info["build_script"] = BUILD_SCRIPT
        return EngineRecord.from_dict(info).to_dict()
    (run / rundir.ENGINE).unlink(missing_ok=True)  # never leave an engine that does not match this export
    console.print(f"[bold yellow]TensorRT engine NOT built here:[/] {status['reason']}. The artifact verified "
                  f"instead is [bold]{onnx_name}[/]; build the engine on the target with [bold]bash {BUILD_SCRIPT}"
                  "[/] (TensorRT 10 and 11).")
    return EngineRecord(built=False, precision=precision, build_script=BUILD_SCRIPT, reason=status["reason"],
                        verified_instead=onnx_name,
                        details={"tensorrt_version": status.get("tensorrt_version")}).to_dict()


# --- verification set ------------------------------------------------------------------------------------------

def ensure_verification_set(run: Path, config: dict, *, seed: int = 0, console=None,
                            results: InMemoryResults | None = None) -> dict | None:
    """Write ``verification_set.npz`` (test images + PyTorch logits of pruned.pt and original.pt) unless one for
    these exact checkpoints exists. Returns its artifact record, or None when the run has no pruned.pt.
    With ``results`` (compress) the logits are the ones compress computed; else the checkpoints are run."""
    console = console or _default_console()
    pruned_pt, original_pt = run / rundir.PRUNED_PT, run / rundir.ORIGINAL_PT
    if not pruned_pt.is_file():
        console.print(f"[yellow]note:[/] {run} has no {rundir.PRUNED_PT}: no {VERIFICATION_SET} written; verify "
                      "will need --data and torch")
        return None
    models = {"pruned": sha256_file(pruned_pt)}
    if original_pt.is_file():
        models["original"] = sha256_file(original_pt)
    path = run / VERIFICATION_SET
    if path.is_file():
        try:
            existing = load_verification_set(path)
            if existing.meta.get("models") == models and existing.meta.get("data") == config["data"]:
                return _vs_record(path, existing)
        except PwdeployError:
            pass  # unreadable or old: rewrite it
    vs = build_verification_set(run, config, models, seed=seed, results=results)

    write_verification_set(path, vs)
    what = "a group-stratified subset of" if vs.meta["subset"] else "all of"
    console.print(f"wrote {VERIFICATION_SET}: {what} the test split, {len(vs)} images "
                  f"({', '.join(f'{g} {n}' for g, n in vs.group_counts().items())}) with PyTorch reference logits")
    return _vs_record(path, vs)


def build_verification_set(run: Path, config: dict, models: dict, *, seed: int = 0,
                           results: InMemoryResults | None = None):
    test = results.test_set if results is not None else create_dataset(DataSpec.from_dict(config["data"]), "test")
    if len(test) == 0:
        raise PwdeployError(f"the test split of {test.name} is empty: check --data-root")
    shape = tuple(config["input_shape"])
    indices = choose_indices(test.groups, len(test.group_names), 4 * int(np.prod(shape)), seed=seed)
    with task("verification set", total=len(indices)) as bar:
        images = np.empty((len(indices), *shape), dtype=np.float32)
        for row, i in enumerate(indices):
            images[row] = test.load_image(int(i))
            bar.advance()
    if results is not None:
        logits = {name: np.asarray(results.logits[name])[indices] for name in models}
    else:
        logits = _checkpoint_logits(run, models, images, config["device"])
    widths = {np.asarray(v).shape[-1] for v in logits.values()}
    meta = {"split": "test", "subset": bool(len(indices) < len(test)), "source_n": int(len(test)),
            "logit_width": int(widths.pop()) if len(widths) == 1 else None,
            "dataset": test.name, "data": config["data"], "models": models, "seed": int(seed),
            "preprocessing": test.preprocessing.to_dict(), "input_shape": list(shape),
            "logits_from": ("compress's evaluation of the models it saved as pruned.pt, original.pt"
                            if results is not None else "PyTorch checkpoints of this run (pruned.pt, original.pt)")}
    return VerificationSet(images=images, labels=test.labels[indices], groups=test.groups[indices],
                           group_names=list(test.group_names), class_names=list(test.class_names),
                           indices=indices, logits=logits, meta=meta)


def _checkpoint_logits(run: Path, models: dict, images: np.ndarray, device: str) -> dict:
    """Logits of the run's checkpoints on ``images`` (`pwdeploy export` on a run made by an older pwdeploy)."""
    logits = {}
    for name, file in (("pruned", rundir.PRUNED_PT), ("original", rundir.ORIGINAL_PT)):
        if name in models:
            with TorchRunner(run / file, device=device if device in ("auto", "cpu") else "auto") as runner:
                logits[name] = run_batches(runner, images, batch_size=256)
    return logits


def _vs_record(path: Path, vs) -> dict:
    return {"sha256": sha256_file(path), "role": "verification data (test split, preprocessed)",
            "n": len(vs), "groups": vs.group_counts(), "subset": bool(vs.meta.get("subset")),
            "source_n": vs.meta.get("source_n"), "logits": sorted(vs.logits)}


def _default_console():
    return default_console
