"""The device-side verifier (`python3 -m pwdeploy.device verify BUNDLE_DIR`), run as the device runs it:
in a subprocess, from inside the unpacked bundle, on the CPU through ONNX Runtime, with torch unimportable."""

from __future__ import annotations

import ast
import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_fixture import anchor_file, damage_classifier, extract, read_json, rehash, state_of, \
    tiny_bundle_run  # noqa: E402

from pwdeploy.package import DEVICE_CODE, PACKAGE_DIR, package_run  # noqa: E402

TIMEOUT = 180


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    run = tiny_bundle_run(tmp_path_factory.getbasetemp())
    out = tmp_path_factory.mktemp("bundles")
    return {t: package_run(run, out / f"{t}.tar.gz", target=t, quiet=True, release=i)
            for i, t in enumerate(("onnx-fp32", "onnx-fp16", "onnx-int8"), 1)}


@pytest.fixture(scope="module")
def no_torch(tmp_path_factory) -> dict:
    """Environment whose Python cannot import torch (a `torch` package that raises shadows the real one)."""
    block = tmp_path_factory.mktemp("block")
    (block / "torch").mkdir()
    (block / "torch" / "__init__.py").write_text('raise ImportError("torch is blocked: the device has no torch")\n')
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PYTHONPATH=str(block), PYTHONNOUSERSITE="1")
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True,
                           timeout=TIMEOUT)
    assert probe.returncode != 0 and "torch is blocked" in probe.stderr
    return env


def device_verify(bundle_dir: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pwdeploy.device", "verify", ".", *args], cwd=bundle_dir, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)


@pytest.mark.parametrize("target", ["onnx-fp32", "onnx-fp16", "onnx-int8"])
def test_good_bundle_passes_on_cpu_without_torch(bundles, no_torch, tmp_path, target):
    root = extract(bundles[target], tmp_path / "x")
    proc = device_verify(root, no_torch)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "every sha256 matches" in out
    assert "TensorRT is not installed here: running the shipped ONNX with ONNX Runtime" in out
    for group in ("majority", "minority"):
        assert any(line.split()[:1] == [group] and line.rstrip().endswith("PASSED") for line in out.splitlines())
    assert out.strip().splitlines()[-1].startswith("PASSED")
    result = read_json(state_of(root) / "verify_result.json")
    assert result["passed"] is True and result["n"] == 300
    assert result["runner"]["runtime"] == "onnxruntime"
    assert Path(result["verifier"]["code_dir"]).resolve() == (root / "pwdeploy" / "device").resolve()
    assert result["agreement"]["reference"]["flipped"] == 0  # same images, same runtime: same predictions


def test_damaged_weights_with_valid_hashes_fail_the_gate(bundles, no_torch, tmp_path):
    """A weight damaged before hashing (the hashes all check out) is caught by the per-group gate: exit 1."""
    root = extract(bundles["onnx-fp32"], tmp_path / "x")
    damage_classifier(root / "model.onnx")
    rehash(root, ["model.onnx"])
    proc = device_verify(root, no_torch)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "every sha256 matches" in proc.stdout
    failed = [line for line in proc.stdout.splitlines() if "FAILED" in line and "points below reference" in line]
    assert failed
    assert proc.stdout.strip().splitlines()[-1].startswith("FAILED")
    result = read_json(state_of(root) / "verify_result.json")
    assert result["passed"] is False and result["gate"]["failed_groups"]


def test_hash_mismatch_fails_before_anything_runs(bundles, no_torch, tmp_path):
    root = extract(bundles["onnx-fp32"], tmp_path / "x")
    data = bytearray((root / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (root / "model.onnx").write_bytes(bytes(data))
    (root / "build_engine.sh").unlink()
    proc = device_verify(root, no_torch)
    assert proc.returncode == 1
    assert "model.onnx does not match its sha256" in proc.stdout
    assert "build_engine.sh is missing" in proc.stdout
    assert "runtime:" not in proc.stdout  # nothing was run
    result = read_json(state_of(root) / "verify_result.json")
    assert result["passed"] is False and len(result["integrity"]["problems"]) == 2


def test_invalid_manifest_is_refused_with_one_line_naming_the_key(bundles, no_torch, tmp_path):
    root = extract(bundles["onnx-fp32"], tmp_path / "x")
    manifest = read_json(root / "manifest.json")
    del manifest["reference"]["metrics"]
    (root / "manifest.json").write_text(json.dumps(manifest))
    proc = device_verify(root, no_torch)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and "'reference.metrics'" in err
    (root / "manifest.json").write_text("{not json")
    proc = device_verify(root, no_torch)
    assert proc.returncode == 2 and "not valid JSON" in proc.stderr
    proc = device_verify(tmp_path, no_torch)
    assert proc.returncode == 2 and "has no manifest.json" in proc.stderr


def test_runner_tensorrt_without_tensorrt_is_a_one_line_error(bundles, no_torch, tmp_path):
    from pwdeploy.device.runners import tensorrt_version

    if tensorrt_version() is not None:
        pytest.skip("TensorRT is installed here: the missing-TensorRT path cannot be exercised")
    root = extract(bundles["onnx-fp32"], tmp_path / "x")
    proc = device_verify(root, no_torch, "--runner", "tensorrt")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "--runner onnxruntime" in proc.stderr


def test_verify_bundle_api_and_result_line(bundles, no_torch, tmp_path):
    from pwdeploy.device import RESULT_PREFIX
    from pwdeploy.device.verify import verify_bundle

    root = extract(bundles["onnx-int8"], tmp_path / "x")
    lines = []
    result = verify_bundle(str(root), runner="onnxruntime", log=lines.append, result_path=None)
    passed = result["passed"]
    assert passed is True and result["gate"]["tolerance"] == 2.0 and result["precision"] == "int8"
    assert any("PASSED" in line for line in lines)
    assert not (root / "verify_result.json").exists() and not state_of(root).exists()
    proc = device_verify(root, no_torch, "--result-line", "--json", str(tmp_path / "r.json"))
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith(RESULT_PREFIX) and json.loads(last[len(RESULT_PREFIX):])["passed"] is True
    assert read_json(tmp_path / "r.json")["bundle_id"] == root.name


# --- Python 3.8 -------------------------------------------------------------------------------------------------

def test_device_code_parses_as_python_38():
    """Syntax of every shipped module under the 3.8 grammar; annotations (``list[int]``, ``X | None``) are only
    safe on 3.8 as strings, so any module that has them must use ``from __future__ import annotations``."""
    for rel in DEVICE_CODE:
        tree = ast.parse((PACKAGE_DIR.parent / rel).read_text(), filename=rel, feature_version=(3, 8))
        annotated = any(isinstance(n, ast.AnnAssign) or (isinstance(n, ast.FunctionDef) and (
            n.returns is not None or any(a.annotation is not None for a in n.args.args + n.args.kwonlyargs)))
            for n in ast.walk(tree))
        future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__"
                     and any(a.name == "annotations" for a in n.names) for n in tree.body)
        assert future or not annotated, f"{rel} has annotations but no `from __future__ import annotations`"


def _python38() -> str | None:
    candidates = [shutil.which("python3.8")] + sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.8*/bin/python3.8")))
    for exe in filter(None, candidates):
        try:
            proc = subprocess.run([exe, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                                  text=True, timeout=30)
        except OSError:
            continue
        if proc.returncode == 0 and proc.stdout.strip() == "(3, 8)":
            return exe
    return None


PY38 = _python38()


@pytest.mark.skipif(PY38 is None, reason="no Python 3.8 interpreter here (the device minimum); syntax is still "
                                         "checked by test_device_code_parses_as_python_38")
def test_python38_compiles_device_code_installs_and_checks_a_bundle(bundles, tmp_path):
    """A real Python 3.8 compiles every shipped module, runs the `pwdeploy ship` installer (stdlib only) and
    validates the manifest and hashes of the installed bundle."""
    from pwdeploy.ship import installer_script

    root = extract(bundles["onnx-fp32"], tmp_path / "x")
    files = [str(root / rel) for rel in DEVICE_CODE]
    proc = subprocess.run([PY38, "-m", "py_compile", *files], capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    deploy = tmp_path / "deploy"
    proc = subprocess.run([PY38, "-", "install", str(bundles["onnx-fp32"]), str(deploy), "--result-line"],
                          input=installer_script(), capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert proc.returncode == 0, proc.stderr
    assert os.readlink(deploy / "current") == f"releases/{root.name}"
    check = ("from pwdeploy.manifest import load_manifest, check_files; m = load_manifest('.'); "
             "assert check_files('.', m) == []; import pwdeploy.gate, pwdeploy.device.install; print('ok')")
    proc = subprocess.run([PY38, "-c", check], cwd=deploy / "current", capture_output=True, text=True,
                          timeout=TIMEOUT, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_verify_locally_runs_the_bundles_own_verifier_without_torch(bundles, tmp_path):
    """What `make demo` calls after packaging: unpack, then the device's command in a torch-free subprocess."""
    from pwdeploy.package import verify_locally

    result = verify_locally(bundles["onnx-fp16"], tmp_path / "check", echo=False)
    passed = result["passed"]
    assert passed is True and result["precision"] == "fp16"
    assert Path(result["verifier"]["code_dir"]).is_relative_to(tmp_path / "check" / "bundle")


# --- TensorRT orchestration, with stand-ins -----------------------------------------------------------------------
# No TensorRT exists where these tests run. A fake `tensorrt` module, a fake trtexec and a fake engine runner (which
# runs the ONNX through ONNX Runtime) exercise the decisions around them: build when missing, rebuild when the
# engine does not load, report a failed build in one line. Inference through real TensorRT is not tested here.

FAKE_TRTEXEC = """#!/usr/bin/env bash
echo "&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec $*"
if [ "$1" = "--help" ]; then exit 0; fi
if [ -n "${FAKE_TRTEXEC_FAIL:-}" ]; then echo "[E] Error[4]: fake parser failure" ; exit 1; fi
for a in "$@"; do case "$a" in --saveEngine=*) echo "fake engine" > "${a#--saveEngine=}";; esac; done
"""


@pytest.fixture()
def fake_tensorrt(monkeypatch, tmp_path):
    import types

    from pwdeploy.device import runners

    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0"))
    trtexec = tmp_path / "trtexec"
    trtexec.write_text(FAKE_TRTEXEC)
    trtexec.chmod(0o755)
    monkeypatch.setenv("TRTEXEC", str(trtexec))
    loads = []

    class FakeEngineRunner:
        """Loads 'engines' the fake trtexec wrote; refuses any other file as an incompatible plan."""

        def __init__(self, engine_path, input_name, output_name):
            loads.append(engine_path)
            if Path(engine_path).read_text() != "fake engine\n":
                raise runners.EngineIncompatible("built for another GPU")
            root = Path(str(Path(engine_path).parent).removesuffix(".pwdeploy-state"))  # state folder -> bundle
            model = root / read_json(root / "manifest.json")["model"]["file"]
            self._ort = runners.OnnxRuntimeRunner(str(model), provider="cpu", input_name=input_name)
            self.description = {"runtime": "tensorrt", "version": "10.3.0", "via": "fake", "engine": engine_path}

        def run(self, batch):
            return self._ort.run(batch)

        def close(self):
            self._ort.close()

    monkeypatch.setattr(runners, "TensorRTRunner", FakeEngineRunner)
    return loads


def test_auto_builds_the_engine_on_the_device_when_tensorrt_is_present(bundles, fake_tensorrt, tmp_path):
    from pwdeploy.device.verify import verify_bundle

    root = extract(bundles["onnx-fp16"], tmp_path / "x")
    lines = []
    result = verify_bundle(str(root), log=lines.append)
    passed = result["passed"]
    assert passed is True and result["runner"]["runtime"] == "tensorrt"
    assert result["runner"]["note"] == "engine built on this device with TensorRT 10.3.0"
    state = state_of(root)  # the engine, its log and record live outside the bundle
    assert (state / "model.plan").read_text() == "fake engine\n" and not (root / "model.plan").exists()
    assert read_json(state / "engine.json")["tensorrt"] == "10.3.0"
    log = (state / "build_engine.log").read_text()
    assert "--fp16" in log and f"--timingCacheFile={state / 'timing.cache'}" in log  # TensorRT 10, fp16 bundle
    # a second verify reuses the engine built here instead of rebuilding
    (state / "build_engine.log").unlink()
    result = verify_bundle(str(root), log=lines.append)
    passed = result["passed"]
    assert passed and result["runner"]["note"] == "engine built earlier on this device"
    assert not (state / "build_engine.log").exists()
    # the recorded engine replaced behind the verifier's back is not used: rebuilt
    (state / "model.plan").write_text("fake engine\n\n")
    result = verify_bundle(str(root), log=lines.append)
    assert result["passed"] and result["runner"]["note"].startswith("engine built on this device")
    assert any("changed after it was built" in line for line in lines)
    assert not list(root.rglob("__pycache__")) and sorted(p.name for p in root.iterdir()) == sorted(
        {n.split("/")[0] for n in read_json(root / "manifest.json")["files"]} | {"manifest.json"})


def test_an_engine_that_does_not_load_is_rebuilt(bundles, fake_tensorrt, tmp_path):
    from pwdeploy.device.verify import verify_bundle

    root = extract(bundles["onnx-fp32"], tmp_path / "x")
    (root / "shipped.plan").write_text("plan from another Jetson\n")  # listed, hashed, same TensorRT: does not load
    manifest = read_json(root / "manifest.json")
    manifest["engine"].update(file="shipped.plan", tensorrt="10.3.0")
    (root / "manifest.json").write_text(json.dumps(manifest))
    rehash(root, ["shipped.plan"])
    lines = []
    result = verify_bundle(str(root), log=lines.append)
    passed = result["passed"]
    assert passed and result["runner"]["note"].startswith("engine built on this device")
    assert any("does not load" in line and "rebuilding" in line for line in lines)
    assert len(fake_tensorrt) == 2 and (state_of(root) / "model.plan").read_text() == "fake engine\n"


def test_a_failed_engine_build_is_a_one_line_error(bundles, fake_tensorrt, tmp_path, monkeypatch):
    from pwdeploy.device.build_engine import EngineBuildError
    from pwdeploy.device.verify import verify_bundle

    monkeypatch.setenv("FAKE_TRTEXEC_FAIL", "1")
    root = extract(bundles["onnx-fp32"], tmp_path / "x")
    with pytest.raises(EngineBuildError) as info:
        verify_bundle(str(root), log=lambda _: None)
    message = str(info.value)
    assert "fake parser failure" in message and "build_engine.log" in message and "\n" not in message
    assert not list(root.glob("model.plan*")) and not list(state_of(root).glob("model.plan*"))


def test_a_shipped_engine_is_used_when_tensorrt_versions_match(bundles, fake_tensorrt, tmp_path):
    from pwdeploy.device.verify import verify_bundle

    root = extract(bundles["onnx-fp32"], tmp_path / "x")
    (root / "shipped.plan").write_text("fake engine\n")
    manifest = read_json(root / "manifest.json")
    manifest["engine"].update(file="shipped.plan", tensorrt="10.3.0")
    (root / "manifest.json").write_text(json.dumps(manifest))
    rehash(root, ["shipped.plan"])
    result = verify_bundle(str(root), log=lambda _: None)
    passed = result["passed"]
    assert passed and result["runner"]["note"] == "engine shipped in the bundle"
    assert not state_of(root).joinpath("model.plan").exists()  # nothing was built
    manifest = read_json(root / "manifest.json")
    manifest["engine"]["tensorrt"] = "10.2.0"  # built with another TensorRT: ignored, built here instead
    (root / "manifest.json").write_text(json.dumps(manifest))
    result = verify_bundle(str(root), log=lambda _: None)
    passed = result["passed"]
    assert passed and result["runner"]["note"].startswith("engine built on this device")


def test_install_switch_and_rollback_on_the_device(bundles, no_torch, tmp_path):
    from pwdeploy.device.install import InstallError, install, switch
    from pwdeploy.fsutil import sha256_file as sha256_of

    deploy = tmp_path / "deploy"
    a = install(str(bundles["onnx-fp32"]), str(deploy), expected_sha256=sha256_of(str(bundles["onnx-fp32"])),
                log=lambda _: None)
    b = install(str(bundles["onnx-fp16"]), str(deploy), log=lambda _: None)
    rel_a, rel_b = (os.path.relpath(r["release"], deploy) for r in (a, b))
    assert os.readlink(deploy / "current") == rel_b and b["previous"] == rel_a
    with pytest.raises(InstallError, match="arrived damaged.*still points at " + rel_b):
        install(str(bundles["onnx-int8"]), str(deploy), expected_sha256="0" * 64, log=lambda _: None)
    # switching back to the older release is refused; the documented roll-back command (the trust anchor,
    # isolated, run from inside the current release) does it and writes nothing into any release
    with pytest.raises(InstallError, match="older than release 2.*refused as a downgrade.*rollback DEPLOY_DIR"):
        switch(a["release"], str(deploy), log=lambda _: None)
    proc = subprocess.run([sys.executable, "-I", "-B", str(anchor_file(tmp_path)), "rollback", str(deploy)],
                          cwd=deploy / "current", env=no_torch, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert os.readlink(deploy / "current") == rel_a
    line = json.loads(proc.stdout)  # exactly one JSON line
    assert line["from"] == {"release": rel_b, "bundle_id": b["bundle_id"], "release_number": 2}
    assert line["to"] == {"release": rel_a, "bundle_id": a["bundle_id"], "release_number": 1}
    assert not list((deploy / "releases").rglob("__pycache__"))
    # an intact copy of a bundle is reused; a damaged one is not: the bundle is unpacked afresh beside it
    again = install(str(bundles["onnx-fp16"]), str(deploy), log=lambda _: None)
    assert again["release"] == b["release"]
    (Path(b["release"]) / "README.txt").write_text("edited on the device\n")
    fresh = install(str(bundles["onnx-fp16"]), str(deploy), log=lambda _: None)
    assert fresh["release"] == b["release"] + "-2"
    with pytest.raises(InstallError, match="README.txt has 21 bytes, the manifest says"):
        switch(b["release"], str(deploy), log=lambda _: None)
    with pytest.raises(InstallError, match="not a release folder"):
        switch(str(tmp_path), str(deploy), log=lambda _: None)
    assert os.readlink(deploy / "current") == os.path.relpath(fresh["release"], deploy)


def test_prune_releases_keeps_current_and_the_newest(tmp_path):
    from pwdeploy.device.install import prune_releases

    releases = tmp_path / "releases"
    for i, name in enumerate(["a", "b", "c", "d"]):
        (releases / name).mkdir(parents=True)
        (releases / name / "manifest.json").write_text("{}")
        os.utime(releases / name, (100 + i, 100 + i))  # a oldest ... d newest
    (releases / "notes").mkdir()  # not a release: no manifest
    (releases / ".unpack-x").mkdir()
    (tmp_path / "current").symlink_to("releases/a")  # rolled back to the oldest
    assert prune_releases(str(tmp_path), 0, log=lambda _: None) == []
    assert sorted(prune_releases(str(tmp_path), 2, log=lambda _: None)) == ["b", "c"]
    assert sorted(p.name for p in releases.iterdir()) == [".unpack-x", "a", "d", "notes"]
    assert prune_releases(str(tmp_path), 1, log=lambda _: None) == ["d"]
