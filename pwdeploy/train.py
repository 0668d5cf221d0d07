"""Training loops: baseline training, retraining after pruning, evaluation; and the PW batch source.

PW targets and weights come from the frozen original model. Without augmentation its outputs are computed
once per sample and cached; with augmentation they are recomputed per batch on the augmented input.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import distributed
from .config import LoaderSettings, TrainSettings
from .data.base import GroupedDataset
from .data.loading import DeviceNormalize, loader_options, yields_uint8
from .errors import PwdeployError
from .fastpath import channels_last, configure_backends
from .precision import Precision
from .progress import task


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PwdeployError(f"--device {name} asked for CUDA but no CUDA GPU is available: use --device cpu or auto")
    if name == "cuda" and distributed.is_active():
        return torch.device("cuda", distributed.local_rank())  # one GPU per process under torchrun
    return torch.device(name)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


class _Indexed(Dataset):
    """(image, label, group, index) over ``indices`` of ``dataset`` (all by default). Image-file datasets
    give uint8 HWC images here; ``model_input`` normalises the batch on the device."""

    def __init__(self, dataset: GroupedDataset, indices: Sequence[int] | None = None):
        self.dataset = dataset
        self.indices = range(len(dataset)) if indices is None else indices
        self.uint8 = yields_uint8(dataset)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        i = self.indices[i]
        image = self.dataset.load_resized(i) if self.uint8 else self.dataset.load_image(i)
        return image, int(self.dataset.labels[i]), int(self.dataset.groups[i]), i


def model_input(loader: DataLoader, device: torch.device):
    """The function turning this loader's image batches into model input on ``device``."""
    indexed = loader.dataset
    if not indexed.uint8:
        return lambda x: x.to(device, non_blocking=True)
    normalize = DeviceNormalize(indexed.dataset.preprocessing, device)
    return lambda x: normalize(x.to(device, non_blocking=True))


def make_loader(dataset: GroupedDataset, batch_size: int, *, shuffle: bool, seed: int = 0,
                drop_last: bool = False, loader: LoaderSettings | None = None,
                device: torch.device | None = None, indices: Sequence[int] | None = None) -> DataLoader:
    """Training batches (``shuffle``) are the single-process global batches, split across torchrun ranks;
    workers and pinned memory follow ``loader`` (data/loading.py). Pass image batches through
    ``model_input(loader, device)``."""
    generator = torch.Generator().manual_seed(seed)
    options = loader_options(dataset, loader, device)
    indexed = _Indexed(dataset, indices)
    drop_last = drop_last and len(indexed) > batch_size
    if shuffle:
        sampler = distributed.ShardedBatchSampler(len(indexed), batch_size, generator, drop_last=drop_last)
        return DataLoader(indexed, batch_sampler=sampler, generator=generator, **options)
    return DataLoader(indexed, batch_size=batch_size, generator=generator, **options)


@torch.no_grad()
def predict_logits(model: nn.Module, dataset: GroupedDataset, device: torch.device, batch_size: int = 256,
                   description: str | None = None, loader: LoaderSettings | None = None) -> np.ndarray:
    """Logits for every sample in order (fp32). Under torchrun each rank runs a contiguous shard and the
    shards are gathered in order, so every rank returns the whole array."""
    model.eval().to(device)
    outputs = []
    batches = make_loader(dataset, batch_size, shuffle=False, loader=loader, device=device,
                          indices=distributed.shard(len(dataset)))
    to_input = model_input(batches, device)
    with task(description or "evaluating", total=len(batches)) as bar:
        for x, _, _, _ in batches:
            outputs.append(model(to_input(x)).float().cpu())
            bar.advance(images=len(x) * distributed.world_size())
    logits = torch.cat(outputs).numpy() if outputs else np.zeros((0,), np.float32)
    return distributed.gather_in_order(logits)


class OriginalOutputs:
    """The frozen original model's logits for training samples: cached, or live under augmentation."""

    def __init__(self, original: nn.Module, dataset: GroupedDataset, device: torch.device):
        self.original = original.eval().to(device)
        self.cache = None
        if not dataset.augment:
            self.cache = torch.from_numpy(predict_logits(self.original, dataset, device,
                                                         description="original model outputs")).to(device)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        if self.cache is not None:
            return self.cache[index.to(self.cache.device)]
        return self.original(x).float()


def batch_stream(loader: DataLoader, device: torch.device, original: OriginalOutputs | None
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """Endless (x, y, group, original_logits) batches on ``device``, reshuffled every pass."""
    to_input = model_input(loader, device)
    while True:
        for x, y, g, idx in loader:
            x, y, g = to_input(x), y.to(device), g.to(device)
            yield x, y, g, (original(x, idx) if original is not None else None)


def make_optimizer(model: nn.Module, settings: TrainSettings, total_steps: int):
    if settings.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=0.9,
                                    weight_decay=settings.weight_decay, nesterov=True)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    if settings.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps))))
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return optimizer, scheduler


def fit(model: nn.Module, dataset: GroupedDataset, loss_fn, settings: TrainSettings, device: torch.device, *,
        original: OriginalOutputs | None = None, seed: int = 0, description: str = "training",
        precision: str = "fp32", loader: LoaderSettings | None = None, on_epoch_end=None) -> list[float]:
    """Train ``model`` for ``settings.epochs`` epochs (DDP under torchrun, autocast per ``precision``);
    returns the mean loss per epoch over all processes.

    ``on_epoch_end(epoch, model)`` runs after each epoch (checkpoint selection on validation)."""
    model.to(device)
    if settings.epochs <= 0:
        return []
    batches = make_loader(dataset, settings.batch_size, shuffle=True, seed=seed, drop_last=True, loader=loader,
                          device=device)
    total = settings.epochs * len(batches)
    optimizer, scheduler = make_optimizer(model, settings, total)
    amp = Precision(precision, device)
    configure_backends(device)  # CUDA: cudnn.benchmark, TF32 (pwdeploy.fastpath); nothing on the CPU
    with channels_last(model, device) as nhwc:  # CUDA: NHWC model and batches while training
        trained = distributed.wrap_ddp(model, device)
        stream = batch_stream(batches, device, original)
        return _epochs(trained, model, stream, len(batches), loss_fn, settings, optimizer, scheduler, amp,
                       description, on_epoch_end, nhwc)


def _epochs(trained, model, stream, steps: int, loss_fn, settings: TrainSettings, optimizer, scheduler, amp,
            description: str, on_epoch_end, nhwc: bool) -> list[float]:
    device = next(model.parameters()).device
    history = []
    with task(description, total=settings.epochs * steps) as bar:
        for epoch in range(settings.epochs):
            trained.train()
            running = torch.zeros((), dtype=torch.float64, device=device)
            for step in range(steps):
                x, y, g, orig = next(stream)
                if nhwc and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                with amp.autocast():
                    loss = loss_fn(trained(x), y, orig, g)
                optimizer.zero_grad(set_to_none=True)
                amp.step(loss, optimizer)
                scheduler.step()
                running += loss.detach()
                bar.advance(images=len(x) * distributed.world_size())
                if step % FINITE_CHECK_EVERY == 0 or step == steps - 1:
                    _check_finite_loss(running, epoch, description)
            history.append(distributed.mean_over_ranks(float(running)) / steps)
            bar.describe(f"epoch {epoch + 1}/{settings.epochs} loss {history[-1]:.4f}")
            if on_epoch_end is not None:
                on_epoch_end(epoch, model)
    return history


# The running loss sum stays on the device (no sync per step); a NaN/inf loss poisons it, so checking it every
# few steps finds the first bad one within that many steps.
FINITE_CHECK_EVERY = 16


def _check_finite_loss(running: torch.Tensor, epoch: int, description: str) -> None:
    """A NaN/inf loss poisons every weight it touches: stop the run (exit 2; nothing is marked complete)."""
    if not bool(torch.isfinite(running)):
        raise PwdeployError(f"{description}: the loss became {running.item()} in epoch {epoch + 1}: the run was "
                            "stopped and nothing was kept; lower the learning rate, or check --pw-gamma, "
                            "--pw-min-weight and the data")
