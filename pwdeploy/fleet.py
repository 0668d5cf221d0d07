"""Fleets: one bundle to many devices in waves, with the per-host checks of a single `pwdeploy ship --verify`.

An inventory is a file with one ``user@host:DIR`` per line (``#`` comments), or an ssh config whose
``Host`` aliases (no wildcards) are the devices, each deployed into ``--remote-dir``. The rollout ships to
``canary`` hosts first; only when every canary passes does the rest follow, ``parallel`` at a time. Every
host goes through `pwdeploy ship --verify` unchanged (signature, allowed signers, release order, the
device's trust anchor): the release is unpacked beside `current`, verified there, and `current` switched
only when the per-group and latency gates pass, so a failing or unreachable host keeps the release it ran.
After ``max_failures`` hosts did not pass, no further host is started.

`status` and `rollback` run the trust anchor's ``status DIR`` / ``rollback DIR`` on each host.
"""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .device.facts import describe as describe_device
from .errors import PwdeployError
from .ship import Destination, SshSettings, Unreachable, parse_destination, run_anchor, ship

OUTCOMES = ("passed", "failed", "refused", "unreachable", "skipped")


@dataclass
class Connection:
    """The ssh settings every fleet command shares (-p, -i, -F, -o, --remote-python)."""
    port: Optional[int] = None
    identity: Optional[str] = None
    ssh_config: Optional[str] = None
    ssh_options: list = field(default_factory=list)
    remote_python: str = "python3"

    def settings(self) -> SshSettings:
        return SshSettings(port=self.port, identity=self.identity, config=self.ssh_config,
                           options=list(self.ssh_options))

    def ship_kwargs(self) -> dict:
        return {"port": self.port, "identity": self.identity, "ssh_config": self.ssh_config,
                "ssh_options": list(self.ssh_options), "remote_python": self.remote_python}


@dataclass
class HostResult:
    host: str
    outcome: str = "skipped"
    reason: str = ""
    device: Optional[str] = None
    before: Optional[dict] = None  # `current` before: bundle_id, release_number
    after: Optional[dict] = None
    groups: Optional[str] = None  # "2/2 passed" or the failed groups
    latency: Optional[dict] = None  # batch-1 (or smallest batch) p50/p99 of the shipped model
    verify_path: Optional[str] = None
    wave: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


# --- inventory ---------------------------------------------------------------------------------------------

def read_inventory(path: str | Path, remote_dir: str = "deploy") -> tuple[list[str], Optional[str]]:
    """(destinations, ssh config to pass with -F or None). Refuses an empty or malformed inventory (exit 2)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise PwdeployError(f"--hosts {path}: file not found: one user@host:DIR per line, or an ssh config")
    lines = [ln.split("#", 1)[0].strip() for ln in path.read_text(errors="replace").splitlines()]
    lines = [ln for ln in lines if ln]
    if any(re.match(r"(?i)^(host|match)\s", ln) for ln in lines):
        hosts = [name for ln in lines if re.match(r"(?i)^host\s", ln) for name in ln.split()[1:]
                 if not any(c in name for c in "*?!")]
        destinations = [f"{name}:{remote_dir}" for name in hosts]
        config = str(path)
    else:
        destinations, config = lines, None
    if not destinations:
        raise PwdeployError(f"--hosts {path}: no hosts in it: write one user@host:DIR per line")
    for text in destinations:
        parse_destination(text)  # one-line error naming the bad line
    if len(set(destinations)) != len(destinations):
        raise PwdeployError(f"--hosts {path}: a host is listed twice: list each device once")
    return destinations, config


def make_waves(hosts: list[str], canary: int) -> list[list[str]]:
    """[canaries, the rest] (the canary wave is left out when ``canary`` is 0)."""
    canary = max(0, min(int(canary), len(hosts)))
    return [w for w in (hosts[:canary], hosts[canary:]) if w]


# --- one host ----------------------------------------------------------------------------------------------

def device_status(destination: str, conn: Connection) -> Optional[dict]:
    """The anchor's ``status`` JSON of a host (None when nothing is deployed there). Unreachable raises."""
    dest = parse_destination(destination)
    out = run_anchor(dest, conn.settings(), conn.remote_python, "status", timeout=conn.settings().connect_timeout + 60)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        return None
    return json.loads(lines[-1])


def _current(status: Optional[dict]) -> Optional[dict]:
    current = (status or {}).get("current")
    return {"bundle_id": current["bundle_id"], "release_number": current["release_number"]} if current else None


def _groups(verify: dict) -> str:
    gate = verify.get("gate") or {}
    groups = gate.get("groups") or []
    failed = [g for g in gate.get("failed_groups") or [] if g != "(no groups)"]
    slow = [b["name"] for b in verify.get("latency_gate") or [] if not b.get("passed")]
    if not verify.get("integrity", {}).get("passed", True):
        return "integrity FAILED"
    if failed or slow:
        return "FAILED: " + ", ".join(failed + slow)
    return f"{len(groups)}/{len(groups)} passed"


def _latency(verify: dict) -> Optional[dict]:
    rows = (verify.get("speed") or {}).get("batches") or []
    if not rows:
        return None
    row = rows[0]
    return {"batch": row["batch"], "p50_ms": row["model"]["p50_ms"], "p99_ms": row["model"]["p99_ms"],
            "speedup": row.get("speedup")}


def ship_host(bundle: Path, destination: str, conn: Connection, options: dict, out_dir: Path,
              log: Callable[[str], None]) -> HostResult:
    """Ship and verify on one host; never raises for the host's own problems (they are its outcome)."""
    result = HostResult(destination)
    try:
        before = device_status(destination, conn)
        result.before = _current(before)
        result.device = describe_device(before["device"]) if before else None
        verify_path = out_dir / (re.sub(r"[^A-Za-z0-9._-]+", "_", destination) + ".verify.json")
        shipped = ship(bundle, destination, verify=True, verify_path=verify_path, log=log, **conn.ship_kwargs(),
                       **options)
        result.verify_path = str(shipped.verify_path)
        result.groups, result.latency = _groups(shipped.verify), _latency(shipped.verify)
        device = shipped.verify.get("device")
        result.device = describe_device(device) if device else result.device
        result.outcome = "passed" if shipped.passed and shipped.switched else "failed"
        if result.outcome == "failed":
            result.reason = f"device verify {result.groups}; `current` kept"
    except Unreachable as exc:
        result.outcome, result.reason = "unreachable", str(exc)
    except PwdeployError as exc:
        result.outcome, result.reason = "refused", str(exc)
    if result.outcome != "unreachable":
        try:
            result.after = _current(device_status(destination, conn))
        except PwdeployError as exc:
            result.reason = result.reason or f"status after shipping failed: {exc}"
    return result


# --- the rollout -------------------------------------------------------------------------------------------

@dataclass
class Rollout:
    bundle: str
    hosts: list
    waves: list
    halted: Optional[str] = None

    @property
    def passed(self) -> bool:
        return bool(self.hosts) and all(h.outcome == "passed" for h in self.hosts)

    def to_dict(self) -> dict:
        counts = {o: sum(h.outcome == o for h in self.hosts) for o in OUTCOMES}
        return {"schema": "pwdeploy.fleet/1", "bundle": self.bundle, "passed": self.passed, "halted": self.halted,
                "waves": self.waves, "counts": counts, "hosts": [h.to_dict() for h in self.hosts]}


def rollout(bundle: str | Path, hosts: list[str], *, conn: Connection, canary: int = 1, parallel: int = 4,
            max_failures: int = 1, options: Optional[dict] = None, out_dir: Optional[Path] = None,
            on_start: Callable[[str, int], None] = lambda host, wave: None,
            on_done: Callable[[HostResult, list], None] = lambda result, lines: None) -> Rollout:
    """Ship ``bundle`` to ``hosts`` in waves (see the module docstring); returns every host's result."""
    bundle = Path(bundle)
    if parallel < 1 or max_failures < 1 or canary < 0:
        raise PwdeployError("--parallel and --max-failures must be >= 1 and --canary >= 0")
    out_dir = Path(out_dir or bundle.with_name(re.sub(r"(\.tar\.gz|\.tgz)$", "", bundle.name) + ".fleet"))
    out_dir.mkdir(parents=True, exist_ok=True)
    waves = make_waves(hosts, canary)
    results = {h: HostResult(h) for h in hosts}
    state = {"failures": 0, "halted": None}
    lock = threading.Lock()

    def one(host: str, wave: int) -> None:
        with lock:
            if state["halted"]:
                results[host].reason = f"not started: {state['halted']}"
                results[host].wave = wave
                return
        on_start(host, wave)
        lines: list = []
        result = ship_host(bundle, host, conn, dict(options or {}), out_dir, lines.append)
        result.wave = wave
        with lock:
            results[host] = result
            if result.outcome != "passed":
                state["failures"] += 1
                if state["failures"] >= max_failures and not state["halted"]:
                    state["halted"] = f"halted after {state['failures']} failed host(s) (--max-failures {max_failures})"
        on_done(result, lines)

    for number, wave in enumerate(waves, 1):
        with ThreadPoolExecutor(max_workers=min(parallel, len(wave))) as pool:
            list(pool.map(lambda h: one(h, number), wave))
        canaries_failed = len(waves) > 1 and number == 1 and any(results[h].outcome != "passed" for h in wave)
        if canaries_failed and not state["halted"]:
            state["halted"] = "halted: a canary did not pass"
    return Rollout(str(bundle), [results[h] for h in hosts], [list(w) for w in waves], state["halted"])


# --- status and rollback -----------------------------------------------------------------------------------

def fleet_status(hosts: list[str], conn: Connection, parallel: int = 4) -> list[dict]:
    """Per host: the anchor's status JSON, or ``unreachable`` / ``nothing deployed``."""
    def one(host: str) -> dict:
        try:
            status = device_status(host, conn)
        except PwdeployError as exc:
            return {"host": host, "reachable": False, "error": str(exc)}
        return {"host": host, "reachable": True, "status": status}

    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(hosts)))) as pool:
        return list(pool.map(one, hosts))


def rollback_host(host: str, conn: Connection) -> dict:
    """The anchor's ``rollback DIR`` on one host: its JSON line, or why nothing changed."""
    dest: Destination = parse_destination(host)
    try:
        out = run_anchor(dest, conn.settings(), conn.remote_python, "rollback")
    except PwdeployError as exc:
        return {"host": host, "rolled_back": False, "reachable": not isinstance(exc, Unreachable), "error": str(exc)}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        error = [ln for ln in out.stderr.splitlines() if ln.strip()]
        return {"host": host, "rolled_back": False, "reachable": True,
                "error": (error[-1] if error else f"exit {out.returncode}").removeprefix("error: ")}
    return dict(json.loads(lines[-1]), host=host, reachable=True)


def fleet_rollback(hosts: list[str], conn: Connection, parallel: int = 4) -> list[dict]:
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(hosts)))) as pool:
        return list(pool.map(lambda h: rollback_host(h, conn), hosts))
