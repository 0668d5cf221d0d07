"""The per-group accuracy gate, shared by `pwdeploy verify` and the device-side verifier.

numpy only and Python 3.8 compatible: bundles ship this file to the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional

DEFAULT_TOLERANCE = {"fp32": 1.0, "fp16": 1.0, "int8": 2.0}


@dataclass
class GroupCheck:
    group: str
    n: int
    accuracy: Optional[float]
    reference: Optional[float]
    change_vs_reference: Optional[float]
    original: Optional[float] = None
    change_vs_original: Optional[float] = None
    passed: bool = True
    reason: str = ""


@dataclass
class GateResult:
    passed: bool
    tolerance: float
    max_group_drop: Optional[float]
    checks: List[GroupCheck] = field(default_factory=list)

    @property
    def failed_groups(self) -> List[str]:
        return [c.group for c in self.checks if not c.passed]

    def to_dict(self) -> Dict:
        return {
            "passed": self.passed,
            "tolerance": self.tolerance,
            "max_group_drop": self.max_group_drop,
            "failed_groups": self.failed_groups,  # names only: [] when none failed, also when none were checked
            "groups_checked": len(self.checks),  # 0: nothing was checked, and the gate failed for that
            "groups": [c.__dict__ for c in self.checks],
        }


def tolerance_for(precision: str) -> float:
    return DEFAULT_TOLERANCE.get(precision, 1.0)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_groups(metrics: Dict, reference: Dict, *, tolerance: float, original: Optional[Dict] = None,
                 max_group_drop: Optional[float] = None, allow_empty_groups: bool = False) -> GateResult:
    """Every group's accuracy must be >= reference - tolerance and, with ``max_group_drop``, no group may be
    more than that many points below the original model. Metrics dicts use the report schema.
    Fail-closed: a NaN or infinite tolerance, accuracy or reference FAILS, and so does a group with no
    samples unless ``allow_empty_groups``."""
    checks = []
    bad_limits = [f"{name} {value}" for name, value in (("tolerance", tolerance), ("max group drop", max_group_drop))
                  if value is not None and (not _finite(value) or value < 0)]
    for name, entry in metrics["groups"].items():
        acc = entry.get("accuracy")
        ref = reference["groups"].get(name, {}).get("accuracy")
        orig = original["groups"].get(name, {}).get("accuracy") if original else None
        check = GroupCheck(group=name, n=int(entry.get("n", 0)), accuracy=acc, reference=ref,
                           change_vs_reference=None if acc is None or ref is None else acc - ref,
                           original=orig, change_vs_original=None if acc is None or orig is None else acc - orig)
        check.passed, check.reason = _judge(acc, ref, orig, check.n, tolerance, max_group_drop, allow_empty_groups,
                                            bad_limits)
        checks.append(check)
    return GateResult(passed=bool(checks) and all(c.passed for c in checks), tolerance=tolerance,
                      max_group_drop=max_group_drop, checks=checks)


def _judge(acc, ref, orig, n: int, tolerance, max_group_drop, allow_empty: bool, bad_limits: List[str]):
    """(passed, reason) for one group."""
    if bad_limits:
        return False, "gate limit is not a finite number >= 0 ({})".format(", ".join(bad_limits))
    if acc is None or n == 0:
        return (True, "no samples (allowed)") if allow_empty else \
            (False, "no samples: nothing shows this group is unharmed (--allow-empty-groups to accept)")
    if not _finite(acc):
        return False, f"accuracy is {acc}"
    if ref is None:
        return False, "group missing from the reference"
    if not _finite(ref):
        return False, f"reference accuracy is {ref}"
    if acc < ref - tolerance:
        return False, f"{ref - acc:.2f} points below reference (tolerance {tolerance})"
    if max_group_drop is not None and orig is not None:
        if not _finite(orig):
            return False, f"original accuracy is {orig}"
        if acc < orig - max_group_drop:
            return False, f"{orig - acc:.2f} points below the original model (max {max_group_drop})"
    return True, ""
