"""`pwdeploy ship NAME.tar.gz user@host:DIR [--verify]`: install a bundle on a device over SSH.

Uses the system's OpenSSH (`ssh`, `scp`), so ~/.ssh/config, keys, agents and jump hosts work as they do in a
shell; -p/-i/-F/-o are passed through, and BatchMode makes a refused key fail at once instead of prompting.

Steps: (1) check the bundle here (safe member names, valid manifest) and hash it; (2) `mkdir -p DIR/.incoming`
and check python3 on the device; (3) `scp` the archive to DIR/.incoming/; (4) run the trust anchor
(pwdeploy-device.py, see pwdeploy.anchor: host code, sent over ssh's stdin and run `python3 -I -B -`) on the
device, which checks the archive's sha256, the signature, the release order, unpacks it safely into
DIR/releases/<bundle_id> and checks every file's sha256; (5) switch the DIR/current symlink atomically. With
--verify, the anchor checks the new release again and only then hands over to the bundle's device code for
the per-group gate; `current` is switched only if it PASSES; its result comes back as NAME.verify.json.
A refused or failing bundle leaves `current` where it was. --bootstrap also installs the anchor as
DIR/.pwdeploy/anchor/pwdeploy-device.py, for checks and rollbacks run on the device itself.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .anchor import anchor_source, anchor_sha256
from .device import RESULT_PREFIX
from .device.anchor import ANCHOR_PATH
from .device.install import DEFAULT_KEEP
from .errors import PwdeployError
from .fsutil import sha256_file, write_json
from .manifest import MANIFEST, SIGNATURE_FILE, parse_manifest
from .progress import console
from .safe_extract import ARCHIVE_ERRORS, check_archive, read_member, single_root
from .signature import check_trust_file, verify as verify_signature
from .validate import NON_NEGATIVE_INT, Range, check

_DEST = re.compile(r"^(?:(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):"
                   r"(?P<path>.+)$")
_SAFE_PATH = re.compile(r"^(~/|/)?[A-Za-z0-9._+-][A-Za-z0-9._+/-]*$|^~$")


class Unreachable(PwdeployError):
    """The device could not be reached or logged in to (a fleet report counts it apart from refusals)."""


@dataclass
class Destination:
    user: str | None
    host: str
    path: str

    @property
    def target(self) -> str:
        host = self.host.strip("[]")
        return f"{self.user}@{host}" if self.user else host

    @property
    def scp_target(self) -> str:
        host = f"[{self.host.strip('[]')}]" if ":" in self.host else self.host
        return f"{self.user}@{host}" if self.user else host

    def __str__(self) -> str:
        return f"{self.target}:{self.path}"


@dataclass
class SshSettings:
    port: int | None = None
    identity: str | None = None
    config: str | None = None
    options: list[str] = field(default_factory=list)
    connect_timeout: int = 10

    def common(self) -> list[str]:
        args = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}",
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
        if self.config:
            args += ["-F", self.config]
        if self.identity:
            args += ["-i", self.identity]
        for option in self.options:
            args += ["-o", option]
        return args

    def ssh(self, dest: Destination, command: str) -> list[str]:
        port = ["-p", str(self.port)] if self.port else []
        return ["ssh", *self.common(), *port, dest.target, "--", command]

    def scp(self, local: Path, dest: Destination, remote_path: str) -> list[str]:
        port = ["-P", str(self.port)] if self.port else []
        return ["scp", "-q", *self.common(), *port, str(local), f"{dest.scp_target}:{remote_path}"]


@dataclass
class ShipResult:
    destination: str
    bundle_id: str
    release: str
    current: str
    previous: str | None
    switched: bool = False
    verify: dict | None = None
    verify_path: Path | None = None

    @property
    def passed(self) -> bool | None:
        return None if self.verify is None else bool(self.verify.get("passed"))


def parse_destination(text: str) -> Destination:
    match = _DEST.match(text)
    if not match:
        raise PwdeployError(f"destination {text!r} must look like user@host:DIR (e.g. nvidia@jetson.local:deploy)")
    path = match.group("path")
    for what, value in (("host", match.group("host")), ("user", match.group("user") or ""), ("remote folder", path)):
        if value.startswith("-"):  # would reach ssh or mkdir as an option
            raise PwdeployError(f"{what} {value!r} starts with '-': refused (it would be read as an option); "
                                "name the device and folder plainly, e.g. nvidia@jetson.local:deploy")
    if not _SAFE_PATH.match(path) or "/../" in f"/{path}/":
        raise PwdeployError(f"remote folder {path!r}: use letters, digits and . _ + - / (optionally starting with "
                            "~/ or /), no spaces, quotes or '..'")
    return Destination(match.group("user"), match.group("host"), path.rstrip("/") or "/")


def inspect_bundle(bundle: Path, allowed_signers: str | None = None) -> dict:
    """The validated manifest of a bundle archive, after checking every member name and, with
    ``allowed_signers``, the manifest's signature (nothing is unpacked)."""
    if not bundle.is_file():
        raise PwdeployError(f"bundle not found: {bundle}: make one with `pwdeploy package RUN_DIR -o NAME.tar.gz`")
    try:
        root = single_root(check_archive(str(bundle), bundle.name), bundle.name)
        raw = read_member(str(bundle), f"{root}/{MANIFEST}")
        signature = read_member(str(bundle), f"{root}/{SIGNATURE_FILE}", max_bytes=1 << 20)
    except ARCHIVE_ERRORS as exc:
        raise PwdeployError(f"{bundle} is not a readable .tar.gz ({exc}): package it again") from None
    if raw is None:
        raise PwdeployError(f"{bundle} has no {root}/{MANIFEST}: not a pwdeploy bundle (use `pwdeploy package`)")
    manifest = parse_manifest(raw, f"{bundle.name}:{root}/{MANIFEST}")
    if allowed_signers:
        if not os.path.lexists(allowed_signers):
            raise PwdeployError(f"--allowed-signers {allowed_signers}: file not found")
        verify_signature(raw, signature, check_trust_file(allowed_signers, "--allowed-signers"), what=bundle.name)
    if manifest["bundle_id"] != root:
        raise PwdeployError(f"{bundle}: top folder {root!r} is not the manifest's bundle_id: package it again")
    return manifest


def installer_script() -> str:
    """Python source, run by the device's python3 from stdin: the trust anchor (install, switch, verify)."""
    return anchor_source()


def ship(bundle: str | Path, destination: str, *, verify: bool = False, port: int | None = None,
         identity: str | None = None, ssh_config: str | None = None, ssh_options: list[str] | None = None,
         remote_python: str = "python3", runner: str = "auto", upload_timeout: float | None = None,
         verify_timeout: float = 3600.0, keep: int = DEFAULT_KEEP, allowed_signers: str | None = None,
         allow_downgrade: bool = False, bootstrap: bool = False, speed_seconds: float | None = None,
         verify_path: Path | None = None, log: Callable[[str], None] | None = None) -> ShipResult:
    """Copy ``bundle`` to ``destination`` (user@host:DIR), install it as DIR/current, optionally verify it there.
    With ``allowed_signers`` the bundle's signature is checked here before anything is sent; the device
    checks it again against its own DIR/allowed_signers when that file exists. A release older than the
    device's for the same model is refused unless ``allow_downgrade``; ``bootstrap`` installs the trust
    anchor as DIR/.pwdeploy/anchor/pwdeploy-device.py first."""
    log = log or _default_log
    bundle = Path(bundle)
    dest = parse_destination(destination)
    _check_options(keep=keep, verify_timeout=verify_timeout, port=port, remote_python=remote_python, runner=runner,
                   files={"-i": identity, "-F": ssh_config})
    settings = SshSettings(port=port, identity=identity, config=ssh_config, options=list(ssh_options or []))
    manifest = inspect_bundle(bundle, allowed_signers)
    bundle_id = manifest["bundle_id"]
    digest = sha256_file(bundle)
    py = remote_python
    remote_dir = _prepare_remote(dest, settings, py)  # 1. the folder and python3 on the device
    if bootstrap:
        install_anchor(dest, settings, remote_dir, py, log)
    remote_archive = f"{remote_dir}/.incoming/{bundle_id}.tar.gz"

    # 2. upload (a partial upload is refused by the installer's sha256 check; `current` is untouched)
    size_mb = bundle.stat().st_size / 1e6
    log(f"copying {bundle.name} ({size_mb:.1f} MB) to {dest.target}:{remote_archive}")
    timeout = upload_timeout or max(300.0, size_mb * 10)
    out = _run(settings.scp(bundle, dest, remote_archive), dest, settings, timeout=timeout)
    _raise_for(out, dest, settings, "copying the bundle failed")

    # 3. install: unpack into releases/<id>, check every sha256; switch `current` now, or after the verify
    command = " ".join([py, "-I", "-B", "-", "install", shlex.quote(remote_archive), shlex.quote(remote_dir),
                        "--sha256", digest, "--remove-archive", "--keep", str(int(keep)), "--result-line"]
                       + (["--no-switch"] if verify else []) + (["--allow-downgrade"] if allow_downgrade else []))
    installed = _installer(settings, dest, command)
    release = installed["release"]
    shown = release[len(remote_dir) + 1:] if release.startswith(remote_dir + "/") else release
    result = ShipResult(destination=str(dest), bundle_id=bundle_id, release=release, current=installed["current"],
                        previous=installed.get("previous"), switched=bool(installed.get("switched")))
    was = f" (was {installed['previous']})" if installed.get("previous") else ""
    if not verify:
        log(f"installed {bundle_id} on {dest.target}: {remote_dir}/current -> {shown}{was}")
        return result

    # 4. the bundle's own verifier, on the device, in the new release; `current` moves only if it passes
    log(f"unpacked and checked {shown} on {dest.target}; verifying it there before switching `current`")
    result.verify = _verify_on_device(dest, settings, py, release, runner, verify_timeout, log, speed_seconds)
    result.verify_path = Path(verify_path) if verify_path else bundle.with_name(
        re.sub(r"(\.tar\.gz|\.tgz)$", "", bundle.name) + ".verify.json")
    write_json(result.verify_path, result.verify)
    _switch_if_passed(result, dest, settings, py, remote_dir, keep, allow_downgrade, shown, was, log)
    return result


def _switch_if_passed(result: ShipResult, dest: Destination, settings: SshSettings, py: str, remote_dir: str,
                      keep: int, allow_downgrade: bool, shown: str, was: str, log: Callable[[str], None]) -> None:
    """Point `current` at the verified release only when the device's gate passed; say what runs now."""
    release = result.release
    if result.verify.get("passed"):
        command = " ".join([py, "-I", "-B", "-", "switch", shlex.quote(release), shlex.quote(remote_dir), "--keep",
                            str(int(keep)), "--result-line"] + (["--allow-downgrade"] if allow_downgrade else []))
        _installer(settings, dest, command)
        result.switched = True
        log(f"device result: PASSED (saved to {result.verify_path}); {remote_dir}/current -> {shown}{was}")
    else:
        log(f"device result: FAILED (saved to {result.verify_path}); `current` not switched"
            + (f", still {result.previous}" if result.previous else ""))


def install_anchor(dest: Destination, settings: SshSettings, remote_dir: str, py: str,
                   log: Callable[[str], None]) -> str:
    """Install the trust anchor as DIR/.pwdeploy/anchor/pwdeploy-device.py (written beside, then renamed);
    returns its sha256 (the operator can pin it: `pwdeploy anchor` prints the same)."""
    path = f"{remote_dir}/{ANCHOR_PATH}"
    folder = path.rsplit("/", 1)[0]
    tmp = f"{path}.partial"
    command = (f"mkdir -p -- {shlex.quote(folder)} && cat > {shlex.quote(tmp)} && chmod 0755 {shlex.quote(tmp)} && "
               f"mv -f -- {shlex.quote(tmp)} {shlex.quote(path)} && {py} -I -c 'import hashlib, sys; "
               f"print(hashlib.sha256(open(sys.argv[1], \"rb\").read()).hexdigest())' {shlex.quote(path)}")
    out = _run(settings.ssh(dest, command), dest, settings, timeout=settings.connect_timeout + 60,
               stdin=anchor_source())
    _raise_for(out, dest, settings, "installing the trust anchor failed")
    digest = anchor_sha256()
    landed = (out.stdout.strip().splitlines() or [""])[-1].strip()
    if landed != digest:
        raise PwdeployError(f"{dest.target}:{path} has sha256 {landed[:12] or '?'}..., not the anchor's {digest[:12]}...: "
                            "the copy was damaged; run --bootstrap again")
    log(f"trust anchor installed: {dest.target}:{path} (sha256 {digest})")
    return digest


def run_anchor(dest: Destination, settings: SshSettings, py: str, command: str, *, timeout: float = 120.0) -> _Out:
    """Run the trust anchor (sent over stdin) on the device as ``command DEST_DIR`` (status, rollback); a
    connection failure raises, the anchor's own exit status and output come back."""
    out = _run(settings.ssh(dest, f"{py} -I -B - {command} {dest.path}"), dest, settings, timeout=timeout,
               stdin=installer_script())
    if out.returncode == 255:
        _raise_for(out, dest, settings, f"running `{command}` on the device failed")
    return out


def _prepare_remote(dest: Destination, settings: SshSettings, py: str) -> str:
    """Create DIR/.incoming, check the device's python (3.8+); returns DIR resolved on the device."""
    probe = (f"mkdir -p -- {dest.path}/.incoming && cd -- {dest.path} && pwd -P && "
             f"{py} -c 'import sys; sys.exit(0 if sys.version_info >= (3, 8) else 3)'")
    out = _run(settings.ssh(dest, probe), dest, settings, timeout=settings.connect_timeout + 60)
    if out.returncode == 127:
        raise PwdeployError(f"{py} not found on {dest.target}: install Python 3.8+ there (sudo apt install python3) "
                            "or pass --remote-python PATH")
    if out.returncode == 3:
        raise PwdeployError(f"{py} on {dest.target} is older than Python 3.8: install a newer python3 or pass "
                            "--remote-python PATH")
    _raise_for(out, dest, settings, "could not prepare the remote folder")
    remote_dir = out.stdout.strip().splitlines()[-1].strip()
    if not _SAFE_PATH.match(remote_dir):
        raise PwdeployError(f"{dest}: the remote folder resolves to {remote_dir!r}, which has characters pwdeploy "
                            "does not quote: choose a plain path")
    return remote_dir


def _verify_on_device(dest: Destination, settings: SshSettings, py: str, release: str, runner: str,
                      timeout: float, log: Callable[[str], None], speed_seconds: float | None = None) -> dict:
    """Verify ``release`` on the device with the trust anchor (sent over stdin); returns its result (``passed``
    decides the switch). The anchor refuses unlisted files and checks the signature (where the device has
    DIR/allowed_signers) and every hash before it imports anything from the release."""
    command = f"{py} -I -B - verify {shlex.quote(release)} --runner {runner} --result-line" + (
        "" if speed_seconds is None else f" --speed-seconds {float(speed_seconds)}")
    out = _run(settings.ssh(dest, command), dest, settings, timeout=timeout, on_line=log, stdin=installer_script())
    if out.returncode == 255:
        _raise_for(out, dest, settings, "running the verifier failed")
    remote = _result_line(out.stdout)
    if remote is None:
        raise PwdeployError(f"{dest.target}: device verify failed to run: "
                            f"{_error_line(out.stdout) or 'no result'} (exit {out.returncode}); `current` was not "
                            "switched")
    return remote


def _check_options(*, keep: int, verify_timeout: float, port: int | None, remote_python: str, runner: str,
                   files: dict) -> None:
    """Every option checked before anything connects (one line, exit 2)."""
    check("--keep", keep, NON_NEGATIVE_INT, allow_none=False)
    check("--verify-timeout", verify_timeout, Range(0.0, 7 * 86400.0, low_open=True), allow_none=False)
    check("--port", port, Range(1, 65535, integer=True))
    if not _SAFE_PATH.match(remote_python) or remote_python.startswith("-"):
        raise PwdeployError(f"--remote-python {remote_python!r}: give a plain path such as python3 or /usr/bin/python3")
    if runner not in ("auto", "tensorrt", "onnxruntime"):
        raise PwdeployError(f"--runner must be auto, tensorrt or onnxruntime, got {runner!r}")
    for what, path in files.items():
        if path and not Path(path).expanduser().is_file():
            raise PwdeployError(f"{what} {path}: file not found: pass an existing {'key' if what == '-i' else 'ssh config'} file")


def _installer(settings: SshSettings, dest: Destination, command: str) -> dict:
    """Run pwdeploy's installer (sent over stdin) on the device; its result dict, or a one-line error."""
    out = _run(settings.ssh(dest, command), dest, settings, timeout=600, stdin=installer_script())
    if out.returncode not in (0, 255):
        raise PwdeployError(f"{dest.target}: {_error_line(out.stderr) or 'the installer failed'}")
    _raise_for(out, dest, settings, "installing the bundle failed")
    installed = _result_line(out.stdout)
    if installed is None:
        raise PwdeployError(f"{dest.target}: the installer gave no result ({_error_line(out.stderr) or 'no output'})")
    return installed


@dataclass
class _Out:
    returncode: int
    stdout: str
    stderr: str


def _run(cmd: list[str], dest: Destination, settings: SshSettings, *, timeout: float, stdin: str | None = None,
         on_line: Callable[[str], None] | None = None) -> _Out:
    """Run ssh/scp with a hard timeout. With ``on_line``, stdout+stderr stream line by line (long engine
    builds show progress); the machine-readable result line is not echoed."""
    try:
        if on_line is None:
            proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
            return _Out(proc.returncode, proc.stdout, proc.stderr)
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        if stdin is not None:  # python reads the whole script before it runs: no output to drain meanwhile
            assert proc.stdin is not None
            proc.stdin.write(stdin)
            proc.stdin.close()
    except FileNotFoundError:
        raise PwdeployError(f"{cmd[0]} not found: install the OpenSSH client (Debian/Ubuntu: sudo apt install "
                            "openssh-client)") from None
    except subprocess.TimeoutExpired:
        raise Unreachable(f"{cmd[0]} to {dest.target} did not finish within {timeout:.0f} s: check the network "
                            "and the device, then ship again") from None
    fired = threading.Event()

    def stop() -> None:
        fired.set()
        proc.kill()

    timer = threading.Timer(timeout, stop)
    timer.start()
    lines = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if not line.startswith(RESULT_PREFIX) and not _is_noise(line):
                on_line(line.rstrip("\n"))
        proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if fired.is_set():
        raise PwdeployError(f"{cmd[0]} to {dest.target} ran longer than {timeout:.0f} s and was stopped: raise "
                            "--verify-timeout (a first engine build on a small Jetson takes minutes)")
    text = "".join(lines)
    return _Out(proc.returncode, text, text)


def _is_noise(line: str) -> bool:
    return line.startswith("Warning: Permanently added")


def _result_line(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            try:
                return json.loads(line[len(RESULT_PREFIX):])
            except ValueError:
                return None
    return None


def _error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not _is_noise(ln)]
    errors = [ln for ln in lines if ln.startswith("error:")]
    line = (errors or lines or [""])[-1]
    return line[len("error:"):].strip() if line.startswith("error:") else line


def _raise_for(out: _Out, dest: Destination, settings: SshSettings, what: str) -> None:
    if out.returncode == 0:
        return
    text = out.stderr + "\n" + out.stdout
    where = f"{dest.target}" + (f" port {settings.port}" if settings.port else "")
    if "Permission denied (" in text or "Too many authentication failures" in text:
        raise Unreachable(f"cannot log in to {where}: the key was refused: pass the right key with -i KEY (or "
                            "-F CONFIG), or add your public key to ~/.ssh/authorized_keys on the device")
    if "Could not resolve hostname" in text:
        raise Unreachable(f"cannot resolve host {dest.host!r}: check the name, or use the device's IP address")
    if "Connection refused" in text:
        raise Unreachable(f"{where} refused the connection: check the port (-p) and that sshd runs on the device")
    if "timed out" in text or "No route to host" in text or "Network is unreachable" in text:
        raise Unreachable(f"cannot reach {where}: check the address, the network and that the device is on")
    if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        raise PwdeployError(f"host key of {dest.host} is unknown or changed: run `ssh {dest.target}` once to check "
                            "and accept it, or fix ~/.ssh/known_hosts")
    if "Connection closed" in text or "kex_exchange_identification" in text or "Connection reset" in text:
        raise Unreachable(f"{where} closed the connection: is it an SSH server (check -p)?")
    detail = _error_line(text) or f"exit status {out.returncode}"
    raise PwdeployError(f"{what} on {dest.target}: {detail}")


def _default_log(line: str) -> None:
    console.print(line, markup=False, highlight=False)
