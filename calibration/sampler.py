"""Draw the calibration set from the training split, stratified by group.

INT8 scales are set by the activations the calibration images produce. Drawn in proportion to the data, a
minority group contributes a handful of images and its activation ranges can be clipped; drawing each group
equally (or in configured shares) gives every group a say in the scales.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from pwdeploy.errors import DataError
from pwdeploy.sampling import equal_shares, group_sizes, stratified_indices


@dataclass
class CalibrationSample:
    indices: np.ndarray  # sorted positions in the training split
    per_group: dict  # name -> {"available", "requested", "drawn"}
    notes: list = field(default_factory=list)  # groups that could not give their share, said plainly

    @property
    def counts(self) -> dict:
        return {name: entry["drawn"] for name, entry in self.per_group.items()}


def stratified_sample(groups: np.ndarray, group_names: Sequence[str], size: int, *, seed: int = 0,
                      shares: Mapping[str, float] | None = None) -> CalibrationSample:
    """``size`` indices with each group's count in proportion to ``shares`` (equal when None).

    A group with fewer samples than its share gives all it has; the shortfall is drawn from the other groups
    and a note names the group. Deterministic for a given ``seed``.
    """
    groups = np.asarray(groups, dtype=np.int64).reshape(-1)
    if size < 1:
        raise DataError(f"--calib-size must be >= 1, got {size}")
    names = list(group_names)
    if shares is not None:
        unknown = sorted(set(shares) - set(names))
        if unknown:
            raise DataError(f"calibration share for unknown group {unknown[0]!r}: groups are {', '.join(names)}")
        weights = [float(shares.get(name, 0.0)) for name in names]
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise DataError("calibration shares must be >= 0 and not all zero")
    else:
        weights = [1.0] * len(names)

    available = group_sizes(groups, len(names))
    if sum(available) == 0:
        raise DataError("the training split is empty: cannot draw a calibration set")
    requested = equal_shares([size] * len(names), size, weights)  # the shares if every group had enough
    drawn = equal_shares(available, size, weights)

    indices = stratified_indices(groups, len(names), size, seed=seed, weights=weights)

    notes = []
    for g, name in enumerate(names):
        if weights[g] > 0 and available[g] == 0:
            notes.append(f"group {name!r} has no training samples: it is not represented in the calibration set")
        elif drawn[g] < requested[g]:
            notes.append(f"group {name!r} has only {available[g]} training samples (share {requested[g]}): all "
                         "were used and the rest drawn from other groups")
    if len(indices) < size:
        notes.append(f"the training split has {sum(available)} samples, fewer than --calib-size {size}: all used")
    per_group = {name: {"available": available[g], "requested": requested[g], "drawn": int(drawn[g])}
                 for g, name in enumerate(names)}
    return CalibrationSample(indices=indices, per_group=per_group, notes=notes)


def random_sample(groups: np.ndarray, group_names: Sequence[str], size: int, *, seed: int = 0) -> CalibrationSample:
    """``size`` indices drawn uniformly from the whole split (groups in their data proportions): the usual
    calibration set, kept for comparison with the stratified one (benchmarks/calibration_study.py)."""
    groups = np.asarray(groups, dtype=np.int64).reshape(-1)
    if size < 1:
        raise DataError(f"--calib-size must be >= 1, got {size}")
    if len(groups) == 0:
        raise DataError("the training split is empty: cannot draw a calibration set")
    rng = np.random.default_rng(seed)
    indices = np.sort(rng.permutation(len(groups))[:size]).astype(np.int64)
    drawn = np.bincount(groups[indices], minlength=len(group_names))
    available = np.bincount(groups, minlength=len(group_names))
    notes = [f"the training split has {len(groups)} samples, fewer than --calib-size {size}: all used"] \
        if len(indices) < size else []
    per_group = {name: {"available": int(available[g]), "requested": None, "drawn": int(drawn[g])}
                 for g, name in enumerate(group_names)}
    return CalibrationSample(indices=indices, per_group=per_group, notes=notes)
