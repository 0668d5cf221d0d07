"""Dataset registry: ``create_dataset(spec, split)`` returns a GroupedDataset yielding (image, label, group).

Adapters register themselves by name (timm-style registry); each module owns one dataset family.
"""

from __future__ import annotations

import importlib
from typing import Callable

from ..errors import DataError
from .base import SPLITS, ArrayDataset, DataSpec, GroupedDataset

_REGISTRY: dict[str, Callable[..., GroupedDataset]] = {}
# Adapters are imported on first use so a missing optional dependency of one never breaks the others.
_MODULES = {
    "synthetic": "synthetic",
    "celeba": "celeba",
    "cifar10": "cifar10",
    "fitzpatrick17k": "fitzpatrick17k",
    "csv": "csv_manifest",
}


def register_dataset(name: str):
    def wrap(factory: Callable[..., GroupedDataset]):
        _REGISTRY[name] = factory
        return factory

    return wrap


def dataset_names() -> list[str]:
    return sorted(_MODULES)


def create_dataset(spec: DataSpec, split: str) -> GroupedDataset:
    """Build ``split`` ('train', 'val' or 'test') of the dataset ``spec`` names."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    if spec.name not in _MODULES:
        raise DataError(f"unknown dataset {spec.name!r}: use one of {', '.join(dataset_names())}")
    from ..validate import check_data_options

    check_data_options(spec.options)
    if spec.name not in _REGISTRY:
        importlib.import_module(f"{__name__}.{_MODULES[spec.name]}")
    return _REGISTRY[spec.name](root=spec.root, split=split, **spec.options)


__all__ = ["ArrayDataset", "DataSpec", "GroupedDataset", "SPLITS", "create_dataset", "dataset_names",
           "register_dataset"]
