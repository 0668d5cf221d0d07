"""Bring your own data: a manifest CSV with columns ``path,label,group,split``.

- ``path``: an image file, relative to the manifest's folder (or absolute).
- ``label``: class indices (0, 1, ...) or class names (sorted alphabetically into indices), not a mix;
  option ``classes`` fixes the names and their order.
- ``group``: any name (e.g. a demographic group); sorted alphabetically, or fixed by option ``groups``.
  Every group needs test rows: the per-group verification is done on the test split.
- ``split``: ``train``, ``val`` or ``test``; each must have rows.

``--data-root`` is the folder holding ``manifest.csv`` (option ``manifest`` renames it) or the CSV itself.
Images are resized to ``size`` and normalised with ``mean``/``std`` (ImageNet statistics by default).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..preprocessing import Preprocessing
from . import register_dataset
from .base import SPLITS
from .images import (IMAGENET_MEAN, IMAGENET_STD, ImageFileDataset, check_unknown_options, drop_unusable,
                     parse_size, require_groups)

COLUMNS = ("path", "label", "group", "split")
INT_RE = re.compile(r"^[+-]?\d+$")


def find_manifest(root, manifest: str) -> Path:
    if root is None:
        raise DataError(f"--data csv needs --data-root: the folder holding {manifest} (columns "
                        f"{','.join(COLUMNS)}) or the CSV file itself")
    base = Path(root).expanduser()
    if base.is_file():
        return base
    if not base.exists():
        raise DataError(f"data root not found: {base} (check --data-root)")
    path = base / manifest
    if not path.is_file():
        raise DataError(f"manifest not found: expected {path} with columns {','.join(COLUMNS)}; "
                        "write one or point --data-root at your CSV")
    return path


def read_manifest(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) pairs with stripped values; the header must name the four columns."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in COLUMNS if c not in fields]
            if missing:
                raise DataError(f"{path} has no column {missing[0]!r}: its header must include "
                                f"{','.join(COLUMNS)} (found: {','.join(fields) or 'nothing'})")
            rows = []
            for row in reader:
                clean = {(k or "").strip(): (v or "").strip() if isinstance(v, str) else "" for k, v in row.items()}
                if not any(clean.get(c) for c in COLUMNS):
                    continue  # blank line
                rows.append((reader.line_num, clean))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path} as CSV: {exc}") from None
    if not rows:
        raise DataError(f"{path} has a header but no rows: add one row per image")
    for line, row in rows:
        for c in COLUMNS:
            if not row.get(c):
                raise DataError(f"{path.name} line {line}: empty {c!r}; every row needs {','.join(COLUMNS)}")
        if row["split"] not in SPLITS:
            raise DataError(f"{path.name} line {line}: split {row['split']!r} must be one of {', '.join(SPLITS)}")
    return rows


def check_inside_root(rows, path: Path) -> None:
    """Every row's image must resolve (symlinks followed) inside the folder holding the CSV: a manifest from
    elsewhere must not make pwdeploy read ``../secret.png`` or ``/etc/...``."""
    root = path.parent.resolve()
    for line, row in rows:
        target = (path.parent / row["path"]).resolve()
        if target != root and root not in target.parents:
            raise DataError(f"{path.name} line {line}: path {row['path']!r} resolves outside the data root {root}: "
                            "refused; move the image under the data root or pass -D allow_outside_root=true")


def label_indices(rows, classes, name: str) -> tuple[list[int], list[str]]:
    """Labels as indices and the class names, from ints or names (checked against ``classes`` if given)."""
    values = [row["label"] for _, row in rows]
    is_int = [bool(INT_RE.match(v)) for v in values]
    if classes is not None:
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
            raise DataError(f"--data csv option classes must be a list of class names, got {classes!r}")
        class_names = list(classes)
        index = {c: i for i, c in enumerate(class_names)}
        out = []
        for (line, _), v, integer in zip(rows, values, is_int):
            if v in index:
                out.append(index[v])
            elif integer and 0 <= int(v) < len(class_names):
                out.append(int(v))
            else:
                raise DataError(f"{name} line {line}: label {v!r} is not one of the classes "
                                f"{', '.join(class_names)} (0..{len(class_names) - 1}); fix the row or the classes option")
        return out, class_names
    if all(is_int):
        ints = [int(v) for v in values]
        bad = next(((line, v) for (line, _), v in zip(rows, ints) if v < 0), None)
        if bad:
            raise DataError(f"{name} line {bad[0]}: label {bad[1]} is negative; class indices start at 0")
        unused = sorted(set(range(max(ints) + 1)) - set(ints))
        if unused:  # label 7 among 0/1 would silently create classes 2..7
            line = next(line for (line, _), v in zip(rows, ints) if v > unused[0])
            raise DataError(f"{name} line {line}: label {max(ints)} implies classes 0..{max(ints)}, but class(es) "
                            f"{', '.join(map(str, unused[:5]))} never occur: fix the label, or declare the classes "
                            "with -D 'classes=[...]'")
        return ints, [f"class{i}" for i in range(max(ints) + 1)]
    if any(is_int):
        line, _ = rows[is_int.index(True)]
        first_name = values[is_int.index(False)]
        raise DataError(f"{name} line {line}: label {values[is_int.index(True)]!r} is an index but others are "
                        f"names (e.g. {first_name!r}); use only names or only indices")
    class_names = sorted(set(values))
    index = {c: i for i, c in enumerate(class_names)}
    return [index[v] for v in values], class_names


def group_indices(rows, groups, name: str) -> tuple[list[int], list[str]]:
    if groups is not None:
        if not isinstance(groups, list) or not groups or not all(isinstance(g, str) for g in groups):
            raise DataError(f"--data csv option groups must be a list of group names, got {groups!r}")
        group_names = list(groups)
    else:
        group_names = sorted({row["group"] for _, row in rows})
    index = {g: i for i, g in enumerate(group_names)}
    out = []
    for line, row in rows:
        if row["group"] not in index:
            raise DataError(f"{name} line {line}: group {row['group']!r} is not one of the declared groups "
                            f"{', '.join(group_names)}; fix the row or the groups option")
        out.append(index[row["group"]])
    return out, group_names


@register_dataset("csv")
def create_csv(root=None, split: str = "train", *, manifest: str = "manifest.csv", size=224,
               mean=IMAGENET_MEAN, std=IMAGENET_STD, classes: list | None = None, groups: list | None = None,
               skip_bad_images: bool = False, augment: bool = False, allow_outside_root: bool = False,
               **unknown) -> ImageFileDataset:
    check_unknown_options("csv", unknown)
    if not isinstance(allow_outside_root, bool):
        raise DataError(f"--data csv option allow_outside_root must be true or false, got {allow_outside_root!r}")
    h, w = parse_size(size, "csv")
    for key, value in (("mean", mean), ("std", std)):
        if not (isinstance(value, (list, tuple)) and len(value) == 3
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
            raise DataError(f"--data csv option {key} must be three numbers (R, G, B), got {value!r}")
    if any(s <= 0 for s in std):
        raise DataError(f"--data csv option std must be positive, got {std!r}")
    path = find_manifest(root, manifest)
    rows = read_manifest(path)
    if not allow_outside_root:
        check_inside_root(rows, path)
    labels, class_names = label_indices(rows, classes, path.name)
    group_ids, group_names = group_indices(rows, groups, path.name)
    splits = np.array([row["split"] for _, row in rows])
    for s in SPLITS:
        if not (splits == s).any():
            raise DataError(f"{path} has no rows with split {s!r}: put some of your images in {s}")
    all_groups = np.asarray(group_ids, dtype=np.int64)
    require_groups(group_names, all_groups[splits == "test"], f"the test split of {path}",
                   "every group needs test rows for the per-group check; add some or remove that group's rows")

    chosen = np.flatnonzero(splits == split)
    folder = path.parent
    paths = [folder / rows[i][1]["path"] for i in chosen]  # absolute paths stay absolute under "/"
    notes: list[str] = []
    keep = drop_unusable(paths, skip_bad_images=skip_bad_images, what=f"{path.name} {split}", notes=notes)
    chosen = chosen[keep]
    paths = [p for p, k in zip(paths, keep) if k]
    groups_arr = all_groups[chosen]
    if split == "test":
        require_groups(group_names, groups_arr, f"the test split of {path} after skipping bad images",
                       "replace the unreadable images of that group")
    prep = Preprocessing(size=(h, w), mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))
    return ImageFileDataset(paths, np.asarray(labels, dtype=np.int64)[chosen], groups_arr,
                            group_names=group_names, class_names=class_names, preprocessing=prep,
                            name=f"csv-{path.stem}", split=split, augment=augment, notes=notes)
