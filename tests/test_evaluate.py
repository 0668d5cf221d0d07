"""evaluate_artifact: the one scoring of an artifact, shared by `pwdeploy verify` and the device verifier."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

from pwdeploy.evaluate import agreement, evaluate_artifact
from pwdeploy.metrics import group_metrics

ROOT = Path(__file__).resolve().parents[1]


def _logits(preds, k=2):
    out = np.zeros((len(preds), k), np.float32)
    out[np.arange(len(preds)), preds] = 1.0
    return out


def test_gate_agreement_and_changes_per_group():
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    names = ["a", "b"]
    ref_preds = labels.copy()  # the reference is right everywhere
    art_preds = labels.copy()
    art_preds[4:6] = 1 - art_preds[4:6]  # the artifact flips two predictions of group b
    reference = group_metrics(ref_preds, labels, groups, names)
    result = evaluate_artifact(_logits(art_preds), labels, groups, names, reference, tolerance=1.0,
                               reference_logits=_logits(ref_preds))
    assert not result["passed"] and result["failed_groups"] == ["b"]
    assert result["metrics"]["groups"]["b"]["accuracy"] == 50.0
    assert result["changes"]["vs_reference"]["groups"] == {"a": 0.0, "b": -50.0}
    assert result["agreement"]["flipped"] == 2 and result["agreement"]["flipped_groups"] == {"a": 0, "b": 2}
    assert result["agreement"]["groups"] == {"a": 100.0, "b": 50.0}
    assert result["max_abs_logit_diff"] == 1.0
    assert result["gate_result"].passed is False


def test_non_finite_logits_are_noted_and_empty_groups_reported():
    logits = np.array([[np.nan, 0.0], [0.0, 1.0]], np.float32)
    out = agreement(np.array([0, 1]), np.array([0, 1]), np.array([0, 0]), ["a", "b"])
    assert out["groups"] == {"a": 100.0, "b": None} and out["flipped_groups"] == {"a": 0, "b": 0}
    labels, groups = np.array([0, 1]), np.array([0, 0])
    reference = group_metrics(np.array([0, 1]), labels, groups, ["a"])
    result = evaluate_artifact(logits, labels, groups, ["a"], reference, tolerance=1.0)
    assert any("non-finite" in note for note in result["notes"]) and result["agreement"] is None


def test_host_and_device_verifiers_both_call_it():
    for rel in ("pwdeploy/verify.py", "pwdeploy/device/verify.py"):
        tree = ast.parse((ROOT / rel).read_text())
        called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert "evaluate_artifact" in called and "check_groups" not in called, rel
