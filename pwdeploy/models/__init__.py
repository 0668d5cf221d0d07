"""Model registry (timm style): ``create_model(arch, num_classes)`` builds a model by name.

Names are pwdeploy's own models (``@register_model``, usable from outside the package), ``torchvision:NAME``
(any torchvision classifier) and ``timm:NAME`` (any timm model, when the optional ``timm`` extra is installed).
Everything is built randomly initialised: nothing is ever downloaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from ..errors import ModelError
from ..registry import MODEL_FAMILIES, MODELS, list_models

if TYPE_CHECKING:  # torch is imported when a model is built, so listing names (CLI help) stays light
    from torch import nn

ModelFactory = Callable[[int], "nn.Module"]
register_model = MODELS.register  # ``@register_model("mynet")`` on a function ``num_classes -> nn.Module``


def _torchvision(name: str, num_classes: int) -> nn.Module:
    import torchvision

    if name not in torchvision.models.list_models(module=torchvision.models):
        raise ModelError(f"unknown torchvision classification model {name!r}: see "
                         "torchvision.models.list_models() for the names")
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


def _timm(name: str, num_classes: int) -> nn.Module:
    try:
        import timm
    except ImportError as exc:
        raise ModelError(f"timm:{name} needs timm: pip install 'pwdeploy[timm]'") from exc
    if name not in timm.list_models():
        raise ModelError(f"unknown timm model {name!r}: see timm.list_models() for the names")
    return timm.create_model(name, pretrained=False, num_classes=num_classes)


# Families of external models, chosen by the prefix before ':'.
_FAMILIES: dict[str, Callable[[str, int], nn.Module]] = dict(zip(MODEL_FAMILIES, (_torchvision, _timm)))


def create_model(arch: str, num_classes: int) -> nn.Module:
    if num_classes < 1:
        raise ModelError(f"--num-classes must be >= 1 (1 means a single binary logit), got {num_classes}")
    family, _, name = arch.partition(":")
    if name and family in _FAMILIES:
        return _FAMILIES[family](name, num_classes)
    if arch not in MODELS.names():
        raise ModelError(f"unknown architecture {arch!r}: use one of {', '.join(list_models())}")
    return MODELS.get(arch)(num_classes)


def classifier_layers(model: nn.Module) -> list[nn.Module]:
    """The final Linear layer(s): their output width is the class count and must never be pruned."""
    from torch import nn

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1:] if linears else []


__all__ = ["classifier_layers", "create_model", "list_models", "register_model"]
