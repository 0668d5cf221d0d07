"""Dataset registry: ``create_dataset(spec, split)`` returns a GroupedDataset yielding (image, label, group).

Adapters register themselves by name (timm-style registry); each module owns one dataset family.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import DataError
from ..registry import Registry
from ..validate import check_data_options
from .spec import SPLITS, DataSpec

if TYPE_CHECKING:
    from .base import ArrayDataset, GroupedDataset

# pwdeploy's own adapters (name -> module), imported on first use so a missing optional dependency of one never
# breaks the others; other adapters come through @register_dataset or an entry point ("pwdeploy.datasets").
DATASETS = Registry("--data", "pwdeploy.datasets", {
    name: f"{__name__}.{module}" for name, module in (("synthetic", "synthetic"), ("celeba", "celeba"),
                                                      ("cifar10", "cifar10"), ("fitzpatrick17k", "fitzpatrick17k"),
                                                      ("csv", "csv_manifest"))}, error=DataError)
# ``@register_dataset("mydata")`` on a factory ``(root, split, **options) -> GroupedDataset``
register_dataset = DATASETS.register


def list_datasets() -> list[str]:
    return DATASETS.names()


def create_dataset(spec: DataSpec, split: str) -> GroupedDataset:
    """Build ``split`` ('train', 'val' or 'test') of the dataset ``spec`` names."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    if spec.name not in DATASETS.names():
        raise DataError(f"unknown dataset {spec.name!r}: use one of {', '.join(list_datasets())}")
    factory = DATASETS.get(spec.name)
    check_data_options(spec.options)
    return factory(root=spec.root, split=split, **spec.options)


def __getattr__(name: str):
    # The dataset classes import torch, which the CLI's start-up and `pwdeploy verify` run without: they load on
    # first use.
    if name in ("ArrayDataset", "GroupedDataset"):
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ArrayDataset", "DataSpec", "GroupedDataset", "SPLITS", "create_dataset", "list_datasets",
           "register_dataset"]
