"""Shared pieces for adapters that read real image files: root lookup, option checks, lazy decoding,
bad-image scans and a dataset over a list of files.

Images are decoded lazily (in ``load_image``) so a 200k-image dataset costs only its annotation table at
construction; the recorded ``Preprocessing`` is the one transform applied, so training, verification
and the device all see the same input.
"""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import DataError
from ..preprocessing import Preprocessing
from ..progress import task
from .base import GroupedDataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SKIP_HINT = "pass --skip-bad-images to count and skip unreadable images"


def check_unknown_options(dataset: str, unknown: dict) -> None:
    if unknown:
        raise DataError(f"unknown option(s) for --data {dataset}: {', '.join(sorted(unknown))}")


def parse_size(size, dataset: str) -> tuple[int, int]:
    """``size`` as an int (square) or [H, W] -> (H, W)."""
    if isinstance(size, bool):
        size = None
    if isinstance(size, int):
        size = [size, size]
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(s, int) and not isinstance(s, bool)
                                                                  for s in size) and min(size) >= 1:
        return int(size[0]), int(size[1])
    raise DataError(f"--data {dataset} option size must be an int or [H, W] of positive ints, got {size!r}")


def parse_fraction(value, key: str, dataset: str, *, allow_zero: bool = True) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and \
        (0.0 <= value < 1.0 if allow_zero else 0.0 < value < 1.0)
    if not ok:
        raise DataError(f"--data {dataset} option {key} must be a number in "
                        f"{'[0, 1)' if allow_zero else '(0, 1)'}, got {value!r}")
    return float(value)


def find_root(root, dataset: str, subdir: str, marker: str, hint: str) -> Path:
    """The folder holding ``marker``: ``root`` itself or ``root/subdir`` (torchvision's convention)."""
    if root is None:
        raise DataError(f"--data {dataset} needs --data-root DIR: the folder holding {marker} or its parent")
    base = Path(root).expanduser()
    if not base.exists():
        raise DataError(f"data root not found: {base} (check --data-root)")
    if not base.is_dir():
        raise DataError(f"--data-root {base} is not a folder: point it at the folder holding {marker}")
    for candidate in (base, base / subdir):
        if (candidate / marker).is_file():
            return candidate
    raise DataError(f"{dataset} not found: expected {base / subdir / marker} (or {base / marker}); {hint}")


def open_rgb(path: Path):
    """Decode ``path`` fully into an RGB PIL image; any failure is a DataError naming the file."""
    try:
        _require_regular(path)
        with Image.open(path) as img:
            return img.convert("RGB")
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"image not found: {path}; restore it or {SKIP_HINT}") from None
    except Exception as exc:  # PIL raises many types (UnidentifiedImageError, OSError, SyntaxError...)
        raise DataError(f"cannot read image {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; "
                        f"fix or remove it, or {SKIP_HINT}") from None


def _require_regular(path: Path) -> None:
    """A FIFO or device would block (or never end) when opened: only regular files are images."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise DataError(f"image path {path} is not a regular file (a FIFO, device or folder): point the row at "
                        f"an image file, or {SKIP_HINT}")


def _is_readable(path: Path) -> bool:
    """Decode the file (JPEGs at reduced scale: fast, but still reads every byte) to catch corrupt data."""
    try:
        _require_regular(path)
        with Image.open(path) as img:
            img.draft("RGB", (max(1, img.size[0] // 8), max(1, img.size[1] // 8)))
            img.load()
        return True
    except Exception:
        return False


def find_bad_images(paths: Sequence[Path], description: str) -> list[int]:
    """Indices of files that are missing or do not decode (threads: Pillow releases the GIL while decoding)."""
    bad: list[int] = []
    workers = min(8, os.cpu_count() or 1)
    with task(description, len(paths)) as t, ThreadPoolExecutor(max_workers=workers) as pool:
        for i, ok in enumerate(pool.map(_is_readable, paths, chunksize=64)):
            if not ok:
                bad.append(i)
            t.advance()
    return bad


def missing_files(paths: Iterable[Path]) -> list[int]:
    """Indices of paths that do not exist; one directory listing per folder instead of one stat per file."""
    listings: dict[Path, set[str]] = {}
    missing = []
    for i, p in enumerate(paths):
        folder = p.parent
        if folder not in listings:
            listings[folder] = set(os.listdir(folder)) if folder.is_dir() else set()
        if p.name not in listings[folder]:
            missing.append(i)
    return missing


def examples(paths: Sequence[Path], indices: Sequence[int], k: int = 3) -> str:
    shown = ", ".join(str(paths[i]) for i in indices[:k])
    return shown + (", ..." if len(indices) > k else "")


def drop_unusable(paths: list[Path], *, skip_bad_images: bool, what: str, notes: list[str]) -> np.ndarray:
    """Boolean keep-mask over ``paths``. Missing files are an error naming the file unless
    ``skip_bad_images``; with it, missing and undecodable files are counted into ``notes`` and dropped."""
    keep = np.ones(len(paths), dtype=bool)
    missing = missing_files(paths)
    if missing and not skip_bad_images:
        raise DataError(f"{len(missing)} image file(s) of {what} not found, e.g. {paths[missing[0]]}; "
                        f"restore them or {SKIP_HINT}")
    keep[missing] = False
    if missing:
        notes.append(f"{what}: skipped {len(missing)} of {len(paths)} image(s) not found "
                     f"({examples(paths, missing)})")
    if skip_bad_images:
        present = [i for i in range(len(paths)) if keep[i]]
        bad = [present[j] for j in find_bad_images([paths[i] for i in present], f"checking {what} images")]
        keep[bad] = False
        if bad:
            notes.append(f"{what}: skipped {len(bad)} of {len(paths)} unreadable image(s) ({examples(paths, bad)})")
    return keep


def require_groups(group_names: Sequence[str], groups: np.ndarray, where: str, fix: str) -> None:
    """An empty declared group cannot be evaluated: fail naming it."""
    counts = np.bincount(groups, minlength=len(group_names)) if len(groups) else np.zeros(len(group_names), int)
    for name, count in zip(group_names, counts):
        if count == 0:
            raise DataError(f"group {name!r} has no images in {where}; {fix}")


class ImageFileDataset(GroupedDataset):
    """Images decoded lazily from files; labels and groups in arrays. Training augmentation (when on) is a
    random horizontal flip of the resized image, before normalisation.

    With a decoded-image cache attached (``data/cache.py``) the resized uint8 images come from the cache's
    memory-mapped array instead of the JPEG files; the rest of the path is the same, so the tensors are too.
    """

    def __init__(self, paths: Sequence[Path], labels, groups, *, group_names: list[str], class_names: list[str],
                 preprocessing: Preprocessing, name: str, split: str, augment: bool = False,
                 notes: list[str] | None = None):
        self.paths = [Path(p) for p in paths]
        self._set_metadata(labels, groups, group_names=group_names, class_names=class_names,
                           preprocessing=preprocessing, name=name, split=split, augment=augment, notes=notes)
        self.cache_file: Path | None = None
        self._cache = None

    def decode_resized(self, index: int) -> np.ndarray:
        """uint8 HWC image of the preprocessing's size, from the file."""
        return self.preprocessing.resize_pil(open_rgb(self.paths[index]))

    def attach_cache(self, cache_file: Path) -> None:
        self.cache_file, self._cache = Path(cache_file), None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cache"] = None  # DataLoader workers re-open the memory map instead of pickling it
        return state

    def load_resized(self, index: int) -> np.ndarray:
        """uint8 HWC image before normalisation (augmented): what training loaders batch, since uint8 is a
        quarter of the bytes to collate and copy and the device normalises it (data/loading.py)."""
        if self.cache_file is not None:
            if self._cache is None:
                self._cache = np.load(self.cache_file, mmap_mode="r")
            resized = self._cache[index]
        else:
            resized = self.decode_resized(index)
        if self.augment:
            # torch's RNG: DataLoader seeds it per worker, so workers do not repeat the same flips
            if torch.rand(()) < 0.5:
                resized = resized[:, ::-1]
        return resized

    def load_image(self, index: int) -> np.ndarray:
        return self.preprocessing.normalize(self.load_resized(index))


def preprocess_array(preprocessing: Preprocessing, hwc: np.ndarray) -> np.ndarray:
    """A uint8 HWC array -> float32 CHW exactly as ``Preprocessing.apply_pil`` would (skips PIL when no
    resize is needed; the arithmetic is the same ``normalize``)."""
    if hwc.shape[:2] == tuple(preprocessing.size) and not preprocessing.resize_shorter:
        return preprocessing.normalize(hwc)
    return preprocessing.apply_pil(Image.fromarray(hwc))
