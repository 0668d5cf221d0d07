"""The isolated device verifier: ``python3 -I -B BUNDLE/pwdeploy/device/launch.py verify BUNDLE``.

``-I``: neither the current folder, the script's folder, PYTHONPATH nor the user's site-packages are on the
path; ``-B``: no bytecode is written, and this script also points bytecode lookups elsewhere so that no
``__pycache__`` of the bundle is ever read. Before anything from the bundle is imported it checks, with the
standard library and the bundle's ``manifest.py`` (whose own sha256 is checked first):

1. manifest.json against its schema, and its OpenSSH signature when an allowed-signers file applies
   (``--allowed-signers FILE``, default DEPLOY_DIR/allowed_signers for DEPLOY_DIR/releases/<id>);
2. that no file or folder the manifest does not list is present (a ``numpy.py`` beside the code would
   otherwise be imported);
3. the sha256 of every listed file.

Only then is the bundle's folder put first on ``sys.path`` and ``pwdeploy.device`` run. Python 3.8, no torch.
"""

import hashlib
import importlib.util
import json
import os
import sys
import tempfile

EXIT_ERROR = 2  # pwdeploy.device.EXIT_ERROR (not importable before the checks)
_CODE = ("pwdeploy/manifest.py", "pwdeploy/signature.py")


def _fail(message):
    print("error: {}".format(message), file=sys.stderr)
    return EXIT_ERROR


def _load(root, rel, listed):
    """Import ``rel`` from the bundle as a loose module once its sha256 matches the manifest's entry."""
    entry = listed.get(rel) if isinstance(listed, dict) else None
    path = os.path.join(root, *rel.split("/"))
    if not isinstance(entry, dict) or os.path.islink(path) or not os.path.isfile(path):
        raise ValueError("{} is not listed in manifest.json or missing: not a pwdeploy bundle".format(rel))
    with open(path, "rb") as fh:
        if hashlib.sha256(fh.read()).hexdigest() != entry.get("sha256"):
            raise ValueError("{} does not match its sha256 in the manifest: nothing was run; copy the bundle "
                             "again".format(rel))
    spec = importlib.util.spec_from_file_location("_pwdeploy_preflight_" + rel.rsplit("/", 1)[-1][:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _option(argv, name):
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def preflight(root, allowed_signers=None):
    """Raise (one-line message) unless the bundle at ``root`` is exactly what its manifest lists."""
    path = os.path.join(root, "manifest.json")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(16 << 20)
        listed = json.loads(raw.decode("utf-8")).get("files")
    except (OSError, ValueError, AttributeError, RecursionError) as exc:
        raise ValueError("{}: not a readable pwdeploy manifest ({})".format(path, str(exc)[:80]))
    manifest_mod = _load(root, _CODE[0], listed)
    manifest = manifest_mod.parse_manifest(raw, path)
    signature_mod = _load(root, _CODE[1], listed)
    signers = signature_mod.signers_for(root, allowed_signers)
    signer = None
    if signers:
        signer = signature_mod.verify(raw, manifest_mod.read_signature(root), signers, what=os.path.basename(root))
    extra = manifest_mod.unlisted_entries(root, manifest)
    if extra:
        raise ValueError("{} is in the bundle but not listed in its manifest: refused before running anything "
                         "(remove it, or ship the bundle again)".format(extra[0]))
    problems = manifest_mod.check_files(root, manifest)
    if problems:
        raise ValueError("{}: nothing was run; copy the bundle again".format(problems[0]))
    return signer, signers


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not (sys.flags.isolated and sys.flags.dont_write_bytecode):
        os.execv(sys.executable, [sys.executable, "-I", "-B", os.path.abspath(__file__)] + argv)
    sys.pycache_prefix = tempfile.mkdtemp(prefix="pwdeploy-nocache-")  # never read the bundle's bytecode
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if len(argv) < 2 or argv[0] != "verify":
        return _fail("usage: python3 -I -B BUNDLE/pwdeploy/device/launch.py verify BUNDLE [options]")
    if os.path.realpath(argv[1]) != os.path.realpath(root):
        return _fail("{} is not the bundle this verifier belongs to ({}): run that bundle's own "
                     "pwdeploy/device/launch.py".format(argv[1], root))
    try:
        signer, signers = preflight(root, _option(argv, "--allowed-signers"))
    except Exception as exc:  # SignatureError/ManifestError of the loose modules derive from Exception
        if "--debug" in argv:
            raise
        return _fail(exc)
    print("preflight: no unlisted files, every sha256 matches; signature: {}".format(
        "good, signed by {} ({})".format(signer, signers) if signer else "not checked (no allowed_signers)"),
        flush=True)
    sys.path.insert(0, root)
    from pwdeploy.device.__main__ import main as device_main

    return device_main(argv)


if __name__ == "__main__":
    sys.exit(main())
