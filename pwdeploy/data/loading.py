"""DataLoader defaults: worker processes and pinned memory where they help.

Image-file datasets (decoding, or reading the decoded-image cache and normalising) get worker processes,
up to 8 per process and one core left for the training loop; in-memory arrays (synthetic, CIFAR-10) get
none, since workers would only copy what is already decoded. Pinned memory speeds host-to-GPU copies and
is on when training on CUDA. ``--workers`` / ``loader.pin_memory`` override both.
"""

from __future__ import annotations

import os

import torch

from ..config import LoaderSettings
from .base import GroupedDataset
from .images import ImageFileDataset

MAX_AUTO_WORKERS = 8


def cpus_per_process() -> int:
    from .. import distributed

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // distributed.local_world_size())


def auto_workers(dataset: GroupedDataset) -> int:
    if isinstance(dataset, torch.utils.data.Subset):  # a shard or subset: the workers of what it selects from
        return auto_workers(dataset.dataset)
    if not isinstance(dataset, ImageFileDataset):
        return 0
    return max(1, min(MAX_AUTO_WORKERS, cpus_per_process() - 1))


def loader_options(dataset: GroupedDataset, settings: LoaderSettings | None, device: torch.device | None) -> dict:
    """Keyword arguments for ``DataLoader`` (workers, pin_memory, persistent workers)."""
    settings = settings or LoaderSettings()
    if settings.workers is not None and settings.workers < 0:
        from ..errors import ConfigError

        raise ConfigError(f"--workers must be 0 or more, got {settings.workers}")
    workers = auto_workers(dataset) if settings.workers is None else settings.workers
    on_cuda = device is not None and device.type == "cuda"
    pin = on_cuda if settings.pin_memory is None else bool(settings.pin_memory) and torch.cuda.is_available()
    options = {"num_workers": workers, "pin_memory": pin}
    if workers:
        options["persistent_workers"] = True  # the batch stream iterates the loader once per epoch
    return options
