"""Model registry: ``create_model('torchvision:resnet18', num_classes)`` or one of pwdeploy's own names.

torchvision models are built randomly initialised (weights=None): nothing is ever downloaded.
"""

from __future__ import annotations

from torch import nn

from ..errors import ModelError
from .cifar_resnet import CifarResNet
from .small import SmallCNN, TinyResNet

OWN_MODELS = {
    "smallcnn": lambda n: SmallCNN(n),
    "tinyresnet": lambda n: TinyResNet(n),
    "cifar_resnet20": lambda n: CifarResNet(20, n),
    "cifar_resnet56": lambda n: CifarResNet(56, n),
}


def model_names() -> list[str]:
    return sorted(OWN_MODELS) + ["torchvision:<name>"]


def create_model(arch: str, num_classes: int) -> nn.Module:
    if num_classes < 1:
        raise ModelError(f"--num-classes must be >= 1 (1 means a single binary logit), got {num_classes}")
    if arch in OWN_MODELS:
        return OWN_MODELS[arch](num_classes)
    if arch.startswith("torchvision:"):
        import torchvision

        name = arch.split(":", 1)[1]
        if name not in torchvision.models.list_models(module=torchvision.models):
            raise ModelError(f"unknown torchvision classification model {name!r}: see "
                             "torchvision.models.list_models() for the names")
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    raise ModelError(f"unknown architecture {arch!r}: use one of {', '.join(model_names())}")


def classifier_layers(model: nn.Module) -> list[nn.Module]:
    """The final Linear layer(s): their output width is the class count and must never be pruned."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1:] if linears else []
