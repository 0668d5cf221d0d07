"""Rich progress bars and a shared console; quiet (no bars) when output is not a terminal or in tests."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=False)


class Task:
    def __init__(self, progress: Progress | None, task_id=None):
        self._progress, self._id = progress, task_id
        self.postfix = ""
        self.images, self.started = 0, time.perf_counter()

    def advance(self, n: int = 1, images: int = 0) -> None:
        """``images``: how many images this advance covered (all processes together), shown as images/s."""
        self.images += images
        if self._progress is not None:
            self._progress.advance(self._id, n)
            if images:
                self._progress.update(self._id, rate=f"{self.images_per_second():,.0f} img/s")

    def images_per_second(self) -> float:
        return self.images / max(1e-9, time.perf_counter() - self.started)

    def describe(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._id, info=text)


@contextlib.contextmanager
def task(description: str, total: int | None) -> Iterator[Task]:
    if os.environ.get("PWDEPLOY_NO_PROGRESS") or not console.is_terminal:
        yield Task(None)
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=console, transient=False) as progress:
        yield Task(progress, progress.add_task(description, total=total, info="", rate=""))
