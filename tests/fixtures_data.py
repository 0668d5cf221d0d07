"""Write tiny datasets in the real on-disk formats (no dataset can be downloaded in tests).

Each writer returns the folder to pass as ``--data-root``. Images carry a weak class signal (tint) plus
noise, so a model can learn something, and are small so the files are written in milliseconds.
Other test modules import these helpers.
"""

from __future__ import annotations

import csv
import hashlib
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

# The 40 attributes of list_attr_celeba.txt, in the file's order (Blond_Hair is index 9, Male is 20).
CELEBA_ATTRS = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FITZ_COLUMNS = ["md5hash", "fitzpatrick_scale", "fitzpatrick_centaur", "label", "nine_partition_label",
                "three_partition_label", "qc", "url", "url_alphanum"]
FITZ_CLASSES = ["benign", "malignant", "non-neoplastic"]


def tinted_image(rng: np.random.Generator, label: int, h: int, w: int) -> np.ndarray:
    """uint8 HxWx3: noise plus a colour that depends on the label."""
    base = rng.integers(0, 80, size=(h, w, 3))
    base[..., label % 3] += 120 + 40 * (label // 3 % 2)
    return np.clip(base, 0, 255).astype(np.uint8)


def save_image(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jpg":
        Image.fromarray(array).save(path, quality=95)
    else:
        Image.fromarray(array).save(path)


def write_corrupt_image(path: Path) -> None:
    """A file with an image name whose content is not an image."""
    path.write_bytes(b"this is not an image\n")


# ---------------------------------------------------------------- CelebA (torchvision layout)
def write_celeba(root: Path, *, counts=(40, 16, 24), size=(24, 20), seed: int = 0) -> Path:
    """``root/celeba/`` with img_align_celeba/, list_attr_celeba.txt, list_eval_partition.txt.

    ``counts`` images in partitions 0/1/2 (train/valid/test). Blond_Hair and Male are drawn so that every
    partition has both sexes and both labels. Returns ``root`` (torchvision's parent convention)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "celeba"
    images = folder / "img_align_celeba"
    images.mkdir(parents=True, exist_ok=True)
    n = sum(counts)
    attrs = rng.choice([-1, 1], size=(n, len(CELEBA_ATTRS)))
    partitions = np.repeat([0, 1, 2], counts)
    blond, male = CELEBA_ATTRS.index("Blond_Hair"), CELEBA_ATTRS.index("Male")
    # alternate deterministically inside each partition so no (partition, sex, label) cell is empty
    for p in range(3):
        idx = np.flatnonzero(partitions == p)
        attrs[idx, male] = np.where(np.arange(len(idx)) % 2 == 0, 1, -1)
        attrs[idx, blond] = np.where(np.arange(len(idx)) // 2 % 2 == 0, 1, -1)
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    for i, name in enumerate(names):
        save_image(tinted_image(rng, int(attrs[i, blond] == 1), *size), images / name)
    # the real file: count line, names line (trailing space), rows padded so values align
    lines = [str(n), " ".join(CELEBA_ATTRS) + " "]
    lines += [name + " " + " ".join(f"{v:2d}" for v in row) for name, row in zip(names, attrs)]
    (folder / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (folder / "list_eval_partition.txt").write_text("".join(f"{name} {p}\n" for name, p in zip(names, partitions)))
    return Path(root)


# ---------------------------------------------------------------- CIFAR-10 (torchvision layout)
def _cifar_batch(rng, n: int, batch_label: str) -> dict:
    labels = np.arange(n) % 10  # every class in every batch
    rng.shuffle(labels)
    data = np.stack([tinted_image(rng, int(y), 32, 32).transpose(2, 0, 1).reshape(-1) for y in labels])
    return {b"batch_label": batch_label.encode(), b"labels": [int(y) for y in labels],
            b"data": data.astype(np.uint8), b"filenames": [f"img_{i}.png".encode() for i in range(n)]}


def write_cifar10(root: Path, *, per_batch: int = 60, test: int = 100, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py/`` with data_batch_1..5, test_batch, batches.meta (pickled dicts with bytes
    keys, as the Python 2 originals load with ``encoding='bytes'``). Returns ``root``."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(_cifar_batch(rng, per_batch, f"training batch {i} of 5"), f, protocol=2)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(_cifar_batch(rng, test, "testing batch 1 of 1"), f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR_CLASSES], b"num_cases_per_batch": per_batch,
                     b"num_vis": 3072}, f, protocol=2)
    return Path(root)


# ---------------------------------------------------------------- Fitzpatrick17k
def write_fitzpatrick17k(root: Path, *, per_type: int = 16, unknown_type: int = 3, missing_images: int = 4,
                         size=(20, 20), seed: int = 0, nested: bool = False) -> Path:
    """``fitzpatrick17k.csv`` + ``images/<md5hash>.jpg``: ``per_type`` rows for each type 1..6, plus
    ``unknown_type`` rows with fitzpatrick_scale -1 and ``missing_images`` rows whose image is not written.
    ``nested`` puts them in ``root/fitzpatrick17k/`` (the paper's layout). Returns ``root``."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "fitzpatrick17k" if nested else Path(root)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    specs = [t for t in range(1, 7) for _ in range(per_type)] + [-1] * unknown_type + \
        [1 + i % 6 for i in range(missing_images)]
    for i, fitz in enumerate(specs):
        label = i % 3
        array = tinted_image(rng, label, *size)
        md5 = hashlib.md5(array.tobytes() + bytes([i % 256, i // 256])).hexdigest()
        if i < len(specs) - missing_images:
            save_image(array, images / f"{md5}.jpg")
        rows.append({"md5hash": md5, "fitzpatrick_scale": fitz, "fitzpatrick_centaur": fitz, "label": f"cond{i % 7}",
                     "nine_partition_label": f"nine{i % 9}", "three_partition_label": FITZ_CLASSES[label],
                     "qc": "", "url": f"https://example.invalid/{md5}.jpg", "url_alphanum": f"x{md5}"})
    with open(folder / "fitzpatrick17k.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FITZ_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return Path(root)


# ---------------------------------------------------------------- generic CSV manifest
def write_csv_manifest(root: Path, *, n: int = 120, size=(16, 16), groups=("a", "b"), label_style: str = "names",
                       split_fractions=(0.6, 0.2, 0.2), seed: int = 0, ext: str = ".png") -> Path:
    """``root/manifest.csv`` (path,label,group,split) and ``root/images/``. Labels are ``cat``/``dog``
    (``label_style='names'``) or 0/1 (``'ints'``); groups cycle through ``groups``; rows are dealt into
    train/val/test so that every split has every group and label. Returns ``root``."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    names = ["cat", "dog"]
    n_train = int(n * split_fractions[0])
    n_val = int(n * split_fractions[1])
    rows = []
    for i in range(n):
        label = i % 2
        group = groups[(i // 2) % len(groups)]
        split = "train" if i < n_train else "val" if i < n_train + n_val else "test"
        rel = f"images/{i:05d}{ext}"
        save_image(tinted_image(rng, label, *size), root / rel)
        rows.append({"path": rel, "label": names[label] if label_style == "names" else str(label),
                     "group": group, "split": split})
    write_manifest(root / "manifest.csv", rows)
    return root


def write_manifest(path: Path, rows: list[dict], columns=("path", "label", "group", "split")) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def read_manifest_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
