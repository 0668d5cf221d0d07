"""The pruning budget (pwdeploy.prune.budget): the loop's cost follows the dataset size, and what it spent and
how long each phase took are recorded in report.json."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pwdeploy.cli import main
from pwdeploy.config import PruneSettings, RunConfig
from pwdeploy.prune.budget import (MIN_GATE_STEPS, MIN_STEPS, CountingStream, iterative_cost, plan_budget, plan_for,
                                   stream_batch)
from pwdeploy.timings import PHASES, summary_line

FIXED = PruneSettings()  # the configured schedule: 20 steps x (4 importance + 10 adaptation batches), 200 gates


def _plan(n, batch, budget=12.0, kind="iterative", cost=1.0, **settings):
    return plan_budget(dataclasses.replace(FIXED, prune_budget=budget, **settings), kind=kind, dataset_size=n,
                       batch_size=batch, importance_cost=cost)


def test_a_large_dataset_keeps_the_configured_schedule():
    plan = _plan(162_770, 256)  # CelebA's training split: the paper's schedule is under half an epoch
    assert (plan.steps, plan.importance_batches, plan.adaptation_batches) == (20, 4, 10)
    assert plan.gate_steps == 200 and not plan.floored
    assert plan.planned_passes == (20 * 4 + 19 * 10) * 256 < plan.budget_passes
    assert plan.planned_epochs < 0.5


def test_a_small_dataset_gets_fewer_steps_and_batches_within_the_budget():
    plan = _plan(80, 256)  # the CelebA-format fixture: every batch is the whole dataset
    assert plan.batch_size == 80
    assert plan.importance_batches == 1 and plan.adaptation_batches == 0  # no re-reading the same 80 images
    assert plan.steps == 12 and plan.planned_passes == 12 * 80 <= plan.budget_passes == 12 * 80
    assert not plan.floored
    assert plan.gate_steps == MIN_GATE_STEPS  # AutoBot: 12 batches of budget, floored at the minimum


def test_a_middle_dataset_scales_importance_and_adaptation_together():
    plan = _plan(3000, 128, budget=4.0)  # the fairness benchmark's data: 23 batches per epoch
    assert plan.steps == 20 and plan.importance_batches == 1 and plan.adaptation_batches == 3
    assert plan.planned_passes <= plan.budget_passes and not plan.floored


def test_floors_win_over_a_tiny_budget_and_say_so():
    plan = _plan(10, 128, budget=0.1)  # one sample pass of budget
    assert plan.steps == MIN_STEPS and plan.importance_batches == 1 and plan.adaptation_batches == 0
    assert plan.floored and plan.planned_passes == MIN_STEPS * 10 > plan.budget_passes


@pytest.mark.parametrize("n", [1, 7, 80, 129, 500, 3000, 20_000, 162_770])
@pytest.mark.parametrize("budget", [0.5, 2.0, 12.0, 100.0])
def test_the_schedule_never_exceeds_the_budget_or_the_configured_caps_unless_floored(n, budget):
    for cost in (1.0, 5 / 3):
        plan = _plan(n, 128, budget=budget, cost=cost)
        assert plan.steps <= 20 and 1 <= plan.importance_batches <= 4 and 0 <= plan.adaptation_batches <= 10
        assert plan.steps >= MIN_STEPS and MIN_GATE_STEPS <= plan.gate_steps <= 200
        _, epoch_batches = stream_batch(n, 128)
        assert plan.importance_batches <= epoch_batches
        assert plan.floored or plan.planned_passes <= plan.budget_passes


def test_budget_zero_is_the_fixed_schedule_whatever_the_data():
    plan = _plan(80, 256, budget=0.0)
    assert (plan.steps, plan.importance_batches, plan.adaptation_batches, plan.gate_steps) == (20, 4, 10, 200)
    assert plan.budget_passes is None and not plan.floored
    assert dataclasses.replace(FIXED, prune_budget=0.0) == plan.apply(dataclasses.replace(FIXED, prune_budget=0.0))


def test_fairgrape_pays_for_its_per_group_backward_passes():
    config = RunConfig(prune=PruneSettings(method="fairgrape"))
    taylor = plan_for(RunConfig(), 3000, 2)
    fairgrape = plan_for(config, 3000, 2)
    assert fairgrape.importance_cost == pytest.approx(5 / 3) and taylor.importance_cost == 1.0
    assert fairgrape.planned_passes == pytest.approx(iterative_cost(fairgrape.steps, fairgrape.importance_batches,
                                                                    fairgrape.adaptation_batches, 5 / 3) * 128, abs=1)
    assert plan_for(RunConfig(prune=PruneSettings(method="magnitude")), 3000, 2).planned_passes == 0


def test_the_plan_is_applied_to_the_settings_the_criterion_reads():
    plan = _plan(80, 256)
    applied = plan.apply(FIXED)
    assert (applied.prune_steps, applied.taylor_batches, applied.steps_between) == (12, 1, 0)
    gates = _plan(80, 256, kind="gates").apply(FIXED)
    assert gates.autobot_steps == MIN_GATE_STEPS and gates.taylor_batches == 4


def test_the_counting_stream_counts_samples():
    import torch

    stream = CountingStream(iter([(torch.zeros(3, 1), None, None, None), (torch.zeros(5, 1), None, None, None)]))
    next(stream), next(stream)
    assert stream.samples == 8


def test_report_records_the_budget_the_samples_drawn_and_every_phase(tiny_baseline, tmp_path):
    from conftest import TINY_DATA
    from pwdeploy.api import compress_model

    run = compress_model(tiny_baseline, {"data": TINY_DATA, "prune": {"method": "taylor", "flops_reduction": 0.5,
                                                                     "prune_budget": 2.0},
                                         "retrain": {"epochs": 1, "batch_size": 64}}, tmp_path / "run", quiet=True)
    report = json.loads((run / "report.json").read_text())
    budget = report["prune_budget"]
    assert budget["budget_epochs"] == 2.0 and budget["kind"] == "iterative" and budget["dataset_size"] == 400
    assert budget["planned_passes"] <= budget["budget_passes"] == 800
    assert budget["drawn_samples"] >= budget["importance_batches"] * 64  # it really read the training stream
    assert report["importance"]["settings"]["prune_steps"] == budget["steps"]
    timings = report["timings_s"]
    for phase in (*PHASES, "total"):
        assert timings[phase] >= 0.0, phase
    assert timings["total"] >= timings["prune"] + timings["retrain"]
    line = summary_line(timings, budget)
    assert line.startswith("time: prune") and "budget 2 epochs" in line and "total" in line


@pytest.mark.parametrize("value", ["-1", "nan", "1001"])
def test_the_cli_flag_is_range_checked_in_one_line(value, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["compress", "missing.pt", "--out", "r", "--prune-budget", value]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "--prune-budget" in err and "[0, 1000]" in err
    assert not (tmp_path / "r").exists()
