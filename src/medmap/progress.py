"""Progress bars for anything that may take more than a few seconds (rich, on stderr).

Library functions take ``progress: bool`` and stay silent by default; the CLI turns bars on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")


def track(
    items: Sequence[T] | Iterable[T], description: str, *, enabled: bool = True, total: int | None = None
) -> Iterable[T]:
    """Iterate over ``items``, showing a transient progress bar on stderr when ``enabled``."""
    if not enabled:
        yield from items
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if total is None and isinstance(items, Sequence):
        total = len(items)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)
