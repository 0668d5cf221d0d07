"""The fairness benchmark's planning and statistics (benchmarks/fairness.py): no training, fabricated cells."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import fairness  # noqa: E402
import fairness_stats as stats  # noqa: E402


def _cell(variant="colour", method="taylor", arm="ce", reduction=0.75, seed=0, bseed=0, minority=90.0,
          majority=98.0, setting="default", family="default"):
    groups = {"majority": {"accuracy": majority}, "minority": {"accuracy": minority}}
    original = {"groups": {"majority": {"accuracy": 98.0}, "minority": {"accuracy": 92.0}},
                "overall": {"accuracy": 97.5}}
    return {"spec": {"variant": variant, "method": method, "arm": arm, "reduction": reduction, "seed": seed,
                     "baseline_seed": bseed, "setting": setting, "family": family},
            "metrics": {"original": original, "pruned": {"groups": groups, "overall": {"accuracy": majority - 0.5}}},
            "flops_reduction": reduction, "device": "cpu"}


def test_bootstrap_mean_brackets_the_mean_and_handles_small_samples():
    entry = stats.bootstrap_mean([1.0, 2.0, 3.0, 4.0])
    assert entry["mean"] == pytest.approx(2.5)
    assert entry["lo"] < 2.5 < entry["hi"] and entry["n"] == 4
    assert stats.bootstrap_mean([5.0]) == {"mean": 5.0, "lo": 5.0, "hi": 5.0, "n": 1}
    assert stats.bootstrap_mean([None])["mean"] is None


def test_paired_comparison_checks_the_halving_goal_per_seed_pair():
    cells = []
    for seed in range(3):
        cells.append(_cell(arm="ce", seed=seed, minority=82.0))  # CE loses 10 points of the minority
        cells.append(_cell(arm="pw", seed=seed, minority=88.0))  # PW loses 4: halves CE
    (comp,) = stats.paired_comparisons(cells)
    assert comp["arm"] == "pw" and comp["n"] == 3
    assert comp["worst_drop"] == pytest.approx(4.0) and comp["ce_worst_drop"] == pytest.approx(10.0)
    assert comp["worst_drop_difference"]["mean"] == pytest.approx(-6.0)
    assert comp["halves_ce"] and comp["seeds_better"] == 3 and comp["overall_within_1pt"]


def test_across_baselines_table_averages_over_baselines():
    cells = [_cell(arm=arm, seed=s, bseed=b, minority=92.0 - drop)
             for b, drop in ((0, 2.0), (1, 6.0)) for s in range(2) for arm in ("ce",)]
    series = stats.aggregate(cells)
    assert {s["baseline_seed"] for s in series} == {0, 1}
    text = "\n".join(stats.markdown_across_baselines(series))
    assert "| colour | taylor | ce | 2.0 | 6.0 | 4.0 [" in text
    assert stats.markdown_across_baselines([s for s in series if s["baseline_seed"] == 0]) == []


def test_plan_filters_sweeps_and_keeps_ce_cells_shared_across_pw_settings(tmp_path):
    args = fairness.parse_args(["--ablations-only", "--ablation-methods", "taylor", "--variants", "colour",
                                "--seeds", "0", "--families", "retraining", "--settings", "lr 3e-3",
                                "--out", str(tmp_path)])
    baselines, main, sweeps = fairness.plan(args)
    assert main == [] and len(baselines) == 1
    settings = sorted((t["spec"]["setting"], t["spec"]["arm"]) for t in sweeps)
    assert settings == [("default", "ce"), ("default", "pw"), ("default", "pw+gb"),
                        ("lr 3e-3", "ce"), ("lr 3e-3", "pw")]
    lr_cell = next(t for t in sweeps if t["spec"]["setting"] == "lr 3e-3")
    assert lr_cell["overrides"]["retrain"]["lr"] == pytest.approx(3e-3)
    # A CE cell does not depend on PW settings, so its cache key ignores them.
    plain = fairness.cell_task("colour", 0, baselines[0], "taylor", "ce", 0.75, 0)
    changed = fairness.cell_task("colour", 0, baselines[0], "taylor", "ce", 0.75, 0,
                                 change={"pw": {"gamma": 2.0}})
    assert plain["ident"] == changed["ident"]


def test_same_setting_name_in_two_sweep_families_stays_two_series():
    cells = [_cell(arm="ce", seed=s) for s in range(2)]
    cells += [_cell(arm="pw", seed=s, minority=88.0, family="weights, on", setting="gamma 1") for s in range(2)]
    cells += [_cell(arm="pw", seed=s, minority=91.0, family="weights, off", setting="gamma 1") for s in range(2)]
    drops = {s["family"]: s["worst_drop"]["mean"] for s in stats.aggregate(cells) if s["arm"] == "pw"}
    assert drops == {"weights, on": pytest.approx(4.0), "weights, off": pytest.approx(1.0)}
    diffs = {c["family"]: c["worst_drop_difference"]["mean"] for c in stats.paired_comparisons(cells)}
    assert diffs == {"weights, on": pytest.approx(2.0), "weights, off": pytest.approx(-1.0)}  # vs the default CE


def test_new_arms_plan_only_where_they_apply(tmp_path):
    args = fairness.parse_args(["--variants", "colour,one-group", "--methods", "taylor,magnitude", "--seeds", "0",
                                "--reductions", "0.75", "--arms", "ce,pw+gb,kd+pseudo,fairgrape",
                                "--out", str(tmp_path)])
    _, main, _ = fairness.plan(args)
    cells = {(t["spec"]["variant"], t["spec"]["method"], t["spec"]["arm"]) for t in main}
    # fairgrape replaces Taylor's criterion: taylor rows only; group-aware arms need training groups
    assert ("colour", "taylor", "fairgrape") in cells and ("colour", "magnitude", "fairgrape") not in cells
    assert ("one-group", "taylor", "kd+pseudo") in cells and ("one-group", "taylor", "pw+gb") not in cells
    assert ("one-group", "taylor", "fairgrape") not in cells
    fair = next(t for t in main if t["spec"]["arm"] == "fairgrape")
    assert fair["overrides"]["prune"] == {"method": "fairgrape", "flops_reduction": 0.75}
    assert fair["overrides"]["loss"] == "ce"
    one = next(t for t in main if t["spec"]["variant"] == "one-group")
    assert one["overrides"]["data"]["options"] == {"variant": "shared", "protocol": "one-group"}
    # keys added with the label-free methods stay out of the cache key of cells that leave them at their defaults
    plain = fairness.cell_task("colour", 0, {"path": "b.pt"}, "taylor", "pw", 0.75, 0)["ident"]["effective"]
    assert not {"pseudo_groups", "select", "recipes", "kd"} & set(plain)
    # the balance strength scales the pseudo-group balance too: a half-way arm is its own cell
    full, half = (fairness.cell_task("colour", 0, {"path": "b.pt"}, "taylor", arm, 0.75, 0)["ident"]
                  for arm in ("kd+pseudo", "kd+pseudo/0.5"))
    assert full != half and half["effective"]["group_balance_strength"] == 0.5


def test_summary_table_shows_the_best_label_free_arm_per_row():
    cells = []
    for seed in range(2):
        cells += [_cell(arm="ce", seed=seed, minority=82.0), _cell(arm="pw", seed=seed, minority=83.0),
                  _cell(arm="kd", seed=seed, minority=88.0), _cell(arm="kd+pseudo", seed=seed, minority=90.0),
                  _cell(arm="fairgrape", seed=seed, minority=91.0)]
    text = "\n".join(stats.markdown_summary(stats.aggregate(cells)))
    assert "| colour | taylor | 75% | 10.0 [10.0, 10.0] | 9.0 [9.0, 9.0] | kd+pseudo: 2.0 [2.0, 2.0] | – | " \
           "1.0 [1.0, 1.0] |" in text
    assert stats.markdown_summary(stats.aggregate([_cell(arm="ce")])) == []


def test_a_cell_keeps_compress_results_numbers_without_a_run_directory():
    """The in-memory runner: the cell's worst drop and MACs come from compress()'s result as report.json had them."""
    from types import SimpleNamespace

    from pwdeploy.config import RunConfig

    original = {"overall": {"accuracy": 97.5}, "groups": {"majority": {"accuracy": 98.0}, "minority": {"accuracy": 92.0}}}
    pruned = {"overall": {"accuracy": 96.0}, "groups": {"majority": {"accuracy": 97.0}, "minority": {"accuracy": 80.0}}}
    prune = SimpleNamespace(reduction=0.9, macs_before=1000, macs_after=100, params_before=50, params_after=9,
                            importance={"name": "taylor"})
    result = SimpleNamespace(config=RunConfig(), prune=prune, losses={"retraining": {"name": "ce"}}, recipes=None,
                             metrics={"original": original, "pruned": pruned, "pruned-before-retraining": pruned},
                             checkpoint_selection=None, stopping={"rule": "max-group-drop", "reached": 0.8, "x": 1},
                             pseudo_groups=None, timings_s={"prune": 1.0, "retrain": 2.0})
    task = {"spec": {"variant": "colour"}, "overrides": {"loss": "ce"}}
    cell = fairness._cell_record(task, result, started=0.0)
    assert cell["worst_group_drop"] == {"group": "minority", "points": pytest.approx(12.0)}
    assert cell["macs"] == {"original": 1000, "pruned": 100} and cell["flops_reduction"] == 0.9
    assert cell["stopping"] == {"rule": "max-group-drop", "reached": 0.8, "stopped_early": None, "met": None,
                                "curve": None}
    assert stats.cell_numbers(dict(cell, spec=_cell()["spec"]))["worst_drop"] == pytest.approx(12.0)


def test_goal_tables_at_75_and_90_and_the_stopping_rule_table():
    cells = []
    for red in (0.75, 0.9):
        for seed in range(2):
            cells += [_cell(arm="ce", seed=seed, reduction=red, minority=72.0),
                      _cell(arm="gdro-c/0.1", seed=seed, reduction=red, minority=91.0),
                      _cell(arm="kd", seed=seed, reduction=red, minority=86.0)]
    stop = _cell(arm="ce/max-drop5", reduction=0.9, minority=89.0)
    cells += [dict(stop, flops_reduction=0.7), dict(stop, flops_reduction=0.8, spec=dict(stop["spec"], seed=1))]
    series = stats.aggregate(cells)
    goals = "\n".join(stats.markdown_goals(stats.paired_comparisons(cells), 0.75))
    assert "## Goals at 75% FLOPs removed" in goals
    assert "| colour | taylor | 20.0 | kd: 6.0 (+0.0, n 2) | yes | gdro-c/0.1: 1.0 (+0.0, n 2) | yes |" in goals
    table = "\n".join(stats.markdown_stopping(series))
    assert "| colour | taylor | ce/max-drop5 | 90% | 75.0 [70.0, 80.0] | 3.0 [3.0, 3.0] |" in table
    assert "| 20.0 [20.0, 20.0] | 2 |" in table  # next to CE's worst drop at the asked reduction
