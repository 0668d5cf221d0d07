"""Pruning: MACs target within ±1 point, channel removal preserves the function, every architecture exports."""

import copy

import numpy as np
import pytest
import torch
import torch_pruning as tp

from pwdeploy.config import PruneSettings, PWSettings
from pwdeploy.loss import LossFn
from pwdeploy.models import create_model
from pwdeploy.prune import prune_to_flops
from pwdeploy.prune.engine import ChannelRemover
from pwdeploy.prune.flops import count_macs_params


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _zero_channels(remover: ChannelRemover, plan: dict) -> None:
    """Zero (not remove) the planned channels: the outputs of every out-channel layer in each DG group."""
    for name, group in remover.groups():
        if name not in plan:
            continue
        pruning_group = remover.graph.get_pruning_group(group[0].dep.target.module, group[0].dep.handler,
                                                        sorted(plan[name]))
        with torch.no_grad():
            for dep, idxs in pruning_group:
                if remover.graph.is_out_channel_pruning_fn(dep.handler):
                    module = dep.target.module
                    for param in (getattr(module, "weight", None), getattr(module, "bias", None)):
                        if param is not None:
                            param[list(idxs)] = 0


@pytest.mark.parametrize("arch", ["smallcnn", "tinyresnet", "torchvision:resnet18"])
def test_removing_channels_equals_zeroing_them(arch):
    torch.manual_seed(0)
    model = create_model(arch, 3).eval()
    # Non-trivial BN statistics so a wrong channel mapping would show.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    zeroed = copy.deepcopy(model)
    x = torch.randn(4, 3, 32, 32)
    remover = ChannelRemover(model, x[:1])
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    scores = {name: importance(group) for name, group in remover.groups()}
    plan = remover.plan(scores, remover.total_channels() // 3)
    assert sum(map(len, plan.values())) > 0
    _zero_channels(ChannelRemover(zeroed, x[:1]), plan)
    removed = remover.apply(plan)
    assert removed == sum(map(len, plan.values()))
    assert count_macs_params(model, x[:1])[0] < count_macs_params(zeroed, x[:1])[0]
    with torch.no_grad():
        assert torch.allclose(model(x), zeroed(x), atol=1e-5)


ARCHES = [("torchvision:resnet18", 1), ("torchvision:resnet50", 7), ("torchvision:vgg16_bn", 2),
          ("torchvision:mobilenet_v2", 1), ("torchvision:efficientnet_b0", 5), ("cifar_resnet56", 10),
          # timm (the optional extra, installed by the test extra): a ResNet with a deep stem and a MobileNetV3
          # with squeeze-excitation and hard-swish
          pytest.param("timm:resnet10t", 3, marks=pytest.mark.skipif(not _has("timm"), reason="timm not installed")),
          pytest.param("timm:mobilenetv3_small_050", 1,
                       marks=pytest.mark.skipif(not _has("timm"), reason="timm not installed"))]


@pytest.mark.parametrize("arch,num_classes", ARCHES)
def test_torchvision_architectures_prune_to_target_and_export(arch, num_classes, tmp_path):
    from pwdeploy.exporters.onnx_export import export_onnx, onnx_parity

    torch.manual_seed(0)
    model = create_model(arch, num_classes).eval()
    shape = (3, 32, 32)
    result = prune_to_flops(model, torch.randn(1, *shape), method="magnitude", flops_reduction=0.6)
    assert abs(result.reduction - 0.6) <= 0.01, result.reduction
    assert result.macs_after == count_macs_params(model, torch.randn(1, *shape))[0]
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, num_classes)
    path = export_onnx(model, tmp_path / "m.onnx", shape)
    assert onnx_parity(model, path, shape) < 1e-4


def _batches(n=64, classes=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 16, 16, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    groups = (torch.arange(n) % 4 == 0).long()
    original = torch.randn(n, classes, generator=g)
    while True:
        for i in range(0, n, 16):
            yield x[i:i + 16], y[i:i + 16], groups[i:i + 16], original[i:i + 16]


@pytest.mark.parametrize("method", ["taylor", "autobot", "magnitude"])
@pytest.mark.parametrize("target", [0.5, 0.75])
def test_methods_reach_target_with_pw_loss(method, target):
    torch.manual_seed(0)
    model = create_model("tinyresnet", 2)
    settings = PruneSettings(method=method, flops_reduction=target, steps_between=2, taylor_batches=1,
                             autobot_steps=20)
    result = prune_to_flops(model, torch.randn(1, 3, 16, 16), method=method, flops_reduction=target,
                            batches=_batches(), loss_fn=LossFn("pw", PWSettings()), settings=settings)
    assert abs(result.reduction - target) <= 0.01
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 2)


def test_pw_loss_changes_taylor_importance():
    """The loss plugs into importance: Taylor scores under PW differ from those under CE."""
    torch.manual_seed(0)
    model = create_model("smallcnn", 2)
    x = torch.randn(32, 3, 16, 16)
    y = torch.randint(0, 2, (32,))
    original = torch.randn(32, 2) * 3
    scores = {}
    for kind in ("ce", "pw"):
        m = copy.deepcopy(model).train()
        LossFn(kind, PWSettings(gamma=2.0, min_weight=0.1))(m(x), y, original).backward()
        remover = ChannelRemover(m, x[:1])
        imp = tp.importance.GroupTaylorImportance()
        scores[kind] = torch.cat([imp(g) for _, g in remover.groups()])
    assert not np.allclose(scores["ce"].numpy(), scores["pw"].numpy())


def test_single_channel_layers_are_never_emptied():
    model = create_model("smallcnn", 2)
    prune_to_flops(model, torch.randn(1, 3, 16, 16), method="magnitude", flops_reduction=0.9)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            assert m.out_channels >= 1


def test_precomputed_scores_stay_aligned_across_steps():
    """AutoBot's gate scores are computed once; after each step they must follow the channels that remain."""
    from pwdeploy.prune import _remove_until, PruneResult
    from pwdeploy.prune.engine import StaticScores

    torch.manual_seed(0)
    model = create_model("tinyresnet", 2)
    remover = ChannelRemover(model, torch.randn(1, 3, 16, 16))
    scores = StaticScores({name: torch.rand(len(g[0].idxs)) for name, g in remover.groups()})
    result = PruneResult(remover.base_macs, remover.base_macs, remover.base_params, remover.base_params)

    class Bar:
        def advance(self, n=1): pass
        def describe(self, text): pass

    _remove_until(remover, scores, 0.75, 0.2, result, Bar())  # several steps, not one
    assert len(result.steps) > 1
    assert abs(remover.reduction() - 0.75) <= 0.01
    assert {n: len(s) for n, s in scores.scores.items()} == {n: len(g[0].idxs) for n, g in remover.groups()}
