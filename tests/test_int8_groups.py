"""Group-aware INT8: greedy float-layer selection, per-group sensitivity, the mixed model's validity for
ONNX Runtime and (statically) TensorRT, and the CLI around them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from calibration.probe import ProbeData, Score, score_logits
from calibration.protect import select_float_layers
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
        metrics = {"overall": {"accuracy": 0.0, "n": 1}, "groups": {g: {"accuracy": v, "n": 1} for g, v in change.items()}}
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
