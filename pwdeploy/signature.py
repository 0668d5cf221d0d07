"""OpenSSH signatures over a bundle's manifest.json (``ssh-keygen -Y sign/verify -n pwdeploy``).

The manifest lists the sha256 of every other file, so a good signature over it vouches for the whole
bundle. Keys are the SSH keys users already have; trust is an OpenSSH allowed-signers file on the device
(``DEPLOY_DIR/allowed_signers``). Standard library only and Python 3.8 compatible: the device verifier and
the `pwdeploy ship` installer use it, and ssh-keygen is on every Jetson.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from typing import Optional

try:
    from .errors import PwdeployError as _BaseError
except ImportError:  # pragma: no cover - loaded as a loose module by the isolated launcher
    _BaseError = Exception  # type: ignore[misc,assignment]

NAMESPACE = "pwdeploy"
ALLOWED_SIGNERS = "allowed_signers"  # default trust file: DEPLOY_DIR/allowed_signers
MAX_SIGNATURE_BYTES = 64 * 1024
_TIMEOUT = 60
_MAX_PRINCIPALS = 32  # principals tried per signature
_MAX_SIGNERS_BYTES = 4 << 20


class SignatureError(_BaseError):
    """A bundle is unsigned, wrongly signed, or signed by a key the allowed-signers file does not list."""


def _ssh_keygen() -> str:
    exe = shutil.which("ssh-keygen")
    if exe is None:
        raise SignatureError("ssh-keygen not found: install the OpenSSH client (sudo apt install openssh-client)")
    return exe


def sign(message: bytes, key: str) -> bytes:
    """The armored OpenSSH signature of ``message`` by private ``key`` (or its .pub with the key in an agent)."""
    key = os.path.expanduser(key)
    if not os.path.isfile(key):
        raise SignatureError("--sign-key {}: file not found: pass your SSH private key, e.g. ~/.ssh/id_ed25519"
                             .format(key))
    proc = _run([_ssh_keygen(), "-q", "-Y", "sign", "-f", key, "-n", NAMESPACE], message)
    if proc.returncode != 0 or b"BEGIN SSH SIGNATURE" not in proc.stdout:
        raise SignatureError("ssh-keygen could not sign with {} ({}): use an unencrypted key or load it into "
                             "ssh-agent".format(key, _last_line(proc.stderr)))
    return proc.stdout


def verify(message: bytes, signature: Optional[bytes], allowed_signers: str, what: str = "bundle") -> str:
    """The principal whose key signed ``message``; raises SignatureError when the signature is missing, bad,
    or from a key ``allowed_signers`` does not list for the pwdeploy namespace. The message says which:
    changed after signing, a key that is not listed, listed for another namespace, or expired."""
    if signature is None:
        raise SignatureError("{} is not signed but {} requires a signature: package it with "
                             "`pwdeploy package --sign-key KEY`".format(what, allowed_signers))
    if len(signature) > MAX_SIGNATURE_BYTES:
        raise SignatureError("{}: the signature file is too large to be an SSH signature".format(what))
    check_trust_file(allowed_signers, "allowed-signers file")
    exe = _ssh_keygen()
    with tempfile.TemporaryDirectory(prefix="pwdeploy-sig-") as tmp:
        sig_path = os.path.join(tmp, "manifest.json.sig")
        with open(sig_path, "wb") as fh:
            fh.write(signature)
        intact = _run([exe, "-Y", "check-novalidate", "-n", NAMESPACE, "-s", sig_path], message)
        if intact.returncode != 0:
            raise SignatureError("{}: the signature does not match manifest.json (changed after signing, or not a "
                                 "{!r} signature): refused; re-create the bundle with `pwdeploy package --sign-key "
                                 "KEY`".format(what, NAMESPACE))
        found = _run([exe, "-Y", "find-principals", "-s", sig_path, "-f", allowed_signers], b"")
        principals = [p for p in found.stdout.decode("utf-8", "replace").splitlines() if p.strip()]
        reasons = [found.stderr]
        # find-principals names only the first line that lists the key: try every principal the file names
        for principal in _unique(principals + listed_principals(allowed_signers))[:_MAX_PRINCIPALS]:
            checked = _run([exe, "-Y", "verify", "-f", allowed_signers, "-I", principal, "-n", NAMESPACE,
                            "-s", sig_path], message)
            if checked.returncode == 0:
                return principal
            reasons.append(checked.stderr)
    raise SignatureError(_refusal(what, allowed_signers, b"\n".join(reasons).decode("utf-8", "replace")))


def _refusal(what: str, allowed_signers: str, stderr: str) -> str:
    """Why ssh-keygen refused a signature that is intact: the key is expired, listed for another
    namespace, or not listed at all."""
    if "key has expired" in stderr or "not yet valid" in stderr:
        return ("{} is signed by a key whose entry in {} is expired or not yet valid (valid-before/valid-after): "
                "refused; renew the entry or sign with a current key".format(what, allowed_signers))
    if "not permitted for use in signature namespace" in stderr:
        return ("{} is signed by a key that {} lists, but not for the {!r} namespace: refused; add "
                "namespaces=\"{}\" to that key's line".format(what, allowed_signers, NAMESPACE, NAMESPACE))
    return ("{} is signed by a key that {} does not list: refused (add the signer's public key there, or "
            "package with a listed key)".format(what, allowed_signers))


def listed_principals(allowed_signers: str) -> list:
    """The literal principal names of an allowed-signers file (its first column; patterns skipped). Only
    names to try: ssh-keygen does every check."""
    names = []
    with open(allowed_signers, "rb") as fh:
        for raw in fh.read(_MAX_SIGNERS_BYTES).decode("utf-8", "replace").splitlines():
            line = raw.strip()
            if not line or line.startswith("#") or line.startswith('"'):
                continue
            for name in line.split(None, 1)[0].split(","):
                if name and not any(c in name for c in "*?!"):
                    names.append(name)
    return names


def _unique(items: list) -> list:
    seen = set()
    return [x for x in items if not (x in seen or seen.add(x))]


def check_trust_file(path: str, what: str = "allowed-signers file") -> str:
    """``path`` when it is a readable regular file; raises SignatureError otherwise (fails closed: a folder,
    a dangling symlink or an unreadable file must not mean "no signature required")."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        dangling = " (a dangling symlink)" if os.path.islink(path) else ""
        raise SignatureError("{} {}: cannot be read{} ({}): refused; make it a readable file listing the "
                             "signing keys".format(what, path, dangling, exc.strerror or exc)) from None
    if not stat.S_ISREG(mode):
        raise SignatureError("{} {} is not a regular file: refused; make it a readable file listing the signing "
                             "keys".format(what, path))
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise SignatureError("{} {}: cannot be read ({}): refused; fix its permissions".format(
            what, path, exc.strerror or exc)) from None
    return path


def default_allowed_signers(deploy_dir: str) -> Optional[str]:
    """DEPLOY_DIR/allowed_signers when anything exists at that path (it must then be a readable regular
    file: SignatureError otherwise), else None."""
    path = os.path.join(deploy_dir, ALLOWED_SIGNERS)
    return check_trust_file(path) if os.path.lexists(path) else None


def deploy_dir_of(bundle_dir: str) -> Optional[str]:
    """DEPLOY_DIR for a release folder DEPLOY_DIR/releases/<id> (or DEPLOY_DIR/current), else None."""
    path = os.path.abspath(bundle_dir)
    if os.path.islink(path):  # DEPLOY_DIR/current: followed once (a symlinked release is refused elsewhere)
        path = os.path.normpath(os.path.join(os.path.dirname(path), os.readlink(path)))
    parent = os.path.dirname(path)
    return os.path.dirname(parent) if os.path.basename(parent) == "releases" else None


def signers_for(bundle_dir: str, explicit: Optional[str]) -> Optional[str]:
    """The allowed-signers file that applies to ``bundle_dir``: ``explicit``, else DEPLOY_DIR's, else None."""
    if explicit:
        return check_trust_file(explicit, "--allowed-signers")
    deploy = deploy_dir_of(bundle_dir)
    return default_allowed_signers(deploy) if deploy else None


def _run(cmd, stdin: bytes) -> "subprocess.CompletedProcess":
    try:
        # a new session has no terminal: a passphrase prompt fails at once instead of hanging
        return subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=_TIMEOUT,
                              start_new_session=True)
    except subprocess.TimeoutExpired:
        raise SignatureError("ssh-keygen did not answer within {} s (a passphrase prompt?): use an unencrypted "
                             "key or ssh-agent".format(_TIMEOUT)) from None


def _last_line(err: bytes) -> str:
    lines = [ln.strip() for ln in err.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"
