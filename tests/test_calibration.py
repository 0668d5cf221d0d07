"""Group-stratified INT8 calibration: per-group counts, determinism, provenance, stale calibrations refused."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from pwdeploy.calibration import StaleCalibrationError, check_fresh, indices_sha256, make_provenance, stratified_sample
from pwdeploy.errors import DataError
from pwdeploy.fsutil import read_json, sha256_file
from pwdeploy.sampling import equal_shares

from conftest import TINY_DATA as DATA


def _groups(counts):
    return np.concatenate([np.full(c, g) for g, c in enumerate(counts)])


def test_equal_counts_per_group():
    groups = np.random.default_rng(1).permutation(_groups([900, 150, 300]))
    sample = stratified_sample(groups, ["a", "b", "c"], 300, seed=0)
    assert sample.counts == {"a": 100, "b": 100, "c": 100}
    assert len(np.unique(sample.indices)) == 300
    # every index drawn for a group really belongs to it
    for g, name in enumerate(["a", "b", "c"]):
        assert int((groups[sample.indices] == g).sum()) == sample.counts[name]
    assert sample.notes == []


def test_configured_shares():
    groups = _groups([1000, 1000])
    sample = stratified_sample(groups, ["majority", "minority"], 500, seed=3, shares={"majority": 3, "minority": 1})
    assert sample.counts == {"majority": 375, "minority": 125}
    assert sample.per_group["minority"]["requested"] == 125


def test_short_group_is_reported_and_shortfall_refilled():
    groups = _groups([1000, 40])
    sample = stratified_sample(groups, ["majority", "minority"], 512, seed=0)
    assert sample.counts == {"majority": 472, "minority": 40}
    assert len(sample.indices) == 512
    assert any("'minority' has only 40" in note for note in sample.notes)


def test_empty_group_is_reported_not_silently_skipped():
    sample = stratified_sample(_groups([600, 0]), ["majority", "minority"], 100, seed=0)
    assert sample.counts == {"majority": 100, "minority": 0}
    assert any("'minority' has no training samples" in note for note in sample.notes)


def test_smaller_split_than_requested_uses_everything_and_says_so():
    sample = stratified_sample(_groups([30, 20]), ["a", "b"], 512, seed=0)
    assert len(sample.indices) == 50
    assert any("fewer than --calib-size" in note for note in sample.notes)


def test_deterministic_under_seed():
    groups = np.random.default_rng(0).permutation(_groups([700, 300]))
    a = stratified_sample(groups, ["x", "y"], 200, seed=7)
    b = stratified_sample(groups, ["x", "y"], 200, seed=7)
    c = stratified_sample(groups, ["x", "y"], 200, seed=8)
    assert np.array_equal(a.indices, b.indices)
    assert indices_sha256(a.indices) == indices_sha256(b.indices) != indices_sha256(c.indices)


def test_bad_requests_are_refused():
    with pytest.raises(DataError, match="--calib-size"):
        stratified_sample(_groups([10]), ["a"], 0)
    with pytest.raises(DataError, match="unknown group"):
        stratified_sample(_groups([10]), ["a"], 5, shares={"b": 1})


def test_equal_shares_never_exceeds_availability():
    rng = np.random.default_rng(0)
    for _ in range(200):
        available = list(rng.integers(0, 50, rng.integers(1, 6)))
        total = int(rng.integers(1, 200))
        take = equal_shares(available, total)
        assert all(0 <= t <= a for t, a in zip(take, available))
        assert sum(take) == min(total, sum(available))


def test_provenance_and_staleness():
    idx = np.array([3, 1, 4], dtype=np.int64)
    prov = make_provenance(method="entropy", model_sha256="a" * 64, indices=idx, per_group={"g": {"drawn": 3}},
                           seed=0, split="train", dataset="synthetic")
    assert prov["n"] == 3 and prov["indices_sha256"] == indices_sha256(idx) and prov["method"] == "entropy"
    check_fresh(prov, "a" * 64)
    with pytest.raises(StaleCalibrationError, match="--recalibrate"):
        check_fresh(prov, "b" * 64)


# --- on a real run directory ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run_dir(tiny_run):
    """The shared tiny run (conftest): copy it before changing anything."""
    return tiny_run


def test_int8_export_records_stratified_provenance(run_dir, tmp_path):
    from pwdeploy.exporters.targets import export_target

    run = shutil.copytree(run_dir, tmp_path / "run")
    info = export_target(run, "onnx-int8", calib_size=96, calib_method="percentile", seed=5)
    record = info["artifacts"]["model.int8.onnx"]
    prov = record["calibration"]
    assert prov["method"] == "percentile" and prov["split"] == "train" and prov["n"] == 96
    assert {g: e["drawn"] for g, e in prov["per_group"].items()} == {"majority": 48, "minority": 48}
    assert prov["model_sha256"] == sha256_file(run / "model.onnx")
    assert len(prov["indices_sha256"]) == 64
    assert read_json(run / "report.json")["artifacts"]["model.int8.onnx"]["calibration"] == prov
    # ONNX Runtime's target: UINT8 activations (its fused QLinearConv kernels), symmetric per-channel INT8 weights
    quantization = record["quantization"]
    assert quantization["format"] == "QDQ" and quantization["activation_type"] == "uint8"
    assert quantization["symmetric"] is False and quantization["weight_symmetric"] is True
    assert "skipped" in record["tensorrt_check"]
    import json

    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(run / "model.int8.onnx"))
    zero_points = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if "zero_point" in i.name}
    assert any(z.dtype == np.uint8 for z in zero_points.values())  # activations
    weights = [z for z in zero_points.values() if z.dtype == np.int8]
    assert weights and all(np.all(z == 0) for z in weights)  # weights stay symmetric
    embedded = {p.key: p.value for p in model.metadata_props}["pwdeploy.calibration"]
    assert json.loads(embedded) == prov  # the provenance travels inside the file

    # TensorRT's target: signed, zero-point-0 quantization everywhere, checked against TensorRT's rules
    trt = export_target(run, "trt-int8", calib_size=96, calib_method="percentile", seed=5)
    trt_record = trt["artifacts"]["model.int8.onnx"]
    assert trt_record["quantization"]["symmetric"] is True and trt_record["quantization"]["activation_type"] == "int8"
    assert trt_record["calibration"] == prov  # the same recorded ranges, quantized for the other runtime
    assert "skipped" not in trt_record["tensorrt_check"]
    model = onnx.load(str(run / "model.int8.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    zero_points = [numpy_helper.to_array(i) for i in model.graph.initializer if "zero_point" in i.name]
    assert zero_points and all(np.all(z == 0) for z in zero_points)
    assert all(z.dtype in (np.int8, np.int32) for z in zero_points)


def test_same_settings_reuse_and_stale_calibration_refused(run_dir, tmp_path):
    from pwdeploy.exporters.targets import export_target

    run = shutil.copytree(run_dir, tmp_path / "run")
    first = export_target(run, "onnx-int8", calib_size=64, seed=1)["artifacts"]["model.int8.onnx"]["calibration"]
    again = export_target(run, "onnx-int8", calib_size=64, seed=1)["artifacts"]["model.int8.onnx"]["calibration"]
    assert again == first  # same model and settings: the recorded scales are reused

    # A different fp32 model (here: the original) makes the recorded scales stale.
    shutil.copyfile(run / "original.onnx", run / "model.onnx")
    with pytest.raises(StaleCalibrationError, match="stale calibration"):
        export_target(run, "onnx-int8", calib_size=64, seed=1)
    fresh = export_target(run, "onnx-int8", calib_size=64, seed=1, recalibrate=True)
    assert fresh["artifacts"]["model.int8.onnx"]["calibration"]["model_sha256"] == sha256_file(run / "model.onnx")


def test_cli_export_stale_calibration_exits_2(run_dir, tmp_path, capsys):
    from pwdeploy.cli import main

    run = shutil.copytree(run_dir, tmp_path / "run")
    assert main(["export", str(run), "--target", "onnx-int8", "--calib-size", "64"]) == 0
    shutil.copyfile(run / "original.onnx", run / "model.onnx")
    assert main(["export", str(run), "--target", "onnx-int8", "--calib-size", "64"]) == 2
    err = capsys.readouterr().err
    assert "stale calibration" in err and "--recalibrate" in err and "Traceback" not in err
