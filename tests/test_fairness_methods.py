"""Fairness methods: registries, distillation, pseudo-groups, FairGRAPE, selection on validation and recipes."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import TINY_DATA
from pwdeploy.config import KDSettings, PWSettings, PruneSettings, build_config
from pwdeploy.errors import ConfigError
from pwdeploy.loss import LossFn, group_balance, kd_divergence, pseudo_groups
from pwdeploy.prune.fairgrape import greedy_keep_order, scores_in_keep_order
from pwdeploy.recipes import parse_recipe
from pwdeploy.registry import IMPORTANCES, list_importances, list_losses, register_importance
from pwdeploy.selection import choose_recipe


# ------------------------------------------------------------------------------------------ distillation
def test_kd_multiclass_matches_hand_computed_kl_times_t_squared():
    teacher = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    student = torch.zeros(1, 3)  # uniform
    assert kd_divergence(student, teacher, 1.0).item() == pytest.approx(
        0.5 * math.log(1.5) + 0.5 * math.log(0.75), rel=1e-5)
    # T = 2: the teacher's distribution becomes sqrt(p) normalised
    p = [math.sqrt(v) for v in (0.5, 0.25, 0.25)]
    p = [v / sum(p) for v in p]
    expected = 4 * sum(v * math.log(3 * v) for v in p)
    assert kd_divergence(student, teacher, 2.0).item() == pytest.approx(expected, rel=1e-5)


def test_kd_binary_one_logit_is_bernoulli_kl_and_mixes_ce_by_alpha():
    teacher, student, label = torch.tensor([[math.log(3)]]), torch.zeros(1, 1), torch.tensor([1])
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kd_divergence(student, teacher, 1.0).item() == pytest.approx(kl, rel=1e-5)
    assert kd_divergence(teacher.clone(), teacher, 3.0).item() == pytest.approx(0.0, abs=1e-6)
    loss = LossFn("kd", kd=KDSettings(temperature=1.0, alpha=0.5))(student, label, teacher)
    assert loss.item() == pytest.approx(0.5 * kl + 0.5 * math.log(2), rel=1e-5)


def test_kd_with_pw_weights_multiplies_each_sample_by_its_pw_weight():
    teacher, student, label = torch.tensor([[math.log(3)]]), torch.zeros(1, 1), torch.tensor([1])
    settings = KDSettings(temperature=1.0, alpha=1.0, pw_weights=True)
    loss = LossFn("kd", PWSettings(gamma=1.0, min_weight=0.5), kd=settings)(student, label, teacher)
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert loss.item() == pytest.approx(0.625 * kl, rel=1e-5)  # s = .75: w = .5 + .5 * .25


# ------------------------------------------------------------------------------------------ pseudo-groups
def test_pseudo_groups_are_label_times_original_right_or_wrong():
    original = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 0, 1, 1])
    assert pseudo_groups(original, labels).tolist() == [1, 0, 2, 3]
    binary = torch.tensor([[1.0], [-1.0], [1.0]])
    assert pseudo_groups(binary, torch.tensor([1, 1, 0])).tolist() == [3, 2, 0]


def test_pseudo_group_balance_gives_each_error_set_equal_total_weight():
    from pwdeploy.api import _group_weight_totals, make_config
    from pwdeploy.data import ArrayDataset
    from pwdeploy.preprocessing import Preprocessing

    original = torch.tensor([[2.0, 0.0]] * 5 + [[0.0, 2.0]] * 1 + [[0.0, 2.0]] * 2)
    labels = torch.tensor([0] * 6 + [1] * 2)  # pseudo-groups: 5 x "0 right", 1 x "0 wrong", 2 x "1 right"
    dataset = ArrayDataset(torch.zeros(8, 3, 4, 4).numpy(), labels.numpy(), [0] * 8, group_names=["all"],
                           class_names=["a", "b"], preprocessing=Preprocessing(size=(4, 4), mean=(0,) * 3,
                                                                               std=(1,) * 3))
    config = make_config({"data": {"name": "synthetic"}, "loss": "kd", "pseudo_groups": "error-set"})
    config.model.num_classes = 2

    class Cached:
        cache = original

    totals = _group_weight_totals(config, dataset, Cached(), LossFn("kd", kd=config.kd))
    assert totals.tolist() == [1.0, 5.0, 0.0, 2.0]  # KD without PW weights: every sample weighs 1
    balanced = group_balance(torch.ones(8), pseudo_groups(original, labels), totals)
    sums = [balanced[pseudo_groups(original, labels) == k].sum().item() for k in (0, 1, 3)]
    assert sums == pytest.approx([sums[0]] * 3)


# ------------------------------------------------------------------------------------------ FairGRAPE
def test_greedy_keep_order_follows_the_most_deficient_group():
    # channels x groups; group 0 likes channels 0 and 1, group 1 likes channel 2
    importance = torch.tensor([[4.0, 0.0], [3.0, 1.0], [0.0, 2.0], [1.0, 1.0]])
    order = greedy_keep_order(importance, torch.tensor([0.5, 0.5]))
    # shares start at 1/2 each -> group 0 takes ch 0; share (1, 0) -> group 1 takes ch 2; (4, 2) -> group 1
    # again: ch 1 (its next best); (7, 3) -> group 1: ch 3
    assert order == [0, 2, 1, 3]
    scores = scores_in_keep_order(importance, order)
    # summed importance 4, 4, 2, 2 (mean 3) handed out largest first in keep order
    assert scores.tolist() == pytest.approx([4 / 3, 2 / 3, 4 / 3, 2 / 3])
    # plain Taylor on the summed importance would keep channels 0 and 1; FairGRAPE keeps 0 and 2
    assert set(torch.argsort(scores, descending=True, stable=True)[:2].tolist()) == {0, 2}


def _group_batches(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 16, 16, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    groups = (torch.arange(n) % 4 == 0).long()
    while True:
        for i in range(0, n, 16):
            yield x[i:i + 16], y[i:i + 16], groups[i:i + 16], None


def test_fairgrape_reaches_the_macs_target_on_a_residual_net():
    from pwdeploy.models import create_model
    from pwdeploy.prune import prune_to_flops

    torch.manual_seed(0)
    model = create_model("tinyresnet", 2)
    settings = PruneSettings(method="fairgrape", flops_reduction=0.75, steps_between=1, taylor_batches=1)
    result = prune_to_flops(model, torch.randn(1, 3, 16, 16), method="fairgrape", flops_reduction=0.75,
                            batches=_group_batches(), loss_fn=LossFn("ce"), settings=settings, num_groups=2)
    assert abs(result.reduction - 0.75) <= 0.01
    assert result.importance == {"name": "fairgrape", "settings": {"taylor_batches": 1, "steps_between": 1,
                                                                   "taylor_lr": 0.01, "prune_steps": 20}}
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 2)


# ------------------------------------------------------------------------------------------ registries
def test_a_plugin_importance_registered_from_outside_is_listed_and_used():
    from pwdeploy.models import create_model
    from pwdeploy.prune import Importance, prune_to_flops

    @register_importance("test-last-channels")
    class LastChannels(Importance):
        """Removes the highest-indexed channels first (a test plug-in)."""

        needs_data = False

        def prune(self, remover, batches, loss_fn, target, result, bar):
            self.remove_by_scores(remover, lambda g, n: -torch.arange(len(g[0].idxs), dtype=torch.float), target,
                                  result, bar, max_step=0.2)

    try:
        assert "test-last-channels" in list_importances() and {"pw", "ce", "kd"} <= set(list_losses())
        build_config({"prune": {"method": "test-last-channels"}})  # the config accepts it
        model = create_model("smallcnn", 2)
        result = prune_to_flops(model, torch.randn(1, 3, 16, 16), method="test-last-channels", flops_reduction=0.5)
        assert abs(result.reduction - 0.5) <= 0.01 and result.importance["name"] == "test-last-channels"
    finally:
        IMPORTANCES._classes.pop("test-last-channels")
    with pytest.raises(ConfigError, match="prune.method must be one of taylor, autobot.*got 'test-last-channels'"):
        build_config({"prune": {"method": "test-last-channels"}})


# ------------------------------------------------------------------------------------------ recipes
@pytest.mark.parametrize("name, expected", [
    ("ce", {"loss": "ce", "method": None, "group_balanced": False, "pseudo_groups": "none", "kd_pw_weights": False}),
    ("pw+gb", {"loss": "pw", "method": None, "group_balanced": True, "pseudo_groups": "none", "kd_pw_weights": False}),
    ("kd+pw", {"loss": "kd", "method": None, "group_balanced": False, "pseudo_groups": "none", "kd_pw_weights": True}),
    ("pw+pseudo", {"loss": "pw", "method": None, "group_balanced": False, "pseudo_groups": "error-set",
                   "kd_pw_weights": False}),
    ("fairgrape", {"loss": "ce", "method": "fairgrape", "group_balanced": False, "pseudo_groups": "none",
                   "kd_pw_weights": False}),
])
def test_recipe_names_parse_into_settings(name, expected):
    assert parse_recipe(name) == expected


@pytest.mark.parametrize("name", ["foo", "ce+pw", "taylor+fairgrape", ""])
def test_bad_recipes_are_config_errors(name):
    with pytest.raises(ConfigError):
        parse_recipe(name)


def _metrics(overall, minority, majority=95.0):
    return {"overall": {"accuracy": overall}, "groups": {"majority": {"accuracy": majority},
                                                          "minority": {"accuracy": minority}}}


def test_choose_recipe_takes_best_worst_group_within_one_point_of_best_overall():
    candidates = [{"recipe": "ce", "metrics_validation": _metrics(90.0, 60.0)},
                  {"recipe": "pw+gb", "metrics_validation": _metrics(89.2, 70.0)},
                  {"recipe": "fairgrape", "metrics_validation": _metrics(85.0, 80.0)},  # > 1 point below
                  {"recipe": "kd", "metrics_validation": _metrics(89.5, 70.0)}]  # ties pw+gb: higher overall
    chosen, why = choose_recipe(candidates)
    assert candidates[chosen]["recipe"] == "kd"
    assert "3 of 4 recipes" in why and "minority 70.00%" in why and "ce 90.00%" in why


# ------------------------------------------------------------------------------------------ end to end
FAST = {"steps_between": 1, "taylor_batches": 1}


def test_recipes_and_worst_group_selection_end_to_end(tiny_baseline, tmp_path):
    from pwdeploy.api import compress_model

    run = compress_model(tiny_baseline, {"data": TINY_DATA, "prune": {"flops_reduction": 0.5, **FAST},
                                         "retrain": {"epochs": 2, "batch_size": 64}, "select": "worst-group",
                                         "recipes": ["ce", "kd+pseudo", "fairgrape"]}, tmp_path / "r", quiet=True)
    report = json.loads((run / "report.json").read_text())
    selection = report["recipes"]
    assert [c["recipe"] for c in selection["candidates"]] == ["ce", "kd+pseudo", "fairgrape"]
    for c in selection["candidates"]:
        assert abs(c["flops_reduction"] - 0.5) <= 0.01
        for split in ("metrics_validation", "metrics_test"):
            assert set(c[split]["groups"]) == {"majority", "minority"}
        epochs = c["checkpoint_selection"]["epochs"]
        best = max(epochs, key=lambda e: (e["worst_group_accuracy"], e["overall_accuracy"]))
        assert c["checkpoint_selection"]["chosen_epoch"] == best["epoch"]
    chosen = next(c for c in selection["candidates"] if c["recipe"] == selection["chosen"])
    assert report["metrics"]["pruned"] == chosen["metrics_test"]  # the shipped model is the chosen one
    assert report["metrics_validation"]["pruned"] == chosen["metrics_validation"]
    assert selection["chosen"] in selection["why"] and "test split is never used" in selection["rule"]
    kd = next(c for c in selection["candidates"] if c["recipe"] == "kd+pseudo")
    assert kd["loss"]["retraining"]["name"] == "kd" and kd["loss"]["retraining"]["group_balance"]["groups"].startswith(
        "pseudo")
    fair = next(c for c in selection["candidates"] if c["recipe"] == "fairgrape")
    assert fair["importance"]["name"] == "fairgrape" and fair["loss"]["importance"]["name"] == "ce"
    assert report["importance"]["name"] and report["loss_fn"]["retraining"]["name"] == report["loss"]
    assert (run / "recipes.png").stat().st_size > 0
    assert "## Recipes compared on validation" in (run / "report.md").read_text()
    config = json.loads((run / "config.json").read_text())
    assert config["recipes"] == ["ce", "kd+pseudo", "fairgrape"]


def _cli(*args):
    from pwdeploy.cli import main

    return main([str(a) for a in args])


ONE_GROUP = ["--data", "synthetic", "-D", "size=16", "-D", "n=200", "-D", "minority_fraction=0", "--device", "cpu"]


@pytest.mark.parametrize("flags, needle", [
    (["--select", "worst-group"], "--select worst-group needs group labels in the validation split"),
    (["--recipes", "ce,pw"], "--recipes needs group labels in the validation split"),
    (["--method", "fairgrape"], "--method fairgrape needs group labels in the training split"),
    (["--recipes", "ce,bogus"], "unknown recipe part 'bogus'"),
])
def test_missing_group_labels_are_one_line_errors_exit_2(tiny_baseline, tmp_path, capsys, flags, needle):
    code = _cli("compress", tiny_baseline, "--out", tmp_path / "x", *ONE_GROUP, "--epochs", "1", *flags)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "x").exists()


def test_synthetic_one_group_protocol_and_shared_variant():
    from pwdeploy.data import DataSpec, create_dataset
    from pwdeploy.data.synthetic import generate

    spec = DataSpec("synthetic", None, {"n": 300, "size": 12, "minority_fraction": 0.3, "variant": "shared",
                                        "protocol": "one-group"})
    assert create_dataset(spec, "train").group_counts()["minority"] == 0
    assert min(create_dataset(spec, "test").group_counts().values()) > 0
    # "shared" only changes minority images: the colour variant's arrays (and cached baselines) stay as they were
    colour, labels, groups = generate(200, size=12, minority_fraction=0.3, variant="colour", seed=5)
    shared, labels2, groups2 = generate(200, size=12, minority_fraction=0.3, variant="shared", seed=5)
    assert (labels == labels2).all() and (groups == groups2).all()
    assert (colour[groups == 0] == shared[groups == 0]).all() and not (colour[groups == 1] == shared[groups == 1]).all()


def test_report_names_label_free_options_and_fairgrape_honestly():
    from pwdeploy.report import loss_label, loss_tag, method_label

    kd = {"loss": "kd", "pseudo_groups": "error-set", "method": "fairgrape",
          "loss_fn": {"retraining": {"settings": {"temperature": 4.0, "alpha": 0.9, "pw_weights": True}}}}
    assert loss_tag(kd) == "kd+pw+pseudo"
    assert loss_label(kd) == "kd (distillation, T 4, alpha 0.9, PW weights) + pseudo-group balance (extension, " \
                             "label-free)"
    assert method_label(kd).startswith("fairgrape (channel-level adaptation")
    pw = {"loss": "pw", "pw": {"gamma": 0.5, "min_weight": 0.8}, "pseudo_groups": "error-set", "group_balanced": True}
    assert loss_tag(pw) == "pw+pseudo" and loss_label(pw).endswith("+ pseudo-group balance (extension, label-free)")
    assert loss_tag({"loss": "ce", "group_balanced": True}) == "ce"
