"""compress end to end: the run directory, report.json contract, ONNX export and CLI error handling."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import TINY_DATA
from pwdeploy import rundir
from pwdeploy.cli import app, main
from pwdeploy.models.checkpoint import load_model


def test_run_directory_holds_every_artifact(tiny_run):
    for name in (rundir.CONFIG, rundir.REPORT, rundir.REPORT_MD, "report.png", rundir.ORIGINAL_PT,
                 rundir.PRUNED_PT, rundir.MODEL_ONNX, rundir.ORIGINAL_ONNX, rundir.COMPLETE):
        assert (tiny_run / name).is_file(), name
    assert not list(tiny_run.parent.glob(".*partial*"))


def test_report_json_contract(tiny_run):
    report = json.loads((tiny_run / rundir.REPORT).read_text())
    assert report["schema"] == "pwdeploy.report/2"
    assert report["method"] == "magnitude" and report["loss"] == "pw"
    assert report["flops_reduction_target"] == 0.5
    assert abs(report["flops_reduction"] - 0.5) <= 0.01
    assert 1 - report["macs"]["pruned"] / report["macs"]["original"] == pytest.approx(report["flops_reduction"])
    assert report["params"]["pruned"] < report["params"]["original"]
    for key in ("original", "pruned"):
        m = report["metrics"][key]
        assert 0 <= m["overall"]["accuracy"] <= 100 and isinstance(m["overall"]["n"], int)
        assert set(m["groups"]) == {"majority", "minority"}
        assert sum(g["n"] for g in m["groups"].values()) == m["overall"]["n"]
    drop = report["changes"]["pruned"]["worst_group_drop"]
    expected = max(report["metrics"]["original"]["groups"][g]["accuracy"] - report["metrics"]["pruned"]["groups"][g]["accuracy"]
                   for g in ("majority", "minority"))
    assert drop["points"] == pytest.approx(expected)
    assert report["worst_group"]["pruned"]["group"] in ("majority", "minority")


def test_checkpoints_reload_weights_only_and_onnx_matches(tiny_run):
    model, info = load_model(tiny_run / rundir.PRUNED_PT)
    assert info["kind"] == "checkpoint"
    proto = onnx.load(str(tiny_run / rundir.MODEL_ONNX))
    onnx.checker.check_model(proto)
    assert proto.opset_import[0].version >= 17
    assert [i.name for i in proto.graph.input] == ["input"] and [o.name for o in proto.graph.output] == ["logits"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    session = ort.InferenceSession(str(tiny_run / rundir.MODEL_ONNX), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 16, 16)).astype(np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        assert np.abs(session.run(None, {"input": x})[0] - expected).max() < 1e-4


def test_config_json_records_the_run(tiny_run):
    config = json.loads((tiny_run / rundir.CONFIG).read_text())
    assert config["schema"] == "pwdeploy.config/1"
    assert TINY_DATA["options"].items() <= config["data"]["options"].items()  # flags over configs/synthetic.yaml
    assert config["prune"]["flops_reduction"] == 0.5 and config["loss"] == "pw"
    assert config["versions"]["torch"] == torch.__version__
    assert config["input_shape"] == [3, 16, 16]


def _cli(*args):
    return main([str(a) for a in args])


def _data_args():
    return ["--data", "synthetic", "-D", "size=16", "-D", "n=400", "-D", "minority_fraction=0.2"]


def test_cli_compress_taylor_ce(tiny_baseline, tmp_path, capsys):
    out = tmp_path / "ce"
    config = tmp_path / "fast.yaml"  # --config replaces the dataset's YAML; flags still override it
    config.write_text("prune:\n  steps_between: 2\n  taylor_batches: 1\nretrain:\n  epochs: 5\n  batch_size: 64\n")
    assert _cli("compress", tiny_baseline, "--out", out, *_data_args(), "--loss", "ce", "--method", "taylor",
                "--flops-reduction", "0.75", "--epochs", "1", "--config", config) == 0
    report = json.loads((out / rundir.REPORT).read_text())
    assert report["loss"] == "ce" and report["method"] == "taylor"
    config_json = json.loads((out / rundir.CONFIG).read_text())
    assert config_json["prune"]["steps_between"] == 2 and config_json["retrain"]["epochs"] == 1
    assert abs(report["flops_reduction"] - 0.75) <= 0.01
    assert "minority" in capsys.readouterr().out
    # an existing run is never silently replaced
    assert _cli("compress", tiny_baseline, "--out", out, *_data_args()) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("args,needle", [
    (["compress", "missing.pt", "--out", "x"], "not found"),
    (["compress", "STATE_DICT", "--out", "x"], "--arch"),
    (["compress", "BASELINE", "--out", "x", "--loss", "focal"], "loss must be one of"),
    (["compress", "BASELINE", "--out", "x", "--flops-reduction", "1.5"], "--flops-reduction"),
    (["compress", "BASELINE", "--out", "x", "--data", "nosuch"], "unknown dataset"),
    (["train", "--out", "m.pt", "--arch", "nosuchnet"], "unknown architecture"),
    (["compress", "BASELINE", "--out", "x", "--data", "celeba", "--data-root", "/nonexistent"], "/nonexistent"),
    (["compress", "BASELINE", "--out", "x", "-D", "colour=red"], "unknown option"),
    (["compress", "BASELINE", "--out", "x", "--config", "nofile.yaml"], "config file not found"),
])
def test_bad_input_is_one_line_exit_2(args, needle, tiny_baseline, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    state_dict = tmp_path / "sd.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), state_dict)
    args = [str(tiny_baseline) if a == "BASELINE" else str(state_dict) if a == "STATE_DICT" else a for a in args]
    code = _cli(*args)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_interrupted_run_leaves_nothing_that_looks_complete(tiny_baseline, tmp_path, monkeypatch):
    import pwdeploy.api as api

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "fit", interrupted)
    out = tmp_path / "run"
    assert _cli("compress", tiny_baseline, "--out", out, *_data_args(), "--method", "magnitude") == 130
    assert not out.exists()
    assert not list(tmp_path.glob(".*"))


def test_version_and_every_option_documented(capsys):
    assert main(["--version"]) == 0
    assert "pwdeploy 0.1.0" in capsys.readouterr().out
    for command in app.registered_commands:
        import inspect

        for name, param in inspect.signature(command.callback).parameters.items():
            info = param.default
            assert getattr(info, "help", None), f"{command.callback.__name__} --{name} has no help line"


def test_pw_flags_override_the_active_methods_config():
    from pwdeploy.api import make_config
    from pwdeploy.errors import PwdeployError

    # celeba.yaml sets Taylor's own PW settings (w_min 0.8, gamma 0.5): the flag replaces gamma only
    config = make_config({"data": {"name": "celeba"}, "prune": {"method": "taylor"}}, pw_gamma=3.0)
    assert (config.pw_for().gamma, config.pw_for().min_weight) == (3.0, 0.8)
    with pytest.raises(PwdeployError, match="--pw-min-weight"):
        make_config({}, pw_min_weight=1.5)
