"""Training loops: baseline training, retraining after pruning, evaluation; and the PW batch source.

PW targets and weights come from the frozen original model. Without augmentation its outputs are computed
once per sample and cached; with augmentation they are recomputed per batch on the augmented input.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .config import TrainSettings
from .data.base import GroupedDataset
from .progress import task


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        from .errors import PwdeployError

        raise PwdeployError(f"--device {name} asked for CUDA but no CUDA GPU is available: use --device cpu or auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


class _Indexed(Dataset):
    def __init__(self, dataset: GroupedDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        x, y, g = self.dataset[i]
        return x, y, g, i


def make_loader(dataset: GroupedDataset, batch_size: int, *, shuffle: bool, seed: int = 0,
                num_workers: int = 0, drop_last: bool = False) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(_Indexed(dataset), batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=num_workers, drop_last=drop_last and len(dataset) > batch_size)


@torch.no_grad()
def predict_logits(model: nn.Module, dataset: GroupedDataset, device: torch.device, batch_size: int = 256,
                   description: str | None = None) -> np.ndarray:
    model.eval().to(device)
    outputs = []
    loader = make_loader(dataset, batch_size, shuffle=False)
    with task(description or "evaluating", total=len(loader)) as bar:
        for x, _, _, _ in loader:
            outputs.append(model(x.to(device)).float().cpu())
            bar.advance()
    return torch.cat(outputs).numpy()


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
    while True:
        for x, y, g, idx in loader:
            x, y, g = x.to(device, non_blocking=True), y.to(device), g.to(device)
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
        on_epoch_end=None) -> list[float]:
    """Train ``model`` for ``settings.epochs`` epochs; returns the mean loss per epoch.

    ``on_epoch_end(epoch, model)`` runs after each epoch (checkpoint selection on validation)."""
    model.to(device)
    if settings.epochs <= 0:
        return []
    loader = make_loader(dataset, settings.batch_size, shuffle=True, seed=seed,
                         num_workers=settings.num_workers, drop_last=True)
    total = settings.epochs * len(loader)
    optimizer, scheduler = make_optimizer(model, settings, total)
    stream = batch_stream(loader, device, original)
    history = []
    with task(description, total=total) as bar:
        for epoch in range(settings.epochs):
            model.train()
            running = 0.0
            for _ in range(len(loader)):
                x, y, g, orig = next(stream)
                loss = loss_fn(model(x), y, orig, g)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                running += loss.item()
                bar.advance()
            history.append(running / len(loader))
            bar.describe(f"epoch {epoch + 1}/{settings.epochs} loss {history[-1]:.4f}")
            if on_epoch_end is not None:
                on_epoch_end(epoch, model)
    return history
