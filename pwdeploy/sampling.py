"""Group-stratified sampling: the one implementation behind the verification set, the bundle's subset and the
INT8 calibration set.

Portable core (numpy only, Python 3.8): the device bundle ships it and the host imports the same module.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np


def equal_shares(available: Sequence[int], total: int, weights: Optional[Sequence[float]] = None) -> List[int]:
    """Split ``total`` over groups in proportion to ``weights`` (equal by default) without exceeding what each
    group has; a short group's shortfall goes to the groups that still have samples (water-filling)."""
    weights = [1.0] * len(available) if weights is None else [float(w) for w in weights]
    take = [0] * len(available)
    remaining = min(int(total), int(sum(available)))
    open_groups = [i for i, a in enumerate(available) if a > 0 and weights[i] > 0]
    while remaining > 0 and open_groups:
        wsum = sum(weights[i] for i in open_groups)
        shares = {i: remaining * weights[i] / wsum for i in open_groups}
        # floor shares, then hand out the leftover units by largest remainder (ties: lower group id)
        floors = {i: int(shares[i]) for i in open_groups}
        leftover = remaining - sum(floors.values())
        for i in sorted(open_groups, key=lambda g: (-(shares[g] - floors[g]), g))[:leftover]:
            floors[i] += 1
        progressed = 0
        for i in open_groups:
            give = min(floors[i], available[i] - take[i])
            take[i] += give
            progressed += give
        remaining -= progressed
        open_groups = [i for i in open_groups if take[i] < available[i]]
        if progressed == 0:
            break
    return take


def group_sizes(groups: np.ndarray, num_groups: int) -> List[int]:
    return [int(c) for c in np.bincount(np.asarray(groups, dtype=np.int64), minlength=num_groups)[:num_groups]]


def stratified_indices(groups: np.ndarray, num_groups: int, size: int, *, seed: int = 0,
                       weights: Optional[Sequence[float]] = None) -> np.ndarray:
    """Sorted positions of ``size`` samples with each group's count given by :func:`equal_shares` (in
    proportion to ``weights``, equal by default). Deterministic for a given ``seed``: each group's members
    are shuffled in group order by one generator, then its share is taken from the front."""
    groups = np.asarray(groups, dtype=np.int64).reshape(-1)
    rng = np.random.default_rng(seed)
    members = [rng.permutation(np.flatnonzero(groups == g)) for g in range(num_groups)]
    quota = equal_shares([len(m) for m in members], size, weights)
    if not members:
        return np.zeros(0, np.int64)
    return np.sort(np.concatenate([m[:q] for m, q in zip(members, quota)])).astype(np.int64)
