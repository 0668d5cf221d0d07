"""Safe output folders: a run directory is built under a temporary name beside ``--out``, under a lock, and
renamed into place when complete. Nothing a user owns is deleted: ``--overwrite`` replaces only a complete
pwdeploy run (never ``.``, a parent of the working directory, a link or any other folder), and the only
leftovers removed are ``.NAME.partial-PID`` folders of runs whose process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
from pathlib import Path
from typing import Callable, Iterator

from . import rundir
from .errors import PwdeployError

_PARTIAL = re.compile(r"^\.(?P<name>.+)\.partial-(?P<pid>[0-9]+)$")


def partial_path(out: Path) -> Path:
    return out.parent / f".{out.name}.partial-{os.getpid()}"


def is_complete_run(path: Path) -> bool:
    """A folder pwdeploy wrote and finished: config.json of our schema, report.json and the .complete marker."""
    try:
        config = json.loads((path / rundir.CONFIG).read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(config, dict) and config.get("schema") == rundir.CONFIG_SCHEMA
            and (path / rundir.REPORT).is_file() and (path / rundir.COMPLETE).is_file())


# room for the ".NAME.partial-PID" / ".NAME.lock" names built beside --out
_SIBLING_ROOM = 32


def check_path_name(path: Path, flag: str) -> None:
    """A path pwdeploy can create and record: valid UTF-8 (report.json stores it), every name within the
    file system's limit (with room for the temporary names beside it), the whole path within PATH_MAX.
    Checked before any work, so a bad name fails in a second, not after the training."""
    text = str(path)
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        raise PwdeployError(f"{flag} {text.encode('utf-8', 'surrogateescape')!r} is not valid UTF-8: use a name of "
                            "UTF-8 characters (it is recorded in config.json/report.json)") from None
    name_max, path_max = 255, 4096
    if len(os.path.abspath(encoded)) + _SIBLING_ROOM > path_max:
        raise PwdeployError(f"{flag} is a path of {len(os.path.abspath(encoded))} bytes: over the {path_max}-byte limit "
                            "of the file system; choose a shorter path")
    for part in path.parts:
        if len(part.encode("utf-8")) + _SIBLING_ROOM > name_max:
            raise PwdeployError(f"{flag}: the name {part[:40]!r}... has {len(part.encode('utf-8'))} bytes; names may "
                                f"have at most {name_max - _SIBLING_ROOM} here: choose a shorter name")


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an --out that is a file, or an existing folder unless ``overwrite`` and it is provably ours."""
    check_path_name(out, "--out")
    if out.is_symlink():
        raise PwdeployError(f"--out {out} is a symbolic link: pass the real folder (or a new name)")
    if out.exists() and not out.is_dir():
        raise PwdeployError(f"--out {out} is a file, not a folder: choose a new folder name for the run")
    if not out.exists():
        return
    here, target = Path.cwd().resolve(), out.resolve()
    if target == here or target in here.parents:
        raise PwdeployError(f"--out {out} is the working directory or one of its parents: a run never replaces "
                            "that; choose a new folder such as runs/NAME")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise PwdeployError(f"{out} already exists: choose another --out or pass --overwrite")
    if not is_complete_run(out):
        raise PwdeployError(f"--out {out} is not a complete pwdeploy run (no config.json/report.json/.complete "
                            "written by pwdeploy): --overwrite only replaces runs; move it away or choose another --out")


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """An exclusive lock on ``out`` (a .NAME.lock file beside it, removed again at the end) for the whole run:
    a second run into the same --out stops at once instead of silently replacing the first one's results."""
    out.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out.parent / f".{out.name}.lock"
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise PwdeployError(f"another pwdeploy run (pid {holder}) is writing {out}: wait for it to finish or "
                                "choose another --out") from None
        try:  # the previous holder may have removed the file between our open and our lock: lock the new one
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        lock_path.unlink(missing_ok=True)  # while still holding the lock, so no one can hold the removed file
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(parent: Path, log: Callable[[str], None]) -> list[Path]:
    """Remove ``.NAME.partial-PID`` folders under ``parent`` whose process no longer runs (killed runs);
    each one is reported. Folders of live processes and anything else are left alone."""
    removed = []
    if not parent.is_dir():
        return removed
    for entry in sorted(parent.iterdir()):
        match = _PARTIAL.match(entry.name)
        if not match or not entry.is_dir() or entry.is_symlink() or _alive(int(match.group("pid"))):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        log(f"removed {entry}: the unfinished run of a process that no longer exists (pid {match.group('pid')})")
        removed.append(entry)
    return removed


def publish(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` onto ``out``; an existing run there (checked by check_out) is moved aside
    first and removed only after the new one is in place."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def begin_run(out: Path, overwrite: bool, *, log: Callable[[str], None]) -> tuple[Path, Callable[[], None]]:
    """Lock ``out``, check it (again, under the lock), clear stale partial runs beside it and create this
    run's temporary folder. Returns ``(tmp, release)``; call ``release()`` when the run ends, however."""
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(locked(out))
        check_out(out, overwrite)
        remove_stale_partials(out.parent, log)
        tmp = partial_path(out)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    except BaseException:
        stack.close()
        raise
    return tmp, stack.close
