"""Progress bars for long steps (rich), kept out of the core so the quantizer needs only torch."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


def _progress(console: Console | None = None) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        transient=False,
    )


class FitProgress:
    """A callback for :meth:`SFVQ.fit`: one bar per stage showing bits, epoch and the running loss."""

    def __init__(
        self, bits: int, epochs: int, console: Console | None = None, min_interval: float = 0.1
    ) -> None:
        self.bits = bits
        self.epochs = epochs
        self.min_interval = min_interval
        self._progress = _progress(console)
        self._progress.start()
        self._task = None
        self._last = 0.0

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        p = self._progress
        if event == "stage_start":
            self._task = p.add_task(f"{info['bits']:>2}-bit curve", total=info["steps"], status="")
        elif event == "step" and self._task is not None:
            now = time.perf_counter()
            if now - self._last >= self.min_interval:
                self._last = now
                status = f"epoch {info['epoch'] + 1}/{self.epochs}  loss {float(info['loss']):.5g}"
                p.update(self._task, completed=info["step"], status=status)
        elif event == "stage_end" and self._task is not None:
            task = p.tasks[self._task]
            status = f"mse {info['mse']:.5g}  perplexity {info['perplexity']:.1f}  {info['seconds']:.1f}s"
            p.update(self._task, completed=task.total, status=status)

    def close(self) -> None:
        self._progress.stop()


def track(
    items: Iterable[T], description: str, total: int | None = None, enabled: bool = True
) -> Iterator[T]:
    """Iterate with a progress bar on stderr (or silently when ``enabled`` is False)."""
    if not enabled:
        yield from items
        return
    with _progress() as p:
        task = p.add_task(description, total=total, status="")
        for item in items:
            yield item
            p.advance(task)
