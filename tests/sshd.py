"""A real OpenSSH server on 127.0.0.1 for the ship tests, started and always stopped by the test.

Debian's ``openssh-server`` provides /usr/sbin/sshd (``.ci/run`` installs it). The server runs in the
foreground (-D) as the current user with its own host key, config and authorized_keys in a temp folder, on a
free port; a client key is made for the test and an ssh config (passed with -F) names the host
``pwdeploy-test``. Every subprocess has a timeout.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")


def sshd_path() -> str | None:
    for path in SSHD_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("sshd")


def missing_reason() -> str | None:
    """Why the ship tests cannot run here, or None."""
    if sshd_path() is None:
        return "OpenSSH server not installed (apt-get install openssh-server; .ci/run does this)"
    for tool in ("ssh", "scp", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install openssh-client)"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path, comment: str = "pwdeploy-test") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, timeout=30, capture_output=True)
    return path


@dataclass
class SshServer:
    host: str
    port: int
    user: str
    key: Path  # private key authorised on the server
    client_config: Path  # ssh -F file: Host pwdeploy-test -> this server, with key and no host-key prompts
    alias: str
    home: Path
    log: Path

    def client_options(self) -> list[str]:
        """-o options for a client that does not use client_config (explicit -p/-i tests)."""
        return ["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "LogLevel=ERROR", "IdentitiesOnly=yes"]


@contextlib.contextmanager
def running_sshd(tmp: Path, *, start_timeout: float = 15.0) -> Iterator[SshServer]:
    tmp = Path(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    os.chmod(tmp, 0o700)
    host_key = keygen(tmp / "host_key")
    client_key = keygen(tmp / "client_key")
    authorized = tmp / "authorized_keys"
    authorized.write_text((tmp / "client_key.pub").read_text())
    os.chmod(authorized, 0o600)
    port = free_port()
    user = getpass.getuser()
    log = tmp / "sshd.log"
    config = tmp / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {host_key}",
        f"PidFile {tmp / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "PermitRootLogin prohibit-password",
        f"AllowUsers {user}",
        "PrintMotd no",
        "Subsystem sftp internal-sftp",
        "LogLevel ERROR",
        "",
    ]))
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege-separation folder sshd insists on
    client_config = tmp / "ssh_config"
    alias = "pwdeploy-test"
    client_config.write_text("\n".join([
        f"Host {alias}",
        "  HostName 127.0.0.1",
        f"  Port {port}",
        f"  User {user}",
        f"  IdentityFile {client_key}",
        "  IdentitiesOnly yes",
        "  StrictHostKeyChecking no",
        "  UserKnownHostsFile /dev/null",
        "  LogLevel ERROR",
        "",
    ]))
    with open(log, "wb") as log_fh:
        proc = subprocess.Popen([sshd_path(), "-D", "-e", "-f", str(config)], stdout=log_fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        _wait_for_port(port, proc, log, start_timeout)
        yield SshServer(host="127.0.0.1", port=port, user=user, key=client_key, client_config=client_config,
                        alias=alias, home=Path(os.path.expanduser("~")), log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"sshd did not listen on port {port} within {timeout} s: {log.read_text(errors='replace')[-2000:]}")
