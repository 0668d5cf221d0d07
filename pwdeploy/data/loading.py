"""DataLoader defaults: worker processes and pinned memory where they help.

Image-file datasets get worker processes when a process has at least 4 cores: up to 8 while JPEGs are
decoded, up to 4 with the decoded-image cache (reading it is cheap, so more workers mostly add copies),
always one core left for the training loop. With fewer cores, or for in-memory arrays (synthetic,
CIFAR-10), the main process loads: on 2 cores, one worker was slower than none both decoding (390 vs 513
images/s) and reading the cache (benchmarks/scale.py). Pinned memory speeds host-to-GPU copies and is on
when training on CUDA. ``--workers`` / ``loader.pin_memory`` override both.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from .. import distributed
from ..config import LoaderSettings
from ..errors import ConfigError
from .base import GroupedDataset
from .images import ImageFileDataset

MAX_AUTO_WORKERS = {"decoding": 8, "cached": 4}
MIN_CORES_FOR_WORKERS = 4


def cpus_per_process() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // distributed.local_world_size())


def auto_workers(dataset: GroupedDataset) -> int:
    cpus = cpus_per_process()
    if not isinstance(dataset, ImageFileDataset) or cpus < MIN_CORES_FOR_WORKERS:
        return 0
    return min(MAX_AUTO_WORKERS["cached" if dataset.cache_file else "decoding"], cpus - 1)


def loader_options(dataset: GroupedDataset, settings: LoaderSettings | None, device: torch.device | None) -> dict:
    """Keyword arguments for ``DataLoader`` (workers, pin_memory, persistent workers)."""
    settings = settings or LoaderSettings()
    if settings.workers is not None and settings.workers < 0:
        raise ConfigError(f"--workers must be 0 or more, got {settings.workers}")
    workers = auto_workers(dataset) if settings.workers is None else settings.workers
    on_cuda = device is not None and device.type == "cuda"
    pin = on_cuda if settings.pin_memory is None else bool(settings.pin_memory) and torch.cuda.is_available()
    options = {"num_workers": workers, "pin_memory": pin, "collate_fn": collate}
    if workers:
        options["persistent_workers"] = True  # the batch stream iterates the loader once per epoch
    return options


class DeviceNormalize:
    """Batches of uint8 NHWC images (image-file datasets) -> normalised float32 NCHW on the device.

    The same float32 operations in the same order as ``Preprocessing.normalize`` (divide by 255, subtract
    the mean, divide by the std), so the values are those the dataset's own ``load_image`` gives.
    """

    def __init__(self, preprocessing, device: torch.device):
        self.mean = torch.tensor(preprocessing.mean, dtype=torch.float32, device=device)
        self.std = torch.tensor(preprocessing.std, dtype=torch.float32, device=device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8:
            return x
        x = x.float().div_(255.0).sub_(self.mean).div_(self.std)
        return x.permute(0, 3, 1, 2).contiguous()


def collate(samples: list) -> tuple:
    """(images, labels, groups, indices) batch from numpy images: ``np.stack`` instead of default_collate's
    ``torch.stack``, which measured ~150x slower on 64 uint8 images of 218x178 with this torch on the CPU."""
    images, labels, groups, indices = zip(*samples)
    batch = torch.from_numpy(np.stack(images))
    if torch.utils.data.get_worker_info() is not None:
        batch = batch.share_memory_()  # as default_collate: the main process maps it instead of unpickling a copy
    return batch, torch.tensor(labels), torch.tensor(groups), torch.tensor(indices)


def yields_uint8(dataset: GroupedDataset) -> bool:
    """Image-file datasets hand the loader uint8 images, normalised later on the device."""
    return isinstance(dataset, ImageFileDataset)
