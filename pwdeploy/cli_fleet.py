"""The device commands of the CLI: `ship` (one host, or a fleet with --hosts), `status`, `rollback`.

They share one set of connection options (-p, -i, -F, -o, --remote-python), defined once here.
"""

from __future__ import annotations

import json

from pathlib import Path
from typing import Optional

import typer

from .device.install import DEFAULT_KEEP
from .errors import GateFailed, PwdeployError

# --- the connection options, shared by ship / status / rollback ---
PortOpt = typer.Option(None, "-p", "--port", help="SSH port.")
IdentityOpt = typer.Option(None, "-i", "--identity", help="SSH private key file.")
SshConfigOpt = typer.Option(None, "-F", "--ssh-config", help="ssh config file (default ~/.ssh/config).")
SshOptionOpt = typer.Option(None, "-o", "--ssh-option", help="Extra ssh option, repeatable (e.g. -o ProxyJump=gw).")
RemotePythonOpt = typer.Option("python3", "--remote-python", help="Python 3.8+ on the device (path or name).")
HostsOpt = typer.Option(None, "--hosts", help="Inventory: one user@host:DIR per line, or an ssh config whose Host "
                                              "aliases are the devices (deployed into --remote-dir).")
RemoteDirOpt = typer.Option("deploy", "--remote-dir", help="With an ssh-config inventory: the deploy folder on "
                                                           "each device.")
ParallelOpt = typer.Option(4, "--parallel", help="Hosts handled at the same time (after the canaries).")


def _connection(port, identity, ssh_config, ssh_option, remote_python):
    from .fleet import Connection
    from .ship import _check_options

    _check_options(keep=0, verify_timeout=1.0, port=port, remote_python=remote_python, runner="auto",
                   files={"-i": identity, "-F": ssh_config})
    return Connection(port=port, identity=identity, ssh_config=ssh_config, ssh_options=list(ssh_option or []),
                      remote_python=remote_python)


def _targets(destination: Optional[str], hosts: Optional[Path], remote_dir: str, conn) -> list[str]:
    """HOST:DIR or the inventory's hosts (an ssh-config inventory is also passed to ssh with -F)."""
    from .fleet import read_inventory
    from .ship import parse_destination

    if bool(destination) == bool(hosts):
        raise PwdeployError("give either one user@host:DIR or --hosts FILE")
    if destination:
        parse_destination(destination)
        return [destination]
    found, config = read_inventory(hosts, remote_dir)
    if config and not conn.ssh_config:
        conn.ssh_config = config
    return found


def ship(
    bundle: Path = typer.Argument(..., help="Bundle written by 'pwdeploy package' (NAME.tar.gz)."),
    destination: Optional[str] = typer.Argument(None, help="user@host:DIR on the device (DIR/current will point "
                                                           "at it); or --hosts FILE."),
    hosts: Optional[Path] = HostsOpt,
    canary: int = typer.Option(1, "--canary", help="With --hosts: ship to the first N hosts first; the rest follow "
                                                  "only when all of them pass (0: no canary wave)."),
    parallel: int = ParallelOpt,
    max_failures: int = typer.Option(1, "--max-failures", help="With --hosts: start no further host after K hosts "
                                                               "did not pass."),
    report: Optional[Path] = typer.Option(None, "--report", help="With --hosts: the fleet report (default "
                                                                 "NAME.fleet.json beside the bundle)."),
    remote_dir: str = RemoteDirOpt,
    verify: bool = typer.Option(False, "--verify", help="Run the device-side verify in the new release first; switch "
                                                        "`current` only if it passes (always on with --hosts)."),
    port: Optional[int] = PortOpt, identity: Optional[str] = IdentityOpt, ssh_config: Optional[str] = SshConfigOpt,
    ssh_option: Optional[list[str]] = SshOptionOpt, remote_python: str = RemotePythonOpt,
    runner: str = typer.Option("auto", "--runner", help="Device verify runtime: auto, tensorrt or onnxruntime."),
    verify_timeout: float = typer.Option(3600.0, "--verify-timeout", help="Seconds allowed for the remote verify "
                                                                          "(includes the engine build)."),
    speed_seconds: Optional[float] = typer.Option(None, "--speed-seconds", help="Seconds the device verify spends "
                                                                                "timing the model (default 20)."),
    keep: int = typer.Option(DEFAULT_KEEP, "--keep", help="Releases kept on the device after switching, `current` "
                                                         "included (older ones are removed; 0 keeps all)."),
    allowed_signers: Optional[str] = typer.Option(None, "--allowed-signers",
                                                  help="OpenSSH allowed-signers file: refuse an unsigned or wrongly "
                                                       "signed bundle before sending it (the device checks its own "
                                                       "DIR/allowed_signers too)."),
    allow_downgrade: bool = typer.Option(False, "--allow-downgrade", help="Accept a release older than the one the "
                                                                          "device runs for this model."),
    bootstrap: bool = typer.Option(False, "--bootstrap", help="Also install the trust anchor as "
                                                              "DIR/.pwdeploy/anchor/pwdeploy-device.py (prints its "
                                                              "sha256)."),
):
    """Copy a bundle over SSH, install it as DIR/current only if its hashes check out, optionally verify it there."""
    conn = _connection(port, identity, ssh_config, ssh_option, remote_python)
    targets = _targets(destination, hosts, remote_dir, conn)
    options = {"runner": runner, "verify_timeout": verify_timeout, "keep": keep, "allowed_signers": allowed_signers,
               "allow_downgrade": allow_downgrade, "bootstrap": bootstrap, "speed_seconds": speed_seconds}
    if hosts:
        return _ship_fleet(bundle, targets, conn, options, canary=canary, parallel=parallel,
                           max_failures=max_failures, report=report)
    from .ship import ship as ship_bundle

    result = ship_bundle(bundle, targets[0], verify=verify, **conn.ship_kwargs(), **options)
    if result.passed is False:
        gate = result.verify.get("gate", {})
        failed = ", ".join(gate.get("failed_groups", [])) or ("no groups" if gate.get("groups_checked") == 0
                                                              else "integrity")
        slow = [b["name"] for b in result.verify.get("latency_gate") or [] if not b.get("passed")]
        kept = f"still points at {result.previous}" if result.previous else "was not created"
        raise GateFailed(f"device verify FAILED on {result.destination} ({', '.join([failed] + slow)}); see "
                         f"{result.verify_path}; `current` {kept}")


def _ship_fleet(bundle: Path, targets: list[str], conn, options: dict, *, canary: int, parallel: int,
                max_failures: int, report: Optional[Path]) -> None:
    from .fleet import rollout
    from .fleet_report import RolloutProgress, rollout_table, summary_line, write_rollout
    from .progress import console
    from .ship import inspect_bundle

    inspect_bundle(bundle, options["allowed_signers"])  # a bad bundle is refused once, before any host
    report = report or bundle.with_name(bundle.name.removesuffix(".tar.gz").removesuffix(".tgz") + ".fleet.json")
    with RolloutProgress(len(targets)) as progress:
        result = rollout(bundle, targets, conn=conn, canary=canary, parallel=parallel, max_failures=max_failures,
                         options=options, out_dir=report.with_suffix(""), on_start=progress.start,
                         on_done=progress.done)
    write_rollout(result, report)
    console.print(rollout_table(result))
    console.print(summary_line(result, report), markup=False, highlight=False)
    if not result.passed:
        raise GateFailed(f"fleet rollout did not pass on every host; see {report}")


def status(
    destination: Optional[str] = typer.Argument(None, help="user@host:DIR; or --hosts FILE."),
    hosts: Optional[Path] = HostsOpt, remote_dir: str = RemoteDirOpt, parallel: int = ParallelOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the devices' status as JSON instead of a table."),
    port: Optional[int] = PortOpt, identity: Optional[str] = IdentityOpt, ssh_config: Optional[str] = SshConfigOpt,
    ssh_option: Optional[list[str]] = SshOptionOpt, remote_python: str = RemotePythonOpt,
):
    """What each device runs now (release, device, last verification, rollback target); exit 1 if one is unreachable."""
    from .fleet import fleet_status
    from .fleet_report import status_table
    from .progress import console

    conn = _connection(port, identity, ssh_config, ssh_option, remote_python)
    rows = fleet_status(_targets(destination, hosts, remote_dir, conn), conn, parallel)
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        console.print(status_table(rows))
    if not all(row["reachable"] for row in rows):
        raise GateFailed("a device was unreachable")


def rollback(
    destination: Optional[str] = typer.Argument(None, help="user@host:DIR; or --hosts FILE."),
    hosts: Optional[Path] = HostsOpt, remote_dir: str = RemoteDirOpt, parallel: int = ParallelOpt,
    port: Optional[int] = PortOpt, identity: Optional[str] = IdentityOpt, ssh_config: Optional[str] = SshConfigOpt,
    ssh_option: Optional[list[str]] = SshOptionOpt, remote_python: str = RemotePythonOpt,
):
    """Switch each device's `current` back to its previous verified release (the device's own `rollback`)."""
    from .fleet import fleet_rollback
    from .fleet_report import rollback_table
    from .progress import console

    conn = _connection(port, identity, ssh_config, ssh_option, remote_python)
    rows = fleet_rollback(_targets(destination, hosts, remote_dir, conn), conn, parallel)
    console.print(rollback_table(rows))
    if not all(row.get("rolled_back") for row in rows):
        unreachable = [row["host"] for row in rows if not row["reachable"]]
        if unreachable:
            raise GateFailed(f"not rolled back: {', '.join(unreachable)} unreachable")
        raise PwdeployError("nothing was rolled back on " + ", ".join(r["host"] for r in rows if not r.get("rolled_back"))
                            + ": no earlier verified release there")


def register(app: typer.Typer) -> None:
    """Add ship, status and rollback to ``app`` (pwdeploy.cli)."""
    app.command()(ship)
    app.command()(status)
    app.command()(rollback)
