"""Fitzpatrick17k skin-condition images, grouped by Fitzpatrick skin type.

    DIR/  (or DIR/fitzpatrick17k/, the paper's layout)
        fitzpatrick17k.csv   columns include md5hash, fitzpatrick_scale (1..6, -1 unknown; older copies
                             call it fitzpatrick), label, nine_partition_label, three_partition_label
        images/<md5hash>.jpg (or .png)

Protocols:
Groups are ``light`` (types 1-2), ``medium`` (3-4) and ``dark`` (5-6) in every split, so a group index
means the same thing everywhere.
- ``paper`` (default, the paper's code): train on types 1-2 only; types 3-4 and 5-6 are split into
  validation (a quarter) and test (the rest). So train has only ``light`` images and val/test have no
  ``light`` images (reported as groups with no samples).
- ``all``: every type in every split; 60% train, and of the 40% held out a quarter is validation, the
  rest test.

The split of an image is a hash of its md5hash, so it is deterministic and does not move when other
images are missing (the dataset is distributed as URLs, and copies differ in which ones still download).
Rows whose image is missing, whose type is unknown or whose label is empty are counted in ``notes``.
Images are resized to ``size`` (default 224) or, with ``resize_shorter`` (the paper's config: 250), resized
so the shorter side is 250 and centre-cropped to ``size``, by the recorded preprocessing.
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..preprocessing import Preprocessing
from . import register_dataset
from .images import (IMAGENET_MEAN, IMAGENET_STD, ImageFileDataset, check_unknown_options, drop_unusable,
                     examples, find_root, parse_fraction, parse_size, require_groups)

CSV_FILE = "fitzpatrick17k.csv"
IMAGE_DIR = "images"
HINT = (f"put {CSV_FILE} and {IMAGE_DIR}/ (files named <md5hash>.jpg) in one folder and point --data-root "
        "at it or its parent")
PROTOCOLS = ("paper", "all")
TYPE_GROUPS = {1: "light", 2: "light", 3: "medium", 4: "medium", 5: "dark", 6: "dark"}
ALL_GROUPS = ["light", "medium", "dark"]


def _unit(key: str) -> float:
    """A stable number in [0, 1) from a row's key: which split the row falls in."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:13], 16) / 16 ** 13


def read_rows(path: Path) -> tuple[list[dict], list[str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            return list(reader), list(reader.fieldnames or [])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path} as CSV: {exc}") from None


def _parse_type(value: str) -> int | None:
    try:
        t = int(float(value))
    except (TypeError, ValueError):
        return None
    return t if t in TYPE_GROUPS else None


@register_dataset("fitzpatrick17k")
def create_fitzpatrick17k(root=None, split: str = "train", *, protocol: str = "paper",
                          label_column: str = "three_partition_label", type_column: str | None = None,
                          size=224, resize_shorter: int | None = None, val_fraction: float = 0.25,
                          holdout_fraction: float = 0.4,
                          skip_bad_images: bool = False, augment: bool = False, **unknown) -> ImageFileDataset:
    check_unknown_options("fitzpatrick17k", unknown)
    if protocol not in PROTOCOLS:
        raise DataError(f"unknown fitzpatrick17k protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
    h, w = parse_size(size, "fitzpatrick17k")
    if resize_shorter is not None and (isinstance(resize_shorter, bool) or not isinstance(resize_shorter, int)
                                       or resize_shorter < max(h, w)):
        raise DataError(f"--data fitzpatrick17k option resize_shorter must be an int >= size ({max(h, w)}) or "
                        f"null, got {resize_shorter!r}")
    val_fraction = parse_fraction(val_fraction, "val_fraction", "fitzpatrick17k", allow_zero=False)
    holdout_fraction = parse_fraction(holdout_fraction, "holdout_fraction", "fitzpatrick17k", allow_zero=False)
    folder = find_root(root, "fitzpatrick17k", "fitzpatrick17k", CSV_FILE, HINT)
    usable, class_names, notes = _usable_rows(folder, label_column, type_column)

    group_names = list(ALL_GROUPS)
    expected = (["light"] if split == "train" else ["medium", "dark"]) if protocol == "paper" else group_names
    chosen = [(p, y, g) for p, y, g, u in usable
              if _split_of(protocol, g, u, val_fraction, holdout_fraction) == split]
    paths = [c[0] for c in chosen]
    keep = drop_unusable(paths, skip_bad_images=skip_bad_images, what=f"Fitzpatrick17k {split}", notes=notes)
    chosen = [c for c, k in zip(chosen, keep) if k]
    labels = np.array([c[1] for c in chosen], dtype=np.int64)
    groups = np.array([group_names.index(c[2]) for c in chosen], dtype=np.int64)
    # the groups this protocol puts in this split must have images
    require_groups(expected, np.array([expected.index(c[2]) for c in chosen], dtype=np.int64),
                   f"the Fitzpatrick17k {split} split ({protocol} protocol)",
                   "add images of those skin types to images/ or use -D protocol=all")
    prep = Preprocessing(size=(h, w), mean=IMAGENET_MEAN, std=IMAGENET_STD, resize_shorter=resize_shorter)
    return ImageFileDataset([c[0] for c in chosen], labels, groups, group_names=group_names,
                            class_names=class_names, preprocessing=prep, name=f"fitzpatrick17k-{protocol}",
                            split=split, augment=augment, notes=notes)


def _split_of(protocol: str, group: str, u: float, val_fraction: float, holdout_fraction: float) -> str:
    """The split of an image from its group and the hash unit ``u`` of its md5 (stable when others go missing)."""
    if protocol == "paper":  # train on light skin only; the other types go to val and test
        if group == "light":
            return "train"
        return "val" if u < val_fraction else "test"
    if u >= holdout_fraction:
        return "train"
    return "val" if u < holdout_fraction * val_fraction else "test"


def _usable_rows(folder: Path, label_column: str, type_column: str | None) -> tuple[list, list[str], list[str]]:
    """(path, label, type group, split unit) of every usable CSV row, the class names, and notes on skipped rows."""
    csv_path, image_dir = folder / CSV_FILE, folder / IMAGE_DIR
    if not image_dir.is_dir():
        raise DataError(f"Fitzpatrick17k images not found: expected {image_dir}/<md5hash>.jpg; {HINT}")
    rows, columns = read_rows(csv_path)
    type_column = type_column or ("fitzpatrick_scale" if "fitzpatrick_scale" in columns else "fitzpatrick")
    for column, option in (("md5hash", None), (type_column, "type_column"), (label_column, "label_column")):
        if column not in columns:
            fix = f"choose another with -D {option}=COLUMN" if option else "use the dataset's original CSV"
            raise DataError(f"{csv_path} has no column {column!r} (columns: {', '.join(columns)}); {fix}")

    # Classes come from every labelled row, so they do not change with the split or with missing images.
    class_names = sorted({r[label_column].strip() for r in rows if (r[label_column] or "").strip()})
    if not class_names:
        raise DataError(f"{csv_path}: column {label_column!r} is empty in every row")
    class_index = {name: i for i, name in enumerate(class_names)}

    present = set(os.listdir(image_dir))
    unknown_type, no_label, missing = 0, 0, []
    usable = []
    for r in rows:
        fitz = _parse_type(r[type_column])
        label = (r[label_column] or "").strip()
        md5 = (r["md5hash"] or "").strip()
        if fitz is None:
            unknown_type += 1
            continue
        if not label:
            no_label += 1
            continue
        name = next((md5 + ext for ext in (".jpg", ".jpeg", ".png") if md5 + ext in present), None)
        if name is None:
            missing.append(Path(IMAGE_DIR) / f"{md5}.jpg")
            continue
        usable.append((image_dir / name, class_index[label], TYPE_GROUPS[fitz], _unit(md5)))

    notes = []
    total = len(rows)
    if unknown_type:
        notes.append(f"{CSV_FILE}: skipped {unknown_type} of {total} rows with unknown Fitzpatrick type "
                     f"({type_column} not 1-6)")
    if no_label:
        notes.append(f"{CSV_FILE}: skipped {no_label} of {total} rows with an empty {label_column}")
    if missing:
        notes.append(f"{CSV_FILE}: skipped {len(missing)} of {total} rows whose image is missing "
                     f"({examples(missing, list(range(len(missing))))})")
    if not usable:
        raise DataError(f"no usable Fitzpatrick17k rows: {'; '.join(notes) or f'{csv_path} has no rows'}; {HINT}")
    return usable, class_names, notes
