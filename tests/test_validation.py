"""Security, host side: every bad value refused (exit 2, one line), a fail-closed gate, safe --out, verify
--reference of another model, bad data, exit codes. Each case of the issue's "Why" list is a test here."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import TINY_DATA  # noqa: E402
from fixtures_data import read_manifest_rows, write_csv_manifest, write_manifest  # noqa: E402
from run_fixture import copy_run, damage_classifier, read_json, tiny_bundle_run  # noqa: E402

from pwdeploy import outputs, rundir  # noqa: E402
from pwdeploy.cli import main  # noqa: E402
from pwdeploy.config import build_config, load_yaml  # noqa: E402
from pwdeploy.errors import ConfigError, DataError, ModelError, PwdeployError  # noqa: E402
from pwdeploy.fsutil import sha256_file, write_json  # noqa: E402
from pwdeploy.gate import check_groups  # noqa: E402
from pwdeploy.validate import Range, check, check_data_options  # noqa: E402


def one_line_exit_2(argv, capsys, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


# --- the numeric validation layer --------------------------------------------------------------------------------

def test_numeric_validator_fuzz_agrees_with_an_independent_reference():
    """Seeded fuzz: random ranges and hostile values; `check` accepts exactly what a plain reading of the range
    accepts, and NaN/inf/bool/str are always refused with the name in the message."""
    rng = np.random.default_rng(12)
    specials = [math.nan, math.inf, -math.inf, True, False, "1", None, 1e308, -1e308, 0, 0.0, -0.0, 5e-324]
    for _ in range(400):
        low, high = sorted(rng.uniform(-5, 5, 2).round(rng.integers(0, 3)))
        r = Range(low if rng.random() < 0.8 else None, high if rng.random() < 0.8 else None,
                  low_open=bool(rng.integers(2)), high_open=bool(rng.integers(2)), integer=bool(rng.integers(2)))
        values = list(rng.uniform(-8, 8, 6)) + list(rng.integers(-8, 8, 4)) + [low, high] + specials
        for value in values:
            value = value.item() if hasattr(value, "item") else value
            expected = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                        and (not r.integer or float(value).is_integer())
                        and (r.low is None or (value > r.low if r.low_open else value >= r.low))
                        and (r.high is None or (value < r.high if r.high_open else value <= r.high)))
            if value is None:
                assert check("--x", None, r) is None
                continue
            if expected:
                assert check("--x", value, r) == value
            else:
                with pytest.raises(ConfigError, match=r"^--x .*must be"):
                    check("--x", value, r)


@pytest.mark.parametrize("section, key, value, named", [
    ("retrain", "lr", math.nan, "retrain.lr"), ("retrain", "lr", math.inf, "retrain.lr"),
    ("retrain", "batch_size", 0, "retrain.batch_size"), ("retrain", "epochs", -3, "retrain.epochs"),
    ("baseline", "lr", -1e-3, "baseline.lr"), ("prune", "taylor_batches", 0, "prune.taylor_batches"),
    ("prune", "max_layer_reduction", 1.0, "prune.max_layer_reduction"),
])
def test_config_numbers_out_of_range_are_refused_naming_the_key(section, key, value, named):
    with pytest.raises(ConfigError, match=rf"^{named}"):
        build_config({section: {key: value}})


def test_yaml_nan_and_inf_are_refused(tmp_path):
    for text, named in (("retrain: {lr: .nan}", "retrain.lr"), ("retrain: {lr: .inf}", "retrain.lr"),
                        ("pw: {default: {gamma: .nan}}", "pw.default.gamma"), ("seed: -1", "seed")):
        path = tmp_path / "c.yaml"
        path.write_text(text + "\n")
        with pytest.raises(ConfigError, match=rf"^{named}"):
            build_config(config_file=path)
    assert load_yaml(path)  # the file itself is valid YAML: the value is what is refused


def test_data_options_must_be_finite_and_in_range():
    for options, needle in (({"n": -5}, "-D option n"), ({"size": 0}, "-D option size"),
                            ({"minority_fraction": 1.5}, "-D option minority"),
                            ({"mean": [0.5, math.nan, 0.5]}, "-D option mean"), ({"size": [16, math.inf]}, "-D option size")):
        with pytest.raises(DataError, match=needle):
            check_data_options(options)
    check_data_options({"n": 10, "size": [16, 16], "mean": [0.5, 0.5, 0.5], "variant": "colour"})


@pytest.mark.parametrize("argv, needle", [
    (["train", "--out", "m.pt", "-D", "n=-5"], "-D option n -5"),
    (["train", "--out", "m.pt", "--lr", "nan"], "baseline.lr"),
    (["train", "--out", "m.pt", "--batch-size", "0"], "baseline.batch_size"),
    (["train", "--out", "m.pt", "--epochs", "-3"], "baseline.epochs"),
    (["compress", "missing.pt", "--out", "r", "--pw-gamma", "nan"], "--pw-gamma nan"),
    (["compress", "missing.pt", "--out", "r", "--pw-min-weight", "inf"], "--pw-min-weight inf"),
    (["compress", "missing.pt", "--out", "r", "--flops-reduction", "nan"], "--flops-reduction"),
    (["ship", "b.tar.gz", "--", "-oProxyCommand:deploy"], "host '-oProxyCommand' starts with '-'"),
    (["ship", "b.tar.gz", "nvidia@jetson:-rf"], "remote folder '-rf' starts with '-'"),
    (["ship", "b.tar.gz", "nvidia@jetson:deploy", "--keep", "-1"], "--keep -1"),
    (["ship", "b.tar.gz", "nvidia@jetson:deploy", "--verify-timeout", "nan"], "--verify-timeout"),
])
def test_cli_bad_numbers_and_arguments_exit_2_in_one_line(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_exit_2(argv, capsys, needle)
    assert not (tmp_path / "r").exists() and not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("flag", ["nan", "inf", "-1", "101"])
def test_verify_and_package_refuse_non_finite_tolerances(flag, capsys, tmp_path):
    run = tiny_bundle_run(tmp_path)
    one_line_exit_2(["verify", str(run), "--tolerance", flag], capsys, f"--tolerance {float(flag)}")
    one_line_exit_2(["package", str(run), "-o", str(tmp_path / "b.tar.gz"), "--max-group-drop", flag], capsys,
                    "--max-group-drop")


# --- the gate fails closed -------------------------------------------------------------------------------------

def _metrics(**groups):
    return {"overall": {"accuracy": 50.0, "n": 10},
            "groups": {g: {"accuracy": acc, "n": 0 if acc is None else 5} for g, acc in groups.items()}}


def test_gate_treats_nan_and_inf_as_fail():
    zero = _metrics(a=0.0, b=0.0)  # an all-zero model
    reference = _metrics(a=90.0, b=90.0)
    for tolerance in (math.nan, math.inf, -1.0):
        gate = check_groups(zero, reference, tolerance=tolerance)
        assert not gate.passed and all("not a finite number" in c.reason for c in gate.checks)
    assert not check_groups(_metrics(a=math.nan, b=90.0), reference, tolerance=1.0).passed
    assert not check_groups(_metrics(a=90.0, b=90.0), _metrics(a=math.nan, b=90.0), tolerance=1.0).passed
    assert not check_groups(zero, reference, tolerance=1.0, max_group_drop=math.nan).passed
    assert check_groups(reference, reference, tolerance=1.0).passed


def test_a_group_without_samples_fails_unless_allowed():
    metrics, reference = _metrics(a=90.0, b=None), _metrics(a=90.0, b=90.0)
    gate = check_groups(metrics, reference, tolerance=1.0)
    assert not gate.passed and gate.failed_groups == ["b"] and "no samples" in gate.checks[1].reason
    assert check_groups(metrics, reference, tolerance=1.0, allow_empty_groups=True).passed
    assert not check_groups({"overall": {}, "groups": {}}, reference, tolerance=1.0).passed  # nothing checked


# --- models, training, checkpoints ---------------------------------------------------------------------------------

def test_nan_or_inf_weights_in_an_input_model_are_refused(tmp_path, capsys):
    from pwdeploy.models.checkpoint import load_model
    from pwdeploy.models.small import SmallCNN

    model = SmallCNN(2, width=8)
    with torch.no_grad():
        next(model.parameters())[0].fill_(math.nan)
    torch.save(model.state_dict(), tmp_path / "nan.pt")
    with pytest.raises(ModelError, match="NaN/inf"):
        load_model(tmp_path / "nan.pt", arch="smallcnn", num_classes=2)
    one_line_exit_2(["compress", str(tmp_path / "nan.pt"), "--arch", "smallcnn", "--num-classes", "2",
                     "--out", str(tmp_path / "r")], capsys, "NaN/inf")
    assert not (tmp_path / "r").exists()


def test_an_inconsistent_checkpoint_is_a_one_line_error(tmp_path):
    from pwdeploy.models.checkpoint import load_model, save_checkpoint
    from pwdeploy.models.small import SmallCNN

    save_checkpoint(SmallCNN(2, width=8), tmp_path / "m.pt", arch="smallcnn", num_classes=2)
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    name = next(k for k in payload["state_dict"] if k.endswith("weight"))
    payload["state_dict"][name] = torch.zeros(3, 3)  # shape the recorded layers do not have
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(ModelError, match="inconsistent pwdeploy checkpoint"):
        load_model(tmp_path / "bad.pt")


def test_a_non_finite_training_loss_stops_the_run_and_leaves_nothing(tiny_baseline, tmp_path, capsys, monkeypatch):
    import pwdeploy.api as api
    from pwdeploy.loss import LossFn

    def poisoned(config, totals, counts=None):
        return LossFn("ce"), lambda logits, y, orig, g: logits.sum() * math.nan

    monkeypatch.setattr(api, "_losses", poisoned)
    out = tmp_path / "runs" / "nan"
    argv = ["compress", str(tiny_baseline), "--out", str(out), "--data", "synthetic", "--method", "magnitude",
            "--flops-reduction", "0.5", "--epochs", "1"]
    for key, value in TINY_DATA["options"].items():
        argv += ["-D", f"{key}={value}"]
    one_line_exit_2(argv, capsys, "the loss became nan")
    assert not out.exists() and not list(out.parent.glob(".*partial*"))


# --- safe outputs ------------------------------------------------------------------------------------------------

def _fake_complete_run(path: Path) -> Path:
    path.mkdir(parents=True)
    write_json(path / rundir.CONFIG, {"schema": rundir.CONFIG_SCHEMA})
    write_json(path / rundir.REPORT, {})
    (path / rundir.COMPLETE).write_text("done\n")
    return path


def test_overwrite_replaces_only_a_complete_run(tmp_path, monkeypatch, capsys):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.tex").write_text("years of work")
    with pytest.raises(PwdeployError, match="not a complete pwdeploy run"):
        outputs.check_out(thesis, overwrite=True)
    one_line_exit_2(["compress", "m.pt", "--out", str(thesis), "--overwrite"], capsys, "not a complete pwdeploy run")
    assert (thesis / "chapter1.tex").read_text() == "years of work"
    # the working directory and its parents are never replaced, even when they look like runs
    work = _fake_complete_run(tmp_path / "work")
    (work / "sub").mkdir()
    (work / "sub" / "keep.txt").write_text("mine")
    monkeypatch.chdir(work / "sub")
    for target in (Path("."), Path(".."), work):
        with pytest.raises(PwdeployError, match="working directory or one of its parents"):
            outputs.check_out(target, overwrite=True)
    one_line_exit_2(["compress", "m.pt", "--out", ".", "--overwrite"], capsys, "working directory")
    assert (work / "sub" / "keep.txt").exists() and (work / rundir.CONFIG).exists()
    # a file named as --out, a link, and a finished run (accepted)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(PwdeployError, match="is a file"):
        outputs.check_out(tmp_path / "afile", overwrite=True)
    one_line_exit_2(["compress", "m.pt", "--out", str(tmp_path / "afile")], capsys, "is a file, not a folder")
    assert (tmp_path / "afile").read_text() == "x"
    (tmp_path / "link").symlink_to(thesis)
    with pytest.raises(PwdeployError, match="symbolic link"):
        outputs.check_out(tmp_path / "link", overwrite=True)
    outputs.check_out(_fake_complete_run(tmp_path / "runs" / "old"), overwrite=True)


def test_a_second_run_into_the_same_out_is_refused_while_the_first_holds_the_lock(tmp_path):
    out = tmp_path / "runs" / "r"
    with outputs.locked(out):
        with pytest.raises(PwdeployError, match=rf"another pwdeploy run \(pid {os.getpid()}\) is writing"):
            outputs.begin_run(out, False, log=lambda _: None)
    tmp, release = outputs.begin_run(out, False, log=lambda _: None)  # free again
    assert tmp.is_dir() and tmp.name.startswith(".r.partial-")
    release()


def test_stale_partial_folders_of_killed_runs_are_reported_and_removed(tmp_path):
    parent = tmp_path / "runs"
    parent.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    stale = parent / f".old.partial-{dead}"
    (stale / "x").mkdir(parents=True)
    live = parent / f".other.partial-{os.getpid()}"
    live.mkdir()
    mine = parent / ".notes.partial-draft"  # not our pattern: never touched
    mine.mkdir()
    lines = []
    tmp, release = outputs.begin_run(parent / "new", False, log=lines.append)
    release()
    assert not stale.exists() and live.exists() and mine.exists()
    assert any(str(stale) in line and f"pid {dead}" in line for line in lines)


# --- verify --reference of another model; artifacts and data that do not fit ---------------------------------------

def test_verify_reference_refuses_another_runs_model_unless_forced(tmp_path, capsys):
    run_a = copy_run(tmp_path, tmp_path / "a")
    run_b = copy_run(tmp_path, tmp_path / "b")
    damage_classifier(run_b / "model.onnx")  # run b's own (different) model, recorded in b's report
    report = read_json(run_b / rundir.REPORT)
    report["artifacts"]["model.onnx"]["sha256"] = sha256_file(run_b / "model.onnx")
    write_json(run_b / rundir.REPORT, report)
    one_line_exit_2(["verify", str(run_b / "model.onnx"), "--reference", str(run_a), "--bootstrap", "0"], capsys,
                    "was exported from the model of run")
    assert not (run_b / "verify.json").exists()
    rc = main(["verify", str(run_b / "model.onnx"), "--reference", str(run_a), "--bootstrap", "0", "--force"])
    assert rc == 1  # compared anyway: another model does not reproduce a's results
    assert read_json(run_b / "model.onnx.verify.json")["reference_run"] == str(run_a)
    assert not (run_b / "verify.json").exists()  # run b's own verify.json is not written with a's reference


def test_an_onnx_with_another_input_shape_is_bad_input(tmp_path, capsys):
    from pwdeploy.exporters.onnx_export import export_onnx
    from pwdeploy.models.small import SmallCNN

    run = tiny_bundle_run(tmp_path)
    export_onnx(SmallCNN(2, width=8), tmp_path / "other.onnx", (3, 24, 24))
    one_line_exit_2(["verify", str(tmp_path / "other.onnx"), "--reference", str(run), "--bootstrap", "0"], capsys,
                    "takes input [3, 24, 24] but the verification images are [3, 16, 16]")


def test_float_groups_in_a_verification_set_are_refused(tmp_path):
    from pwdeploy.verification_set import load_verification_set

    run = tiny_bundle_run(tmp_path)
    with np.load(run / "verification_set.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["groups"] = arrays["groups"].astype(np.float32)
    np.savez(tmp_path / "v.npz", **arrays)
    with pytest.raises(DataError, match="groups must be a 1-D integer array"):
        load_verification_set(tmp_path / "v.npz")


def test_a_fifo_as_an_image_path_fails_at_once_instead_of_hanging(tmp_path):
    from pwdeploy.data.images import _is_readable, open_rgb

    fifo = tmp_path / "img.png"
    os.mkfifo(fifo)
    outcome = {}

    def attempt():
        try:
            open_rgb(fifo)
        except DataError as exc:
            outcome["error"] = str(exc)
        outcome["readable"] = _is_readable(fifo)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(20)
    assert not worker.is_alive(), "opening a FIFO blocked"
    assert "not a regular file" in outcome["error"] and outcome["readable"] is False


def test_an_integer_label_outside_the_classes_is_refused(tmp_path):
    from pwdeploy.data import DataSpec, create_dataset

    root = write_csv_manifest(tmp_path / "d", n=24, size=(8, 8), label_style="ints")
    rows = read_manifest_rows(root / "manifest.csv")
    rows[3]["label"] = "7"  # a typo: 0/1 data would silently grow classes 2..7
    write_manifest(root / "manifest.csv", rows)
    with pytest.raises(DataError, match=r"label 7 implies classes 0..7, but class\(es\) 2, 3, 4, 5, 6 never occur"):
        create_dataset(DataSpec("csv", str(root), {"size": 8}), "train")


# --- exit codes -------------------------------------------------------------------------------------------------

def test_an_internal_error_is_one_line_exit_3_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    import pwdeploy.package as package

    def boom(*args, **kwargs):
        raise RuntimeError("unexpected state\nsecond line")

    monkeypatch.setattr(package, "package_run", boom)
    assert main(["package", str(tmp_path), "-o", str(tmp_path / "b.tar.gz")]) == 3
    err = capsys.readouterr().err
    assert err.strip() == ("internal error: RuntimeError: unexpected state (run again with --debug for the "
                           "traceback and report it)")
    with pytest.raises(RuntimeError):
        main(["--debug", "package", str(tmp_path), "-o", str(tmp_path / "b.tar.gz")])
    assert main(["package", str(tmp_path), "-o", str(tmp_path / "b.tar.gz")]) == 3  # --debug does not stick


def test_every_numeric_config_key_has_a_range():
    """A numeric setting declared without a range would take NaN, infinity or -5 silently, and an enumerated one
    without choices any typo: the schema (pwdeploy.config settings) must give each a range or its choices."""
    import dataclasses
    import typing

    from pwdeploy.config import SETTINGS, RunConfig

    def leaf_keys(cls, prefix=""):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            args = set(typing.get_args(tp)) - {type(None)} or {tp}
            if typing.get_origin(tp) is dict and dataclasses.is_dataclass(typing.get_args(tp)[1]):
                yield from leaf_keys(typing.get_args(tp)[1], f"{prefix}{f.name}.*.")
            elif any(dataclasses.is_dataclass(a) for a in args):
                yield from leaf_keys(next(a for a in args if dataclasses.is_dataclass(a)), f"{prefix}{f.name}.")
            else:
                yield prefix + f.name

    declared = {e.key: e for e in SETTINGS}
    assert sorted(declared) == sorted(leaf_keys(RunConfig)), "every config field is one schema entry"
    no_range = [k for k, e in declared.items() if e.numeric and e.setting.range is None]
    assert not no_range, f"give these numeric settings a range= in pwdeploy/config.py: {no_range}"
    enumerated = [e for e in declared.values() if e.base_type is str or typing.get_args(e.base_type) == (str,)]
    no_choices = [e.key for e in enumerated if not e.choices() and not e.setting.text]
    assert not no_choices, f"give these settings choices= (or text=True for free text) in pwdeploy/config.py: {no_choices}"
    assert "prune.flops_reduction" in declared and declared["retrain.lr"].setting.range is not None
    assert {"pw.*.gamma", "stopping.auto_reductions", "flops_reductions"} <= {k for k, e in declared.items() if e.numeric}


def test_the_schema_check_fails_for_a_setting_without_range_or_choices():
    """The test above is not vacuous: a numeric field without a range and a string without choices are found."""
    from dataclasses import dataclass

    from pwdeploy.schema import entries, setting

    @dataclass
    class Bad:
        n: int = setting(3, help="no range")
        mode: str = setting("a", help="no choices")

    found = {e.key: (e.numeric, e.setting.range, e.choices(), e.setting.text) for e in entries(Bad)}
    assert found == {"n": (True, None, (), False), "mode": (False, None, (), False)}
