"""Report labels and the demo's comparison (fabricated reports: no training)."""

from __future__ import annotations

import pytest

from pwdeploy.demo import compare_runs
from pwdeploy.report import loss_label, loss_tag


def _report(loss, minority, *, group_balanced=False, label_correction=False):
    groups = {"majority": {"accuracy": 98.0}, "minority": {"accuracy": minority}}
    return {"loss": loss, "group_balanced": group_balanced, "pw_applies_to": "both",
            "pw": {"gamma": 0.5, "min_weight": 0.8, "label_correction": label_correction},
            "flops_reduction": 0.75,
            "metrics": {"original": {"groups": {"majority": {"accuracy": 98.0}, "minority": {"accuracy": 92.0}},
                                     "overall": {"accuracy": 97.6}},
                        "pruned": {"groups": groups, "overall": {"accuracy": 97.0}}},
            "changes": {"pruned": {"worst_group_drop": {"group": "minority", "points": 92.0 - minority}}}}


def test_loss_label_names_the_extension_and_the_settings_that_change_pw():
    assert loss_label(_report("ce", 90)) == "ce" and loss_tag(_report("ce", 90, group_balanced=True)) == "ce"
    assert loss_label(_report("pw", 90)) == "pw (gamma 0.5, w_min 0.8, no label correction)"
    assert loss_label(_report("pw", 90, label_correction=True)) == "pw (gamma 0.5, w_min 0.8)"
    gb = _report("pw", 90, group_balanced=True)
    assert loss_label(gb).endswith("+ group balance (extension)") and loss_tag(gb) == "pw+gb"
    assert loss_label(dict(gb, group_balance_strength=0.5)).endswith("+ group balance (extension, strength 0.5)")


def test_demo_comparison_reports_each_arm_per_group():
    summary = compare_runs({"pw+gb": _report("pw", 91.5, group_balanced=True), "ce": _report("ce", 88.0)})
    assert summary["accuracy"]["minority"] == {"original": 92.0, "pw+gb": 91.5, "ce": 88.0}
    assert summary["worst_group_drop"]["ce"]["points"] == pytest.approx(4.0)
    assert "PW+GB 0.5 points (minority), CE 4.0 points (minority)" in summary["sentence"]
