"""The PW loss against hand-computed values (binary single logit and multi-class)."""

import math

import pytest
import torch

from pwdeploy.config import PWSettings
from pwdeploy.loss import LossFn, group_balance, pw_targets_and_weights


def test_binary_single_logit_weights_and_targets():
    # p1 = sigmoid(ln 3) = 0.75; p1 = sigmoid(0) = 0.5
    original = torch.tensor([[math.log(3)], [math.log(3)], [0.0]])
    labels = torch.tensor([1, 0, 1])
    targets, weights = pw_targets_and_weights(original, labels, gamma=1.0, min_weight=0.5)
    # sample 0: right (s=.75) -> soft target .75, w = .5 + .5*.25
    # sample 1: wrong (s=.25) -> hard label 0,   w = .5 + .5*.75
    # sample 2: p1 = .5 is not a positive prediction -> wrong, hard label 1, w = .5 + .5*.5
    assert torch.allclose(targets, torch.tensor([0.75, 0.0, 1.0]))
    assert torch.allclose(weights, torch.tensor([0.625, 0.875, 0.75]))


def test_multiclass_weights_and_targets():
    original = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]]))
    labels = torch.tensor([0, 1])
    targets, weights = pw_targets_and_weights(original, labels, gamma=2.0, min_weight=0.2)
    assert torch.allclose(targets[0], torch.tensor([0.5, 0.25, 0.25]))  # right: original's soft output
    assert torch.allclose(targets[1], torch.tensor([0.0, 1.0, 0.0]))  # wrong: the true label
    assert torch.allclose(weights, torch.tensor([0.2 + 0.8 * 0.25, 0.2 + 0.8 * 0.5625]))


def test_loss_is_weighted_mean_of_cross_entropy():
    original = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]]))
    labels = torch.tensor([0, 1])
    loss_fn = LossFn("pw", PWSettings(gamma=2.0, min_weight=0.2))
    # uniform pruned logits: cross-entropy is log 3 against any target distribution
    loss = loss_fn(torch.zeros(2, 3), labels, original)
    assert loss.item() == pytest.approx((0.4 + 0.65) / 2 * math.log(3), rel=1e-6)


def test_binary_loss_matches_manual_bce():
    original = torch.tensor([[math.log(3)], [0.0]])
    labels = torch.tensor([1, 1])
    pruned = torch.tensor([[0.0], [math.log(3)]])
    loss = LossFn("pw", PWSettings(gamma=1.0, min_weight=0.5))(pruned, labels, original)
    # targets (.75, 1), weights (.625, .75); BCE(z=0,t=.75)=ln2, BCE(z=ln3,t=1)=-ln(.75)
    expected = (0.625 * math.log(2) + 0.75 * -math.log(0.75)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_label_correction_off_keeps_soft_targets_everywhere():
    original = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    targets, _ = pw_targets_and_weights(original, torch.tensor([1]), gamma=1, min_weight=0.5,
                                        label_correction=False)
    assert torch.allclose(targets[0], torch.tensor([0.5, 0.25, 0.25]))


def test_ce_ignores_original_and_matches_torch():
    logits, labels = torch.randn(5, 4), torch.randint(0, 4, (5,))
    assert LossFn("ce")(logits, labels).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-6)


def test_group_balance_gives_each_group_equal_total_weight():
    weights = torch.tensor([1.0, 1.0, 1.0, 0.5])
    groups = torch.tensor([0, 0, 0, 1])
    totals = torch.tensor([3.0, 0.5])
    balanced = group_balance(weights, groups, totals)
    assert balanced[groups == 0].sum().item() == pytest.approx(balanced[groups == 1].sum().item())


def test_partial_group_balance_moves_part_of_the_way_and_keeps_the_total():
    weights = torch.tensor([1.0, 1.0, 1.0, 0.5])
    groups = torch.tensor([0, 0, 0, 1])
    totals = torch.tensor([3.0, 0.5])  # group 1 carries 1/7 of the weight
    full = group_balance(weights, groups, totals, 1.0)
    half = group_balance(weights, groups, totals, 0.5)
    share = [half[groups == g].sum().item() / half.sum().item() for g in (0, 1)]
    # the full factor ratio is 6 (3 / 0.5); strength 0.5 moves it to sqrt(6)
    assert share[1] / share[0] == pytest.approx((0.5 * 6 ** 0.5) / 3.0, rel=1e-5)
    for balanced in (full, half):
        assert balanced.sum().item() == pytest.approx(weights.sum().item(), rel=1e-5)
    assert torch.allclose(group_balance(weights, groups, totals), full)


def test_config_strength_reaches_both_losses():
    from pwdeploy.api import _losses, make_config

    config = make_config({"data": {"name": "synthetic"}, "group_balance_strength": 0.5})
    for loss_fn in _losses(config, torch.tensor([3.0, 0.5])):
        assert loss_fn.kind == "pw" and loss_fn.group_balance_strength == 0.5
