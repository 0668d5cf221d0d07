"""The one dataset shape every adapter yields: (image tensor CHW float32, label int, group int)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..preprocessing import Preprocessing
from .spec import SPLITS, DataSpec  # noqa: F401  (re-exported: their old home)


class GroupedDataset(Dataset):
    """Base class: subclasses fill ``labels``, ``groups`` (int arrays, cheap to read without images),
    ``group_names``, ``class_names``, ``preprocessing`` and implement ``load_image(i) -> float32 CHW``.

    Labels and groups live in arrays so samplers (stratified calibration, verification subsets) never
    need to decode an image.
    """

    labels: np.ndarray
    groups: np.ndarray
    group_names: list[str]
    class_names: list[str]
    preprocessing: Preprocessing
    name: str = "dataset"
    split: str = "train"
    # Augmentation changes the input each epoch, so PW targets cannot be cached across epochs.
    augment: bool = False
    notes: list[str]  # counted problems (skipped rows, bad images) that reports show

    def _set_metadata(self, labels, groups, *, group_names, class_names, preprocessing: Preprocessing, name: str,
                      split: str, augment: bool = False, notes: list[str] | None = None) -> None:
        """Fill the attributes every adapter shares (augmentation only ever applies to the train split)."""
        self.labels = np.asarray(labels, dtype=np.int64)
        self.groups = np.asarray(groups, dtype=np.int64)
        self.group_names = list(group_names)
        self.class_names = list(class_names)
        self.preprocessing = preprocessing
        self.name = name
        self.split = split
        self.augment = bool(augment) and split == "train"
        self.notes = list(notes or [])

    def __len__(self) -> int:
        return len(self.labels)

    def load_image(self, index: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int):
        image = torch.from_numpy(self.load_image(index))
        return image, int(self.labels[index]), int(self.groups[index])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def group_counts(self) -> dict[str, int]:
        counts = np.bincount(self.groups, minlength=len(self.group_names))
        return {name: int(c) for name, c in zip(self.group_names, counts)}

    def describe(self) -> dict:
        return {
            "name": self.name,
            "split": self.split,
            "n": len(self),
            "classes": list(self.class_names),
            "groups": self.group_counts(),
            "preprocessing": self.preprocessing.to_dict(),
            "notes": list(getattr(self, "notes", [])),
        }


class ArrayDataset(GroupedDataset):
    """A dataset held in memory as a float32 NCHW array (synthetic data, preprocessed subsets)."""

    def __init__(self, images: np.ndarray, labels: Sequence[int], groups: Sequence[int], *,
                 group_names: list[str], class_names: list[str], preprocessing: Preprocessing,
                 name: str = "array", split: str = "train"):
        self.images = np.ascontiguousarray(images, dtype=np.float32)
        self._set_metadata(labels, groups, group_names=group_names, class_names=class_names,
                           preprocessing=preprocessing, name=name, split=split)

    def load_image(self, index: int) -> np.ndarray:
        return self.images[index]
