"""What a fleet command shows and keeps: the progress while it runs, one table per command, the JSON report.

The rollout table has one row per host: host, device, release before -> after, the per-group result, the
shipped model's latency measured there, and the outcome (with why, when it did not pass).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional

from rich.table import Table

from .device.facts import describe as describe_device
from .fleet import HostResult, Rollout
from .fsutil import write_json
from .progress import console, task

_STYLE = {"passed": "green", "failed": "red", "refused": "red", "unreachable": "yellow", "skipped": "dim"}


def _release(entry: Optional[dict]) -> str:
    return "-" if not entry else f"{entry['release_number']} ({entry['bundle_id']})"


def _latency(entry: Optional[dict]) -> str:
    if not entry:
        return "-"
    text = f"b{entry['batch']} p50 {entry['p50_ms']:.2f} ms, p99 {entry['p99_ms']:.2f} ms"
    return text + (f", {entry['speedup']:.2f}x" if entry.get("speedup") is not None else "")


class RolloutProgress:
    """A bar over the hosts and one line per host as it finishes (its output only when it did not pass)."""

    def __init__(self, total: int):
        self._context = task("rolling out", total)
        self._task = None
        self._lock = threading.Lock()

    def __enter__(self):
        self._task = self._context.__enter__()
        return self

    def __exit__(self, *exc):
        return self._context.__exit__(*exc)

    def start(self, host: str, wave: int) -> None:
        with self._lock:
            self._task.describe(f"wave {wave}: {host}")
            console.print(f"wave {wave}: shipping to {host}", markup=False, highlight=False)

    def done(self, result: HostResult, lines: list) -> None:
        with self._lock:
            if result.outcome != "passed":
                for line in lines[-12:]:
                    console.print(f"  {result.host}: {line}", markup=False, highlight=False)
            console.print(f"{result.host}: {result.outcome.upper()}"
                          + (f" ({result.reason})" if result.reason else ""), markup=False, highlight=False)
            self._task.advance(1)


def rollout_table(rollout: Rollout) -> Table:
    table = Table(title=f"fleet rollout of {Path(rollout.bundle).name}", show_lines=False)
    for column in ("host", "wave", "device", "release before", "release after", "groups", "latency", "outcome"):
        table.add_column(column, overflow="fold")
    for h in rollout.hosts:
        outcome = f"[{_STYLE[h.outcome]}]{h.outcome.upper()}[/]" + (f" {h.reason}" if h.reason else "")
        table.add_row(h.host, str(h.wave or "-"), h.device or "-", _release(h.before), _release(h.after),
                      h.groups or "-", _latency(h.latency), outcome)
    return table


def write_rollout(rollout: Rollout, path: Path) -> None:
    write_json(path, rollout.to_dict())


def summary_line(rollout: Rollout, path: Path) -> str:
    counts = rollout.to_dict()["counts"]
    text = ", ".join(f"{n} {name}" for name, n in counts.items() if n)
    verdict = "PASSED: every host runs the new release" if rollout.passed else "FAILED: not every host passed"
    return f"{verdict} ({text}){'; ' + rollout.halted if rollout.halted else ''}; report: {path}"


def status_table(rows: list[dict]) -> Table:
    table = Table(title="fleet status")
    for column in ("host", "device", "current", "last verification", "latency", "rollback to"):
        table.add_column(column, overflow="fold")
    for row in rows:
        if not row["reachable"]:
            table.add_row(row["host"], "-", "-", f"[yellow]unreachable[/] {row['error']}", "-", "-")
            continue
        status = row["status"]
        if status is None:
            table.add_row(row["host"], "-", "nothing deployed", "-", "-", "-")
            continue
        table.add_row(row["host"], describe_device(status["device"]), _release(status["current"]),
                      _verification(status.get("last_verification")), _status_latency(status),
                      _release(status.get("rollback_to")))
    return table


def _verification(last: Optional[dict]) -> str:
    if not last:
        return "never verified here"
    word = "[green]PASSED[/]" if last.get("passed") else "[red]FAILED[/]"
    failed = [g for g in last.get("failed_groups") or [] if g != "(no groups)"]
    return f"{word} {last.get('verified_at') or ''}" + (f" ({', '.join(failed)})" if failed else "")


def _status_latency(status: dict) -> str:
    rows = (status.get("last_verification") or {}).get("latency") or []
    if not rows:
        return "-"
    row = rows[0]
    return _latency({"batch": row["batch"], "p50_ms": row["model"]["p50_ms"], "p99_ms": row["model"]["p99_ms"],
                     "speedup": row.get("speedup")})


def rollback_table(rows: list[dict]) -> Table:
    table = Table(title="fleet rollback")
    for column in ("host", "from", "to", "outcome"):
        table.add_column(column, overflow="fold")
    for row in rows:
        if row.get("rolled_back"):
            table.add_row(row["host"], _release(row["from"]), _release(row["to"]), "[green]rolled back[/]")
        else:
            word = "unreachable" if not row["reachable"] else "not changed"
            table.add_row(row["host"], "-", "-", f"[yellow]{word}[/] {row['error']}")
    return table
