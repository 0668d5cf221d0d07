"""Rich progress bars and a shared console; quiet (no bars) when output is not a terminal or in tests."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=False)


class Task:
    def __init__(self, progress: Progress | None, task_id=None):
        self._progress, self._id = progress, task_id
        self.postfix = ""

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._id, n)

    def describe(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._id, info=text)


@contextlib.contextmanager
def task(description: str, total: int | None) -> Iterator[Task]:
    if os.environ.get("PWDEPLOY_NO_PROGRESS") or not console.is_terminal:
        yield Task(None)
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=console, transient=False) as progress:
        yield Task(progress, progress.add_task(description, total=total, info=""))
