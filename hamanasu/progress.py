"""Rich progress bars over federated rounds."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["round_progress"]


@contextmanager
def round_progress(total: int, label: str, enabled: bool = True) -> Iterator[Callable[[Any], None]]:
    """Show a progress bar of ``total`` rounds; yield the callback that advances it by a round.

    The callback takes a round record (anything with ``round`` and ``metrics``) and shows
    its AUC when it has one.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not enabled:
        yield lambda _record: None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(label, total=total, info="starting the federation")

        def advance(record: Any) -> None:
            metrics = getattr(record, "metrics", {}) or {}
            number = record if isinstance(record, int) else getattr(record, "round", "?")
            info = f"round {number}"
            if "auc" in metrics:
                info += f"  AUC {metrics['auc']:.3f}"
            progress.update(task, advance=1, info=info)

        yield advance
