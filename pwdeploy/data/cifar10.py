"""CIFAR-10 in torchvision's layout, read directly (torchvision's class checks MD5s of the full files).

    DIR/cifar-10-batches-py/  (or DIR itself)
        data_batch_1 ... data_batch_5, test_batch   pickled dicts: b"data" uint8 N x 3072 (R, G, B planes
        batches.meta                                of 32x32), b"labels" list of ints; b"label_names"

Variants, as in the paper's code (datasets/helpers.py of robbiemeyer/pw_loss_pruning):
- ``standard``: groups are the 10 classes.
- ``imbalanced``: cat and dog keep 20% of their training images (train and val); test is untouched.
- ``shortcut``: a small yellow square is painted on 98% of dog training images and 2% of the others, so a
  model can learn "square => dog". Groups are ``clean`` / ``with_square``. The paper re-drew the square at
  random each epoch; here whether an image has one and where are fixed per image (seeded), so the
  groups are known without decoding. The test split paints the square on a seeded half of all test images
  (every class), so ``with_square`` measures reliance on the shortcut and ``clean`` the plain accuracy.

Validation is a deterministic hold-out (seed fixed, independent of --seed) of ``val_fraction`` (default
10%) of each class's training images; test is CIFAR-10's test batch.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..preprocessing import Preprocessing
from . import register_dataset
from .base import GroupedDataset
from .images import check_unknown_options, parse_fraction, parse_size, preprocess_array, require_groups

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
HINT = (f"extract torchvision's cifar-10-python.tar.gz so that {FOLDER}/ holds {', '.join(TRAIN_FILES)}, "
        f"{TEST_FILE} and {META_FILE}, and point --data-root at {FOLDER}/ or its parent")
VARIANTS = ("standard", "imbalanced", "shortcut")
# The paper's code normalises with these statistics.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)
# Fixed seeds: the same images are held out / reduced / marked whatever the run's --seed.
VAL_SEED, IMBALANCE_SEED, SQUARE_SEED, TEST_SQUARE_SEED = 123456789, 987654321, 24680, 13579
IMBALANCED_CLASSES = ("cat", "dog")
SHORTCUT_CLASS = "dog"
SQUARE_RATE_SHORTCUT_CLASS, SQUARE_RATE_OTHERS = 0.98, 0.02
SQUARE_SIZE = 4  # pixels on the native 32x32 image, as in the paper
SQUARE_COLOUR = (255, 255, 0)  # paper: channels R and G set to 1, B to 0


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """CIFAR's batches are pickles; allow only what a numpy array needs, so a tampered file cannot run code."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core."):  # files written by numpy 1.x; numpy 2 moved it to numpy._core
            module = "numpy._core." + module.split(".", 2)[2]
        return super().find_class(module, name)


def _get(d: dict, key: str):
    """Batches written by Python 2 have bytes keys; ones re-saved by Python 3 may have str keys."""
    if key.encode() in d:
        return d[key.encode()]
    return d.get(key)


def read_pickle(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"CIFAR-10 file not found: expected {path}; {HINT}")
    try:
        with open(path, "rb") as f:
            d = _ArrayOnlyUnpickler(f, encoding="bytes").load()
    except Exception as exc:
        raise DataError(f"cannot read {path} as a CIFAR-10 batch ({type(exc).__name__}: {exc}); "
                        f"replace it with the file from cifar-10-python.tar.gz") from None
    if not isinstance(d, dict):
        raise DataError(f"{path} is not a CIFAR-10 batch (expected a pickled dict); replace it")
    return d


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 N x 32 x 32 x 3, labels int64) from one batch file."""
    d = read_pickle(path)
    data, labels = _get(d, "data"), _get(d, "labels")
    if data is None or labels is None:
        raise DataError(f"{path} has no 'data' or 'labels' entry: not a CIFAR-10 batch; replace it")
    data = np.asarray(data)
    labels = np.asarray(labels, dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(f"{path}: expected uint8 data of shape N x 3072 and N labels, got {data.dtype} "
                        f"{data.shape} and {len(labels)} labels; replace it")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: label {int(labels[(labels < 0) | (labels > 9)][0])} is outside CIFAR-10's 0..9")
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)), labels


def read_class_names(folder: Path) -> list[str]:
    names = _get(read_pickle(folder / META_FILE), "label_names")
    if not names or len(names) != 10:
        raise DataError(f"{folder / META_FILE}: expected 10 label_names; replace it")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def find_folder(root) -> Path:
    if root is None:
        raise DataError(f"--data cifar10 needs --data-root DIR: the folder holding {FOLDER}/ or its files")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"data root not found: {base} (check --data-root)")
    for candidate in (base, base / FOLDER):
        if (candidate / META_FILE).is_file() or (candidate / TEST_FILE).is_file():
            return candidate
    if (base / "cifar-10-python.tar.gz").is_file():
        raise DataError(f"{base / 'cifar-10-python.tar.gz'} is not extracted: run "
                        f"'tar xzf cifar-10-python.tar.gz' in {base}")
    raise DataError(f"CIFAR-10 not found: expected {base / FOLDER / META_FILE} (or {base / META_FILE}); {HINT}")


class CifarDataset(GroupedDataset):
    """Images held as uint8 32x32 (150 MB for the full training set, as torchvision does); optional
    shortcut square painted per image; augmentation as the paper's (random crop with 4 px padding, flip)."""

    def __init__(self, images, labels, groups, squares, *, group_names, class_names, preprocessing, name,
                 split, augment):
        self.images = images
        self.squares = squares  # N x 2 (row, col) of the square's top-left corner, -1 where none
        self._set_metadata(labels, groups, group_names=group_names, class_names=class_names,
                           preprocessing=preprocessing, name=name, split=split, augment=augment)

    def load_image(self, index: int) -> np.ndarray:
        image = self.images[index]
        r, c = self.squares[index]
        if r >= 0:
            image = image.copy()
            image[r:r + SQUARE_SIZE, c:c + SQUARE_SIZE] = SQUARE_COLOUR
        if self.augment:
            image = _crop_and_flip(image)
        return preprocess_array(self.preprocessing, image)


def _crop_and_flip(image: np.ndarray, pad: int = 4) -> np.ndarray:
    # torch's RNG, not numpy's: DataLoader seeds it per worker, so workers do not repeat the same crops
    h, w = image.shape[:2]
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    r, c = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,)))
    out = padded[r:r + h, c:c + w]
    if torch.rand(()) < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def _reduce_classes(labels: np.ndarray, classes: list[int], keep_fraction: float) -> np.ndarray:
    """Boolean mask keeping ``keep_fraction`` of each class in ``classes`` (seeded) and all other images."""
    rng = np.random.default_rng(IMBALANCE_SEED)
    keep = np.ones(len(labels), dtype=bool)
    for c in classes:
        idx = np.flatnonzero(labels == c)
        dropped = rng.choice(idx, len(idx) - int(round(keep_fraction * len(idx))), replace=False)
        keep[dropped] = False
    return keep


def _stratified_holdout(labels: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask: a seeded ``fraction`` of each class (at least one image where a class has two or
    more and fraction > 0), so validation has every class even after the imbalanced reduction."""
    rng = np.random.default_rng(VAL_SEED)
    mask = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        n = int(round(fraction * len(idx)))
        if fraction > 0 and n == 0 and len(idx) >= 2:
            n = 1
        mask[rng.permutation(idx)[:n]] = True
    return mask


def _square_positions(n: int, has_square: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pos = rng.integers(0, 32 - SQUARE_SIZE + 1, size=(n, 2))
    pos[~has_square] = -1
    return pos


@register_dataset("cifar10")
def create_cifar10(root=None, split: str = "train", *, variant: str = "standard", size=32, augment: bool = False,
                   val_fraction: float = 0.1, keep_fraction: float = 0.2, skip_bad_images: bool = False,
                   **unknown) -> CifarDataset:
    # skip_bad_images is accepted for a uniform CLI; CIFAR-10 has no image files that could be unreadable.
    check_unknown_options("cifar10", unknown)
    if variant not in VARIANTS:
        raise DataError(f"unknown cifar10 variant {variant!r}: use one of {', '.join(VARIANTS)}")
    h, w = parse_size(size, "cifar10")
    val_fraction = parse_fraction(val_fraction, "val_fraction", "cifar10")
    keep_fraction = parse_fraction(keep_fraction, "keep_fraction", "cifar10", allow_zero=False)
    folder = find_folder(root)
    class_names = read_class_names(folder)

    if split == "test":
        images, labels = read_batch(folder / TEST_FILE)
        has_square = np.zeros(len(labels), dtype=bool)
        if variant == "shortcut":
            has_square[np.random.default_rng(TEST_SQUARE_SEED).permutation(len(labels))[:len(labels) // 2]] = True
        squares = _square_positions(len(labels), has_square, TEST_SQUARE_SEED + 1)
    else:
        parts = [read_batch(folder / f) for f in TRAIN_FILES]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        n_all = len(labels)
        # decided over all 50,000 training images first, so train and val never disagree about an image
        if variant == "shortcut":
            dog = class_names.index(SHORTCUT_CLASS)
            u = np.random.default_rng(SQUARE_SEED).random(n_all)
            has_square = np.where(labels == dog, u < SQUARE_RATE_SHORTCUT_CLASS, u < SQUARE_RATE_OTHERS)
        else:
            has_square = np.zeros(n_all, dtype=bool)
        squares = _square_positions(n_all, has_square, SQUARE_SEED + 1)
        pool = np.arange(n_all)
        if variant == "imbalanced":
            reduced = [class_names.index(c) for c in IMBALANCED_CLASSES]
            pool = pool[_reduce_classes(labels, reduced, keep_fraction)]
        in_val = _stratified_holdout(labels[pool], val_fraction)
        rows = pool[in_val] if split == "val" else pool[~in_val]
        if split == "val" and not len(rows):
            raise DataError("cifar10 val split is empty: set the data option val_fraction above 0")
        images, labels, has_square, squares = images[rows], labels[rows], has_square[rows], squares[rows]

    if variant == "shortcut":
        group_names, groups = ["clean", "with_square"], has_square.astype(np.int64)
    else:
        group_names, groups = list(class_names), labels
    require_groups(group_names, groups, f"the cifar10 {variant} {split} split",
                   "use the complete CIFAR-10 batch files")
    prep = Preprocessing(size=(h, w), mean=MEAN, std=STD)
    return CifarDataset(images, labels, groups, squares, group_names=group_names, class_names=class_names,
                        preprocessing=prep, name=f"cifar10-{variant}", split=split, augment=augment)
