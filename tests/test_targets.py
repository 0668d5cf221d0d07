"""Precision targets: fp32/fp16/INT8 ONNX artifacts, TensorRT engine or (without TensorRT) build_engine.sh."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import textwrap

import numpy as np
import pytest

from pwdeploy.exporters.tensorrt import tensorrt_status
from pwdeploy.fsutil import read_json, sha256_file

from conftest import TINY_DATA as DATA
TRT = tensorrt_status()
needs_trt = pytest.mark.skipif(not TRT["available"], reason=f"TensorRT engine build impossible here: {TRT['reason']}")
without_trt = pytest.mark.skipif(TRT["available"], reason="TensorRT and a CUDA GPU are present: the engine is built")


@pytest.fixture(scope="module")
def run_dir(tiny_run):
    """The shared tiny run (conftest): copy it before changing anything."""
    return tiny_run


@pytest.fixture
def run(run_dir, tmp_path):
    return shutil.copytree(run_dir, tmp_path / "run")


def _logits(path, images):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def test_onnx_fp32_records_model_original_and_verification_set(run):
    from pwdeploy.exporters.targets import export_target
    from pwdeploy.verification_set import load_verification_set

    info = export_target(run, "onnx-fp32")
    assert info["verify"] == "model.onnx" and info["engine"] is None
    artifacts = read_json(run / "report.json")["artifacts"]
    assert artifacts["model.onnx"]["sha256"] == sha256_file(run / "model.onnx")
    assert artifacts["original.onnx"]["role"] == "original"
    vs = load_verification_set(run / "verification_set.npz")
    assert artifacts["verification_set.npz"]["n"] == len(vs) == DATA["options"]["n"]  # the whole (small) test split
    assert set(vs.logits) == {"pruned", "original"}
    # stored reference logits are the PyTorch model's: ONNX Runtime on model.onnx agrees with them
    np.testing.assert_allclose(_logits(run / "model.onnx", vs.images), vs.logits["pruned"], atol=1e-3)


def test_onnx_fp16_converts_and_keeps_fp32_io(run):
    import onnx

    from pwdeploy.exporters.targets import export_target
    from pwdeploy.verification_set import load_verification_set

    info = export_target(run, "onnx-fp16")
    assert info["artifact"] == info["verify"] == "model.fp16.onnx"
    model = onnx.load(str(run / "model.fp16.onnx"))
    dtypes = {i.data_type for i in model.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in dtypes
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # keep_io_types
    vs = load_verification_set(run / "verification_set.npz")
    fp16 = _logits(run / "model.fp16.onnx", vs.images[:64])
    fp32 = _logits(run / "model.onnx", vs.images[:64])
    assert np.abs(fp16 - fp32).max() < 0.05 * (np.abs(fp32).max() + 1)
    record = read_json(run / "report.json")["artifacts"]["model.fp16.onnx"]
    assert record["precision"] == "fp16" and record["sha256"] == sha256_file(run / "model.fp16.onnx")
    assert record["source_sha256"] == sha256_file(run / "model.onnx")
    assert record["conversion"]["keep_io_types"] is True


def test_unknown_target_is_bad_input(run, capsys):
    from pwdeploy.cli import main

    assert main(["export", str(run), "--target", "onnx-int4"]) == 2
    assert "unknown target 'onnx-int4'" in capsys.readouterr().err


@without_trt
@pytest.mark.parametrize("target,onnx_name,flag", [("trt-fp16", "model.fp16.onnx", "--fp16"),
                                                   ("trt-int8", "model.int8.onnx", "--int8")])
def test_trt_target_without_tensorrt_writes_onnx_and_build_script(run, capsys, target, onnx_name, flag):
    from pwdeploy.cli import main

    assert main(["export", str(run), "--target", target, "--calib-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "NOT built here" in out and onnx_name in out and "build_engine.sh" in out
    assert (run / onnx_name).is_file() and not (run / "model.plan").exists()
    script = run / "build_engine.sh"
    assert script.stat().st_mode & stat.S_IXUSR
    report = read_json(run / "report.json")
    engine = report["artifacts"][onnx_name]["engine"]
    assert engine["built"] is False and engine["verified_instead"] == onnx_name and engine["reason"]
    assert report["engine"] == engine and report["artifacts"]["build_engine.sh"]["from"] == onnx_name

    # TensorRT 10 gets the precision flag, 11 builds the (strongly typed) ONNX as is.
    calls = _fake_trtexec(script, run.parent)
    for args in calls.values():
        assert f"--onnx={run / onnx_name}" in args.split()
    assert flag in calls["10"].split() and flag not in calls["11"].split()
    assert "--minShapes=input:1x3x16x16" in calls["11"] and "--maxShapes=input:32x3x16x16" in calls["11"]
    assert flag in calls["banner10"].split() and flag not in calls["banner11"].split()
    assert (run / "model.plan").is_file()  # the fake engine, renamed into place after the build
    (run / "model.plan").unlink()

    # verify on a run with no engine checks the ONNX and says so
    assert main(["verify", str(run), "--target", target, "--bootstrap", "0"]) == 0
    out = capsys.readouterr().out
    assert "engine was not built here" in out and onnx_name in out


def _fake_trtexec(script, tmp):
    """Run build_engine.sh against a fake trtexec that logs its arguments, for TensorRT 10 and 11."""
    bin_dir = tmp / "fakebin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp / "trtexec.log"
    trtexec = bin_dir / "trtexec"
    trtexec.write_text(textwrap.dedent(f"""\
        #!/usr/bin/env bash
        if [ "${{1:-}}" = "--help" ]; then echo "&&&& RUNNING TensorRT.trtexec [TensorRT v$FAKE_BANNER] # trtexec"; exit 0; fi
        echo "$@" > {log}
        for a in "$@"; do case "$a" in --saveEngine=*) echo engine > "${{a#--saveEngine=}}" ;; esac; done
        """))
    no_python = bin_dir / "python3"  # so the script cannot read a real tensorrt module's version
    no_python.write_text("#!/usr/bin/env bash\nexit 1\n")
    for f in (trtexec, no_python):
        f.chmod(0o755)
    calls = {}
    cases = {"10": {"PWDEPLOY_TRT_VERSION": "10"}, "11": {"PWDEPLOY_TRT_VERSION": "11"},
             "banner10": {"FAKE_BANNER": "100300"}, "banner11": {"FAKE_BANNER": "110000"}}
    for name, extra in cases.items():
        env = {k: v for k, v in os.environ.items() if k != "PWDEPLOY_TRT_VERSION"}
        env.update(PATH=f"{bin_dir}:{env['PATH']}", TRTEXEC=str(trtexec), **extra)
        subprocess.run(["bash", str(script)], check=True, env=env, capture_output=True, text=True)
        calls[name] = log.read_text().strip()
    return calls


@needs_trt
def test_trt_engine_is_built_and_verified(run, capsys):
    from pwdeploy.cli import main

    assert main(["export", str(run), "--target", "trt-fp16"]) == 0
    record = read_json(run / "report.json")["artifacts"]["model.plan"]
    assert record["engine"]["built"] is True and record["engine"]["tensorrt_version"]
    assert record["engine"]["gpu"]["name"] and record["engine"]["gpu"]["compute_capability"]
    assert (run / "build_engine.sh").is_file()  # for the target device, which may differ from this GPU
    assert main(["verify", str(run / "model.plan"), "--bootstrap", "0"]) == 0
    assert read_json(run / "verify.json")["artifacts"]["model.plan"]["runner"]["runner"] == "tensorrt"


def test_targets_declare_their_policy_and_the_pipeline_reads_it(monkeypatch):
    """Rounding and --allocation auto come from the Target, not from tables keyed by name elsewhere."""
    import dataclasses

    from pwdeploy import targets
    from pwdeploy.config import build_config
    from pwdeploy.prune.allocation import resolve_allocation
    from pwdeploy.speed import resolve_round_to

    for name in targets.list_targets():
        spec = targets.get_target(name)
        assert spec.rounding.multiple >= 1 and spec.rounding.why and spec.calib_size >= 1
        lo, opt, hi = spec.engine_batches
        assert 1 <= lo <= opt <= hi
    custom = dataclasses.replace(targets.get_target("trt-fp16"), rounding=targets.Rounding(32, "a test rule"),
                                 uniform_methods=("magnitude",))
    monkeypatch.setitem(targets._TARGETS, "trt-fp16", custom)
    record = resolve_round_to(build_config({"target": "trt-fp16", "prune": {"round_to": None}}, data_name="synthetic"))
    assert record["value"] == 32 and "a test rule" in record["source"]
    assert resolve_allocation("auto", "trt-fp16", "magnitude")[0] == "uniform"
    assert resolve_allocation("auto", "trt-fp16", "taylor")[0] == "global"
    with pytest.raises(ValueError, match="unknown runtime"):
        targets.register_target(targets.Target("x-fp32", "tvm", "fp32"))


@without_trt
def test_export_uses_the_targets_engine_profile_and_calibration_size(run, monkeypatch):
    import dataclasses

    from pwdeploy import targets
    from pwdeploy.exporters.targets import export_target

    spec = dataclasses.replace(targets.get_target("trt-int8"), engine_batches=(2, 4, 16), calib_size=48)
    monkeypatch.setitem(targets._TARGETS, "trt-int8", spec)
    info = export_target(run, "trt-int8")  # no calib_size: the target's
    assert info["artifacts"]["model.int8.onnx"]["calibration"]["requested_size"] == 48
    script = (run / "build_engine.sh").read_text()
    assert "2x3x16x16" in script and "4x3x16x16" in script and "16x3x16x16" in script
    assert "32x3x16x16" not in script


def test_a_one_logit_binary_models_verification_set_is_accepted(tmp_path):
    """A binary model with one logit (CelebA's resnet18) has a verification set; a narrowed one is refused."""
    from pwdeploy.errors import DataError
    from pwdeploy.verification_set import VerificationSet, load_verification_set, write_verification_set

    rng = np.random.default_rng(0)

    def vs(width, meta):
        return VerificationSet(images=rng.standard_normal((6, 3, 4, 4)).astype(np.float32),
                               labels=np.array([0, 1] * 3), groups=np.array([0, 0, 0, 1, 1, 1]),
                               group_names=["a", "b"], class_names=["no", "yes"], indices=np.arange(6),
                               logits={"pruned": rng.standard_normal((6, width)).astype(np.float32)}, meta=meta)

    write_verification_set(tmp_path / "one.npz", vs(1, {"logit_width": 1}))
    assert load_verification_set(tmp_path / "one.npz").logits["pruned"].shape == (6, 1)
    with pytest.raises(DataError, match="logits_pruned has shape"):
        write_verification_set(tmp_path / "bad.npz", vs(1, {}))  # 2 classes, no record of a one-logit model
