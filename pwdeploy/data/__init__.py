"""Dataset registry: ``create_dataset(spec, split)`` returns a GroupedDataset yielding (image, label, group).

Adapters register themselves by name (timm-style registry); each module owns one dataset family.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Callable

from ..errors import DataError

if TYPE_CHECKING:
    from .base import DataSpec, GroupedDataset

_REGISTRY: dict[str, Callable[..., "GroupedDataset"]] = {}
# pwdeploy's own adapters (name -> module), imported on first use so a missing optional dependency of one never
# breaks the others; adapters from outside the package register with @register_dataset and need no entry here.
_BUILTIN = {
    "synthetic": "synthetic",
    "celeba": "celeba",
    "cifar10": "cifar10",
    "fitzpatrick17k": "fitzpatrick17k",
    "csv": "csv_manifest",
}


def register_dataset(name: str):
    """Decorator: ``@register_dataset("mydata")`` on a factory ``(root, split, **options) -> GroupedDataset``."""
    def wrap(factory: Callable[..., GroupedDataset]):
        _REGISTRY[name] = factory
        return factory

    return wrap


def list_datasets() -> list[str]:
    return sorted(set(_BUILTIN) | set(_REGISTRY))


def create_dataset(spec: DataSpec, split: str) -> GroupedDataset:
    """Build ``split`` ('train', 'val' or 'test') of the dataset ``spec`` names."""
    from .base import SPLITS

    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    if spec.name not in _REGISTRY and spec.name in _BUILTIN:
        importlib.import_module(f"{__name__}.{_BUILTIN[spec.name]}")
    if spec.name not in _REGISTRY:
        raise DataError(f"unknown dataset {spec.name!r}: use one of {', '.join(list_datasets())}")
    from ..validate import check_data_options

    check_data_options(spec.options)
    return _REGISTRY[spec.name](root=spec.root, split=split, **spec.options)


def __getattr__(name: str):
    # The dataset classes import torch; they load on first use so that listing names (CLI help) stays light.
    if name in ("ArrayDataset", "DataSpec", "GroupedDataset", "SPLITS"):
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ArrayDataset", "DataSpec", "GroupedDataset", "SPLITS", "create_dataset", "list_datasets",
           "register_dataset"]
