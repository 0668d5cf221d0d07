"""Fleets against three real OpenSSH servers on 127.0.0.1 (each its own port, key and deploy folder), started
and stopped by the test: canary wave then the rest, a failing gate halting the rollout with `current` kept,
an unreachable host, `status` and `rollback`."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sshd  # noqa: E402
from run_fixture import damage_classifier, extract, read_json, rehash, repack, tiny_bundle_run  # noqa: E402

pytestmark = pytest.mark.skipif(sshd.missing_reason() is not None, reason=str(sshd.missing_reason()))

from pwdeploy.cli import main  # noqa: E402
from pwdeploy.errors import PwdeployError  # noqa: E402
from pwdeploy.fleet import make_waves, read_inventory  # noqa: E402
from pwdeploy.package import package_run  # noqa: E402

NAMES = ("fleet-a", "fleet-b", "fleet-c")


@pytest.fixture(autouse=True)
def no_agent(monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setenv("COLUMNS", "250")  # the tables' cells on one line each


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Three sshd servers and one ssh config naming them fleet-a/b/c (plus fleet-dead: a closed port)."""
    base = tmp_path_factory.mktemp("fleet")
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(sshd.running_sshd(base / name)) for name in NAMES]
        config = base / "ssh_config"
        blocks = []
        for name, srv in zip(NAMES + ("fleet-dead",), servers + [servers[0]]):
            port = srv.port if name != "fleet-dead" else sshd.free_port()
            blocks.append(f"Host {name}\n  HostName 127.0.0.1\n  Port {port}\n  User {srv.user}\n"
                          f"  IdentityFile {srv.key}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n"
                          "  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  ConnectTimeout 5\n")
        config.write_text("\n".join(blocks))
        yield {"config": config, "servers": servers}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    run = tiny_bundle_run(tmp_path_factory.getbasetemp())
    out = tmp_path_factory.mktemp("fleet-bundles")
    first = package_run(run, out / "first.tar.gz", quiet=True, release=10, with_original=True)
    second = repack(extract(first, out / "second"), out / "second.tar.gz", bundle_id="fleet-second", release=11)
    bad_root = extract(first, out / "bad")
    damage_classifier(bad_root / "model.onnx")
    rehash(bad_root, ["model.onnx"])
    bad = repack(bad_root, out / "bad.tar.gz", bundle_id="fleet-bad", release=12)
    return {"first": first, "second": second, "bad": bad}


@pytest.fixture(scope="module")
def device_python(tmp_path_factory):
    """The 'device' python3: this interpreter (numpy + onnxruntime) with torch made unimportable."""
    tmp = tmp_path_factory.mktemp("devpy")
    (tmp / "block" / "torch").mkdir(parents=True)
    (tmp / "block" / "torch" / "__init__.py").write_text('raise ImportError("no torch on the device")\n')
    isolated = ("import sys; sys.path.insert(0, sys.argv[1]); sys.argv = sys.argv[2:]; "
                "src = sys.stdin.read() if sys.argv[0] == '-' else open(sys.argv[0]).read(); "
                "exec(compile(src, sys.argv[0], 'exec'), {'__name__': '__main__'})")
    wrapper = tmp / "python3"
    wrapper.write_text(f'#!/bin/sh\nif [ "$1" = "-I" ] && [ "$2" = "-B" ]; then shift 2; exec {sys.executable} -I -B '
                       f'-c "{isolated}" {tmp / "block"} "$@"; fi\n'
                       f'exec env PYTHONPATH={tmp / "block"} PYTHONNOUSERSITE=1 {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def _inventory(tmp_path: Path, names=NAMES) -> tuple[Path, dict]:
    dirs = {name: tmp_path / f"deploy-{name}" for name in names}
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("# the test fleet\n" + "".join(f"{name}:{dirs[name]}\n" for name in names))
    return hosts, dirs


def _cli(fleet, device_python, *args) -> list[str]:
    return [*args, "-F", str(fleet["config"]), "--remote-python", device_python]


def _current(deploy: Path) -> str | None:
    link = deploy / "current"
    return os.readlink(link) if link.is_symlink() else None


def test_inventory_lines_and_ssh_config(tmp_path, fleet):
    hosts, _ = _inventory(tmp_path)
    found, config = read_inventory(hosts)
    assert found == [f"{n}:{tmp_path / ('deploy-' + n)}" for n in NAMES] and config is None
    found, config = read_inventory(fleet["config"], remote_dir="apps/deploy")
    assert found == [f"{n}:apps/deploy" for n in NAMES + ("fleet-dead",)] and config == str(fleet["config"])
    assert make_waves(list("abcde"), 2) == [["a", "b"], ["c", "d", "e"]] and make_waves(list("ab"), 0) == [["a", "b"]]
    for text, message in (("", "no hosts"), ("a:x\na:x\n", "listed twice"), ("nohost\n", "user@host:DIR")):
        (tmp_path / "bad").write_text(text)
        with pytest.raises(PwdeployError, match=message):
            read_inventory(tmp_path / "bad")


def test_canary_then_rollout_status_and_rollback(fleet, bundles, device_python, tmp_path, capsys):
    hosts, dirs = _inventory(tmp_path)
    report = tmp_path / "first.fleet.json"
    code = main(_cli(fleet, device_python, "ship", str(bundles["first"]), "--hosts", str(hosts), "--canary", "1",
                     "--parallel", "2", "--speed-seconds", "1", "--report", str(report)))
    out = capsys.readouterr().out
    assert code == 0, out
    data = read_json(report)
    assert data["passed"] and data["waves"] == [[f"fleet-a:{dirs['fleet-a']}"],
                                                [f"fleet-b:{dirs['fleet-b']}", f"fleet-c:{dirs['fleet-c']}"]]
    first_id = read_json(extract(bundles["first"], tmp_path / "x") / "manifest.json")["bundle_id"]
    for host in data["hosts"]:
        assert host["outcome"] == "passed" and host["before"] is None and host["groups"] == "2/2 passed"
        assert host["after"] == {"bundle_id": first_id, "release_number": 10}
        assert host["latency"]["batch"] == 1 and host["latency"]["p50_ms"] > 0 and host["latency"]["speedup"] > 0
        assert read_json(host["verify_path"])["passed"] is True
    assert all(_current(d) == f"releases/{first_id}" for d in dirs.values())
    assert "fleet rollout" in out and "PASSED: every host runs the new release" in out

    # the next release everywhere, no canary; then an older one again is refused as a downgrade on every host
    assert main(_cli(fleet, device_python, "ship", str(bundles["second"]), "--hosts", str(hosts), "--canary", "0",
                     "--speed-seconds", "0.5")) == 0
    data = read_json(bundles["second"].with_name("second.fleet.json"))
    assert [(h["before"]["release_number"], h["after"]["release_number"]) for h in data["hosts"]] == [(10, 11)] * 3
    capsys.readouterr()
    assert main(_cli(fleet, device_python, "ship", str(bundles["first"]), "--hosts", str(hosts), "--max-failures",
                     "3", "--canary", "0", "--report", str(tmp_path / "down.json"))) == 1
    down = read_json(tmp_path / "down.json")
    assert all(h["outcome"] == "refused" and "older than release 11" in h["reason"] for h in down["hosts"])
    assert all(_current(d) == "releases/fleet-second" for d in dirs.values())

    # status: what each runs, its last verification (with the latency measured there), the rollback target
    capsys.readouterr()
    assert main(_cli(fleet, device_python, "status", "--hosts", str(hosts), "--json")) == 0
    rows = json.loads(capsys.readouterr().out)
    for row in rows:
        status = row["status"]
        assert status["current"]["bundle_id"] == "fleet-second" and status["rollback_to"]["release_number"] == 10
        assert status["last_verification"]["passed"] is True and status["last_verification"]["latency"]
        assert status["device"]["python"]
    assert main(_cli(fleet, device_python, "status", f"fleet-b:{dirs['fleet-b']}")) == 0
    assert "fleet-second" in capsys.readouterr().out

    # rollback: one host by HOST:DIR, then the fleet (the rolled-back host has nothing earlier: exit 2)
    assert main(_cli(fleet, device_python, "rollback", f"fleet-a:{dirs['fleet-a']}")) == 0
    assert _current(dirs["fleet-a"]) == f"releases/{first_id}"
    assert main(_cli(fleet, device_python, "rollback", "--hosts", str(hosts))) == 2
    assert "nothing was rolled back on fleet-a" in capsys.readouterr().err
    assert all(_current(d) == f"releases/{first_id}" for d in dirs.values())


def test_failing_gate_halts_the_rollout_and_keeps_current(fleet, bundles, device_python, tmp_path, capsys):
    hosts, dirs = _inventory(tmp_path)
    assert main(_cli(fleet, device_python, "ship", str(bundles["first"]), "--hosts", str(hosts), "--canary", "0",
                     "--speed-seconds", "0.5", "--report", str(tmp_path / "good.json"))) == 0
    before = {name: _current(d) for name, d in dirs.items()}
    report = tmp_path / "bad.json"
    code = main(_cli(fleet, device_python, "ship", str(bundles["bad"]), "--hosts", str(hosts), "--canary", "0",
                     "--parallel", "1", "--max-failures", "1", "--speed-seconds", "0.5", "--report", str(report)))
    out = capsys.readouterr().out
    assert code == 1
    data = read_json(report)
    first, *rest = data["hosts"]
    assert first["outcome"] == "failed" and first["groups"].startswith("FAILED: ") and "`current` kept" in first["reason"]
    assert first["before"] == first["after"]
    assert all(h["outcome"] == "skipped" and "--max-failures 1" in h["reason"] for h in rest)
    assert data["halted"] and data["counts"] == {"passed": 0, "failed": 1, "refused": 0, "unreachable": 0, "skipped": 2}
    assert {name: _current(d) for name, d in dirs.items()} == before  # every host still runs what it ran
    assert "FAILED" in out

    # a failing canary stops the rest too, whatever --max-failures allows
    data = _ship_json(fleet, bundles["bad"], hosts, device_python, tmp_path / "canary.json", "--canary", "1",
                      "--max-failures", "5")
    assert [h["outcome"] for h in data["hosts"]] == ["failed", "skipped", "skipped"]
    assert data["halted"] == "halted: a canary did not pass"


def test_an_unreachable_host_is_reported_and_the_others_proceed(fleet, bundles, device_python, tmp_path, capsys):
    hosts, dirs = _inventory(tmp_path, names=("fleet-a", "fleet-dead", "fleet-c"))
    data = _ship_json(fleet, bundles["first"], hosts, device_python, tmp_path / "r.json", "--canary", "1",
                      "--max-failures", "2", code=1)
    outcome = {h["host"].split(":")[0]: h for h in data["hosts"]}
    assert outcome["fleet-dead"]["outcome"] == "unreachable" and "refused the connection" in outcome["fleet-dead"]["reason"]
    assert outcome["fleet-a"]["outcome"] == outcome["fleet-c"]["outcome"] == "passed"
    assert not dirs["fleet-dead"].exists()
    capsys.readouterr()
    assert main(_cli(fleet, device_python, "status", "--hosts", str(hosts))) == 1
    assert "unreachable" in capsys.readouterr().out


def _ship_json(fleet, bundle, hosts, device_python, report, *args, code=1) -> dict:
    got = main(_cli(fleet, device_python, "ship", str(bundle), "--hosts", str(hosts), "--speed-seconds", "0.5",
                    "--report", str(report), *args))
    assert got == code
    return read_json(report)
