"""The verification set: preprocessed test images, labels, groups and the PyTorch models' logits, in one .npz.

`pwdeploy verify` reads it where torch cannot be imported, and device bundles ship it, so this module needs
numpy only and runs on Python 3.8. The file is a plain ``np.savez`` archive (no pickles):

- ``images``  float32 N×C×H×W, preprocessed exactly as the model expects (the runtime's input)
- ``labels``, ``groups``, ``indices`` int64 N (``indices``: positions in the source split)
- ``logits_<name>`` float32 N×K, optional: PyTorch logits of the reference (``pruned``) and ``original`` models
  on these very images, so a runtime's predictions can be compared sample by sample (paired)
- ``meta`` uint8: UTF-8 JSON with the schema, group and class names, split, preprocessing and provenance
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from .errors import DataError
from .fsutil import atomic_path
from .names import VERIFICATION_SET as FILENAME  # noqa: F401 - the name readers import from here
from .sampling import stratified_indices

SCHEMA = "pwdeploy.verification_set/1"
# A full test split is kept when it fits these limits; larger splits get a group-stratified subset.
DEFAULT_MAX_SAMPLES = 4000
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


@dataclass
class VerificationSet:
    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    group_names: List[str]
    class_names: List[str]
    indices: np.ndarray
    logits: Dict[str, np.ndarray] = field(default_factory=dict)
    meta: Dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def input_shape(self) -> tuple:
        return tuple(int(s) for s in self.images.shape[1:])

    def predictions(self, name: str) -> Optional[np.ndarray]:
        """Class predictions of the stored logits ``name`` ('pruned' or 'original'), or None."""
        from .metrics import predict

        logits = self.logits.get(name)
        return None if logits is None else predict(logits)

    def group_counts(self) -> Dict[str, int]:
        counts = np.bincount(self.groups, minlength=len(self.group_names))
        return {name: int(c) for name, c in zip(self.group_names, counts)}

    def describe(self) -> Dict:
        return {"n": len(self), "groups": self.group_counts(), "split": self.meta.get("split"),
                "subset": bool(self.meta.get("subset", False)), "source_n": self.meta.get("source_n"),
                "logits": sorted(self.logits)}


def write_verification_set(path, vs: VerificationSet) -> None:
    """Write ``vs`` atomically (a temp file renamed into place)."""
    _validate(vs, str(path))
    meta = dict(vs.meta)
    meta.update(schema=SCHEMA, group_names=list(vs.group_names), class_names=list(vs.class_names))
    arrays = {
        "images": np.ascontiguousarray(vs.images, dtype=np.float32),
        "labels": np.asarray(vs.labels, dtype=np.int64),
        "groups": np.asarray(vs.groups, dtype=np.int64),
        "indices": np.asarray(vs.indices, dtype=np.int64),
        "meta": np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
    }
    for name, logits in vs.logits.items():
        arrays["logits_" + name] = np.asarray(logits, dtype=np.float32)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to a path
            np.savez(fh, **arrays)


def load_verification_set(path) -> VerificationSet:
    path = Path(path)
    if not path.is_file():
        raise DataError("verification set not found: {}: run 'pwdeploy export RUN_DIR' (with torch) to write "
                        "it, or pass --data so verify evaluates the dataset".format(path))
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("its meta is not a JSON object")
    except Exception as exc:  # noqa: BLE001 - zip, json and numpy errors all mean the same thing here
        raise DataError("{} is not a readable verification set ({}): re-run 'pwdeploy export' to rewrite "
                        "it".format(path, exc)) from exc
    if meta.get("schema") != SCHEMA:
        raise DataError("{} has schema {!r}, expected {!r}: re-run 'pwdeploy export' to rewrite it".format(
            path, meta.get("schema"), SCHEMA))
    missing = [k for k in ("images", "labels", "groups", "indices") if k not in arrays]
    missing += [k for k in ("group_names", "class_names") if not isinstance(meta.get(k), list) or not meta[k]
                or not all(isinstance(x, str) for x in meta[k])]
    if missing:
        raise DataError("{} lacks {}: re-run 'pwdeploy export' to rewrite it".format(path, ", ".join(missing)))
    vs = VerificationSet(
        images=arrays["images"], labels=arrays["labels"], groups=arrays["groups"],
        group_names=list(meta["group_names"]), class_names=list(meta["class_names"]),
        indices=arrays["indices"],
        logits={k[len("logits_"):]: v for k, v in arrays.items() if k.startswith("logits_")},
        meta=meta,
    )
    _validate(vs, str(path))
    return vs


def _validate(vs: VerificationSet, where: str) -> None:
    for name in ("labels", "groups", "indices"):
        array = getattr(vs, name)
        if array.ndim != 1 or array.dtype.kind not in "iu":
            raise DataError("{}: {} must be a 1-D integer array, got {} {}: rewrite it with 'pwdeploy export'"
                            .format(where, name, array.dtype, tuple(array.shape)))
    if vs.images.dtype.kind != "f" or not np.isfinite(vs.images).all():
        raise DataError("{}: images must be finite floats (got {}, or NaN/inf values): rewrite it with "
                        "'pwdeploy export'".format(where, vs.images.dtype))
    n = vs.labels.shape[0]
    if n == 0:
        raise DataError("{}: the verification set holds no images: rewrite it with 'pwdeploy export'".format(where))
    if vs.images.ndim != 4 or vs.images.shape[0] != n:
        raise DataError("{}: images must be N×C×H×W with one row per label, got {} for {} labels: rewrite it "
                        "with 'pwdeploy export'".format(where, tuple(vs.images.shape), n))
    for name in ("groups", "indices"):
        if getattr(vs, name).shape[0] != n:
            raise DataError("{}: {} has {} entries for {} labels: rewrite it with 'pwdeploy export'".format(
                where, name, getattr(vs, name).shape[0], n))
    classes = len(vs.class_names)
    # C logits for C classes, or one logit for a binary model (pwdeploy.metrics.predictions) where the set's meta
    # says its models have one (``logit_width``; sets written before it: C)
    width = 1 if classes == 2 and vs.meta.get("logit_width") == 1 else classes
    for name, logits in vs.logits.items():
        if logits.ndim != 2 or logits.shape[0] != n or (classes and logits.shape[1] != width):
            raise DataError("{}: logits_{} has shape {}, expected {} rows of {} logits: rewrite it with "
                            "'pwdeploy export'".format(where, name, list(logits.shape), n, width))
        if logits.dtype.kind != "f" or not np.isfinite(logits).all():
            raise DataError("{}: logits_{} holds NaN/inf values: the reference is damaged; rewrite it with "
                            "'pwdeploy export'".format(where, name))
    if classes and (vs.labels.min() < 0 or vs.labels.max() >= classes):
        raise DataError("{}: labels outside 0..{} (the {} classes {}): the set is damaged or from another run; "
                        "rewrite it with 'pwdeploy export'".format(where, classes - 1, classes, vs.class_names))
    if n and (vs.groups.min() < 0 or vs.groups.max() >= len(vs.group_names)):
        raise DataError("{}: group ids outside 0..{}: rewrite it with 'pwdeploy export'".format(
            where, len(vs.group_names) - 1))


def choose_indices(groups: np.ndarray, num_groups: int, bytes_per_sample: int, *, seed: int = 0,
                   max_samples: int = DEFAULT_MAX_SAMPLES, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """All of the split when it fits the limits, else a subset with equal shares per group (a group with fewer
    samples than its share gives all it has, the rest is spread over the others). Sorted, deterministic."""
    n = int(groups.shape[0])
    limit = int(min(max_samples, max(1, max_bytes // max(1, bytes_per_sample))))
    if n <= limit:
        return np.arange(n, dtype=np.int64)
    return stratified_indices(groups, num_groups, limit, seed=seed)
