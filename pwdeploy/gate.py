"""The per-group accuracy gate, shared by `pwdeploy verify` and the device-side verifier.

numpy only and Python 3.8 compatible: bundles ship this file to the device.
"""

from __future__ import annotations

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
            "failed_groups": self.failed_groups,
            "groups": [c.__dict__ for c in self.checks],
        }


def tolerance_for(precision: str) -> float:
    return DEFAULT_TOLERANCE.get(precision, 1.0)


def check_groups(metrics: Dict, reference: Dict, *, tolerance: float, original: Optional[Dict] = None,
                 max_group_drop: Optional[float] = None) -> GateResult:
    """Every group's accuracy must be >= reference - tolerance and, with ``max_group_drop``, no group may be
    more than that many points below the original model. Metrics dicts use the report schema."""
    checks = []
    for name, entry in metrics["groups"].items():
        acc = entry.get("accuracy")
        ref = reference["groups"].get(name, {}).get("accuracy")
        orig = original["groups"].get(name, {}).get("accuracy") if original else None
        check = GroupCheck(group=name, n=int(entry.get("n", 0)), accuracy=acc, reference=ref,
                           change_vs_reference=None if acc is None or ref is None else acc - ref,
                           original=orig, change_vs_original=None if acc is None or orig is None else acc - orig)
        if acc is None or entry.get("n", 0) == 0:
            check.reason = "no samples"
        elif ref is None:
            check.passed, check.reason = False, "group missing from the reference"
        elif acc < ref - tolerance:
            check.passed, check.reason = False, f"{ref - acc:.2f} points below reference (tolerance {tolerance})"
        if check.passed and max_group_drop is not None and orig is not None and acc is not None \
                and acc < orig - max_group_drop:
            check.passed, check.reason = False, f"{orig - acc:.2f} points below the original model (max {max_group_drop})"
        checks.append(check)
    return GateResult(passed=all(c.passed for c in checks), tolerance=tolerance, max_group_drop=max_group_drop,
                      checks=checks)
