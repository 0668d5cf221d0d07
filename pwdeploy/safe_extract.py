"""Unpack a bundle archive without ever writing outside the target directory.

Shared by `pwdeploy package` (self-check), `pwdeploy ship` (the remote installer) and the device. Standard
library only and Python 3.8 compatible: Jetsons may run an old Python whose tarfile has no ``data`` filter,
so every member is checked here and files are written by this code, never by ``tarfile.extractall``.
Only regular files and directories are accepted; absolute paths, ``..``, links and devices are refused.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import zlib
from typing import List, Optional

try:  # inside the package; the ship bootstrap also loads this module as part of a package
    from .errors import PwdeployError as _BaseError
except ImportError:  # pragma: no cover - only when run as a loose script
    _BaseError = Exception  # type: ignore[misc,assignment]

# What a damaged or truncated archive raises while it is read.
ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)
# Archive-bomb caps (README "Security model"). A bundle is a model, a few hundred images and ~20 code files.
MAX_BUNDLE_BYTES = 8 << 30  # unpacked size
MAX_MEMBERS = 10000  # checked while reading headers: a million empty members are refused after 10k, not read
MAX_RATIO = 200  # unpacked bytes per archive byte (gzip of float32 images and weights stays far below)
RATIO_FLOOR = 64 << 20  # below this unpacked size the ratio is not checked (tiny bundles compress well)


class UnsafeArchiveError(_BaseError):
    """The archive holds something that could write outside the target or is not a plain file."""


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "a symbolic link"
    if member.islnk():
        return "a hard link"
    if member.ischr() or member.isblk():
        return "a device file"
    if member.isfifo():
        return "a FIFO"
    if member.issparse():
        return "a sparse file"
    return "an unsupported entry type {!r}".format(member.type)


def check_member_name(name: str, archive: str = "archive") -> str:
    """The normalised relative path of ``name``; raises UnsafeArchiveError for absolute or escaping paths."""
    if not name or "\x00" in name:
        raise UnsafeArchiveError("{}: empty or NUL-containing member name; refusing to unpack "
                                 "(re-create the bundle with `pwdeploy package`)".format(archive))
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError("{}: member {!r} has an absolute or non-POSIX path; refusing to unpack "
                                 "(re-create the bundle with `pwdeploy package`)".format(archive, name))
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError("{}: member {!r} climbs out of the target with '..'; refusing to unpack "
                                 "(re-create the bundle with `pwdeploy package`)".format(archive, name))
    if not parts:
        raise UnsafeArchiveError("{}: member {!r} names the archive root; refusing to unpack".format(archive, name))
    return "/".join(parts)


def check_members(tar: tarfile.TarFile, archive: str = "archive", max_bytes: int = MAX_BUNDLE_BYTES,
                  max_members: int = MAX_MEMBERS, archive_bytes: Optional[int] = None) -> List[tarfile.TarInfo]:
    """Validate every member before anything is written; returns them in archive order. Headers are read
    one at a time so that the member-count and size caps stop a bomb early. ``archive_bytes`` (the file's
    size) enables the compression-ratio cap."""
    members = []  # type: List[tarfile.TarInfo]
    seen, files, folders = set(), set(), set()
    total = 0
    limit = max_bytes if archive_bytes is None else min(max_bytes, max(RATIO_FLOOR, MAX_RATIO * archive_bytes))
    for member in tar:
        if len(members) >= max_members:
            raise UnsafeArchiveError("{}: more than {} members; refusing to unpack (is this a pwdeploy bundle?)"
                                     .format(archive, max_members))
        members.append(member)
        name = check_member_name(member.name, archive)
        if not (member.isfile() or member.isdir()) or member.issparse():
            raise UnsafeArchiveError("{}: member {!r} is {}; bundles hold only regular files and folders, "
                                     "refusing to unpack (re-create it with `pwdeploy package`)"
                                     .format(archive, member.name, _kind(member)))
        if name in seen:
            raise UnsafeArchiveError("{}: member {!r} appears twice; refusing to unpack "
                                     "(re-create the bundle with `pwdeploy package`)".format(archive, name))
        parents = ["/".join(name.split("/")[:i]) for i in range(1, name.count("/") + 1)]
        if any(p in files for p in parents) or (member.isfile() and name in folders):
            raise UnsafeArchiveError("{}: member {!r} uses a file as a folder (or a folder as a file); refusing "
                                     "to unpack (re-create the bundle with `pwdeploy package`)".format(archive, name))
        folders.update(parents)
        if member.isfile():
            files.add(name)
        seen.add(name)
        total += max(int(member.size), 0)
        if total > limit:
            raise UnsafeArchiveError("{}: unpacks to more than {} bytes{}; refusing to unpack (is this a pwdeploy "
                                     "bundle?)".format(archive, limit, "" if limit == max_bytes else
                                                       " ({}x its compressed size)".format(MAX_RATIO)))
        data_filter = getattr(tarfile, "data_filter", None)  # Python 3.8.17+/3.11.4+: a second opinion
        if data_filter is not None:
            try:
                data_filter(member, "/nonexistent-pwdeploy-root")
            except tarfile.FilterError as exc:
                raise UnsafeArchiveError("{}: member {!r} refused by tarfile's data filter ({}); refusing "
                                         "to unpack".format(archive, member.name, exc)) from None
    return members


def check_archive(archive_path: str, archive: Optional[str] = None) -> List[tarfile.TarInfo]:
    """Open ``archive_path`` and check its members under every cap (the ratio cap uses its file size)."""
    archive = archive or os.path.basename(str(archive_path))
    with tarfile.open(str(archive_path), "r:*") as tar:
        return check_members(tar, archive, archive_bytes=os.path.getsize(str(archive_path)))


def single_root(members: List[tarfile.TarInfo], archive: str = "archive") -> str:
    """The one top-level folder every member lives under (bundles are packed that way)."""
    roots = {check_member_name(m.name, archive).split("/")[0] for m in members}
    if len(roots) != 1:
        raise UnsafeArchiveError("{}: expected one top-level folder, found {}: not a pwdeploy bundle "
                                 "(make it with `pwdeploy package`)".format(archive, len(roots)))
    return roots.pop()


def safe_extract(archive_path: str, dest: str, *, max_bytes: int = MAX_BUNDLE_BYTES) -> List[str]:
    """Unpack ``archive_path`` (tar, optionally gzip) into the new or empty folder ``dest``.

    Every member is checked first; then folders are made and files written with O_EXCL|O_NOFOLLOW so that
    nothing already on disk, a link included, can be followed or overwritten. Returns the member names.
    On any error ``dest`` is removed again if this call created it.
    """
    archive = os.path.basename(str(archive_path))
    created = not os.path.exists(dest)
    if not created and (not os.path.isdir(dest) or os.path.islink(dest) or os.listdir(dest)):
        raise UnsafeArchiveError("{}: target {} must be a new or empty folder".format(archive, dest))
    try:
        with tarfile.open(str(archive_path), "r:*") as tar:
            members = check_members(tar, archive, max_bytes, archive_bytes=os.path.getsize(str(archive_path)))
            os.makedirs(dest, exist_ok=True)
            root = os.path.realpath(dest)
            names = []
            for member in members:
                rel = check_member_name(member.name, archive)
                target = os.path.join(root, *rel.split("/"))
                if os.path.commonpath([root, os.path.realpath(os.path.dirname(target))]) != root:
                    raise UnsafeArchiveError("{}: member {!r} resolves outside {}".format(archive, member.name, dest))
                if member.isdir():
                    os.makedirs(target, mode=0o755, exist_ok=True)
                else:
                    os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
                    _write_member(tar, member, target)
                names.append(rel)
            return names
    except ARCHIVE_ERRORS as exc:
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        raise UnsafeArchiveError("{}: not a readable tar archive ({}); the file is damaged or truncated: "
                                 "copy it again".format(archive, exc)) from None
    except BaseException:
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        raise


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: str) -> None:
    mode = 0o755 if member.mode & 0o111 else 0o644
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    source = tar.extractfile(member)
    if source is None:  # pragma: no cover - isfile() members always have data
        raise UnsafeArchiveError("{} has no data".format(member.name))
    fd = os.open(target, flags, mode)
    with os.fdopen(fd, "wb") as out, source:
        shutil.copyfileobj(source, out, 1 << 20)
    os.chmod(target, mode)


def read_member(archive_path: str, name: str, max_bytes: int = 16 << 20) -> Optional[bytes]:
    """The bytes of one regular-file member (e.g. ``ROOT/manifest.json``), or None when absent; a member that
    is not a regular file or is larger than ``max_bytes`` is refused (UnsafeArchiveError)."""
    with tarfile.open(str(archive_path), "r:*") as tar:
        try:
            member = tar.getmember(name)
        except KeyError:
            return None
        if not member.isfile():
            raise UnsafeArchiveError("{}: member {} is not a regular file: refused".format(
                os.path.basename(str(archive_path)), name))
        if member.size > max_bytes:
            raise UnsafeArchiveError("{}: member {} is {} bytes, over the {} byte limit: refused (not a pwdeploy "
                                     "bundle's)".format(os.path.basename(str(archive_path)), name, member.size,
                                                        max_bytes))
        fh = tar.extractfile(member)
        return fh.read() if fh is not None else None


def is_within(path: str, root: str) -> bool:
    path, root = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([path, root]) == root


__all__ = ["ARCHIVE_ERRORS", "UnsafeArchiveError", "check_member_name", "check_members", "check_archive", "single_root", "safe_extract",
           "read_member", "is_within"]
