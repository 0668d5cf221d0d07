"""One owner per fact: RunDir alone writes config.json / report.json; compress keeps its results in memory."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import TINY_DATA

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("pwdeploy", "exporters", "calibration") for p in sorted((ROOT / d).rglob("*.py"))]
OWNER = ROOT / "pwdeploy" / "rundir.py"
WRITERS = {"write_json", "write_text", "atomic_path", "open", "write_bytes", "dump"}
RUN_FILES = ("report.json", "config.json", "REPORT", "CONFIG")


def _writes_run_file(call: ast.Call, source: str) -> bool:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if name not in WRITERS:
        return False
    target = ast.get_source_segment(source, call.args[0]) if call.args else ""
    if name == "write_text" and isinstance(func, ast.Attribute) and not call.args[1:]:  # Path.write_text(text)
        target = ast.get_source_segment(source, func.value)
    if name == "open" and not any(isinstance(a, ast.Constant) and "w" in str(a.value) for a in call.args[1:]):
        return False
    return any(key in (target or "") for key in RUN_FILES)


def test_only_rundir_writes_config_and_report():
    offenders = []
    for path in SOURCES:
        if path == OWNER:
            continue
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and _writes_run_file(node, source):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"config.json/report.json written outside pwdeploy/rundir.py: {offenders}"


def test_scan_catches_a_direct_write():
    """The scan above is not vacuous: it flags the patterns it is meant to forbid."""
    source = "write_json(run / rundir.REPORT, report)\nopen(run / 'config.json', 'w')\n"
    calls = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call)]
    assert sum(_writes_run_file(c, source) for c in calls) == 2


def test_targets_registry_is_the_one_list():
    from pwdeploy import rundir
    from pwdeploy.config import CHOICES
    from pwdeploy.targets import ENGINE_BATCHES, get_target, list_targets
    from pwdeploy.exporters.tensorrt import PROFILE_BATCHES

    assert CHOICES["target"] == tuple(list_targets())
    assert PROFILE_BATCHES == ENGINE_BATCHES
    int8 = get_target("trt-int8")
    assert (int8.runtime, int8.precision, int8.onnx_file, int8.tolerance) == ("tensorrt", "int8", rundir.INT8_ONNX,
                                                                              2.0)
    from pwdeploy.errors import PwdeployError

    with pytest.raises(PwdeployError, match="unknown --target 'trt-int4'.*use one of onnx-fp32"):
        get_target("trt-int4")


def test_compress_writes_each_file_once_and_reloads_nothing(tiny_baseline, tmp_path, monkeypatch):
    """compress hands its logits to the export: no checkpoint is run again, report.json is written once."""
    from pwdeploy import fsutil, rundir
    from pwdeploy.api import compress_model
    from pwdeploy.runners import torch_runner

    def no_reload(*args, **kwargs):
        raise AssertionError("compress re-ran a checkpoint it had in memory")

    monkeypatch.setattr(torch_runner.TorchRunner, "__init__", no_reload)
    writes = []
    real = fsutil.write_json
    monkeypatch.setattr(rundir, "write_json", lambda path, obj: (writes.append(Path(path).name), real(path, obj)))
    run = compress_model(tiny_baseline, {"data": TINY_DATA, "prune": {"method": "magnitude", "flops_reduction": 0.5},
                                         "retrain": {"epochs": 1, "batch_size": 64}}, tmp_path / "run", quiet=True)
    assert sorted(writes) == ["config.json", "report.json"]
    report = rundir.RunDir.open(run).report
    assert "verification_set.npz" in report["artifacts"]
    assert "input_shape" not in report and "data" not in report  # config.json holds them
    assert rundir.RunDir.open(run).input_shape == (3, 16, 16)


def test_records_keep_the_file_format():
    """Typed records round-trip report.json entries, extra fields included."""
    from pwdeploy.rundir import ArtifactRecord, EngineRecord

    entry = {"sha256": "ab" * 32, "precision": "int8", "runtime": "onnxruntime", "target": "onnx-int8",
             "calibration": {"n": 64}, "quantization": {"weight_bits": 7}}
    record = ArtifactRecord.from_dict(entry)
    assert record.precision == "int8" and record.details == {"calibration": {"n": 64}, "quantization": {"weight_bits": 7}}
    assert record.to_dict() == entry
    engine = EngineRecord(built=False, precision="fp16", build_script="build_engine.sh", reason="no TensorRT",
                          verified_instead="model.fp16.onnx", details={"tensorrt_version": None})
    assert EngineRecord.from_dict(engine.to_dict()) == engine
