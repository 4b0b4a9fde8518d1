"""A Rich progress bar for pulls, on stderr so that stdout stays clean for results."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from .download import PullProgress


class RichPullProgress(PullProgress):
    """One bar for the whole pull (all shards), labelled with the file being fetched."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def begin(self, name: str, total: int, done: int) -> None:
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(name, total=total, completed=done)

    def file(self, path: str, size: int, done: int) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, description=path.rsplit("/", 1)[-1])

    def advance(self, n: int) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, n)

    def note(self, message: str) -> None:
        self.console.print(message, style="dim", highlight=False, markup=False)

    def end(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
