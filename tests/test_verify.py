"""`pwdeploy verify`: the exported artifacts pass the per-group gate, a damaged one fails it (exit 1, group
named), bad input exits 2, and verification works where torch cannot be imported."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pwdeploy.fsutil import read_json

DATA = {"name": "synthetic", "options": {"n": 600, "size": 16, "minority_fraction": 0.3}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A pruned SmallCNN (PW loss, magnitude importance, 50% MACs) with int8 and fp16 artifacts."""
    import torch

    from pwdeploy.exporters.targets import export_target
    from pwdeploy.api import compress_model, train_baseline

    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("verify")
    train_baseline({"data": DATA, "model": {"arch": "smallcnn"}, "baseline": {"epochs": 5, "batch_size": 64}},
                   out=base / "base.pt")
    run = compress_model(base / "base.pt", {"data": DATA, "prune": {"method": "magnitude", "flops_reduction": 0.5},
                                            "retrain": {"epochs": 2, "batch_size": 64}, "target": "onnx-int8"},
                         out=base / "run", quiet=True)
    export_target(run, "onnx-fp16")
    return run


@pytest.fixture
def run(run_dir, tmp_path):
    return shutil.copytree(run_dir, tmp_path / "run")


def damage(src, dst, scale=2.0, seed=0):
    """Copy an ONNX model with Gaussian noise (``scale`` × each tensor's std) added to every conv weight."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    rng = np.random.default_rng(seed)
    for i, init in enumerate(model.graph.initializer):
        w = numpy_helper.to_array(init)
        if w.ndim == 4:
            noisy = w + scale * w.std() * rng.standard_normal(w.shape).astype(w.dtype)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(noisy, init.name))
    onnx.save(model, str(dst))
    return dst


def test_int8_and_fp16_artifacts_of_a_pruned_model_pass(run, capsys):
    from pwdeploy.cli import main

    assert main(["verify", str(run), "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert "PASSED model.int8.onnx" in out and "PASSED model.fp16.onnx" in out
    summary = read_json(run / "verify.json")
    assert summary["passed"] is True
    assert set(summary["artifacts"]) == {"model.onnx", "model.fp16.onnx", "model.int8.onnx"}
    for name, precision, tol in (("model.int8.onnx", "int8", 2.0), ("model.fp16.onnx", "fp16", 1.0)):
        result = summary["artifacts"][name]
        assert result["passed"] and result["precision"] == precision and result["tolerance"] == tol
        assert result["runner"]["runner"] == "onnxruntime"
        assert result["reference_from"].startswith("PyTorch logits of pruned.pt")
        for group, check in zip(("majority", "minority"), result["gate"]["groups"]):
            assert check["group"] == group and check["passed"]
            assert result["metrics"]["groups"][group]["accuracy"] >= \
                result["reference_metrics"]["groups"][group]["accuracy"] - tol
        assert result["agreement"]["overall"] > 95.0
        assert set(result["metrics"]["rate_gaps"]) == {"tpr_gap", "fpr_gap"}  # binary task
        lo, hi = result["bootstrap"]["vs_reference"]["minority"]
        assert lo <= result["changes"]["vs_reference"]["groups"]["minority"] <= hi
    # the reference recomputed from stored logits is the one compress recorded (same test split)
    assert summary["artifacts"]["model.onnx"]["reference_vs_recorded_max_diff"] == pytest.approx(0.0, abs=1e-9)
    report = read_json(run / "report.json")
    for target in ("onnx-fp32", "onnx-fp16", "onnx-int8"):
        assert report["metrics"][target]["groups"]["minority"]["n"] > 0
        assert report["verification"][target]["passed"] is True


def test_damaged_weights_fail_with_exit_1_naming_the_group(run, tmp_path, capsys):
    from pwdeploy.cli import main

    bad = damage(run / "model.onnx", tmp_path / "damaged.onnx")
    before = read_json(run / "report.json")
    assert main(["verify", str(bad), "--reference", str(run), "--bootstrap", "0"]) == 1
    captured = capsys.readouterr()
    result = read_json(tmp_path / "verify.json")["artifacts"]["damaged.onnx"]
    failed = result["failed_groups"]
    assert failed and result["passed"] is False
    assert "gate FAILED" in captured.err and "Traceback" not in captured.err
    for group in failed:
        assert f"group {group!r}" in captured.err
    for check in result["gate"]["groups"]:  # FAILED exactly where accuracy < reference - tolerance
        assert check["passed"] == (check["accuracy"] >= check["reference"] - result["tolerance"])
    assert "FAILED damaged.onnx" in captured.out
    assert read_json(run / "report.json") == before  # a foreign artifact never edits the run's report


def test_max_group_drop_gates_against_the_original(run, tmp_path, capsys):
    from pwdeploy.cli import main

    bad = damage(run / "model.onnx", tmp_path / "damaged.onnx")
    # a huge tolerance passes the reference check; the drop against the original still fails it
    assert main(["verify", str(bad), "--reference", str(run), "--tolerance", "100", "--max-group-drop", "1",
                 "--bootstrap", "0"]) == 1
    assert "below the original model (max 1.0)" in capsys.readouterr().err


def test_bad_input_exits_2(run, tmp_path, capsys):
    from pwdeploy.cli import main

    cases = [
        (["verify", str(tmp_path / "missing.onnx")], "artifact not found"),
        (["verify", str(shutil.copyfile(run / "model.onnx", tmp_path / "lone.onnx"))], "--reference RUN_DIR"),
        (["verify", str(run), "--target", "onnx-int4"], "unknown --target"),
        (["verify", str(run), "--reference", str(tmp_path)], "--reference is for a bare artifact"),
        (["verify", str(tmp_path / "lone.onnx"), "--reference", str(tmp_path)], "not a pwdeploy run directory"),
        (["verify", str(run), "--tolerance", "-1"], "--tolerance -1.0: must be a finite number in [0, 100]"),
        (["verify", str(run), "--runner", "tensorflow"], "unknown --runner"),
        (["verify", str(run / "model.onnx"), "--runner", "torch"], "cannot run model.onnx"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)


def test_stale_int8_is_refused(run, tmp_path, capsys):
    from pwdeploy.cli import main

    copy = shutil.copyfile(run / "model.int8.onnx", tmp_path / "copied.int8.onnx")
    shutil.copyfile(run / "original.onnx", run / "model.onnx")  # the fp32 model the scales came from is gone
    assert main(["verify", str(run), "--target", "onnx-int8"]) == 2
    assert "stale" in capsys.readouterr().err
    # a copy elsewhere carries its provenance in the ONNX metadata and is refused too
    assert main(["verify", str(copy), "--reference", str(run)]) == 2
    assert "stale INT8 calibration of copied.int8.onnx" in capsys.readouterr().err


def test_data_flag_evaluates_the_dataset_with_torch(run, capsys):
    from pwdeploy.cli import main

    assert main(["verify", str(run), "--target", "onnx-int8", "--data", "synthetic", "-D", "n=600", "-D", "size=16",
                 "-D", "minority_fraction=0.3", "--bootstrap", "0"]) == 0
    result = read_json(run / "verify.json")
    assert result["data"]["source"] == "dataset" and result["data"]["n"] == 600
    assert result["artifacts"]["model.int8.onnx"]["reference_from"].startswith("pruned.pt run now")


BLOCK_TORCH = textwrap.dedent("""
    import sys
    class _NoTorch:
        blocked = ("torch", "torchvision", "torch_pruning", "onnx", "onnxconverter_common", "tensorrt")
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.blocked:
                raise ImportError("blocked for this test: " + name)
            return None
    sys.meta_path.insert(0, _NoTorch())
    try:
        import torch  # noqa
        raise SystemExit("torch import was not blocked")
    except ImportError:
        pass
    from pwdeploy.cli import main
    rc = main(sys.argv[1:])
    assert not any(m.split(".")[0] in _NoTorch.blocked for m in sys.modules), "a blocked module was imported"
    sys.exit(rc)
""")


def _torch_free(*argv):
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH, *argv], capture_output=True, text=True, timeout=120,
                          env={"PWDEPLOY_NO_PROGRESS": "1", "PATH": "/usr/bin:/bin"})


def test_verify_runs_without_torch(run):
    proc = _torch_free("verify", str(run), "--target", "onnx-int8", "--bootstrap", "100")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASSED model.int8.onnx" in proc.stdout
    assert read_json(run / "verify.json")["artifacts"]["model.int8.onnx"]["passed"] is True


def test_without_torch_and_without_verification_set_is_bad_input(run):
    (run / "verification_set.npz").unlink()
    proc = _torch_free("verify", str(run), "--target", "onnx-fp32")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "torch is not importable" in proc.stderr and "Traceback" not in proc.stderr


# --- building blocks -------------------------------------------------------------------------------------------

def test_gate_failure_message_names_only_the_failed_group():
    from pwdeploy.gate import check_groups
    from pwdeploy.verify import _failure_text

    ref = {"groups": {"majority": {"accuracy": 95.0, "n": 900}, "minority": {"accuracy": 90.0, "n": 100}}}
    got = {"groups": {"majority": {"accuracy": 94.5, "n": 900}, "minority": {"accuracy": 85.0, "n": 100}}}
    gate = check_groups(got, ref, tolerance=2.0)
    text = _failure_text("model.int8.onnx", {"target": "onnx-int8", "gate": gate.to_dict()})
    assert gate.failed_groups == ["minority"]
    assert "'minority' 5.00 points below reference" in text and "majority" not in text


def test_bootstrap_intervals():
    from pwdeploy.bootstrap import group_change_ci

    rng = np.random.default_rng(0)
    groups = np.repeat([0, 1], [400, 60])
    ref = (rng.random(460) < 0.9).astype(float)
    same = group_change_ci(ref, groups, 2, reference_correct=ref, n_boot=300)
    assert same == [(0.0, 0.0), (0.0, 0.0)]  # identical predictions: no change, no noise
    worse = ref.copy()
    worse[np.flatnonzero((groups == 1) & (ref == 1))[:6]] = 0  # 6 of 60 minority samples flipped: -10 points
    lo, hi = group_change_ci(worse, groups, 2, reference_correct=ref, n_boot=500)[1]
    assert lo < -10.0 < hi and hi < 0
    unpaired = group_change_ci(ref, groups, 3, reference_accuracy=[50.0, None, 80.0], n_boot=100)
    assert unpaired[1] is None and unpaired[2] is None  # no reference, and no samples
    assert unpaired[0][0] < 100 * ref[:400].mean() - 50.0 < unpaired[0][1]


def test_verification_set_roundtrip_and_validation(tmp_path):
    from pwdeploy.errors import DataError
    from pwdeploy.verification_set import (VerificationSet, choose_indices, load_verification_set,
                                           write_verification_set)

    vs = VerificationSet(images=np.zeros((5, 3, 4, 4), np.float32), labels=np.arange(5) % 2,
                         groups=np.array([0, 0, 1, 1, 1]), group_names=["a", "b"], class_names=["n", "p"],
                         indices=np.arange(5), logits={"pruned": np.ones((5, 2))}, meta={"split": "test"})
    write_verification_set(tmp_path / "v.npz", vs)
    back = load_verification_set(tmp_path / "v.npz")
    assert back.group_counts() == {"a": 2, "b": 3} and back.meta["split"] == "test"
    assert np.array_equal(back.predictions("pruned"), np.zeros(5)) and back.predictions("original") is None
    vs.groups = np.array([0, 0, 1, 1, 2])
    with pytest.raises(DataError, match="group ids"):
        write_verification_set(tmp_path / "bad.npz", vs)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable verification set"):
        load_verification_set(tmp_path / "junk.npz")
    groups = np.repeat([0, 1], [5000, 100])
    subset = choose_indices(groups, 2, bytes_per_sample=1000, max_samples=1000)
    assert len(subset) == 1000 and (groups[subset] == 1).sum() == 100  # the small group is kept whole
    assert np.array_equal(choose_indices(groups[:50], 2, 1000), np.arange(50))
