"""Built-in synthetic dataset: deterministic, generated on the fly, with a minority subgroup.

It is built to show the harm the paper is about. Every image carries two label-shaped cues:
- a large, high-contrast bar (horizontal = class 0, vertical = class 1), and
- a small, low-contrast patch of fine diagonal stripes ('/' = class 0, '\\' = class 1).
In the majority group the bar carries the label and the stripes are random; in the minority group the
stripes carry the label and the bar is random (a misleading cue). A full-capacity model learns both and
which group uses which; a pruned model retrained with plain cross-entropy, dominated by the majority,
keeps the cheap bar detector and drops the minority's stripe detector.

The group itself is visible: by a background tint (variant ``colour``, default) or only by a faint
high-frequency checker texture (variant ``subtle``), so results do not hinge on an easy colour cue.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from ..preprocessing import Preprocessing
from . import register_dataset
from .base import ArrayDataset

SPLIT_SIZES = {"train": 4000, "val": 1000, "test": 3000}
SPLIT_SEEDS = {"train": 11, "val": 23, "test": 37}
VARIANTS = ("colour", "subtle")


def generate(n: int, *, size: int = 32, minority_fraction: float = 0.08, variant: str = "colour",
             noise: float = 0.35, stripe_contrast: float = 0.6, seed: int = 0):
    """Return (images float32 N×3×size×size in [0,1] before normalisation, labels, groups)."""
    if variant not in VARIANTS:
        raise DataError(f"unknown synthetic variant {variant!r}: use one of {', '.join(VARIANTS)}")
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    groups = (rng.random(n) < minority_fraction).astype(np.int64)
    random_cue = rng.integers(0, 2, n)
    bar_class = np.where(groups == 0, labels, random_cue)
    stripe_class = np.where(groups == 1, labels, rng.integers(0, 2, n))

    yy, xx = np.mgrid[0:size, 0:size]
    images = 0.5 + noise * rng.standard_normal((n, 3, size, size)).astype(np.float32) * 0.5

    # Group marker.
    if variant == "colour":
        tint = np.where(groups[:, None] == 1, [0.12, -0.06, -0.12], [-0.06, 0.0, 0.08]).astype(np.float32)
        images += tint[:, :, None, None]
    else:
        checker = (((yy + xx) % 2) * 2 - 1).astype(np.float32) * 0.08
        images += (groups[:, None, None, None] == 1) * checker[None, None]

    # Large bar: length ~60% of the image, 4 px thick, random position.
    bar_len, bar_w = int(size * 0.6), max(2, size // 8)
    for i in range(n):
        a = rng.integers(0, size - bar_len + 1)
        b = rng.integers(0, size - bar_w + 1)
        if bar_class[i] == 0:
            images[i, :, b:b + bar_w, a:a + bar_len] += 0.9
        else:
            images[i, :, a:a + bar_len, b:b + bar_w] += 0.9

    # Small stripe patch: 10×10 px of period-3 diagonal stripes, low contrast.
    patch = max(6, size * 5 // 16)
    diag = {0: ((yy[:patch, :patch] + xx[:patch, :patch]) % 3 == 0),
            1: ((yy[:patch, :patch] - xx[:patch, :patch]) % 3 == 0)}
    for i in range(n):
        r, c = rng.integers(0, size - patch + 1, 2)
        images[i, :, r:r + patch, c:c + patch] += stripe_contrast * (diag[int(stripe_class[i])] - 0.33)

    return np.clip(images, 0.0, 1.0).astype(np.float32), labels.astype(np.int64), groups


@register_dataset("synthetic")
def create_synthetic(root=None, split: str = "train", *, size: int = 32, minority_fraction: float = 0.08,
                     variant: str = "colour", n: int | None = None, seed: int = 0, **unknown) -> ArrayDataset:
    if unknown:
        raise DataError(f"unknown option(s) for --data synthetic: {', '.join(sorted(unknown))}")
    count = int(n if n is not None else SPLIT_SIZES[split])
    images, labels, groups = generate(count, size=size, minority_fraction=minority_fraction,
                                      variant=variant, seed=SPLIT_SEEDS[split] + 1000 * seed)
    prep = Preprocessing(size=(size, size), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    images = (images - 0.5) / 0.25
    names = ["majority", "minority"]
    return ArrayDataset(images, labels, groups, group_names=names, class_names=["class0", "class1"],
                        preprocessing=prep, name=f"synthetic-{variant}", split=split)
