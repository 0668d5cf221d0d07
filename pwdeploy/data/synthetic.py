"""Built-in synthetic dataset: deterministic, generated on the fly, with a small, harder minority subgroup.

It is built to show the harm the paper is about (a pruned model retrained with plain cross-entropy loses
the minority first) while staying small enough for a CPU demo. Two-class task; every image carries:
- a bar (horizontal = class 0, vertical = class 1): strong in the majority, where it gives the label;
  fainter in the minority, where its orientation is random (a misleading cue);
- a low-contrast patch of fine diagonal stripes ('/' = class 0, '\\' = class 1): it gives the label in
  the minority and is random in the majority.
Some images carry no readable label cue at all (4% of the majority lose their bar, 15% of the minority
their stripes): they bound the achievable accuracy and leave the original model less confident on the
minority, the setting the PW loss is designed for. The minority is rare (6% by default), so under
cross-entropy it contributes little to importance scores and retraining: the few channels that detect the
stripes are the ones a pruned model loses.

The group itself is visible by a background tint (variant ``colour``, default) or only by a faint
high-frequency checker texture (variant ``subtle``), so results do not hinge on an easy colour cue.
Variant ``shared`` (tinted like ``colour``): the minority's fainter bar gives the label too, so a model
that never saw the minority can still read it; with ``protocol=one-group`` the train split holds only the
majority while val/test keep both groups (train on one group, test on others, as the paper's
Fitzpatrick17k protocol).
Splits use fixed seeds (``seed`` shifts them all), so the same options always give the same arrays.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from ..preprocessing import Preprocessing
from . import register_dataset
from .base import ArrayDataset

SPLIT_SIZES = {"train": 3000, "val": 1000, "test": 6000}
SPLIT_SEEDS = {"train": 11, "val": 23, "test": 37}
VARIANTS = ("colour", "subtle", "shared")
PROTOCOLS = ("all", "one-group")
MEAN, STD = 0.5, 0.25

# Generator constants (pixel values in [0, 1] before normalisation).
NOISE_STD = 0.175            # per pixel and channel
BAR_AMPLITUDE = 0.9          # majority bar
MINORITY_BAR_AMPLITUDE = 0.45  # fainter, misleading bar in the minority
STRIPE_CONTRAST = 1.0
MAJORITY_NO_CUE = 0.04       # majority images whose bar is missing
MINORITY_NO_CUE = 0.15       # minority images whose stripes are missing
TINTS = {0: (-0.06, 0.0, 0.08), 1: (0.12, -0.06, -0.12)}  # colour variant: cool majority, warm minority
CHECKER_AMPLITUDE = 0.08     # subtle variant: minority only


def generate(n: int, *, size: int = 24, minority_fraction: float = 0.06, variant: str = "colour", seed: int = 0
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (images float32 N×3×size×size in [0, 1] before normalisation, labels, groups)."""
    if variant not in VARIANTS:
        raise DataError(f"unknown synthetic variant {variant!r}: use one of {', '.join(VARIANTS)}")
    if not 0.0 <= minority_fraction <= 1.0:
        raise DataError(f"synthetic minority_fraction must be in [0, 1], got {minority_fraction}: "
                        "pass e.g. -D minority_fraction=0.06")
    if size < 12:
        raise DataError(f"synthetic size must be at least 12 pixels, got {size}: pass e.g. -D size=24")
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    groups = (rng.random(n) < minority_fraction).astype(np.int64)
    minority = groups == 1
    misleading_bar = minority if variant != "shared" else np.zeros(n, dtype=bool)
    bar_class = np.where(misleading_bar, rng.integers(0, 2, n), labels)
    stripe_class = np.where(minority, labels, rng.integers(0, 2, n))
    no_cue = rng.random(n) < np.where(minority, MINORITY_NO_CUE, MAJORITY_NO_CUE)
    bar_amp = np.where(minority, MINORITY_BAR_AMPLITUDE, np.where(no_cue, 0.0, BAR_AMPLITUDE))
    stripe_amp = np.where(minority & no_cue, 0.0, STRIPE_CONTRAST)

    images = MEAN + NOISE_STD * rng.standard_normal((n, 3, size, size)).astype(np.float32)

    # Group marker.
    yy, xx = np.mgrid[0:size, 0:size]
    if variant in ("colour", "shared"):
        tint = np.where(minority[:, None], TINTS[1], TINTS[0]).astype(np.float32)
        images += tint[:, :, None, None]
    else:
        checker = (((yy + xx) % 2) * 2 - 1).astype(np.float32) * CHECKER_AMPLITUDE
        images += minority[:, None, None, None] * checker[None, None]

    # Bar: 60% of the side long, size/8 thick, at a random position.
    bar_len, bar_w = int(size * 0.6), max(2, size // 8)
    starts = rng.integers(0, size - bar_len + 1, n)
    offsets = rng.integers(0, size - bar_w + 1, n)
    for i in range(n):
        a, b = starts[i], offsets[i]
        if bar_class[i] == 0:
            images[i, :, b:b + bar_w, a:a + bar_len] += bar_amp[i]
        else:
            images[i, :, a:a + bar_len, b:b + bar_w] += bar_amp[i]

    # Stripe patch: half the side, period-3 diagonal stripes (zero mean), at a random position.
    patch = size // 2
    py, px = yy[:patch, :patch], xx[:patch, :patch]
    stripes = {0: ((py + px) % 3 == 0) - 1 / 3, 1: ((py - px) % 3 == 0) - 1 / 3}
    corners = rng.integers(0, size - patch + 1, (n, 2))
    for i in range(n):
        r, c = corners[i]
        images[i, :, r:r + patch, c:c + patch] += stripe_amp[i] * stripes[int(stripe_class[i])]

    return np.clip(images, 0.0, 1.0).astype(np.float32), labels.astype(np.int64), groups


@register_dataset("synthetic")
def create_synthetic(root=None, split: str = "train", *, size: int = 24, minority_fraction: float = 0.06,
                     variant: str = "colour", n: int | None = None, seed: int = 0, protocol: str = "all",
                     **unknown) -> ArrayDataset:
    if unknown:
        raise DataError(f"unknown option(s) for --data synthetic: {', '.join(sorted(unknown))}; known options "
                        "are size, minority_fraction, variant (colour|subtle|shared), n, seed, protocol")
    if protocol not in PROTOCOLS:
        raise DataError(f"unknown synthetic protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
    if protocol == "one-group" and split == "train":
        minority_fraction = 0.0  # train on the majority only; val and test keep both groups
    count = int(n if n is not None else SPLIT_SIZES[split])
    images, labels, groups = generate(count, size=int(size), minority_fraction=float(minority_fraction),
                                      variant=variant, seed=SPLIT_SEEDS[split] + 1000 * int(seed))
    prep = Preprocessing(size=(int(size), int(size)), mean=(MEAN,) * 3, std=(STD,) * 3)
    images = (images - MEAN) / STD
    return ArrayDataset(images, labels, groups, group_names=["majority", "minority"],
                        class_names=["class0", "class1"], preprocessing=prep, name=f"synthetic-{variant}",
                        split=split)
