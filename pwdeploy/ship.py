"""`pwdeploy ship NAME.tar.gz user@host:DIR [--verify]`: install a bundle on a device over SSH.

Uses the system's OpenSSH (`ssh`, `scp`), so ~/.ssh/config, keys, agents and jump hosts work as they do in a
shell; -p/-i/-F/-o are passed through, and BatchMode makes a refused key fail at once instead of prompting.

Steps: (1) check the bundle here (safe member names, valid manifest) and hash it; (2) `mkdir -p DIR/.incoming`
and check python3 on the device; (3) `scp` the archive to DIR/.incoming/; (4) run pwdeploy's installer on
the device's python3 (its source goes over ssh's stdin: nothing needs to be installed there first), which
checks the archive's sha256, unpacks it safely into DIR/releases/<bundle_id> and checks every file's sha256;
(5) switch the DIR/current symlink atomically. With --verify, the bundle's own device verifier runs in the new
release first and `current` is switched only if it PASSES; its result comes back as NAME.verify.json.
A refused or failing bundle leaves `current` where it was.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .device import LAUNCHER, RESULT_PREFIX
from .device.install import DEFAULT_KEEP
from .errors import PwdeployError
from .fsutil import sha256_file, write_json
from .manifest import MANIFEST, SIGNATURE_FILE, parse_manifest
from .safe_extract import ARCHIVE_ERRORS, check_archive, read_member, single_root
from .signature import verify as verify_signature
from .validate import NON_NEGATIVE_INT, Range, check

_DEST = re.compile(r"^(?:(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):"
                   r"(?P<path>.+)$")
_SAFE_PATH = re.compile(r"^(~/|/)?[A-Za-z0-9._+-][A-Za-z0-9._+/-]*$|^~$")
# What runs the installer: the modules it needs, sent as source over ssh's stdin.
_INSTALLER_MODULES = (
    ("pwdeploy", "__init__.py", True),
    ("pwdeploy.errors", "errors.py", False),
    ("pwdeploy.safe_extract", "safe_extract.py", False),
    ("pwdeploy.manifest", "manifest.py", False),
    ("pwdeploy.signature", "signature.py", False),
    ("pwdeploy.device", "device/__init__.py", True),
    ("pwdeploy.device.install", "device/install.py", False),
)
_LOADER = '''
def _load():
    for name, is_pkg, source in SOURCES:
        module = types.ModuleType(name)
        module.__file__ = "<pwdeploy ship: %s>" % name
        module.__package__ = name if is_pkg else name.rpartition(".")[0]
        if is_pkg:
            module.__path__ = []
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)
        exec(compile(source, module.__file__, "exec"), module.__dict__)


_load()
sys.exit(sys.modules["pwdeploy.device.install"].main(sys.argv[1:]))
'''


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
        if not Path(allowed_signers).is_file():
            raise PwdeployError(f"--allowed-signers {allowed_signers}: file not found")
        verify_signature(raw, signature, allowed_signers, what=bundle.name)
    if manifest["bundle_id"] != root:
        raise PwdeployError(f"{bundle}: top folder {root!r} is not the manifest's bundle_id: package it again")
    return manifest


def installer_script() -> str:
    """Python source, run by the device's python3 from stdin, that installs an uploaded archive."""
    base = Path(__file__).resolve().parent
    lines = ["import sys", "import types", "", "SOURCES = ["]
    for name, rel, is_pkg in _INSTALLER_MODULES:
        lines.append(f"    ({name!r}, {is_pkg!r}, {(base / rel).read_text()!r}),")
    lines.append("]")
    return "\n".join(lines) + "\n" + _LOADER


def ship(bundle: str | Path, destination: str, *, verify: bool = False, port: int | None = None,
         identity: str | None = None, ssh_config: str | None = None, ssh_options: list[str] | None = None,
         remote_python: str = "python3", runner: str = "auto", upload_timeout: float | None = None,
         verify_timeout: float = 3600.0, keep: int = DEFAULT_KEEP, allowed_signers: str | None = None,
         log: Callable[[str], None] | None = None) -> ShipResult:
    """Copy ``bundle`` to ``destination`` (user@host:DIR), install it as DIR/current, optionally verify it there.
    With ``allowed_signers`` the bundle's signature is checked here before anything is sent; the device
    checks it again against its own DIR/allowed_signers when that file exists."""
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
    remote_archive = f"{remote_dir}/.incoming/{bundle_id}.tar.gz"

    # 2. upload (a partial upload is refused by the installer's sha256 check; `current` is untouched)
    size_mb = bundle.stat().st_size / 1e6
    log(f"copying {bundle.name} ({size_mb:.1f} MB) to {dest.target}:{remote_archive}")
    timeout = upload_timeout or max(300.0, size_mb * 10)
    out = _run(settings.scp(bundle, dest, remote_archive), dest, settings, timeout=timeout)
    _raise_for(out, dest, settings, "copying the bundle failed")

    # 3. install: unpack into releases/<id>, check every sha256; switch `current` now, or after the verify
    command = " ".join([py, "-", "install", shlex.quote(remote_archive), shlex.quote(remote_dir), "--sha256", digest,
                        "--remove-archive", "--keep", str(int(keep)), "--result-line"]
                       + (["--no-switch"] if verify else []))
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
    result.verify = _verify_on_device(dest, settings, py, release, runner, verify_timeout, log)
    result.verify_path = bundle.with_name(re.sub(r"(\.tar\.gz|\.tgz)$", "", bundle.name) + ".verify.json")
    write_json(result.verify_path, result.verify)
    if result.verify.get("passed"):
        command = " ".join([py, "-", "switch", shlex.quote(release), shlex.quote(remote_dir), "--keep", str(int(keep)),
                            "--result-line"])
        _installer(settings, dest, command)
        result.switched = True
        log(f"device result: PASSED (saved to {result.verify_path}); {remote_dir}/current -> {shown}{was}")
    else:
        log(f"device result: FAILED (saved to {result.verify_path}); `current` not switched"
            + (f", still {installed['previous']}" if installed.get("previous") else ""))
    return result


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
                      timeout: float, log: Callable[[str], None]) -> dict:
    """Run the isolated verifier in ``release`` on the device; returns its result (``passed`` decides the switch).
    It refuses unlisted files and checks hashes (and the signature, where the device has DIR/allowed_signers)
    before it imports anything from the release."""
    command = f"cd {shlex.quote(release)} && {py} -I -B {LAUNCHER} verify . --runner {runner} --result-line"
    out = _run(settings.ssh(dest, command), dest, settings, timeout=timeout, on_line=log)
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
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
    except FileNotFoundError:
        raise PwdeployError(f"{cmd[0]} not found: install the OpenSSH client (Debian/Ubuntu: sudo apt install "
                            "openssh-client)") from None
    except subprocess.TimeoutExpired:
        raise PwdeployError(f"{cmd[0]} to {dest.target} did not finish within {timeout:.0f} s: check the network "
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
        raise PwdeployError(f"cannot log in to {where}: the key was refused: pass the right key with -i KEY (or "
                            "-F CONFIG), or add your public key to ~/.ssh/authorized_keys on the device")
    if "Could not resolve hostname" in text:
        raise PwdeployError(f"cannot resolve host {dest.host!r}: check the name, or use the device's IP address")
    if "Connection refused" in text:
        raise PwdeployError(f"{where} refused the connection: check the port (-p) and that sshd runs on the device")
    if "timed out" in text or "No route to host" in text or "Network is unreachable" in text:
        raise PwdeployError(f"cannot reach {where}: check the address, the network and that the device is on")
    if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        raise PwdeployError(f"host key of {dest.host} is unknown or changed: run `ssh {dest.target}` once to check "
                            "and accept it, or fix ~/.ssh/known_hosts")
    if "Connection closed" in text or "kex_exchange_identification" in text or "Connection reset" in text:
        raise PwdeployError(f"{where} closed the connection: is it an SSH server (check -p)?")
    detail = _error_line(text) or f"exit status {out.returncode}"
    raise PwdeployError(f"{what} on {dest.target}: {detail}")


def _default_log(line: str) -> None:
    from .progress import console

    console.print(line, markup=False, highlight=False)
