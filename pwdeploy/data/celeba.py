"""CelebA in torchvision's layout, read directly (torchvision's class checks the MD5 of the full annotation
files, which rejects tiny fixtures and partial copies).

    DIR/celeba/  (or DIR itself)
        img_align_celeba/000001.jpg ...
        list_attr_celeba.txt      line 1: count, line 2: 40 attribute names, then "file  -1  1 ..." rows
        list_eval_partition.txt   "file 0|1|2"  (0 train, 1 valid, 2 test)

Binary target ``target_attr`` (paper: Blond_Hair); groups by ``group_attr`` (paper: Male -> male/female).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..preprocessing import Preprocessing
from . import register_dataset
from .images import (IMAGENET_MEAN, IMAGENET_STD, ImageFileDataset, check_unknown_options, drop_unusable,
                     find_root, parse_size, require_groups)

ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IMAGE_DIR = "img_align_celeba"
PARTITIONS = {"train": 0, "val": 1, "test": 2}
HINT = (f"put torchvision's CelebA files ({IMAGE_DIR}/, {ATTR_FILE}, {PARTITION_FILE}) there "
        "and point --data-root at that folder or its parent")
# Friendly group names for common attributes; others become "<attr>" / "not_<attr>".
GROUP_NAMES = {"Male": ("male", "female"), "Young": ("young", "old")}


def read_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(filenames, attribute names, N x A int8 array of +1/-1) from list_attr_celeba.txt."""
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise DataError(f"{path} is too short: expected a count line, an attribute-name line, then one row per image")
    names = lines[1].split()
    files, rows = [], []
    for line in lines[2:]:
        parts = line.split(None, 1)
        if parts:
            files.append(parts[0])
            rows.append(parts[1] if len(parts) > 1 else "")
    # one vectorised parse (~0.5 s for the full 202,599 rows); a line-by-line check only when it fails
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flat = np.fromstring(" ".join(rows), dtype=np.int8, sep=" ") if rows else np.zeros(0, np.int8)
    if flat.size != len(rows) * len(names) or not np.isin(flat, (-1, 1)).all():
        for lineno, rest in enumerate(rows, start=3):
            parts = rest.split()
            if len(parts) != len(names) or any(v not in ("1", "-1") for v in parts):
                raise DataError(f"{path} line {lineno}: expected a file name and {len(names)} values of 1 or -1")
        raise DataError(f"{path}: attribute values must be 1 or -1")
    values = flat.reshape(len(rows), len(names))
    return files, names, values


def read_partitions(path: Path) -> dict[str, int]:
    out = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise DataError(f"{path} line {lineno}: expected 'FILE 0|1|2', got {line.strip()!r}")
        out[parts[0]] = int(parts[1])
    return out


def attribute_index(names: list[str], attr: str, option: str, path: Path) -> int:
    if attr not in names:
        raise DataError(f"CelebA has no attribute {attr!r} (--{option.replace('_', '-')}); "
                        f"{path.name} lists: {', '.join(names)}")
    return names.index(attr)


@register_dataset("celeba")
def create_celeba(root=None, split: str = "train", *, target_attr: str = "Blond_Hair", group_attr: str = "Male",
                  size=128, skip_bad_images: bool = False, augment: bool = False, **unknown) -> ImageFileDataset:
    check_unknown_options("celeba", unknown)
    h, w = parse_size(size, "celeba")
    folder = find_root(root, "celeba", "celeba", ATTR_FILE, HINT)
    partition_path = folder / PARTITION_FILE
    if not partition_path.is_file():
        raise DataError(f"CelebA partition file not found: expected {partition_path}; {HINT}")
    image_dir = folder / IMAGE_DIR
    if (image_dir / IMAGE_DIR).is_dir():  # some archives unpack to img_align_celeba/img_align_celeba/
        image_dir = image_dir / IMAGE_DIR
    if not image_dir.is_dir():
        raise DataError(f"CelebA images not found: expected {image_dir}/000001.jpg ...; {HINT}")

    files, names, values = read_attributes(folder / ATTR_FILE)
    target = attribute_index(names, target_attr, "target_attr", folder / ATTR_FILE)
    group = attribute_index(names, group_attr, "group_attr", folder / ATTR_FILE)
    partitions = read_partitions(partition_path)
    unassigned = [f for f in files if f not in partitions]
    if unassigned:
        raise DataError(f"{partition_path} has no partition for {len(unassigned)} image(s), e.g. {unassigned[0]}; "
                        f"use the {PARTITION_FILE} that matches {ATTR_FILE}")

    wanted = np.array([partitions[f] == PARTITIONS[split] for f in files], dtype=bool)
    rows = np.flatnonzero(wanted)
    paths = [image_dir / files[i] for i in rows]
    notes: list[str] = []
    keep = drop_unusable(paths, skip_bad_images=skip_bad_images, what=f"CelebA {split}", notes=notes)
    rows = rows[keep]
    paths = [p for p, k in zip(paths, keep) if k]

    labels = (values[rows, target] == 1).astype(np.int64)
    groups = (values[rows, group] != 1).astype(np.int64)  # 0: has the attribute (e.g. male), 1: has not
    group_names = list(GROUP_NAMES.get(group_attr, (group_attr.lower(), f"not_{group_attr.lower()}")))
    class_names = [f"not_{target_attr.lower()}", target_attr.lower()]
    require_groups(group_names, groups, f"the CelebA {split} partition",
                   f"choose another --group-attr or use the full {PARTITION_FILE}")
    prep = Preprocessing(size=(h, w), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return ImageFileDataset(paths, labels, groups, group_names=group_names, class_names=class_names,
                            preprocessing=prep, name=f"celeba-{target_attr}-by-{group_attr}", split=split,
                            augment=augment, notes=notes)
