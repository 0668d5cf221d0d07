"""The latency gate: budgets from the manifest checked against the speed measured where the model runs.

A bundle may carry ``latency`` in its signed manifest (``pwdeploy package --max-latency-ms MS[@BATCH]``,
``--min-speedup X``): each budget is one more line of the verifier's PASSED/FAILED table and fails the
verification (exit 1) like a group that fell below its reference. Fail-closed: a budget whose batch was not
measured, or a speed-up asked for without the original model in the bundle, FAILS.

Standard library only, Python 3.8 compatible: bundles ship this file to the device.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Tuple

from .errors import PwdeployError

STATISTIC = "p50"  # what a budget limits: the median of the timed runs (p90/p99 are shown beside it)
_BUDGET = re.compile(r"^\s*(?P<ms>[0-9]*\.?[0-9]+)\s*(?:@\s*(?P<batch>[0-9]+))?\s*$")


@dataclass
class BudgetCheck:
    name: str  # e.g. "latency b1", "speed-up b8"
    measured: Optional[float]
    limit: float
    passed: bool
    reason: str = ""

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def parse_budget(text: str) -> Tuple[float, int]:
    """``MS`` or ``MS@BATCH`` (batch 1 by default) -> (milliseconds, batch)."""
    match = _BUDGET.match(str(text))
    if not match:
        raise PwdeployError("--max-latency-ms {!r}: give milliseconds, optionally at a batch size, e.g. 5 or "
                            "12.5@8".format(text))
    ms, batch = float(match.group("ms")), int(match.group("batch") or 1)
    if not (math.isfinite(ms) and ms > 0) or batch < 1:
        raise PwdeployError("--max-latency-ms {!r}: the budget must be > 0 ms at a batch size >= 1".format(text))
    return ms, batch


def manifest_section(budgets: List[str], min_speedup: Optional[float], original_file: Optional[str]) -> Optional[Dict]:
    """The manifest's ``latency`` entry for these options (None when there is nothing to gate or time against)."""
    if min_speedup is not None and not (math.isfinite(min_speedup) and min_speedup > 0):
        raise PwdeployError("--min-speedup must be a number > 0 (e.g. 1.5), got {}".format(min_speedup))
    if min_speedup is not None and not original_file:
        raise PwdeployError("--min-speedup needs the original model in the bundle to time against: add "
                            "--with-original")
    parsed = sorted({parse_budget(b) for b in budgets or []}, key=lambda p: (p[1], p[0]))
    if not parsed and min_speedup is None and not original_file:
        return None
    return {"budgets": [{"max_ms": ms, "batch": batch} for ms, batch in parsed], "statistic": STATISTIC,
            "min_speedup": min_speedup, "original": original_file}


def batches_to_time(section: Optional[Dict], declared: List[int]) -> List[int]:
    """The bundle's declared batch sizes plus every batch a budget names, ascending."""
    extra = [int(b["batch"]) for b in (section or {}).get("budgets", [])]
    return sorted(set(int(b) for b in declared) | set(extra))


def check_latency(section: Optional[Dict], speed: Optional[Dict]) -> List[BudgetCheck]:
    """One check per budget of ``section`` (the manifest's ``latency``) against ``speed`` (device/speed.py)."""
    if not section:
        return []
    measured = {int(row["batch"]): row for row in (speed or {}).get("batches", [])}
    checks = []
    for budget in section.get("budgets", []):
        batch, limit = int(budget["batch"]), float(budget["max_ms"])
        row = measured.get(batch)
        value = None if row is None else row["model"]["{}_ms".format(STATISTIC)]
        checks.append(_judge("latency b{}".format(batch), value, limit, value is not None and value <= limit,
                             "not measured" if row is None else
                             "" if value <= limit else "{:.3g} ms over the budget".format(value - limit)))
    want = section.get("min_speedup")
    if want is not None:
        rows = [row for row in measured.values() if row.get("speedup") is not None]
        if not rows:
            why = (speed or {}).get("original_note") or "the speed-up against the original was not measured"
            checks.append(_judge("speed-up", None, float(want), False, why))
        for row in sorted(rows, key=lambda r: r["batch"]):
            got = float(row["speedup"])
            checks.append(_judge("speed-up b{}".format(row["batch"]), got, float(want), got >= want,
                                 "" if got >= want else "{:.2f}x is below the {:.2f}x asked for".format(got, want)))
    return checks


def _judge(name: str, measured: Optional[float], limit: float, passed: bool, reason: str) -> BudgetCheck:
    return BudgetCheck(name=name, measured=measured, limit=limit, passed=bool(passed), reason=reason)


def table_lines(checks: List[BudgetCheck], width: int) -> List[str]:
    """Rows for the verifier's PASSED/FAILED table, aligned with its group rows."""
    lines = []
    for c in checks:
        speedup = c.name.startswith("speed-up")
        unit = "x" if speedup else " ms"
        got = "-" if c.measured is None else "{:.2f}{}".format(c.measured, unit)
        bound = "{} {:.2f}{}".format(">=" if speedup else "<=", c.limit, unit)
        lines.append("  {:<{w}} {:>5} {:>9} {:>25}  {}{}".format(  # the group rows' columns, bound spanning 3
            c.name, "", got, bound, "PASSED" if c.passed else "FAILED",
            " ({})".format(c.reason) if c.reason else "", w=width))
    return lines
