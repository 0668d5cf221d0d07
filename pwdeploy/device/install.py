"""Install a bundle archive on the device: unpack it into a new release folder, check it, switch `current`.

Layout under DEPLOY_DIR::

    releases/<bundle_id>/    one folder per installed bundle; after each switch the newest KEEP (default 3,
                             `current` always among them) stay for rollback, older ones are removed
    current -> releases/<bundle_id>
    .incoming/               where `pwdeploy ship` uploads archives

`current` is switched only after the archive's own sha256 (when given), the manifest's schema and every
file's sha256 check out, by renaming a new symlink over the old one (atomic on POSIX): a damaged or
interrupted transfer never replaces a working deployment. Standard library only, Python 3.8 compatible:
`pwdeploy ship` sends this module (with safe_extract and manifest) to the device's python3 over SSH.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tarfile
import tempfile
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..errors import PwdeployError
from ..fsutil import sha256_file, write_text
from ..manifest import MANIFEST, SIGNATURE_FILE, allowed_paths, check_files, parse_manifest, read_manifest, \
    read_signature, unlisted_entries
from ..safe_extract import ARCHIVE_ERRORS, check_archive, read_member, safe_extract, single_root
from ..signature import default_allowed_signers, verify as verify_signature
from . import releases as ordered
from .args import Parser
from .releases import CURRENT, RELEASES
from .state import STATE

DEFAULT_KEEP = 3  # current + two to roll back to: a Jetson's eMMC is small
INCOMING = ".incoming"
ORDER = ".order"  # releases/.order: release names, oldest install first (pruning follows it, not mtimes)


class InstallError(PwdeployError):
    """The archive was refused; `current` was not touched."""


def current_release(deploy_dir: str) -> Optional[str]:
    link = os.path.join(deploy_dir, CURRENT)
    return os.readlink(link) if os.path.islink(link) else None


def install(archive: str, deploy_dir: str, *, expected_sha256: Optional[str] = None, remove_archive: bool = False,
            switch_current: bool = True, keep: int = DEFAULT_KEEP, allowed_signers: Optional[str] = None,
            allow_downgrade: bool = False, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Unpack ``archive`` into DEPLOY_DIR/releases/<bundle_id> and (unless ``switch_current`` is False, used
    to verify a release before it goes live) point DEPLOY_DIR/current at it. With an allowed-signers file
    (``allowed_signers``, default DEPLOY_DIR/allowed_signers when it exists) the manifest's signature must be
    good; every tar member is compared with the manifest before a byte is written. A release older than
    the one installed for the same model is refused unless ``allow_downgrade``."""
    archive = os.path.abspath(os.path.expanduser(archive))
    deploy_dir = os.path.abspath(os.path.expanduser(deploy_dir))
    name = os.path.basename(archive)
    previous = current_release(deploy_dir)
    untouched = "`current` still points at {}".format(previous) if previous else "nothing was deployed"
    _check_install_inputs(archive, keep, allowed_signers, expected_sha256, untouched)
    root, raw, manifest = _checked_before_unpacking(archive, deploy_dir, allowed_signers, untouched, log)
    bundle_id = manifest["bundle_id"]
    _check_order(deploy_dir, manifest, raw, allow_downgrade, untouched, log)

    releases = _releases_folder(deploy_dir, untouched)
    staging = tempfile.mkdtemp(prefix=".unpack-", dir=releases)
    try:
        try:
            safe_extract(archive, os.path.join(staging, "x"))
        except PwdeployError as exc:
            raise InstallError("{}; {}".format(exc, untouched)) from None
        bundle = os.path.join(staging, "x", root)
        problems = check_files(bundle, manifest)
        if problems:
            raise InstallError("{}: {}{}: refused, {}; ship it again".format(
                name, problems[0], " (and {} more)".format(len(problems) - 1) if len(problems) > 1 else "", untouched))
        release = _release_dir(releases, bundle_id, raw, manifest, untouched)
        if os.path.isdir(release):
            log("release {} is already installed with the same manifest: reusing it".format(release))
        else:
            os.rename(bundle, release)
        _record_install(releases, os.path.basename(release))
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    if remove_archive:
        os.unlink(archive)
    removed = []  # type: List[str]
    if switch_current:
        _switch_current(deploy_dir, release)
        log("installed {} -> {}".format(os.path.join(deploy_dir, CURRENT), os.path.relpath(release, deploy_dir)))
        removed = prune_releases(deploy_dir, keep, log=log)
    else:
        log("unpacked and checked {} (`current` not switched yet)".format(release))
    return {"bundle_id": bundle_id, "release": release, "current": os.path.join(deploy_dir, CURRENT),
            "previous": previous, "switched": bool(switch_current), "files": len(manifest["files"]),
            "removed": removed}


def _check_install_inputs(archive: str, keep: int, allowed_signers: Optional[str], expected_sha256: Optional[str],
                          untouched: str) -> None:
    name = os.path.basename(archive)
    if keep < 0:
        raise InstallError("--keep must be 0 (keep all) or more, got {}".format(keep))
    if allowed_signers and not os.path.lexists(allowed_signers):
        raise InstallError("--allowed-signers {}: file not found; {}".format(allowed_signers, untouched))
    if not os.path.isfile(archive):
        raise InstallError("{} not found on the device: upload it again; {}".format(archive, untouched))
    if expected_sha256:
        actual = sha256_file(archive)
        if actual != expected_sha256:
            raise InstallError("{} arrived damaged (sha256 {}... differs from the sent {}...): refused, {}; "
                               "ship it again".format(name, actual[:12], expected_sha256[:12], untouched))


def _checked_before_unpacking(archive: str, deploy_dir: str, allowed_signers: Optional[str], untouched: str,
                              log: Callable[[str], None]):
    """(root folder, raw manifest, manifest) of ``archive`` once its members, manifest and signature are
    checked; nothing has been written yet."""
    name = os.path.basename(archive)
    try:
        members = check_archive(archive, name)
        root = single_root(members, name)
        raw = read_member(archive, root + "/" + MANIFEST)
        signature = read_member(archive, root + "/" + SIGNATURE_FILE, max_bytes=1 << 20)
    except ARCHIVE_ERRORS as exc:
        raise InstallError("{} is not a readable bundle ({}): refused, {}; ship it again".format(name, exc, untouched)) from None
    except PwdeployError as exc:
        raise InstallError("{}; {}".format(exc, untouched)) from None
    if raw is None:
        raise InstallError("{} has no {}/{}: not a pwdeploy bundle; {}".format(name, root, MANIFEST, untouched))
    try:
        manifest = parse_manifest(raw, "{}:{}/{}".format(name, root, MANIFEST))
        signers = allowed_signers or default_allowed_signers(deploy_dir)
        signer = verify_signature(raw, signature, signers, what=name) if signers else None
    except PwdeployError as exc:
        raise InstallError("{}; refused, {}".format(exc, untouched)) from None
    if root != manifest["bundle_id"]:
        raise InstallError("{}: top folder {!r} is not the manifest's bundle_id {!r}: refused, {}".format(
            name, root, manifest["bundle_id"], untouched))
    problem = member_problem(members, root, manifest)
    if problem:
        raise InstallError("{}: {}: refused before unpacking, {}; re-create the bundle with `pwdeploy package`"
                           .format(name, problem, untouched))
    if signer:
        log("signature: good, signed by {} ({})".format(signer, signers))
    return root, raw, manifest


def _check_order(deploy_dir: str, manifest: Dict[str, Any], raw: bytes, allow_downgrade: bool, untouched: str,
                 log: Callable[[str], None]) -> None:
    problem = ordered.order_problem(deploy_dir, manifest, raw)
    if problem and not allow_downgrade:
        raise InstallError("{}; {}".format(problem, untouched))
    if problem:
        log("warning: {} (allowed by --allow-downgrade)".format(problem.split(": refused")[0]))


def _releases_folder(deploy_dir: str, untouched: str) -> str:
    """DEPLOY_DIR/releases, created when missing; a symlink there is refused (releases must live inside)."""
    releases = os.path.join(deploy_dir, RELEASES)
    if os.path.islink(releases):
        raise InstallError("{} is a symlink: refused (releases must be real folders inside {}); {}".format(
            releases, deploy_dir, untouched))
    os.makedirs(releases, exist_ok=True)
    return releases


def verified_release(release: str, deploy_dir: str) -> Tuple[bytes, Dict[str, Any]]:
    """(raw manifest, manifest) of an installed release once its signature (where DEPLOY_DIR/allowed_signers
    applies), every sha256 and the absence of unlisted files check out; InstallError (one line) otherwise."""
    releases = os.path.join(deploy_dir, RELEASES)
    if os.path.dirname(release) != releases or os.path.islink(release) or not os.path.isdir(release):
        raise InstallError("{} is not a release folder under {} (symlinks are refused): install the bundle "
                           "first".format(release, releases))
    try:
        raw = read_manifest(release)
        manifest = parse_manifest(raw, os.path.join(release, MANIFEST))
        signers = default_allowed_signers(deploy_dir)
        if signers:
            verify_signature(raw, read_signature(release), signers, what=release)
    except PwdeployError as exc:
        raise InstallError(str(exc)) from None
    extra = unlisted_entries(release, manifest)
    problems = ["{} is not listed in its manifest".format(e) for e in extra] + check_files(release, manifest)
    if problems:
        raise InstallError("{}: {}".format(release, problems[0]))
    return raw, manifest


def switch(release: str, deploy_dir: str, *, keep: int = DEFAULT_KEEP, allow_downgrade: bool = False,
           log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Point DEPLOY_DIR/current at an installed release, after checking its manifest, signature and hashes
    again (and that it is not older than `current`, unless ``allow_downgrade``)."""
    deploy_dir = os.path.abspath(os.path.expanduser(deploy_dir))
    release = os.path.abspath(os.path.expanduser(release))
    previous = current_release(deploy_dir)
    untouched = "`current` still points at {}".format(previous)
    try:
        raw, manifest = verified_release(release, deploy_dir)
    except InstallError as exc:
        raise InstallError("{}: refused, {}".format(exc, untouched)) from None
    _check_order(deploy_dir, manifest, raw, allow_downgrade, "refused, " + untouched, log)
    _switch_current(deploy_dir, release)
    log("switched {} -> {}".format(os.path.join(deploy_dir, CURRENT), os.path.relpath(release, deploy_dir)))
    removed = prune_releases(deploy_dir, keep, log=log)
    return {"bundle_id": manifest["bundle_id"], "release": release, "current": os.path.join(deploy_dir, CURRENT),
            "previous": previous, "switched": True, "files": len(manifest["files"]), "removed": removed}


def rollback(deploy_dir: str, *, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Switch DEPLOY_DIR/current to the previous verified release: the newest installed release of the same
    model with a lower release number whose signature and hashes check out (unverifiable ones are skipped
    and named). Removes nothing and writes nothing into any release."""
    deploy_dir = os.path.abspath(os.path.expanduser(deploy_dir))
    order = _read_order(os.path.join(deploy_dir, RELEASES))
    now = ordered.current(deploy_dir, order)
    if now is None:
        raise InstallError("{} has no `current` release to roll back from: install a bundle first".format(deploy_dir))
    skipped = []  # type: List[Dict[str, str]]
    for candidate in ordered.older_than_current(deploy_dir, order):
        try:
            verified_release(candidate["path"], deploy_dir)
        except InstallError as exc:
            skipped.append({"release": "{}/{}".format(RELEASES, candidate["name"]), "reason": str(exc)})
            log("skipping {}: {}".format(candidate["name"], exc))
            continue
        _switch_current(deploy_dir, candidate["path"])
        log("rolled back {} -> {}/{} (release {} -> {})".format(os.path.join(deploy_dir, CURRENT), RELEASES,
                                                               candidate["name"], now["release"], candidate["release"]))
        return {"rolled_back": True, "deploy_dir": deploy_dir, "model": now["model"],
                "from": _public(now), "to": _public(candidate), "skipped": skipped}
    raise InstallError("no earlier verified release of model {!r} to roll back to under {} (current: {}/{}, release "
                       "{}{}): nothing was changed".format(now["model"], os.path.join(deploy_dir, RELEASES), RELEASES,
                                                          now["name"], now["release"],
                                                          "; {} unverifiable skipped".format(len(skipped)) if skipped else ""))


def _public(entry: Dict[str, Any]) -> Dict[str, Any]:
    return {"release": "{}/{}".format(RELEASES, entry["name"]), "bundle_id": entry["bundle_id"],
            "release_number": entry["release"]}


def prune_releases(deploy_dir: str, keep: int, *, log: Callable[[str], None] = print) -> List[str]:
    """Remove all but the ``keep`` most recently installed releases, never `current` nor the release a
    `rollback` would switch to (``keep`` 0: keep all).
    Install order comes from releases/.order (verifying a release again does not make it newer); releases
    installed before that record existed count as older, by folder mtime. Only folders that hold a
    manifest are releases; anything else under releases/ is left alone."""
    if keep < 0:
        raise InstallError("--keep must be 0 (keep all) or more, got {}".format(keep))
    if keep == 0:
        return []
    releases = os.path.join(deploy_dir, RELEASES)
    current = os.path.realpath(os.path.join(deploy_dir, CURRENT))
    back = ordered.fallback(deploy_dir, _read_order(releases))
    protected = {current} | ({os.path.realpath(back["path"])} if back else set())
    order = {name: i for i, name in enumerate(_read_order(releases))}
    found = []
    for name in os.listdir(releases):
        path = os.path.join(releases, name)
        if (not name.startswith(".") and os.path.isdir(path) and not os.path.islink(path)
                and os.path.isfile(os.path.join(path, MANIFEST)) and os.path.realpath(path) not in protected):
            found.append((name in order, order.get(name, 0), os.stat(path).st_mtime, name))
    removed = [entry[-1] for entry in sorted(found, reverse=True)[max(0, keep - len(protected)):]]
    for name in removed:
        shutil.rmtree(os.path.join(releases, name))
        shutil.rmtree(os.path.join(deploy_dir, STATE, name), ignore_errors=True)  # its engine and results
    if removed and order:
        _write_order(releases, [n for n in _read_order(releases) if n not in removed])
        log("removed {} old release(s), keeping the newest {}: {}".format(len(removed), keep, ", ".join(removed)))
    return removed


def _read_order(releases: str) -> List[str]:
    path = os.path.join(releases, ORDER)
    if not os.path.isfile(path):
        return []
    with open(path) as fh:
        return [line.strip() for line in fh if line.strip()]


def _write_order(releases: str, names: List[str]) -> None:
    write_text(os.path.join(releases, ORDER), "".join(name + "\n" for name in names))


def _record_install(releases: str, name: str) -> None:
    """Move ``name`` to the end of releases/.order: the newest install."""
    _write_order(releases, [n for n in _read_order(releases) if n != name] + [name])


def member_problem(members: List[tarfile.TarInfo], root: str, manifest: Dict[str, Any]) -> Optional[str]:
    """What is wrong with the archive's members against the manifest (None when they match): every file
    listed with its size, folders only where listed files live, nothing else."""
    allowed = allowed_paths(manifest)
    files = manifest["files"]
    seen = set()
    for member in members:
        rel = member.name.strip("/").split("/", 1)[1] if "/" in member.name.strip("/") else ""
        rel = "/".join(p for p in rel.split("/") if p not in ("", "."))
        if not rel:
            continue
        if rel not in allowed or (member.isdir() and rel in files) or (member.isfile() and rel in files
                                                                      and member.size != files[rel]["bytes"]):
            return "member {} is not listed in the manifest as it is".format(rel)
        if member.isfile() and rel in allowed and rel not in files and rel not in (MANIFEST, SIGNATURE_FILE):
            return "member {} is a file where the manifest has a folder".format(rel)
        seen.add(rel)
    missing = sorted(set(files) - seen)
    return "{} is listed in the manifest but missing".format(missing[0]) if missing else None


def _release_dir(releases: str, bundle_id: str, manifest_raw: bytes, manifest: Dict[str, Any],
                 untouched: str = "") -> str:
    """releases/<bundle_id>, or <bundle_id>-2, -3 ... when another bundle (or a damaged copy of this one)
    already holds that name. An intact copy of the same bundle (nothing unlisted in it) is reused; a symlink
    is refused (`current` would resolve outside the deploy folder)."""
    for i in range(1, 1000):
        path = os.path.join(releases, bundle_id if i == 1 else "{}-{}".format(bundle_id, i))
        if os.path.islink(path):
            raise InstallError("{} is a symlink, not a release folder: refused (a release must be a real folder "
                               "inside the deploy folder); remove it{}".format(path, "; " + untouched if untouched else ""))
        if not os.path.exists(path):
            return path
        existing = os.path.join(path, MANIFEST)
        if os.path.isfile(existing) and not os.path.islink(existing):
            with open(existing, "rb") as fh:
                if fh.read() == manifest_raw and not check_files(path, manifest) \
                        and not unlisted_entries(path, manifest):
                    return path
    raise InstallError("too many releases named {} under {}: remove old ones".format(bundle_id, releases))


def _switch_current(deploy_dir: str, release: str) -> None:
    link = os.path.join(deploy_dir, CURRENT)
    if os.path.exists(link) and not os.path.islink(link):
        raise InstallError("{} is a real folder, not a symlink: move it away so pwdeploy can manage "
                           "`current`".format(link))
    tmp = os.path.join(deploy_dir, ".{}.{}.tmp".format(CURRENT, os.getpid()))
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(os.path.relpath(release, deploy_dir), tmp)
    os.replace(tmp, link)  # atomic: readers see the old or the new release, never neither


def _parser() -> Parser:
    parser = Parser(prog="pwdeploy-device", description="Install pwdeploy bundles into DEPLOY_DIR (releases/ + current).")
    sub = parser.add_subparsers(dest="command")
    inst = sub.add_parser("install", help="unpack and check an archive, then switch `current` to it")
    inst.add_argument("archive")
    inst.add_argument("deploy_dir")
    inst.add_argument("--sha256", default=None, help="expected sha256 of the archive (refuse when different)")
    inst.add_argument("--remove-archive", action="store_true", help="delete the archive after installing")
    inst.add_argument("--no-switch", action="store_true", help="leave `current` alone (verify first, then `switch`)")
    inst.add_argument("--allowed-signers", default=None,
                      help="OpenSSH allowed-signers file (default DEPLOY_DIR/allowed_signers when it exists)")
    sw = sub.add_parser("switch", help="point `current` at an installed release (not an older one)")
    sw.add_argument("release")
    sw.add_argument("deploy_dir")
    for p in (inst, sw):
        p.add_argument("--keep", type=int, default=DEFAULT_KEEP,
                       help="releases to keep after switching, `current` and its rollback target included (0: all)")
        p.add_argument("--allow-downgrade", action="store_true",
                       help="accept a release older than the one installed for the same model")
        p.add_argument("--result-line", action="store_true", help="end with a machine-readable result line")
    sub.add_parser("rollback", help="switch `current` to the previous verified release; prints one JSON line") \
        .add_argument("deploy_dir")
    return parser


def main(argv=None) -> int:
    """``install ARCHIVE DEPLOY_DIR``, ``switch RELEASE DEPLOY_DIR`` or ``rollback DEPLOY_DIR``."""
    from . import EXIT_ERROR, RESULT_PREFIX

    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            result = install(args.archive, args.deploy_dir, expected_sha256=args.sha256,
                             remove_archive=args.remove_archive, switch_current=not args.no_switch, keep=args.keep,
                             allowed_signers=args.allowed_signers, allow_downgrade=args.allow_downgrade)
        elif args.command == "switch":
            result = switch(args.release, args.deploy_dir, keep=args.keep, allow_downgrade=args.allow_downgrade)
        elif args.command == "rollback":
            result = rollback(args.deploy_dir, log=lambda line: print(line, file=sys.stderr))
            print(json.dumps(result, sort_keys=True))  # stdout: exactly this one JSON line
            return 0
        else:
            parser.print_help()
            return EXIT_ERROR
    except PwdeployError as exc:
        if args.command == "install" and args.remove_archive and os.path.isfile(args.archive):
            os.unlink(args.archive)  # an uploaded archive that was refused must not pile up in .incoming
        print("error: {}".format(exc), file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print("error: {}: check that the deploy folder is writable".format(exc), file=sys.stderr)
        return EXIT_ERROR
    if args.result_line:
        print(RESULT_PREFIX + json.dumps(result))
    return 0
