"""`pwdeploy package RUN_DIR -o NAME.tar.gz`: a Jetson bundle that carries its own evidence.

A bundle holds the model for the target, a small group-stratified verification set with the results the
shipped model gives on it here (the per-group evidence the device must reproduce), ``build_engine.sh``, the
device-side verifier (a minimal torch-free copy of pwdeploy) and ``manifest.json`` with the sha256 of every
other file. See pwdeploy.manifest for the schema and pwdeploy.device for what runs on the device.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import onnx
from rich.table import Table

from . import __version__, rundir
from .anchor import ANCHOR_NAME, write_anchor
from .device import RESULT_PREFIX
from .device.build_engine import render_script
from .errors import DataError, PwdeployError
from .data import DataSpec, create_dataset
from .fsutil import atomic_path, sha256_file, write_json, write_text
from .manifest import MANIFEST, MAX_RELEASE, SCHEMA, SIGNATURE_FILE, validate_manifest
from .latency_gate import manifest_section
from .metrics import group_metrics, predict
from .names import BUILD_SCRIPT, ORIGINAL_ONNX
from .progress import console
from .runners import run_batches
from .runners.onnxruntime_runner import OnnxRuntimeRunner
from .safe_extract import check_archive, safe_extract, single_root
from .sampling import stratified_indices
from .signature import sign
from .targets import ENGINE_BATCHES, Target, get_target
from .validate import POINTS, Range, check
from .verification_set import FILENAME as VSET_FILE, VerificationSet, load_verification_set, \
    write_verification_set

MAX_VERIFICATION_BYTES = 128 * 1024 * 1024  # keeps a 224 px bundle shippable (about 220 images)
PACKAGE_DIR = Path(__file__).resolve().parent
# The torch-free slice of pwdeploy that runs on the device (paths relative to the package's parent).
DEVICE_CODE = (
    "pwdeploy/__init__.py", "pwdeploy/names.py", "pwdeploy/errors.py", "pwdeploy/metrics.py", "pwdeploy/gate.py", "pwdeploy/evaluate.py",
    "pwdeploy/manifest.py", "pwdeploy/fsutil.py", "pwdeploy/safe_extract.py", "pwdeploy/verification_set.py",
    "pwdeploy/sampling.py",
    "pwdeploy/device/__init__.py", "pwdeploy/device/__main__.py", "pwdeploy/device/verify.py",
    "pwdeploy/device/runners.py", "pwdeploy/device/build_engine.py", "pwdeploy/device/install.py",
    "pwdeploy/signature.py", "pwdeploy/device/args.py", "pwdeploy/device/state.py", "pwdeploy/device/releases.py",
    "pwdeploy/runners/__init__.py", "pwdeploy/runners/base.py", "pwdeploy/runners/onnxruntime_runner.py",
    "pwdeploy/runners/tensorrt_runner.py", "pwdeploy/runners/gpu.py",
    "pwdeploy/latency_core.py", "pwdeploy/latency_gate.py", "pwdeploy/device/speed.py", "pwdeploy/device/facts.py",
    "pwdeploy/device/status.py",
)
ORIGINAL_IN_BUNDLE = ORIGINAL_ONNX  # package --with-original: the unpruned model, timed against on the device
_ONNX_DTYPES = {1: "float32", 10: "float16"}

REFERENCE_WHY = ("the shipped model's results on the shipped verification set, computed while packaging: the "
                 "device must reproduce them per group within the gate tolerance")

DEVICE_README = """pwdeploy bundle {bundle_id}
target {target}, model {model_file}, packaged {created} by pwdeploy {version}

release {release} of model {model_name}.

On the device (Python 3.8+, numpy, and TensorRT or onnxruntime; no torch needed), with the device's trust
anchor (installed once by `pwdeploy ship --bootstrap`, or `pwdeploy anchor -o pwdeploy-device.py` copied
there by hand; a bundle never checks itself):
    python3 -I -B DEPLOY_DIR/.pwdeploy/anchor/pwdeploy-device.py verify {bundle_id} [--allowed-signers F]
        # refuses unlisted files, checks the signature (DEPLOY_DIR/allowed_signers or --allowed-signers)
        # and every sha256 before importing anything of the bundle, then reruns the per-group gate
        # (engine built into {bundle_id}.pwdeploy-state/); exit 0 PASSED, 1 FAILED, 2 refused
manifest.json lists every file with its sha256, the preprocessing, the groups and the reference results.
"""


@dataclass
class _Evidence:
    """What the bundle proves: the shipped model's results here on the shipped verification set."""
    vs: VerificationSet
    source: dict
    reference: dict  # metrics of the shipped model, computed here
    runner: str
    original: Optional[dict]  # metrics of original.onnx (with --max-group-drop)


def package_run(run_dir: str | os.PathLike, output: str | os.PathLike, *, target: str | None = None,
                verification_size: int = 300, seed: int = 0, engine_for: str | None = None,
                max_group_drop: float | None = None, tolerance: float | None = None, quiet: bool = False,
                sign_key: str | None = None, allow_empty_groups: bool = False, release: int | None = None,
                with_original: bool = False, max_latency_ms: Optional[list] = None,
                min_speedup: Optional[float] = None) -> Path:
    """Write the bundle ``output`` (.tar.gz) for ``run_dir``; returns its path. Nothing is written on error.
    With ``sign_key`` (an SSH private key) manifest.json is signed (manifest.json.sig, OpenSSH ``-Y sign``).
    ``release``: the bundle's release number for its model (default: the packaging time, YYYYMMDDHHMMSS).
    ``with_original`` ships original.onnx so the device measures the realized speed-up; ``max_latency_ms``
    ("MS[@BATCH]" strings) and ``min_speedup`` are signed latency budgets the device gates on."""
    run = rundir.RunDir.open(run_dir)
    output = Path(output)
    _check_options(output, verification_size, tolerance, max_group_drop, release)
    config, report = run.config, run.read_report()
    spec = get_target(target or config["target"])
    model_path = _shipped_model(run, report, spec)
    io_info = onnx_io(model_path)
    created = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    bundle_id = _bundle_id(run.path.name, spec.name, created)
    release = default_release(created) if release is None else int(release)
    evidence = _evidence(run, config, report, model_path, io_info, verification_size, seed, max_group_drop)
    engine_file, engine_trt = _engine(run, report, spec, engine_for)
    latency = latency_section(run, max_latency_ms or [], min_speedup, with_original)

    with tempfile.TemporaryDirectory(prefix=".pwdeploy-package-", dir=output.parent if output.parent.exists() else None) as tmp:
        root = Path(tmp) / bundle_id
        root.mkdir()
        _stage_files(root, run, spec, model_path, io_info, engine_file, evidence, bundle_id, created, release)
        if latency and latency["original"]:
            shutil.copy2(run.file(rundir.ORIGINAL_ONNX), root / ORIGINAL_IN_BUNDLE)
        manifest = {
            "schema": SCHEMA,
            "bundle_id": bundle_id,
            "created": created.isoformat(),
            "pwdeploy_version": __version__,
            "release": release,
            "target": spec.name,
            "precision": spec.precision,
            "model": _model_entry(run, config, report, spec, io_info),
            "preprocessing": _preprocessing(report),
            "groups": list(report.group_names),
            **_evidence_entries(evidence, report, spec, seed),
            "gate": {"tolerance": float(tolerance if tolerance is not None else spec.tolerance),
                     "max_group_drop": max_group_drop, "allow_empty_groups": bool(allow_empty_groups)},
            "calibration": _calibration(report, spec.onnx_file, spec.precision),
            "engine": _engine_entry(spec, engine_file, engine_trt),
            "latency": latency,
            "files": _hash_tree(root),
        }
        _seal(root, manifest, sign_key, output, created)
    if not quiet:
        _print_summary(output, manifest, evidence.source)
    return output


def _evidence_entries(evidence: _Evidence, report, spec: Target, seed: int) -> dict:
    """The manifest's ``verification`` (what the device runs) and ``reference`` (what it must reproduce)."""
    return {
        "verification": {
            "file": VSET_FILE, "n": len(evidence.vs), "per_group": evidence.vs.group_counts(),
            "seed": int(seed), "batch_size": spec.engine_batches[-1], "source": evidence.source,
            "drawn": "equal shares per group (groups smaller than their share give all they have)",
        },
        "reference": {
            "metrics": evidence.reference,
            "runner": evidence.runner,
            "why": REFERENCE_WHY,
            "test_split": _test_split_reference(report, spec.name, spec.precision),
            "original": evidence.original,
        },
    }


def latency_section(run: rundir.RunDir, budgets: list, min_speedup: Optional[float],
                    with_original: bool) -> Optional[dict]:
    """The manifest's signed ``latency`` entry (pwdeploy.latency_gate), checked before anything is written."""
    if with_original and not run.file(rundir.ORIGINAL_ONNX).is_file():
        raise PwdeployError(f"--with-original: {run.file(rundir.ORIGINAL_ONNX)} is missing: compress writes it; "
                            "re-run compress, or package without --with-original")
    return manifest_section(budgets, min_speedup, ORIGINAL_IN_BUNDLE if with_original else None)


def _shipped_model(run: rundir.RunDir, report: rundir.Report, spec: Target) -> Path:
    """The target's ONNX in the run, unchanged since it was exported (and verified)."""
    model_path = run.file(spec.onnx_file)
    if not model_path.is_file():
        raise PwdeployError(f"{model_path} is missing: run `pwdeploy export {run.path} --target "
                            f"onnx-{spec.precision}` first (or package another --target)")
    _check_recorded_hash(report, spec.onnx_file, model_path)
    return model_path


def default_release(created: dt.datetime) -> int:
    """The default release number: the packaging time in UTC as YYYYMMDDHHMMSS. It grows with every bundle
    packaged later (on hosts with a sane clock) with nothing to remember, and a CI build number passed
    with --release stays far below it, so mixing the two is refused rather than silently misordered."""
    return int(created.strftime("%Y%m%d%H%M%S"))


def _check_options(output: Path, verification_size: int, tolerance, max_group_drop, release=None) -> None:
    if not (output.name.endswith(".tar.gz") or output.name.endswith(".tgz")):
        raise PwdeployError(f"-o {output}: a bundle is a .tar.gz file: name it e.g. {output.name}.tar.gz")
    if verification_size < 10:
        raise PwdeployError(f"--verification-size {verification_size} is too small for a per-group gate: use 100 or more")

    check("--release", release, Range(0, MAX_RELEASE, integer=True))

    check("--verification-size", verification_size, Range(10, 100_000, integer=True))
    check("--tolerance", tolerance, POINTS)
    check("--max-group-drop", max_group_drop, POINTS)


def _evidence(run: rundir.RunDir, config: dict, report: rundir.Report, model_path: Path, io_info: dict,
              verification_size: int, seed: int, max_group_drop) -> _Evidence:
    """Cut the verification subset and run the shipped model (and, for --max-group-drop, the original) on it."""
    group_names = list(report.group_names)
    vs, source = _verification_subset(run, config, verification_size, seed)
    if list(vs.group_names) != group_names:
        raise DataError(f"the verification set's groups {vs.group_names} differ from report.json's {group_names}: "
                        f"re-run `pwdeploy export {run.path}`")
    if tuple(vs.input_shape) != tuple(io_info["shape"][1:]):
        raise DataError(f"verification images are {list(vs.input_shape)} but {model_path.name} takes "
                        f"{io_info['shape'][1:]}: re-run `pwdeploy export {run.path}`")
    reference_logits, runner_desc = _run_onnx(model_path, io_info, vs.images)
    vs.logits["reference"] = reference_logits
    reference = group_metrics(predict(reference_logits), vs.labels, vs.groups, group_names)
    original = None
    if max_group_drop is not None:
        if not run.file(rundir.ORIGINAL_ONNX).is_file():
            raise PwdeployError(f"--max-group-drop needs {run.file(rundir.ORIGINAL_ONNX)}: re-run compress")
        original_io = onnx_io(run.file(rundir.ORIGINAL_ONNX))
        original_logits, _ = _run_onnx(run.file(rundir.ORIGINAL_ONNX), original_io, vs.images)
        original = group_metrics(predict(original_logits), vs.labels, vs.groups, group_names)
    return _Evidence(vs, source, reference, runner_desc, original)


def _stage_files(root: Path, run: rundir.RunDir, spec: Target, model_path: Path, io_info: dict,
                 engine_file: Optional[str], evidence: _Evidence, bundle_id: str, created: dt.datetime,
                 release: int) -> None:
    """Everything but the manifest: model (+ external data), engine, verification set, build script, device code."""


    shutil.copy2(model_path, root / spec.onnx_file)
    for extra in io_info["external_data"]:
        shutil.copy2(model_path.parent / extra, root / extra)
    if engine_file:
        shutil.copy2(run.file(engine_file), root / engine_file)
    evidence.vs.meta.update(bundle_id=bundle_id, subset_of=evidence.source, reference_runner=evidence.runner)
    write_verification_set(root / VSET_FILE, evidence.vs)
    lo, opt, hi = spec.engine_batches
    write_text(root / BUILD_SCRIPT, render_script(
        bundle_id=bundle_id, version=__version__, model_file=spec.onnx_file, precision=spec.precision,
        input_name=io_info["name"], input_shape=io_info["shape"], min_batch=lo, opt_batch=opt, max_batch=hi))
    (root / BUILD_SCRIPT).chmod(0o755)
    for rel in DEVICE_CODE:
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PACKAGE_DIR.parent / rel, dest)
    write_text(root / "README.txt", DEVICE_README.format(
        bundle_id=bundle_id, target=spec.name, model_file=spec.onnx_file, created=created.isoformat(),
        version=__version__, release=release, model_name=run.path.name))


def _model_entry(run: rundir.RunDir, config: dict, report: rundir.Report, spec: Target, io_info: dict) -> dict:
    return {
        "name": run.path.name,
        "arch": str(config["model"]["arch"]),
        "file": spec.onnx_file,
        "format": "onnx-qdq" if spec.precision == "int8" else "onnx",
        "class_names": list(report.class_names),
        "input": {"name": io_info["name"], "shape": io_info["shape"], "dtype": io_info["dtype"]},
        "output": {"name": io_info["output"]},
        "flops_reduction": report.flops_reduction,
        "loss": report.loss,
        "method": report.method,
    }


def _engine_entry(spec: Target, engine_file: Optional[str], engine_trt: Optional[str]) -> dict:

    lo, opt, hi = spec.engine_batches
    return {"build_script": BUILD_SCRIPT, "file": engine_file, "tensorrt": engine_trt,
            "min_batch": lo, "opt_batch": opt, "max_batch": hi,
            "note": "engines are built on the device: they do not move between GPUs or TensorRT versions"}


def _seal(root: Path, manifest: dict, sign_key: Optional[str], output: Path, created: dt.datetime) -> None:
    """Validate, write (and sign) the manifest, then the archive, atomically."""
    validate_manifest(manifest)  # never ship a manifest the device would refuse
    write_json(root / MANIFEST, manifest)
    if sign_key:
        (root / SIGNATURE_FILE).write_bytes(sign((root / MANIFEST).read_bytes(), sign_key))
    with atomic_path(output) as partial:
        _write_tar(root, partial, created)
        single_root(check_archive(str(partial), output.name), output.name)  # the device will accept it


def verify_locally(bundle: str | os.PathLike, workdir: str | os.PathLike, *, runner: str = "auto",
                   block_torch: bool = True, timeout: float = 900.0, echo: bool = True) -> dict:
    """Unpack ``bundle`` into the new folder ``workdir`` and verify it there with the trust anchor (the file
    `pwdeploy ship` sends), in a subprocess of this Python with torch made unimportable: exactly what the
    device runs. Returns its result (``result["passed"]``: the gate); raises PwdeployError when the
    verifier cannot run."""


    workdir = Path(workdir)
    names = safe_extract(str(bundle), str(workdir / "bundle"))
    root = workdir / "bundle" / names[0].split("/")[0]
    anchor = workdir / ANCHOR_NAME
    write_anchor(anchor)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    args = ["verify", str(root), "--runner", runner, "--result-line"]
    command = [sys.executable, "-I", "-B", str(anchor), *args]
    if block_torch:  # a `torch` that refuses to import shadows the real one: the verifier must not need it
        blocker = workdir / "no-torch" / "torch"
        blocker.mkdir(parents=True)
        (blocker / "__init__.py").write_text('raise ImportError("torch is not available on the device")\n')
        # -I ignores PYTHONPATH: put the blocker on the path, then run the anchor as the device would
        command = [sys.executable, "-I", "-B", "-c", "import runpy, sys; sys.path.insert(0, sys.argv[1]); "
                   "sys.argv = sys.argv[2:]; runpy.run_path(sys.argv[0], run_name='__main__')",
                   str(blocker.parent), str(anchor), *args]
    try:
        proc = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PwdeployError(f"the device verifier ran longer than {timeout:.0f} s on {root}") from None
    lines = proc.stdout.splitlines()
    if echo:
        for line in lines:
            if not line.startswith(RESULT_PREFIX):
                console.print(line, markup=False, highlight=False)
    results = [ln for ln in lines if ln.startswith(RESULT_PREFIX)]
    if not results:
        detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise PwdeployError(f"the device verifier failed to run on {root} (exit {proc.returncode}): {detail}")
    result = json.loads(results[-1][len(RESULT_PREFIX):])
    return result


def onnx_io(path: Path) -> dict[str, Any]:
    """Input name, shape (-1 for a dynamic dim), dtype, output name and external data files of an ONNX."""

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(graph.output) < 1:
        raise PwdeployError(f"{path.name} has {len(inputs)} inputs: bundles support single-input image classifiers")
    tensor = inputs[0].type.tensor_type
    shape = [int(d.dim_value) if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    external = sorted({entry.value for init in graph.initializer if init.data_location == onnx.TensorProto.EXTERNAL
                       for entry in init.external_data if entry.key == "location"})
    return {"name": inputs[0].name, "shape": shape, "dtype": _ONNX_DTYPES.get(tensor.elem_type, str(tensor.elem_type)),
            "output": graph.output[0].name, "external_data": external}


def _check_recorded_hash(report: rundir.Report, name: str, path: Path) -> None:
    record = report.artifacts.get(name)
    if record is not None and record.sha256 and record.sha256 != sha256_file(path):
        raise PwdeployError(f"{path} changed after it was exported and verified (sha256 differs from report.json): "
                            "re-run `pwdeploy export` so the bundle ships a verified model")


def _bundle_id(run_name: str, target: str, created: dt.datetime) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", run_name).strip("-._") or "run"
    return f"{base[:80]}-{target}-{created.strftime('%Y%m%dT%H%M%SZ')}"


def _verification_subset(run: rundir.RunDir, config: dict, size: int, seed: int) -> tuple[VerificationSet, str]:
    """A group-stratified subset of the test split: from the run's verification_set.npz (written by
    `pwdeploy export`), else straight from the dataset (needs the data where you package)."""
    path = run.file(VSET_FILE)
    if path.is_file():
        full = load_verification_set(path)
        source = f"{VSET_FILE} of the run ({full.meta.get('split', 'test')} split, {len(full)} images)"
    else:
        full = _from_dataset(config, size, seed)
        source = f"test split of dataset {config['data']['name']!r} ({full.meta['source_n']} images)"
    size = _fit_size(size, full.images.shape[1:])
    pick = stratified_indices(full.groups, len(full.group_names), size, seed=seed)
    subset = VerificationSet(
        images=np.ascontiguousarray(full.images[pick], dtype=np.float32), labels=full.labels[pick],
        groups=full.groups[pick], group_names=list(full.group_names), class_names=list(full.class_names),
        indices=full.indices[pick], logits={k: v[pick] for k, v in full.logits.items()},
        meta={k: v for k, v in full.meta.items() if k not in ("schema", "group_names", "class_names")})
    subset.meta.update(subset=True, source_n=int(full.meta.get("source_n", len(full))), seed=int(seed))
    return subset, source


def _fit_size(size: int, chw: tuple) -> int:
    per_image = 4 * int(np.prod(chw))
    fitted = max(1, min(size, MAX_VERIFICATION_BYTES // per_image))
    if fitted < size:
        console.print(f"note: {size} images of {list(chw)} would exceed {MAX_VERIFICATION_BYTES >> 20} MB: "
                      f"shipping {fitted}")
    return fitted


def _from_dataset(config: dict, size: int, seed: int) -> VerificationSet:
    try:
        ds = create_dataset(DataSpec.from_dict(config["data"]), "test")
    except PwdeployError as exc:
        raise DataError(f"cannot build the verification set: the run has no {VSET_FILE} and the test split "
                        f"does not load ({exc}); run `pwdeploy export RUN_DIR` first") from exc
    size = _fit_size(size, tuple(ds.preprocessing.input_shape))
    pick = stratified_indices(np.asarray(ds.groups), len(ds.group_names), size, seed=seed)
    images = np.stack([ds.load_image(int(i)) for i in pick]).astype(np.float32)
    return VerificationSet(images=images, labels=np.asarray(ds.labels)[pick], groups=np.asarray(ds.groups)[pick],
                           group_names=list(ds.group_names), class_names=list(ds.class_names), indices=pick,
                           meta={"split": "test", "source_n": len(ds)})


def _run_onnx(path: Path, io_info: dict, images: np.ndarray) -> tuple[np.ndarray, str]:
    """The shipped model's logits here, with the device verifier's own ONNX Runtime runner (CPU)."""

    runner = OnnxRuntimeRunner(path, provider="cpu", input_name=io_info["name"])
    try:
        batch = io_info["shape"][0] if io_info["shape"][0] > 0 else ENGINE_BATCHES[-1]  # the engine profile's max
        if io_info["shape"][0] > 0 and len(images) % batch:
            raise PwdeployError(f"{path.name} has a fixed batch of {batch}: re-export it with a dynamic batch "
                                "(`pwdeploy export`)")
        logits = run_batches(runner, images, batch_size=batch)
    finally:
        runner.close()
    d = runner.description
    return logits, f"{d['runtime']} {d['version']} ({d['provider']}) on {d['model']}"


def _test_split_reference(report: rundir.Report, target: str, precision: str) -> dict | None:
    """The full test split's per-group results from report.json, for context: the exported artifact's
    own (stored by `pwdeploy verify`) when present, else the pruned PyTorch model's."""
    metrics = report.metrics
    for key in (target, f"onnx-{precision}", "pruned"):
        if isinstance(metrics.get(key), dict) and "groups" in metrics[key]:
            return {"source": f"report.json metrics[{key!r}]", "metrics": metrics[key]}
    return None


def _calibration(report: rundir.Report, model_file: str, precision: str) -> dict | None:
    if precision != "int8":
        return None
    record = report.artifacts.get(model_file)
    if record is not None and record.calibration is not None:
        return record.calibration
    return {"note": "report.json records no calibration provenance for this INT8 model"}


def _engine(run: rundir.RunDir, report: rundir.Report, spec: Target,
            engine_for: str | None) -> tuple[str | None, str | None]:
    """Ship the run's engine only when asked and only when it was built on the named device."""
    if engine_for is None:
        return None, None
    if not spec.builds_engine:
        raise PwdeployError("--engine-for applies to trt-* targets only: drop it or use --target trt-fp16 (say)")
    record = report.artifacts.get(rundir.ENGINE)
    if not run.file(rundir.ENGINE).is_file() or record is None:
        raise PwdeployError(f"{run.file(rundir.ENGINE)} was not built in this run: drop --engine-for, the device "
                            "builds the engine itself")
    build = record.engine  # the build info export records with the engine's artifact (one shape)
    gpu_name = build.gpu_name if build is not None else None
    trt_version = build.tensorrt_version if build is not None else None
    if not gpu_name or not trt_version:
        raise PwdeployError(f"report.json does not record which GPU/TensorRT built {rundir.ENGINE}: drop "
                            "--engine-for, the device builds the engine itself")
    if engine_for.lower() not in gpu_name.lower():
        raise PwdeployError(f"{rundir.ENGINE} was built on {gpu_name!r}, not on a {engine_for!r}: engines do not move "
                            "between GPUs; drop --engine-for and let the device build its own")
    _check_recorded_hash(report, rundir.ENGINE, run.file(rundir.ENGINE))
    return rundir.ENGINE, str(trt_version)


def _preprocessing(report: rundir.Report) -> dict:
    pre = dict(report.preprocessing)
    pre.setdefault("channel_order", "RGB")
    pre.setdefault("layout", "NCHW")
    pre.setdefault("resize", "bilinear")
    pre.setdefault("scale", "divide by 255, then (x - mean) / std per channel")
    return pre


def _hash_tree(root: Path) -> dict[str, dict[str, Any]]:
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel not in (MANIFEST, SIGNATURE_FILE):
            files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return files


def _write_tar(root: Path, path: Path, created: dt.datetime) -> None:
    """A reproducible .tar.gz: sorted members, fixed owner and times, only plain files and folders."""
    mtime = int(created.timestamp())
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=mtime) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = [root] + sorted(root.rglob("*"), key=lambda p: (p.relative_to(root).as_posix() != MANIFEST,
                                                                 p.relative_to(root).as_posix()))
        for entry in entries:
            name = entry.relative_to(root.parent).as_posix()
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = mtime, 0, 0, "", ""
            if entry.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size = entry.stat().st_size
                info.mode = 0o755 if os.access(entry, os.X_OK) else 0o644
                with open(entry, "rb") as fh:
                    tar.addfile(info, fh)


def _print_summary(output: Path, manifest: dict, source: str) -> None:


    ref = manifest["reference"]["metrics"]
    table = Table(title="results the device must reproduce")
    for col in ("group", "n", "accuracy %"):
        table.add_column(col, justify="left" if col == "group" else "right")
    for group, entry in ref["groups"].items():
        table.add_row(group, str(entry["n"]), "-" if entry["accuracy"] is None else f"{entry['accuracy']:.2f}")
    table.add_row("overall", str(ref["overall"]["n"]), f"{ref['overall']['accuracy']:.2f}")
    console.print(table)
    size = output.stat().st_size / 1e6
    console.print(f"wrote [bold]{output}[/] ({size:.1f} MB, {len(manifest['files'])} files; target "
                  f"{manifest['target']}, gate tolerance {manifest['gate']['tolerance']} points; verification set: "
                  f"{source})")
    console.print(f"release {manifest['release']} of {manifest['model']['name']}; on the device: pwdeploy ship "
                  f"{output.name} HOST:DIR --verify (or by hand: tar xzf {output.name} && python3 -I -B "
                  f"pwdeploy-device.py verify {manifest['bundle_id']})")

