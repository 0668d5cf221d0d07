"""Decoded-image cache: every image of an image-file dataset decoded and resized once, kept as one uint8
array on disk (memory-mapped), so later epochs and later runs skip JPEG decoding.

    CACHE_DIR/<key>/images.npy   N x H x W x 3 uint8, the output of ``Preprocessing.resize_pil``
    CACHE_DIR/<key>/cache.json   what was cached: dataset, split, preprocessing, source fingerprint

``key`` hashes the dataset name, split, preprocessing and the list of image files, so another transform
or another selection of files is another cache (a miss). The *fingerprint* hashes the files' sizes and
modification times: when they changed since the cache was built, the cache is stale and refused (one-line
error; ``--image-cache rebuild`` replaces it). Normalisation and augmentation run after the cache, so a
cached dataset yields the same tensors as the files. A cache is written under a temporary name and
renamed when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .. import distributed
from ..cache_dirs import image_cache_dir
from ..errors import DataError
from ..progress import task
from .base import GroupedDataset
from .images import ImageFileDataset

FORMAT = "pwdeploy.image-cache/1"
IMAGES, META = "images.npy", "cache.json"
MODES = ("auto", "on", "off", "rebuild")


def default_cache_dir() -> Path:
    return image_cache_dir()


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def cache_key(dataset: ImageFileDataset) -> str:
    """Dataset + preprocessing + which files: the same key means the same decoded array."""
    return _sha({"format": FORMAT, "name": dataset.name, "split": dataset.split,
                 "preprocessing": dataset.preprocessing.to_dict(),
                 "files": _sha([str(p.resolve()) for p in dataset.paths])})[:24]


def fingerprint(dataset: ImageFileDataset) -> str:
    """Sizes and modification times of the source files: changes when an image is replaced or edited."""
    stats = [(s.st_size, s.st_mtime_ns) for s in (os.stat(p) for p in dataset.paths)]
    return _sha(stats)


def cached_bytes(dataset: ImageFileDataset) -> int:
    h, w = dataset.preprocessing.size
    return len(dataset) * h * w * 3


class ImageCache:
    """The cache folder of one dataset split: ``status()``, ``build()``, ``attach()``."""

    def __init__(self, dataset: ImageFileDataset, root: str | Path | None = None):
        self.dataset = dataset
        self.folder = Path(root or default_cache_dir()).expanduser() / cache_key(dataset)

    def status(self) -> str:
        """'hit', 'miss' or 'stale'."""
        meta = self.folder / META
        if not meta.is_file() or not (self.folder / IMAGES).is_file():
            return "miss"
        recorded = json.loads(meta.read_text())
        return "hit" if recorded.get("fingerprint") == fingerprint(self.dataset) else "stale"

    def build(self, workers: int | None = None) -> None:
        """Decode every image (threads: Pillow releases the GIL while decoding and resizing) into the array."""
        ds = self.dataset
        h, w = ds.preprocessing.size
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.folder.parent / f".{self.folder.name}.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            array = np.lib.format.open_memmap(tmp / IMAGES, mode="w+", dtype=np.uint8, shape=(len(ds), h, w, 3))
            workers = workers or min(8, os.cpu_count() or 1)
            with task(f"caching decoded {ds.name} {ds.split} images", len(ds)) as bar, \
                    ThreadPoolExecutor(max_workers=workers) as pool:
                for i, image in enumerate(pool.map(ds.decode_resized, range(len(ds)))):
                    array[i] = image
                    bar.advance(images=1)
            array.flush()
            del array
            meta = {"format": FORMAT, "name": ds.name, "split": ds.split, "n": len(ds),
                    "preprocessing": ds.preprocessing.to_dict(), "fingerprint": fingerprint(ds),
                    "first_file": str(ds.paths[0]) if ds.paths else None}
            (tmp / META).write_text(json.dumps(meta, indent=1))
            if self.folder.exists():  # a stale cache being rebuilt, or a concurrent builder that finished first
                shutil.rmtree(self.folder)
            os.replace(tmp, self.folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def attach(self) -> None:
        self.dataset.attach_cache(self.folder / IMAGES)


def use_cache(dataset: GroupedDataset, mode: str = "auto", root: str | Path | None = None) -> str:
    """Attach the decoded-image cache to an image-file dataset (building it on a miss); returns what happened:
    'hit', 'built', 'off' or 'not applicable'. A stale cache is refused unless ``mode`` is 'rebuild'.

    Under torchrun the first process of each machine builds; the others wait and then read it.
    """
    if mode not in MODES:
        raise DataError(f"--image-cache must be one of {', '.join(MODES)}, got {mode!r}")
    if not isinstance(dataset, ImageFileDataset) or mode == "off" or len(dataset) == 0:
        return "off" if mode == "off" else "not applicable"
    cache = ImageCache(dataset, root)
    if mode == "auto" and not _room_for(cache):
        return "off"
    status = cache.status()
    if status == "stale" and mode != "rebuild":
        raise DataError(f"the decoded-image cache {cache.folder} is stale: {dataset.name} {dataset.split} images "
                        "changed since it was built; pass --image-cache rebuild (or off)")
    outcome = "hit" if status == "hit" and mode != "rebuild" else "built"
    error = None
    if outcome == "built" and distributed.local_rank() == 0:
        try:
            cache.build()
        except OSError as exc:  # read-only or full disk
            error = exc.strerror or str(exc)
    distributed.barrier()  # every process of this machine now sees the cache, or its absence
    if outcome == "built" and cache.status() != "hit":
        if mode == "auto":  # a cache is an optimisation, except when asked for
            return "off"
        raise DataError(f"cannot write the decoded-image cache in {cache.folder.parent}"
                        f"{f' ({error})' if error else ''}: pass --cache-dir DIR on a writable disk, "
                        "or --image-cache off")
    cache.attach()
    return outcome


def _room_for(cache: ImageCache) -> bool:
    """``auto`` caches only when the disk keeps twice the array's size free (an existing cache always counts)."""
    if (cache.folder / IMAGES).is_file():
        return True
    probe = cache.folder.parent
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free > 2 * cached_bytes(cache.dataset)
