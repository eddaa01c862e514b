"""Progress display that stages accept as an argument (no global console in stages)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, TypeVar

T = TypeVar("T")


class Progress(Protocol):
    def track(self, items: Iterable[T], total: int, description: str) -> Iterator[T]: ...

    def log(self, message: str) -> None: ...


class Silent:
    """For library use and tests."""

    def track(self, items: Iterable[T], total: int, description: str) -> Iterator[T]:
        yield from items

    def log(self, message: str) -> None:
        pass


class RichProgress:
    """Progress bars on stderr; one bar per stage step, removed when done."""

    def __init__(self, console):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = console
        self._columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        self._progress_cls = Progress

    def track(self, items: Iterable[T], total: int, description: str) -> Iterator[T]:
        with self._progress_cls(*self._columns, console=self.console, transient=True) as bar:
            task = bar.add_task(description, total=total)
            for item in items:
                yield item
                bar.advance(task)

    def log(self, message: str) -> None:
        self.console.print(message)
