"""Feature-cluster pseudo-groups, group DRO, the fairness stopping rule, --flops-reduction auto, gradual schedule."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import TINY_DATA
from pwdeploy.config import ClusterSettings, GDROSettings
from pwdeploy.loss import LossFn
from pwdeploy.prune.stopping import auto_reduction, even_targets, geometric_targets, guarded_prune
from pwdeploy.pseudo_groups import build_pseudo_groups, overlap, silhouette


# ------------------------------------------------------------------------------------------ clusters
def _blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class 0: two directions (90% / 10%, the hidden minority); class 1: one direction."""
    rng = np.random.default_rng(seed)
    a = np.abs(rng.normal([5, 0.2, 0.2, 0.2], 0.3, (180, 4)))
    b = np.abs(rng.normal([0.2, 5, 0.2, 0.2], 0.3, (20, 4)))
    c = np.abs(rng.normal([0.2, 0.2, 5, 0.2], 0.3, (200, 4)))
    features = np.concatenate([a, b, c]).astype(np.float32)
    labels = np.array([0] * 200 + [1] * 200)
    hidden = np.array([0] * 180 + [1] * 20 + [0] * 200)
    return features, labels, hidden


def test_clusters_find_the_hidden_group_and_are_deterministic_under_the_seed():
    features, labels, hidden = _blobs()
    logits = np.zeros((len(labels), 2), np.float32)
    first = build_pseudo_groups("clusters", features, logits, labels, ClusterSettings(), seed=3)
    again = build_pseudo_groups("clusters", features, logits, labels, ClusterSettings(), seed=3)
    assert (first.train_ids == again.train_ids).all() and first.names == again.names
    # silhouette: two clusters in class 0, one (no structure worth splitting) in class 1
    assert [len(c.centroids) for c in first.classes] == [2, 1]
    assert first.names == ["class 0 cluster 0", "class 0 cluster 1", "class 1 cluster 0"]
    minority_cluster = first.train_ids[180]
    assert (first.train_ids[180:200] == minority_cluster).all() and (first.train_ids[:180] != minority_cluster).all()
    record = overlap(first.train_ids, hidden, first.names, ["majority", "minority"])
    assert record["real_groups"]["minority"]["share_of_group"] == 1.0
    assert record["real_groups"]["minority"]["share_of_pseudo_group"] == 1.0
    # another split is assigned by its label and the nearest centroid of that class
    assert (first.assign(features[175:185], logits[175:185], labels[175:185]) == first.train_ids[175:185]).all()
    fixed = build_pseudo_groups("clusters", features, logits, labels, ClusterSettings(k=3), seed=0)
    assert [len(c.centroids) for c in fixed.classes] == [3, 3] and fixed.record()["per_class"]["0"]["silhouette"] == {}


def test_silhouette_matches_a_hand_computed_value():
    x = torch.tensor([[0.0], [1.0], [4.0]])
    # point 0: a = 1, b = 4 -> 0.75; point 1: a = 1, b = 3 -> 2/3; point 2 is alone: 0
    assert silhouette(x, torch.tensor([0, 0, 1])) == pytest.approx((0.75 + 2 / 3 + 0) / 3, rel=1e-5)


# ------------------------------------------------------------------------------------------ group DRO
def test_gdro_weights_follow_the_exponentiated_update_by_hand():
    counts = torch.tensor([300.0, 100.0])
    loss = LossFn("gdro", gdro=GDROSettings(step_size=0.5, adjustment=2.0), group_counts=counts)
    logits = torch.zeros(3, 2)  # every sample's CE is log 2
    logits[2] = torch.tensor([0.0, 2.0])  # group 1, label 0: CE = log(1 + e^2)
    labels, groups = torch.tensor([0, 1, 0]), torch.tensor([0, 0, 1])
    value = loss(logits, labels, None, groups)
    l0, l1 = math.log(2), math.log(1 + math.e ** 2)
    q0 = 0.5 * math.exp(0.5 * (l0 + 2.0 / math.sqrt(300)))
    q1 = 0.5 * math.exp(0.5 * (l1 + 2.0 / math.sqrt(100)))
    q0, q1 = q0 / (q0 + q1), q1 / (q0 + q1)
    assert loss.impl.q.tolist() == pytest.approx([q0, q1], rel=1e-6)
    assert value.item() == pytest.approx(q0 * l0 + q1 * l1, rel=1e-5)
    # a second step multiplies on; a group absent from the batch keeps its loss at 0 in the update
    loss(torch.zeros(2, 2), torch.tensor([0, 1]), None, torch.tensor([0, 0]))
    r0, r1 = q0 * math.exp(0.5 * (l0 + 2.0 / math.sqrt(300))), q1 * math.exp(0.5 * (0 + 2.0 / math.sqrt(100)))
    assert loss.impl.q.tolist() == pytest.approx([r0 / (r0 + r1), r1 / (r0 + r1)], rel=1e-6)
    assert loss.record()["settings"]["group_weights"] == pytest.approx([r0 / (r0 + r1), r1 / (r0 + r1)], rel=1e-4)


def test_gdro_ignores_groups_without_training_samples():
    loss = LossFn("gdro", gdro=GDROSettings(step_size=1.0), group_counts=torch.tensor([10.0, 0.0, 5.0]))
    loss(torch.zeros(2, 2), torch.tensor([0, 1]), None, torch.tensor([0, 2]))
    assert loss.impl.q[1] == 0 and loss.impl.q.sum().item() == pytest.approx(1.0)


def test_constraint_multipliers_follow_dual_ascent_on_the_accuracy_gaps_by_hand():
    """Balancing Act's form: lambda_g <- max(0, lambda_g + eta * (gap_g - gap - tolerance)), loss = mean + sum lambda_g
    loss_g; accuracies in [0, 1], the tolerance in points."""
    loss = LossFn("gdro", gdro=GDROSettings(form="constraint", step_size=2.0, tolerance=10.0),
                  group_counts=torch.tensor([3.0, 1.0]))
    # the original is right on all four; the pruned model misses sample 3 (group 1) only
    labels, groups = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 0, 1])
    original = torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0], [0.0, 2.0]])
    logits = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    value = loss(logits, labels, original, groups)
    # gaps: group 0: 0, group 1: 1, overall 0.25 -> violations -0.35 and 0.65
    assert loss.impl.multipliers.values.tolist() == pytest.approx([0.0, 2.0 * 0.65])
    ce_right, ce_wrong = math.log(1 + math.exp(-1)), math.log(1 + math.exp(1))
    mean = (3 * ce_right + ce_wrong) / 4
    assert value.item() == pytest.approx(mean + 1.3 * ce_wrong, rel=1e-5)
    # a batch without group 1 leaves its multiplier; group 0 stays at the floor 0
    loss(logits[:2], labels[:2], original[:2], groups[:2])
    assert loss.impl.multipliers.values.tolist() == pytest.approx([0.0, 1.3])
    settings = loss.record()["settings"]
    assert settings["form"] == "constraint" and settings["multipliers"] == pytest.approx([0.0, 1.3])


def test_disagreement_weight_counts_the_samples_the_original_classifies_differently():
    labels = torch.tensor([0, 1, 1])
    original = torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0]])
    logits = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 3.0]])  # sample 1 disagrees with the original
    per_sample = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    value = LossFn("ce", disagreement_weight=4.0)(logits, labels, original, None)
    assert value.item() == pytest.approx(((per_sample * torch.tensor([1.0, 5.0, 1.0])).mean()).item(), rel=1e-6)
    assert LossFn("ce", disagreement_weight=4.0).record()["disagreement_weight"] == 4.0
    assert LossFn("ce")(logits, labels, original, None).item() == pytest.approx(per_sample.mean().item(), rel=1e-6)


# ------------------------------------------------------------------------------------------ stopping rule
class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(8, 2)


def _pruner(model: _Toy):
    """Each round replaces the layer by a narrower one (as channel removal does) and reports the reduction."""
    def prune_round(target: float) -> float:
        width = max(1, round(8 * (1 - target)))
        model.layer = nn.Linear(width, 2)
        return target
    return prune_round


def _metrics(minority: float) -> dict:
    return {"overall": {"accuracy": 90.0}, "groups": {"majority": {"accuracy": 95.0}, "minority": {"accuracy": minority}}}


def test_the_stopping_rule_undoes_the_round_that_breaks_the_bound():
    model = _Toy()
    reference = _metrics(90.0)
    by_width = {7: 89.0, 6: 88.0, 5: 86.5, 4: 80.0, 3: 70.0}  # minority accuracy after each round
    score = lambda: _metrics(by_width[model.layer.in_features])  # noqa: E731
    record = guarded_prune(model, [0.1, 0.2, 0.35, 0.5, 0.65], prune_round=_pruner(model), score=score,
                           reference=reference, max_group_drop=4.0)
    assert [r.kept for r in record.rounds] == [True, True, True, False]  # 80.0 is 10 points below: undone
    assert model.layer.in_features == 5 and record.reached == 0.35 and record.stopped_early
    assert record.rounds[-1].worst_group == "minority" and record.rounds[-1].worst_drop == pytest.approx(10.0)


def test_auto_reduction_keeps_the_largest_retrained_model_within_the_bound():
    model = _Toy()
    accuracy = {0.5: 89.0, 0.75: 87.0, 0.9: 81.0, 0.95: 60.0}
    trained = []

    def candidate(m):
        copy_ = copy.deepcopy(m)
        copy_.tried = 1 - m.layer.in_features / 8
        trained.append(copy_)
        return copy_

    score = lambda m: _metrics(accuracy[min(accuracy, key=lambda r: abs(r - m.tried))])  # noqa: E731
    record, chosen = auto_reduction(model, [0.5, 0.75, 0.9, 0.95], prune_round=_pruner(model), candidate=candidate,
                                    score=score, reference=_metrics(90.0), max_group_drop=5.0)
    assert chosen is trained[1] and record.reached == 0.75 and record.met
    assert [r.kept for r in record.rounds] == [True, True, False] and len(trained) == 3  # stops at the first failure
    none_pass, first = auto_reduction(_Toy(), [0.5], prune_round=_pruner(_Toy()), candidate=candidate,
                                      score=lambda m: _metrics(10.0), reference=_metrics(90.0), max_group_drop=1.0)
    assert not none_pass.met and first is trained[-1]


def test_round_targets():
    assert even_targets(0.35, 0.1) == [0.1, 0.2, 0.3, 0.35]
    targets = geometric_targets(0.9, 2)
    assert targets[-1] == 0.9 and targets[0] == pytest.approx(1 - math.sqrt(0.1))


# ------------------------------------------------------------------------------------------ end to end
FAST = {"steps_between": 1, "taylor_batches": 1}


def _run(baseline, tmp_path, name, **overrides):
    from pwdeploy.api import compress_model

    base = {"data": TINY_DATA, "prune": {"flops_reduction": 0.5, **FAST}, "retrain": {"epochs": 1, "batch_size": 64}}
    run = compress_model(baseline, {**base, **overrides}, tmp_path / name, quiet=True)
    return run, json.loads((run / "report.json").read_text())


def test_clusters_and_gdro_end_to_end(tiny_baseline, tmp_path):
    run, report = _run(tiny_baseline, tmp_path, "gdro", loss="gdro", pseudo_groups="clusters",
                       gdro={"step_size": 0.1})
    found = report["pseudo_groups_found"]
    assert found["kind"] == "clusters" and sum(found["train_sizes"].values()) == 400
    for split in ("validation", "test"):
        assert set(found["overlap_with_real_groups"].get(split, {"real_groups": {"majority": 1, "minority": 1}})[
            "real_groups"]) == {"majority", "minority"}
    weights = report["loss_fn"]["retraining"]["settings"]["group_weights"]
    assert len(weights) == len(found["names"]) and sum(weights) == pytest.approx(1.0, abs=1e-4)
    assert "group DRO" in (run / "report.md").read_text() and "label-free" in (run / "report.md").read_text()


def test_flops_reduction_auto_end_to_end(tiny_baseline, tmp_path):
    run, report = _run(tiny_baseline, tmp_path, "auto", loss="ce",
                       stopping={"max_group_drop": 100.0, "auto": True, "auto_reductions": [0.3, 0.6]})
    record = report["stopping"]
    assert record["rule"] == "flops-reduction auto" and [r["kept"] for r in record["rounds"]] == [True, True]
    assert abs(report["flops_reduction"] - 0.6) <= 0.01 and report["flops_reduction_target"] == record["reached"]
    assert [c["macs"] for c in record["curve"]] == sorted([c["macs"] for c in record["curve"]], reverse=True)
    assert (run / "stopping.png").stat().st_size > 0 and "Pruning in rounds" in (run / "report.md").read_text()


def test_gradual_schedule_spends_the_same_epochs(tiny_baseline, tmp_path):
    _, report = _run(tiny_baseline, tmp_path, "gradual", loss="ce", retrain={"epochs": 2, "batch_size": 64},
                     retrain_schedule="gradual")
    assert len(report["retrain_loss_history"]) == 2 and len(report["stopping"]["rounds"]) == 2
    assert abs(report["flops_reduction"] - 0.5) <= 0.01


def _cli(*args):
    from pwdeploy.cli import main

    return main([str(a) for a in args])


ONE_GROUP = ["--data", "synthetic", "-D", "size=16", "-D", "n=200", "-D", "minority_fraction=0", "--device", "cpu"]


@pytest.mark.parametrize("flags, needle", [
    (["--max-group-drop", "3"], "--max-group-drop needs group labels in the validation split"),
    (["--flops-reduction", "auto"], "--flops-reduction auto needs --max-group-drop"),
    (["--flops-reduction", "lots"], "--flops-reduction 'lots': give a fraction"),
    (["--loss", "gdro"], "--loss gdro needs group labels in the training split"),
    (["--retrain-schedule", "sometimes"], "retrain_schedule must be one of end, gradual"),
])
def test_missing_splits_and_bad_options_are_one_line_errors_exit_2(tiny_baseline, tmp_path, capsys, flags, needle):
    code = _cli("compress", tiny_baseline, "--out", tmp_path / "x", *ONE_GROUP, "--epochs", "1", *flags)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "x").exists()
