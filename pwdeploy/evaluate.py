"""Score an exported artifact's logits against its reference, per group: the one evaluation that
`pwdeploy verify` (host) and the bundle's device verifier both run.

numpy only and Python 3.8 compatible: bundles ship this file to the device.

Words, used the same way everywhere:
- **reference**: the results the artifact is compared with and gated against (for `pwdeploy verify`, the
  run's pruned PyTorch model on the same images; in a bundle, the shipped model run while packaging);
- **original**: the unpruned model, for the change a group saw through the whole compression;
- **pruned**: the pruned PyTorch model itself, when it is not the reference (a bundle carries its logits too).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from .errors import DataError
from .gate import GateResult, check_groups
from .metrics import accuracy_change, group_metrics, predict


def agreement(preds: np.ndarray, other: np.ndarray, groups: np.ndarray, group_names: List[str]) -> Dict[str, Any]:
    """How often ``preds`` equal ``other``'s predictions on the same images: percent overall and per group
    (None for an empty group), and the number of flipped predictions."""
    same = np.asarray(preds) == np.asarray(other)
    out = {"overall": float(100.0 * same.mean()) if same.size else None, "groups": {},
           "flipped": int((~same).sum()), "flipped_groups": {}}  # type: Dict[str, Any]
    for g, name in enumerate(group_names):
        mask = groups == g
        out["groups"][name] = float(100.0 * same[mask].mean()) if mask.any() else None
        out["flipped_groups"][name] = int((~same[mask]).sum())
    return out


def check_logit_shape(logits: np.ndarray, n: int, reference_logits: Optional[np.ndarray]) -> None:
    """An artifact with another number of outputs than its reference is the wrong model (bad input, exit
    2), not a gate failure."""
    if logits.ndim != 2 or logits.shape[0] != n:
        raise DataError("the artifact gave logits of shape {} for {} images: it is not an image classifier of "
                        "this run; verify the model exported from this run".format(list(logits.shape), n))
    if reference_logits is not None and np.ndim(reference_logits) == 2 \
            and logits.shape[1] != np.shape(reference_logits)[1]:
        raise DataError("the artifact gives {} logits per image but its reference gives {}: it is the wrong model "
                        "for this run; verify the model exported from this run".format(
                            logits.shape[1], np.shape(reference_logits)[1]))


def evaluate_artifact(logits: np.ndarray, labels: np.ndarray, groups: np.ndarray, group_names: List[str],
                      reference: Dict[str, Any], *, tolerance: float, original: Optional[Dict[str, Any]] = None,
                      max_group_drop: Optional[float] = None, allow_empty_groups: bool = False,
                      reference_logits: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """Per-group metrics of ``logits``, the gate against ``reference`` (metrics, report schema) and, with
    ``original``, against the unpruned model. Returns the shared result fields: passed, failed_groups,
    tolerance, max_group_drop, metrics, changes, agreement, max_abs_logit_diff, gate (dict), notes; and
    ``gate_result`` (the GateResult object, not for JSON)."""
    logits = np.asarray(logits)
    check_logit_shape(logits, len(labels), reference_logits)
    notes = []  # type: List[str]
    if not np.all(np.isfinite(logits)):
        notes.append("{} non-finite logits: the artifact overflows".format(int((~np.isfinite(logits)).sum())))
    preds = predict(logits)
    metrics = group_metrics(preds, labels, groups, group_names)
    gate = check_groups(metrics, reference, tolerance=tolerance, original=original, max_group_drop=max_group_drop,
                        allow_empty_groups=allow_empty_groups)  # type: GateResult
    paired = reference_logits is not None and np.shape(reference_logits) == logits.shape
    return {
        "passed": bool(gate.passed),
        "failed_groups": gate.failed_groups,
        "tolerance": float(tolerance),
        "max_group_drop": max_group_drop,
        "metrics": metrics,
        "changes": {"vs_reference": accuracy_change(metrics, reference),
                    "vs_original": accuracy_change(metrics, original) if original else None},
        "agreement": (agreement(preds, predict(reference_logits), groups, group_names)
                      if reference_logits is not None else None),
        "max_abs_logit_diff": (float(np.abs(logits - reference_logits).max()) if paired and logits.size else None),
        "gate": gate.to_dict(),
        "notes": notes,
        "gate_result": gate,
    }
