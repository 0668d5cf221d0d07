"""`pwdeploy package`: bundle contents, manifest schema, build_engine.sh, safe extraction of crafted archives."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_fixture import copy_run, extract, read_json, tiny_bundle_run  # noqa: E402

from pwdeploy import rundir  # noqa: E402
from pwdeploy.cli import main  # noqa: E402
from pwdeploy.errors import PwdeployError  # noqa: E402
from pwdeploy.fsutil import sha256_file  # noqa: E402
from pwdeploy.manifest import ManifestError, validate_manifest  # noqa: E402
from pwdeploy.package import DEVICE_CODE, package_run  # noqa: E402
from pwdeploy.safe_extract import UnsafeArchiveError, safe_extract  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_bundle_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def fp32_bundle(run_dir, tmp_path_factory):
    return package_run(run_dir, tmp_path_factory.mktemp("b32") / "demo.tar.gz", quiet=True)


@pytest.fixture(scope="module")
def fp32_root(fp32_bundle, tmp_path_factory):
    return extract(fp32_bundle, tmp_path_factory.mktemp("x32") / "out")


def test_bundle_holds_model_evidence_script_and_device_code(fp32_bundle, fp32_root, run_dir):
    with tarfile.open(fp32_bundle) as tar:
        names = tar.getnames()
        assert {n.split("/")[0] for n in names} == {fp32_root.name}
        assert all(m.isfile() or m.isdir() for m in tar.getmembers())
    manifest = validate_manifest(read_json(fp32_root / "manifest.json"))
    report = read_json(run_dir / rundir.REPORT)
    assert manifest["bundle_id"] == fp32_root.name
    assert manifest["target"] == "onnx-fp32" and manifest["precision"] == "fp32"
    assert manifest["model"]["file"] == "model.onnx"
    assert manifest["model"]["class_names"] == report["class_names"]
    assert manifest["model"]["input"] == {"name": "input", "shape": [-1, 3, 16, 16], "dtype": "float32"}
    assert manifest["model"]["output"]["name"] == "logits"
    for key in ("size", "mean", "std", "channel_order"):
        assert manifest["preprocessing"][key] == report["preprocessing"][key]
    assert manifest["groups"] == report["group_names"]
    assert manifest["gate"]["tolerance"] == 1.0
    assert manifest["calibration"] is None
    assert manifest["engine"]["build_script"] == "build_engine.sh" and manifest["engine"]["file"] is None
    assert manifest["pwdeploy_version"] and manifest["created"].endswith("+00:00")
    # every other file is listed with its sha256, and nothing unlisted is shipped
    on_disk = {p.relative_to(fp32_root).as_posix() for p in fp32_root.rglob("*") if p.is_file()}
    assert on_disk - {"manifest.json"} == set(manifest["files"])
    for name, entry in manifest["files"].items():
        assert sha256_file(fp32_root / name) == entry["sha256"]
        assert (fp32_root / name).stat().st_size == entry["bytes"]
    assert set(DEVICE_CODE) <= set(manifest["files"])
    assert "model.int8.onnx" not in manifest["files"] and "original.onnx" not in manifest["files"]
    assert os.access(fp32_root / "build_engine.sh", os.X_OK)
    # test-split results from report.json, with their source
    assert manifest["reference"]["test_split"]["source"] == "report.json metrics['pruned']"
    assert manifest["reference"]["test_split"]["metrics"] == report["metrics"]["pruned"]


def test_verification_set_is_stratified_and_reference_is_reproducible(fp32_root):
    """Equal shares per group from the test split, and the manifest's reference really is what the shipped
    model gives on the shipped images (recomputed here independently with plain onnxruntime)."""
    import onnxruntime as ort

    from pwdeploy.metrics import group_metrics, predict

    manifest = read_json(fp32_root / "manifest.json")
    with np.load(fp32_root / "verification_set.npz") as npz:
        images, labels, groups = npz["images"], npz["labels"], npz["groups"]
        meta = json.loads(npz["meta"].tobytes())
    assert manifest["verification"]["n"] == len(labels) == 300
    assert manifest["verification"]["per_group"] == {"majority": 150, "minority": 150}
    assert meta["split"] == "test" and meta["subset"] is True
    assert images.dtype == np.float32 and images.shape == (300, 3, 16, 16)
    session = ort.InferenceSession(str(fp32_root / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": images})[0]
    expected = group_metrics(predict(logits), labels, groups, manifest["groups"])
    assert manifest["reference"]["metrics"] == json.loads(json.dumps(expected))
    # the evidence is not trivial: the model is far better than chance in each group
    assert all(g["accuracy"] > 70 for g in manifest["reference"]["metrics"]["groups"].values())


@pytest.mark.parametrize("target, model_file, tolerance", [
    ("onnx-fp16", "model.fp16.onnx", 1.0), ("onnx-int8", "model.int8.onnx", 2.0), ("trt-fp16", "model.fp16.onnx", 1.0)])
def test_target_picks_model_precision_and_tolerance(run_dir, tmp_path, target, model_file, tolerance):
    root = extract(package_run(run_dir, tmp_path / "b.tar.gz", target=target, quiet=True), tmp_path / "x")
    manifest = read_json(root / "manifest.json")
    assert manifest["model"]["file"] == model_file and model_file in manifest["files"]
    assert "model.onnx" not in manifest["files"]
    assert manifest["gate"]["tolerance"] == tolerance
    if target.endswith("int8"):
        assert manifest["model"]["format"] == "onnx-qdq"
        assert manifest["calibration"]["method"] == "minmax" and manifest["calibration"]["model_sha256"]
    else:
        assert manifest["calibration"] is None


def test_reference_prefers_the_exported_artifacts_verified_metrics(run_dir, tmp_path):
    run = copy_run(run_dir.parent, tmp_path / "run")
    report = read_json(run / rundir.REPORT)
    report["metrics"]["onnx-fp16"] = json.loads(json.dumps(report["metrics"]["pruned"]))
    report["metrics"]["onnx-fp16"]["overall"]["accuracy"] = 12.5  # a marker
    (run / rundir.REPORT).write_text(json.dumps(report))
    manifest = read_json(extract(package_run(run, tmp_path / "b.tar.gz", target="onnx-fp16", quiet=True),
                                 tmp_path / "x") / "manifest.json")
    assert manifest["reference"]["test_split"]["source"] == "report.json metrics['onnx-fp16']"
    assert manifest["reference"]["test_split"]["metrics"]["overall"]["accuracy"] == 12.5


def test_package_builds_the_verification_set_from_the_dataset_without_npz(run_dir, tmp_path):
    run = copy_run(run_dir.parent, tmp_path / "run")
    (run / "verification_set.npz").unlink()
    manifest = read_json(extract(package_run(run, tmp_path / "b.tar.gz", verification_size=100, quiet=True),
                                 tmp_path / "x") / "manifest.json")
    assert manifest["verification"]["source"].startswith("test split of dataset 'synthetic'")
    assert manifest["verification"]["per_group"] == {"majority": 50, "minority": 50}


def test_cli_package_writes_bundle_and_errors_are_one_line(run_dir, tmp_path, capsys):
    out = tmp_path / "ok.tar.gz"
    assert main(["package", str(run_dir), "-o", str(out), "--verification-size", "120"]) == 0
    assert out.is_file()
    capsys.readouterr()

    run = copy_run(run_dir.parent, tmp_path / "run")
    (run / rundir.FP16_ONNX).unlink()
    bad = tmp_path / "bad.tar.gz"
    assert main(["package", str(run), "-o", str(bad), "--target", "onnx-fp16"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.fp16.onnx is missing" in err and "pwdeploy export" in err
    assert not bad.exists() and not list(tmp_path.glob(".bad.tar.gz*"))

    assert main(["package", str(run), "-o", str(tmp_path / "x.zip")]) == 2
    assert ".tar.gz" in capsys.readouterr().err
    (run / rundir.COMPLETE).unlink()
    assert main(["package", str(run), "-o", str(bad)]) == 2
    assert "interrupted run" in capsys.readouterr().err


def test_changed_model_after_export_is_refused(run_dir, tmp_path):
    run = copy_run(run_dir.parent, tmp_path / "run")
    with open(run / rundir.MODEL_ONNX, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(PwdeployError, match="changed after it was exported"):
        package_run(run, tmp_path / "b.tar.gz", quiet=True)


# --- build_engine.sh -----------------------------------------------------------------------------------------

FAKE_TRTEXEC = """#!/usr/bin/env bash
# stands in for trtexec: prints the banner with the version code, records the build's arguments
echo "&&&& RUNNING TensorRT.trtexec [TensorRT v$FAKE_TRT_CODE] [b1] # trtexec $*"
if [ "$1" = "--help" ]; then exit 0; fi
printf '%s\\n' "$@" > "$FAKE_ARGS"
for a in "$@"; do case "$a" in --saveEngine=*) echo engine > "${a#--saveEngine=}";; esac; done
"""


@pytest.fixture(scope="module")
def bundle_roots(run_dir, tmp_path_factory):
    roots = {}
    for target in ("onnx-fp16", "onnx-int8"):
        tmp = tmp_path_factory.mktemp(target)
        roots[target] = extract(package_run(run_dir, tmp / "b.tar.gz", target=target, quiet=True), tmp / "x")
    return roots


def _build(root: Path, tmp: Path, code: str, env_extra: dict | None = None):
    fake = tmp / "trtexec"
    fake.write_text(FAKE_TRTEXEC)
    fake.chmod(0o755)
    args_file = tmp / "args.txt"
    env = dict(os.environ, TRTEXEC=str(fake), FAKE_TRT_CODE=code, FAKE_ARGS=str(args_file), **(env_extra or {}))
    proc = subprocess.run(["bash", str(root / "build_engine.sh"), str(tmp / "model.plan")], env=env,
                          capture_output=True, text=True, timeout=60)
    args = args_file.read_text().splitlines() if args_file.exists() else []
    return proc, args


@pytest.mark.parametrize("target, code, flag, present", [
    ("onnx-fp16", "100300", "--fp16", True),    # TensorRT 10.3 (JetPack 6.1/6.2): weakly typed, needs the flag
    ("onnx-fp16", "110401", "--fp16", False),   # TensorRT 11.4 (JetPack 7.2.2+): strongly typed, flag removed
    ("onnx-int8", "100300", "--int8", True),
    ("onnx-int8", "110401", "--int8", False),
])
def test_build_engine_picks_the_trtexec_command_line_by_tensorrt_version(bundle_roots, tmp_path, target, code,
                                                                         flag, present):
    root = bundle_roots[target]
    proc, args = _build(root, tmp_path, code)
    assert proc.returncode == 0, proc.stderr
    assert (flag in args) is present
    model = read_json(root / "manifest.json")["model"]["file"]
    assert f"--onnx={root / model}" in args
    assert f"--saveEngine={tmp_path / 'model.plan'}.partial" in args
    assert f"--timingCacheFile={root / 'timing.cache'}" in args
    assert {"--minShapes=input:1x3x16x16", "--optShapes=input:8x3x16x16", "--maxShapes=input:32x3x16x16"} <= set(args)
    assert not any(a in args for a in ("--stronglyTyped", "--best"))
    assert (tmp_path / "model.plan").read_text() == "engine\n"  # renamed from .partial only after success
    assert not (tmp_path / "model.plan.partial").exists()


def test_build_engine_refuses_old_tensorrt_and_honours_overrides(bundle_roots, tmp_path):
    root = bundle_roots["onnx-fp16"]
    proc, _ = _build(root, tmp_path, "8601")  # TensorRT 8.6 (JetPack 6.0)
    assert proc.returncode == 2 and "TensorRT 8 is too old" in proc.stderr
    proc, args = _build(root, tmp_path, "100300", {"PWDEPLOY_TRT_VERSION": "11.0",
                                                   "PWDEPLOY_TIMING_CACHE": str(tmp_path / "shared.cache")})
    assert proc.returncode == 0 and "--fp16" not in args
    assert f"--timingCacheFile={tmp_path / 'shared.cache'}" in args
    env = {k: v for k, v in os.environ.items() if k != "TRTEXEC"}
    env["PATH"] = "/usr/bin:/bin"
    proc = subprocess.run(["bash", str(root / "build_engine.sh")], env=env, capture_output=True, text=True, timeout=60)
    if shutil.which("trtexec", path=env["PATH"]) is None and not Path("/usr/src/tensorrt/bin/trtexec").exists():
        assert proc.returncode == 2 and "trtexec not found" in proc.stderr


# --- manifest schema ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("edit, key", [
    (lambda m: m.pop("gate"), "'gate'"),
    (lambda m: m["model"]["input"].update(shape="1x3x16x16"), "'model.input.shape'"),
    (lambda m: m["gate"].update(tolerance="1"), "'gate.tolerance'"),
    (lambda m: m["reference"]["metrics"]["groups"].pop("minority"), "'reference.metrics.groups'"),
    (lambda m: m["files"].update({"../evil.py": {"sha256": "0" * 64, "bytes": 1}}), "'files'"),
    (lambda m: m["files"]["model.onnx"].update(sha256="xyz"), "'files.model.onnx.sha256'"),
    (lambda m: m["model"].update(file="other.onnx"), "'model.file'"),
    (lambda m: m.update(precision="int4"), "'precision'"),
    (lambda m: m["verification"].update(n=True), "'verification.n'"),
])
def test_manifest_validation_names_the_key(fp32_root, edit, key):
    manifest = read_json(fp32_root / "manifest.json")
    edit(manifest)
    with pytest.raises(ManifestError) as info:
        validate_manifest(manifest)
    message = str(info.value)
    assert key in message and "\n" not in message and "pwdeploy package" in message


def test_manifest_from_another_schema_version_is_refused(fp32_root):
    manifest = read_json(fp32_root / "manifest.json")
    manifest["schema"] = "pwdeploy.bundle/2"
    with pytest.raises(ManifestError, match="not supported"):
        validate_manifest(manifest)


# --- safe extraction ------------------------------------------------------------------------------------------

def _crafted(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("bundle/ok.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        if member.isfile():
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        else:
            tar.addfile(member)
    return path


def _member(name: str, kind=tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize("member, reason", [
    (_member("/tmp/pwdeploy-evil.txt"), "absolute"),
    (_member("bundle/../../pwdeploy-evil.txt"), "'..'"),
    (_member("bundle/link", tarfile.SYMTYPE, "/etc/passwd"), "symbolic link"),
    (_member("bundle/hard", tarfile.LNKTYPE, "bundle/ok.txt"), "hard link"),
    (_member("bundle/dev", tarfile.CHRTYPE), "device file"),
    (_member("bundle/fifo", tarfile.FIFOTYPE), "FIFO"),
    (_member("bundle/ok.txt"), "appears twice"),
])
def test_crafted_archives_are_refused_and_nothing_is_written(tmp_path, member, reason):
    from pwdeploy.device.install import InstallError, install
    from pwdeploy.ship import inspect_bundle

    archive = _crafted(tmp_path / "evil.tar.gz", member, b"pwned")
    dest = tmp_path / "sandbox" / "dest"
    with pytest.raises(UnsafeArchiveError) as info:
        safe_extract(str(archive), str(dest))
    assert reason in str(info.value) and "\n" not in str(info.value)
    assert not dest.exists()  # nothing unpacked, not even the good member
    assert not (tmp_path / "pwdeploy-evil.txt").exists() and not Path("/tmp/pwdeploy-evil.txt").exists()
    with pytest.raises(InstallError, match=reason.strip("'").replace(".", r"\.")):  # the device installer too
        install(str(archive), str(tmp_path / "deploy"))
    assert not (tmp_path / "deploy" / "current").exists()
    with pytest.raises(PwdeployError):  # and `pwdeploy ship` before uploading
        inspect_bundle(archive)


def test_safe_extract_unpacks_a_good_archive_and_refuses_a_nonempty_target(fp32_bundle, tmp_path):
    names = safe_extract(str(fp32_bundle), str(tmp_path / "a"))
    assert "manifest.json" in {n.split("/", 1)[-1] for n in names}
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep").write_text("x")
    with pytest.raises(UnsafeArchiveError, match="new or empty folder"):
        safe_extract(str(fp32_bundle), str(tmp_path / "b"))
    assert (tmp_path / "b" / "keep").read_text() == "x"
    truncated = tmp_path / "cut.tar.gz"
    truncated.write_bytes(fp32_bundle.read_bytes()[: fp32_bundle.stat().st_size // 2])
    with pytest.raises(UnsafeArchiveError, match="damaged or truncated"):
        safe_extract(str(truncated), str(tmp_path / "c"))
    assert not (tmp_path / "c").exists()


def test_a_real_compressed_run_packages_and_verifies_like_the_device(tiny_run, tmp_path):
    """End to end on the pipeline's own run directory (compress + export's verification_set.npz)."""
    from pwdeploy.package import verify_locally

    bundle = package_run(tiny_run, tmp_path / "tiny.tar.gz", quiet=True)
    manifest = read_json(extract(bundle, tmp_path / "x") / "manifest.json")
    report = read_json(tiny_run / rundir.REPORT)
    assert manifest["groups"] == report["group_names"]
    assert manifest["verification"]["source"].startswith("verification_set.npz of the run")
    assert sum(manifest["verification"]["per_group"].values()) == manifest["verification"]["n"] <= 300
    result = verify_locally(bundle, tmp_path / "check", echo=False)
    passed = result["passed"]
    assert passed is True and result["integrity"]["passed"] is True
    assert result["metrics"]["groups"] == manifest["reference"]["metrics"]["groups"]


def test_engine_is_shipped_only_when_built_on_the_named_device(run_dir, tmp_path):
    run = copy_run(run_dir.parent, tmp_path / "run")
    (run / rundir.ENGINE).write_text("fake engine\n")
    report = read_json(run / rundir.REPORT)
    report["artifacts"][rundir.ENGINE] = {"sha256": sha256_file(run / rundir.ENGINE), "precision": "fp16",
                                          "engine": {"gpu": {"name": "Orin (nvgpu)"}, "tensorrt_version": "10.3.0"}}
    (run / rundir.REPORT).write_text(json.dumps(report))
    default = read_json(extract(package_run(run, tmp_path / "a.tar.gz", target="trt-fp16", quiet=True),
                                tmp_path / "a") / "manifest.json")
    assert default["engine"]["file"] is None and rundir.ENGINE not in default["files"]
    root = extract(package_run(run, tmp_path / "b.tar.gz", target="trt-fp16", engine_for="orin", quiet=True),
                   tmp_path / "b")
    manifest = read_json(root / "manifest.json")
    assert manifest["engine"]["file"] == rundir.ENGINE and manifest["engine"]["tensorrt"] == "10.3.0"
    assert (root / rundir.ENGINE).read_text() == "fake engine\n"
    with pytest.raises(PwdeployError, match="built on 'Orin \\(nvgpu\\)', not on a 'Thor'"):
        package_run(run, tmp_path / "c.tar.gz", target="trt-fp16", engine_for="Thor", quiet=True)
    with pytest.raises(PwdeployError, match="trt-\\* targets only"):
        package_run(run, tmp_path / "d.tar.gz", target="onnx-fp16", engine_for="Orin", quiet=True)


def test_demo_fails_when_the_bundles_device_check_fails(tiny_run, tmp_path, monkeypatch):
    """`make demo` must not exit 0 when its bundle fails on the device: the failure raises GateFailed (exit 1)."""
    import pwdeploy.package
    from pwdeploy.demo import package_and_check
    from pwdeploy.errors import GateFailed

    package_and_check(tiny_run, tmp_path / "ok.tar.gz")  # the real check passes
    monkeypatch.setattr(pwdeploy.package, "verify_locally", lambda bundle, workdir, **kw: {"passed": False})
    with pytest.raises(GateFailed, match="FAILED") as caught:
        package_and_check(tiny_run, tmp_path / "bad.tar.gz")
    assert caught.value.exit_code == 1
