"""`pwdeploy ship` against a real OpenSSH server on 127.0.0.1 started by the test, with a key made for it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sshd  # noqa: E402
from run_fixture import damage_classifier, extract, read_json, rehash, repack, tiny_bundle_run  # noqa: E402

pytestmark = pytest.mark.skipif(sshd.missing_reason() is not None, reason=str(sshd.missing_reason()))

from pwdeploy import ship as ship_module  # noqa: E402
from pwdeploy.cli import main  # noqa: E402
from pwdeploy.errors import PwdeployError  # noqa: E402
from pwdeploy.package import package_run  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with sshd.running_sshd(tmp_path_factory.mktemp("sshd")) as srv:
        yield srv


@pytest.fixture(autouse=True)
def no_agent(monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # only the test's keys may log in


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """Three bundles of one run with distinct bundle ids: a good one, a second good one, a damaged-weights one."""
    run = tiny_bundle_run(tmp_path_factory.getbasetemp())
    out = tmp_path_factory.mktemp("ship-bundles")
    first = package_run(run, out / "first.tar.gz", quiet=True, release=10)
    second_root = extract(first, out / "second")
    second = repack(second_root, out / "second.tar.gz", bundle_id=second_root.name + "-b", release=11)
    bad_root = extract(first, out / "bad")
    damage_classifier(bad_root / "model.onnx")
    rehash(bad_root, ["model.onnx"])
    bad = repack(bad_root, out / "bad.tar.gz", bundle_id=bad_root.name + "-damaged", release=12)
    tampered_root = extract(first, out / "tampered")
    data = bytearray((tampered_root / "model.onnx").read_bytes())
    data[-100] ^= 0x01  # same size, different content: only the sha256 can tell
    (tampered_root / "model.onnx").write_bytes(bytes(data))
    tampered = repack(tampered_root, out / "tampered.tar.gz", bundle_id=tampered_root.name + "-tampered", release=13)
    ids = {name: read_json(extract(path, out / f"ids-{name}") / "manifest.json")["bundle_id"]
           for name, path in (("first", first), ("second", second), ("bad", bad), ("tampered", tampered))}
    return {"first": first, "second": second, "bad": bad, "tampered": tampered, "ids": ids}


@pytest.fixture(scope="module")
def device_python(tmp_path_factory):
    """The 'device' python3: this interpreter (numpy + onnxruntime) with torch made unimportable."""
    tmp = tmp_path_factory.mktemp("devpy")
    (tmp / "block" / "torch").mkdir(parents=True)
    (tmp / "block" / "torch" / "__init__.py").write_text('raise ImportError("no torch on the device")\n')
    wrapper = tmp / "python3"
    # `-I -B SCRIPT ...` / `-I -B - ...` (the trust anchor, from a file or stdin) ignores PYTHONPATH: put the
    # blocker on its path explicitly
    isolated = ("import sys; sys.path.insert(0, sys.argv[1]); sys.argv = sys.argv[2:]; "
                "src = sys.stdin.read() if sys.argv[0] == '-' else open(sys.argv[0]).read(); "
                "exec(compile(src, sys.argv[0], 'exec'), {'__name__': '__main__'})")
    wrapper.write_text(f'#!/bin/sh\nif [ "$1" = "-I" ] && [ "$2" = "-B" ]; then shift 2; exec {sys.executable} -I -B '
                       f'-c "{isolated}" {tmp / "block"} "$@"; fi\n'
                       f'exec env PYTHONPATH={tmp / "block"} PYTHONNOUSERSITE=1 {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def _releases(deploy: Path) -> list:
    """Release folders (releases/.order, the install-order record, is not one)."""
    return [name for name in os.listdir(deploy / "releases") if name != ".order"]


def _via_config(server, deploy: Path) -> dict:
    return {"destination": f"{server.alias}:{deploy}", "ssh_config": str(server.client_config)}


def _explicit(server, deploy: Path, key: Path | None = None) -> dict:
    return {"destination": f"{server.user}@127.0.0.1:{deploy}", "port": server.port,
            "identity": str(key or server.key), "ssh_options": server.client_options()}


def test_clean_ship_and_remote_verify(server, bundles, device_python, tmp_path):
    deploy = tmp_path / "deploy"
    lines = []
    result = ship_module.ship(bundles["first"], verify=True, remote_python=device_python, log=lines.append,
                              **_via_config(server, deploy))
    first = bundles["ids"]["first"]
    assert result.passed is True and result.switched is True
    assert os.readlink(deploy / "current") == f"releases/{first}"
    assert (deploy / "current" / "manifest.json").is_file() and not list((deploy / ".incoming").iterdir())
    assert result.verify["bundle_id"] == first and result.verify["runner"]["runtime"] == "onnxruntime"
    # the bundle's own verifier ran on the "device", from the release folder
    assert Path(result.verify["verifier"]["code_dir"]).resolve() == (deploy / "releases" / first / "pwdeploy" / "device")
    assert read_json(result.verify_path)["passed"] is True and result.verify_path.parent == bundles["first"].parent
    assert any(line.rstrip().endswith("PASSED") and line.split()[:1] == ["minority"] for line in lines)

    # a second bundle, explicit -p/-i/-o instead of an ssh config, no verify: `current` moves, the old stays
    result = ship_module.ship(bundles["second"], log=lines.append, **_explicit(server, deploy))
    assert result.switched and result.verify is None and result.previous == f"releases/{first}"
    assert os.readlink(deploy / "current") == f"releases/{bundles['ids']['second']}"
    assert sorted(_releases(deploy)) == sorted([first, bundles["ids"]["second"]])

    # the older first bundle again: refused as a downgrade (nothing moves, nothing is deleted) ...
    with pytest.raises(PwdeployError, match="release 10 .* older than release 11 .*--allow-downgrade"):
        ship_module.ship(bundles["first"], keep=1, log=lines.append, **_explicit(server, deploy))
    assert os.readlink(deploy / "current") == f"releases/{bundles['ids']['second']}"
    # ... unless asked: --keep 1 then leaves only `current` (nothing is older for it to fall back to)
    os.utime(deploy / "releases" / first, (1, 1))  # so reuse of the old folder cannot look newest by accident
    result = ship_module.ship(bundles["first"], keep=1, allow_downgrade=True, log=lines.append,
                              **_explicit(server, deploy))
    assert result.switched and _releases(deploy) == [first]


def test_bundle_corrupted_in_transit_is_refused_and_current_is_kept(server, bundles, tmp_path, monkeypatch):
    deploy = tmp_path / "deploy"
    ship_module.ship(bundles["first"], log=lambda _: None, **_via_config(server, deploy))
    good = f"releases/{bundles['ids']['first']}"
    assert os.readlink(deploy / "current") == good

    real_run = ship_module._run

    def corrupting_run(cmd, *args, **kwargs):  # flips one byte of the upload as it lands on the "device"
        out = real_run(cmd, *args, **kwargs)
        if cmd[0] == "scp":
            landed = Path(cmd[-1].split(":", 1)[1])
            data = bytearray(landed.read_bytes())
            data[len(data) // 3] ^= 0x01
            landed.write_bytes(bytes(data))
        return out

    monkeypatch.setattr(ship_module, "_run", corrupting_run)
    with pytest.raises(PwdeployError) as info:
        ship_module.ship(bundles["second"], log=lambda _: None, **_via_config(server, deploy))
    message = str(info.value)
    assert "arrived damaged" in message and f"`current` still points at {good}" in message and "\n" not in message
    assert os.readlink(deploy / "current") == good
    assert sorted(_releases(deploy)) == [bundles["ids"]["first"]]  # no half release, no staging

    monkeypatch.setattr(ship_module, "_run", real_run)
    with pytest.raises(PwdeployError, match="does not match its sha256"):  # tampered inside, re-tarred
        ship_module.ship(bundles["tampered"], log=lambda _: None, **_via_config(server, deploy))
    assert os.readlink(deploy / "current") == good
    assert sorted(_releases(deploy)) == [bundles["ids"]["first"]]


def test_failed_device_gate_does_not_switch_current(server, bundles, device_python, tmp_path, capsys):
    deploy = tmp_path / "deploy"
    ship_module.ship(bundles["first"], log=lambda _: None, **_via_config(server, deploy))
    good = f"releases/{bundles['ids']['first']}"
    code = main(["ship", str(bundles["bad"]), f"{server.alias}:{deploy}", "-F", str(server.client_config),
                 "--verify", "--remote-python", device_python])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1 and "device verify FAILED" in err and f"still points at {good}" in err
    assert os.readlink(deploy / "current") == good
    verify = read_json(bundles["bad"].with_name("bad.verify.json"))
    assert verify["passed"] is False and verify["integrity"]["passed"] is True and verify["gate"]["failed_groups"]


def test_wrong_port_or_host_gives_one_line_error(server, bundles, tmp_path, capsys):
    closed = sshd.free_port()
    code = main(["ship", str(bundles["first"]), f"{server.user}@127.0.0.1:{tmp_path}/deploy", "-p", str(closed),
                 "-i", str(server.key), *sum((["-o", o] for o in server.client_options()), [])])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error:") and f"port {closed} refused the connection" in err and "-p" in err
    assert not (tmp_path / "deploy").exists()


def test_wrong_key_gives_one_line_error(server, bundles, tmp_path, capsys):
    stranger = sshd.keygen(tmp_path / "stranger")
    code = main(["ship", str(bundles["first"]), f"{server.user}@127.0.0.1:{tmp_path}/deploy", "-p", str(server.port),
                 "-i", str(stranger), *sum((["-o", o] for o in server.client_options()), [])])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "cannot log in" in err and "key was refused" in err and "-i KEY" in err
    assert not (tmp_path / "deploy").exists()


def test_bad_destination_and_missing_files_are_refused_before_connecting(bundles, tmp_path, capsys):
    assert main(["ship", str(bundles["first"]), "jetson-without-dir"]) == 2
    assert "user@host:DIR" in capsys.readouterr().err
    assert main(["ship", str(bundles["first"]), "nvidia@jetson:dir with space"]) == 2
    assert "no spaces" in capsys.readouterr().err
    assert main(["ship", str(tmp_path / "nope.tar.gz"), "nvidia@jetson:deploy"]) == 2
    assert "bundle not found" in capsys.readouterr().err
    assert main(["ship", str(bundles["first"]), "nvidia@jetson:deploy", "-i", str(tmp_path / "nokey")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_a_device_with_allowed_signers_takes_only_signed_bundles(server, bundles, device_python, tmp_path, capsys):
    """DIR/allowed_signers on the device: an unsigned bundle is refused there (and, with --allowed-signers, here
    before it is sent); a signed one installs, verifies with the isolated verifier and reports its signer."""
    key = sshd.keygen(tmp_path / "release")
    signed = package_run(tiny_bundle_run(tmp_path), tmp_path / "signed.tar.gz", quiet=True, sign_key=str(key))
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    signers = deploy / "allowed_signers"
    signers.write_text(f'ci@example.com namespaces="pwdeploy" {Path(str(key) + ".pub").read_text()}')
    target = [f"{server.alias}:{deploy}", "-F", str(server.client_config)]
    assert main(["ship", str(bundles["first"]), *target]) == 2
    err = capsys.readouterr().err
    assert "is not signed" in err and "nothing was deployed" in err and len(err.strip().splitlines()) == 1
    assert not (deploy / "current").exists()
    assert main(["ship", str(bundles["first"]), *target, "--allowed-signers", str(signers)]) == 2
    assert "is not signed" in capsys.readouterr().err
    assert not list((deploy / ".incoming").iterdir())
    result = ship_module.ship(signed, verify=True, remote_python=device_python, allowed_signers=str(signers),
                              log=lambda _: None, **_via_config(server, deploy))
    assert result.passed and result.switched and result.verify["signature"]["signer"] == "ci@example.com"
