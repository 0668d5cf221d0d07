"""Group-aware INT8: greedy float-layer selection, per-group sensitivity, the mixed model's validity for
ONNX Runtime and (statically) TensorRT, and the CLI around them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pwdeploy.calibration.probe import ProbeData, Score, score_logits
from pwdeploy.calibration.protect import select_float_layers
from pwdeploy.fsutil import read_json, sha256_file, write_json


# --- greedy selection on a scripted probe (no ONNX): the logic itself ------------------------------------------

class ScriptedProbe:
    """Each layer, kept in float, gives back a fixed number of points to each group (effects add up)."""

    def __init__(self, base: dict, gains: dict, tolerance: float = 2.0):
        self.layers = list(gains)
        self.base, self.gains, self.tolerance = base, gains, tolerance
        self.data = ProbeData(np.zeros((1, 1)), np.zeros(1, np.int64), np.zeros(1, np.int64), list(base), "val")
        self.full_range, self.method, self.provider = False, "minmax", "cpu"
        self.calls = []

    def score(self, float_layers=()):
        self.calls.append(tuple(sorted(float_layers)))
        change = {g: v + sum(self.gains[layer][g] for layer in float_layers) for g, v in self.base.items()}
        error = {g: max(0.0, -v) / 10 for g, v in change.items()}
        failed = [g for g, v in change.items() if v < -self.tolerance]
        metrics = {"overall": {"accuracy": 0.0, "n": 1},
                   "groups": {g: {"accuracy": v, "n": 1} for g, v in change.items()}}
        return Score(tuple(sorted(float_layers)), metrics, change, error, not failed, failed)


def test_greedy_keeps_the_layers_that_hurt_the_worst_group_until_it_passes():
    gains = {"conv1": {"a": 0.0, "b": 1.0}, "conv2": {"a": 0.5, "b": 6.0}, "conv3": {"a": 0.0, "b": 3.0},
             "fc": {"a": 0.2, "b": 0.0}}
    probe = ScriptedProbe({"a": -0.5, "b": -10.0}, gains)
    result = select_float_layers(probe, budget=4)
    assert result.float_layers == ["conv2", "conv3"]  # most harm to b first, then the next; stops once b passes
    assert result.passed and result.chosen.change["b"] == pytest.approx(-1.0)
    assert not result.plain.passed and result.plain.failed_groups == ["b"]
    assert [s["added"] for s in result.steps] == ["conv2", "conv3"]
    assert result.table is not None and {row["layer"] for row in result.table["layers"]} == set(gains)


def test_greedy_respects_the_budget_and_reports_failure():
    probe = ScriptedProbe({"a": -20.0}, {"l1": {"a": 5.0}, "l2": {"a": 4.0}, "l3": {"a": 3.0}})
    result = select_float_layers(probe, budget=2)
    assert result.float_layers == ["l1", "l2"] and not result.passed
    assert result.chosen.change["a"] == pytest.approx(-11.0)


def test_greedy_leaves_a_passing_model_alone():
    probe = ScriptedProbe({"a": -1.0, "b": 0.5}, {"l1": {"a": 1.0, "b": 0.0}})
    result = select_float_layers(probe, budget=3)
    assert result.float_layers == [] and result.passed and probe.calls == [()]


def test_greedy_follows_the_group_that_is_worst_now():
    # after conv_b fixes group b, group a is the worst: its own layer is chosen next
    gains = {"conv_a": {"a": 4.0, "b": 0.0}, "conv_b": {"a": 0.0, "b": 9.0}}
    probe = ScriptedProbe({"a": -5.0, "b": -10.0}, gains)
    result = select_float_layers(probe, budget=2)
    assert result.float_layers == ["conv_b", "conv_a"] and result.passed


def test_score_logits_per_group():
    data = ProbeData(np.zeros((4, 1)), np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1]), ["x", "y"], "val")
    ref = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], np.float32)
    out = ref.copy()
    out[3] = [1, 0]  # one sample of group y flips
    score = score_logits(out, ref, data, tolerance=2.0)
    assert score.change == {"x": 0.0, "y": -50.0} and score.failed_groups == ["y"] and score.worst_group == "y"
    assert score.logit_error["x"] == 0.0 and score.logit_error["y"] == pytest.approx(0.5)


# --- on a real run directory: ONNX Runtime, the run's calibration --------------------------------------------

def _damage_ranges(run, layer_index: int = -1, factor: float = 0.02, tensor: str = "output") -> str:
    """Fault injection: shrink the calibrated output range of one weighted layer (default: the classifier, whose
    output only it quantizes; a conv's output shares the following Relu's range), as a calibration set that
    missed part of the data would, so quantizing that layer clips its output; ``tensor="input"`` with the first
    layer clips the image instead (only that layer consumes it). The provenance is updated so the damaged
    ranges count as the run's current calibration."""
    import onnx

    from pwdeploy.calibration.quantize import prepare, quantizable_layers

    prepared = run / "prepared-for-test.onnx"
    prepare(run / "model.onnx", prepared)
    layer = quantizable_layers(prepared)[layer_index]
    node = next(n for n in onnx.load(str(prepared)).graph.node if n.name == layer)
    output = node.output[0] if tensor == "output" else node.input[0]
    prepared.unlink()
    ranges = read_json(run / "calibration_ranges.json")
    for key in ("lowest", "highest"):
        entry = ranges["data"][output][key]
        entry["data"] = [v * factor for v in entry["data"]]
    write_json(run / "calibration_ranges.json", ranges)
    calibration = read_json(run / "calibration.json")
    calibration["ranges_sha256"] = sha256_file(run / "calibration_ranges.json")
    write_json(run / "calibration.json", calibration)
    return layer


@pytest.fixture(scope="module")
def int8_run(tiny_run, tmp_path_factory):
    from pwdeploy.exporters.targets import export_target

    run = shutil.copytree(tiny_run, tmp_path_factory.mktemp("int8") / "run")
    export_target(run, "onnx-int8", calib_size=64, seed=0)
    return run


def test_sensitivity_table_heatmap_and_report(int8_run, tmp_path):
    from pwdeploy.calibration.probe import load_split
    from pwdeploy.calibration.quantize import prepare, quantizable_layers
    from pwdeploy.exporters.int8_analysis import analyze_int8
    from pwdeploy.metrics import group_metrics, predict
    from pwdeploy.runners import run_batches
    from pwdeploy.runners.onnxruntime_runner import OnnxRuntimeRunner

    run = shutil.copytree(int8_run, tmp_path / "run")
    table = analyze_int8(run)
    prepare(run / "model.onnx", tmp_path / "prepared.onnx")
    layers = quantizable_layers(tmp_path / "prepared.onnx")
    assert [row["layer"] for row in table["layers"]] == layers and len(layers) == 5  # 4 convs + the classifier
    assert all(set(row["harm"]) == {"majority", "minority"} for row in table["layers"])
    assert table["data"]["split"] == "val" and table["data"]["groups"]["minority"] > 0
    assert (run / "int8_sensitivity.png").stat().st_size > 1000
    assert read_json(run / "report.json")["int8_sensitivity"]["layers"] == table["layers"]

    # recompute one cell independently: harm = group accuracy with that layer in float - with every layer INT8
    config = read_json(run / "config.json")
    data = load_split(config, "val")

    def group_acc(path):
        with OnnxRuntimeRunner(path, provider="cpu") as runner:
            logits = run_batches(runner, data.images)
        return group_metrics(predict(logits), data.labels, data.groups, data.group_names)["groups"]

    from pwdeploy.calibration.probe import Int8Probe

    activations = read_json(run / "report.json")["artifacts"]["model.int8.onnx"]["quantization"]["activation_type"]
    with Int8Probe(run / "model.onnx", run / "calibration_ranges.json", data, activations=activations) as probe:
        probe.quantize((), tmp_path / "all.onnx")
        probe.quantize((layers[0],), tmp_path / "first-float.onnx")
    full, first = group_acc(tmp_path / "all.onnx"), group_acc(tmp_path / "first-float.onnx")
    for group in ("majority", "minority"):
        expected = first[group]["accuracy"] - full[group]["accuracy"]
        assert table["layers"][0]["harm"][group] == pytest.approx(expected, abs=1e-9)


def test_protect_groups_fixes_a_harmful_layer_and_the_result_is_a_valid_qdq_model(int8_run, tmp_path):
    import onnx

    from pwdeploy.exporters.qdq_check import check_qdq_for_tensorrt
    from pwdeploy.exporters.targets import export_target
    from pwdeploy.verify import verify

    run = shutil.copytree(int8_run, tmp_path / "run")
    damaged = _damage_ranges(run)
    info = export_target(run, "trt-int8", calib_size=64, seed=0, protect_groups=True)
    record = info["artifacts"]["model.int8.onnx"]
    protection = record["group_protection"]
    val = protection["validation"]
    assert not val["plain_int8"]["passed"] and val["plain_int8"]["worst_change"] < -2.0  # plain INT8 fails
    assert protection["passed_on_validation"] and damaged in protection["float_layers"]
    assert len(protection["float_layers"]) <= protection["budget"] == 4
    assert record["quantization"]["float_nodes"] == protection["float_layers"]
    assert not protection["test"]["plain_int8"]["passed"] and protection["test"]["mixed"]["passed"]
    latency = protection["latency"]["models"]
    assert set(latency) == {"fp32", "plain_int8", "mixed"} and all(v["median_ms"] > 0 for v in latency.values())
    # the artifact is recorded in report.json, passes TensorRT's static rules with the layer in float ...
    assert read_json(run / "report.json")["artifacts"]["model.int8.onnx"]["group_protection"] == protection
    check = check_qdq_for_tensorrt(run / "model.int8.onnx")
    assert record["tensorrt_check"] == check and set(protection["float_layers"]) <= set(check["float_layers"])
    model = onnx.load(str(run / "model.int8.onnx"))
    onnx.checker.check_model(model)
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in model.graph.node}
    script = (run / "build_engine.sh").read_text()
    assert 'MODEL="$HERE/model.int8.onnx"' in script and 'PRECISION="int8"' in script
    # ... and `verify` gates it on test as usual (ONNX Runtime runs it; GateFailed would raise)
    summary = verify(run, target="trt-int8", bootstrap=0)
    assert summary["artifacts"]["model.int8.onnx"]["passed"]
    assert "## INT8 group protection" in (run / "report.md").read_text()  # verify rewrote report.md


def test_qdq_check_rejects_what_tensorrt_would(int8_run, tmp_path):
    import onnx
    from onnx import numpy_helper

    from pwdeploy.exporters.qdq_check import QdqCheckError, check_qdq_for_tensorrt

    from pwdeploy.exporters.targets import export_target

    run = shutil.copytree(int8_run, tmp_path / "trt-run")  # the TensorRT target's Q/DQ (onnx-int8 is UINT8)
    export_target(run, "trt-int8", calib_size=64, seed=0)
    good = onnx.load(str(run / "model.int8.onnx"))
    assert check_qdq_for_tensorrt(run / "model.int8.onnx")["float_layers"] == []

    def broken(edit) -> str:
        model = onnx.ModelProto()
        model.CopyFrom(good)
        edit(model)
        path = tmp_path / "broken.onnx"
        onnx.save(model, str(path))
        with pytest.raises(QdqCheckError) as err:
            check_qdq_for_tensorrt(path)
        return str(err.value)

    def init(model, suffix):
        return next(i for i in model.graph.initializer if i.name.endswith(suffix))

    def nonzero_zero_point(model):
        zp = init(model, "zero_point")
        zp.CopyFrom(numpy_helper.from_array(np.ones_like(numpy_helper.to_array(zp)), zp.name))

    def int32_weights(model):
        w = init(model, "_quantized")
        w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w).astype(np.int32), w.name))

    def unpaired_scale(model):  # the first activation Q and its DQ get different scales
        q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
        scale = numpy_helper.from_array(np.array(0.5, np.float32), "other_scale")
        model.graph.initializer.append(scale)
        q.input[1] = "other_scale"

    assert "zero point" in broken(nonzero_zero_point)
    assert "INT8 only" in broken(int32_weights)
    assert "differ from its QuantizeLinear" in broken(unpaired_scale)


def test_cli_analyze_and_protect_errors_exit_2(tiny_run, int8_run, tmp_path, capsys):
    from pwdeploy.cli import main

    run = shutil.copytree(tiny_run, tmp_path / "fp32-only")
    assert main(["analyze", str(int8_run)]) == 2 and "--int8" in capsys.readouterr().err
    assert main(["analyze", str(run), "--int8"]) == 2
    assert "no INT8 calibration" in capsys.readouterr().err
    assert main(["export", str(run), "--target", "onnx-fp16", "--protect-groups"]) == 2
    err = capsys.readouterr().err
    assert "--protect-groups" in err and "Traceback" not in err
    assert main(["export", str(run), "--target", "onnx-int8", "--protect-groups", "--max-float-layers", "-1"]) == 2
    assert "--max-float-layers" in capsys.readouterr().err
    # compress refuses the combination before any training
    assert main(["compress", str(tmp_path / "any.pt"), "--out", str(tmp_path / "r"), "--protect-groups"]) == 2
    assert "--protect-groups" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_celeba_fixture_protect_groups_through_the_cli(tmp_path, capsys):
    """The CelebA-format fixture end to end: compress to INT8, a classifier whose calibrated range is too narrow
    (injected) fails plain INT8 per group; `export --protect-groups` fixes it, `verify` passes, `analyze` runs."""
    from fixtures_data import write_celeba
    from pwdeploy.cli import main

    root = write_celeba(tmp_path / "data", counts=(240, 120, 120), size=(24, 20))
    data = ["--data", "celeba", "--data-root", str(root), "-D", "size=[24, 20]"]
    base, run = tmp_path / "base.pt", tmp_path / "run"
    assert main(["train", *data, "--arch", "smallcnn", "--num-classes", "2", "--epochs", "6", "--lr", "3e-3",
                 "--batch-size", "32", "--out", str(base)]) == 0
    assert main(["compress", str(base), *data, "--method", "magnitude", "--flops-reduction", "0.5", "--epochs", "1",
                 "--target", "onnx-int8", "--calib-size", "64", "--out", str(run)]) == 0
    damaged = _damage_ranges(run, layer_index=0, tensor="input")  # the fixture's wide margins survive a clipped logit
    assert main(["export", str(run), "--target", "trt-int8", "--calib-size", "64", "--protect-groups"]) == 0
    protection = read_json(run / "report.json")["artifacts"]["model.int8.onnx"]["group_protection"]
    assert protection["validation"]["data"]["groups"] == {"male": 60, "female": 60}
    assert not protection["validation"]["plain_int8"]["passed"]
    assert protection["passed_on_validation"] and damaged in protection["float_layers"]
    assert protection["test"]["mixed"]["passed"]
    assert main(["verify", str(run), "--target", "trt-int8", "--bootstrap", "0"]) == 0
    assert main(["analyze", str(run), "--int8"]) == 0
    out = capsys.readouterr().out
    assert "INT8 harm per group" in out and (run / "int8_sensitivity.png").is_file()
