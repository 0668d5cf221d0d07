"""Atomic writes and hashing: nothing is ever half-written under its final name.

Portable core (standard library only, Python 3.8): the device bundle and the trust anchor ship it, and the
host imports the same module, so the host and the device hash and write files with one implementation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".{}.".format(path.name), suffix=".partial", dir=str(path.parent))
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError("not JSON serialisable: {}".format(type(obj).__name__))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file, read in 1 MiB blocks (the one file-hashing helper, host and device)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def not_a_file(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a regular file (None when it is): "not found", "is a folder", "is a FIFO" ..."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "not found" if not os.path.islink(path) else "is a dangling symbolic link"
    except OSError as exc:
        return "cannot be read ({})".format(exc.strerror or exc)
    if stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return "is " + next((name for test, name in kinds if test(mode)), "not a regular file") + ", not a file"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
