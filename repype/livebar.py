"""The live batch-wide progress bar on a terminal, drawn with `rich` (imported only when a bar is shown).

:mod:`repype.console` shows it when it prints to a terminal and has seen the batch's plan: stage
executions done of those to run, the time elapsed and the ETA of a
:class:`~repype.progress.BatchProgress`, and what the batch does right now. Lines printed
through :meth:`LiveBar.print` appear above the bar.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn
from rich.table import Column
from rich.text import Text

from repype.progress import BatchProgress, format_hms


class _TimesColumn(ProgressColumn):
    """Elapsed time and ETA of the batch, read from its progress at every refresh (so both tick)."""

    def __init__(self, progress: BatchProgress) -> None:
        super().__init__(table_column=Column(no_wrap=True))
        self.progress = progress

    def render(self, task: Any) -> Text:
        """`elapsed MM:SS, ETA MM:SS` at this moment."""
        now = time.time()
        started = self.progress.started if self.progress.started is not None else now
        return Text(f"elapsed {format_hms(max(now - started, 0.0))}, {self.progress.eta_text(now)}")


class LiveBar:
    """A bar of stage executions done out of `progress.plan.to_run`, redrawn in place on `stream`.

    Args:
        stream: The terminal to draw on (treated as one, whatever it says).
        progress: The batch's counts; :meth:`update` redraws from them.
    """

    def __init__(self, stream: Any, progress: BatchProgress) -> None:
        self.progress = progress
        self.console = Console(file=stream, force_terminal=True, highlight=False)
        redirect = stream is sys.stdout  # other output to the terminal goes above the bar too
        self._bar = Progress(
            TextColumn("{task.description}", markup=False, table_column=Column(ratio=1, no_wrap=True, min_width=8)),
            BarColumn(bar_width=24),
            MofNCompleteColumn(table_column=Column(no_wrap=True)),
            _TimesColumn(progress),
            console=self.console,
            refresh_per_second=4,
            redirect_stdout=redirect,
            redirect_stderr=redirect,
            expand=True,  # the text left of the bar takes the room the rest leaves, cut short to fit
        )
        total = progress.plan.to_run if progress.plan is not None else None
        self._task = self._bar.add_task("", total=total)
        self._bar.start()

    def update(self, doing: str | None = None) -> None:
        """Redraws the executions done; `doing` (when given) replaces the text left of the bar."""
        changes: dict[str, Any] = {"completed": self.progress.executed}
        if doing is not None:
            changes["description"] = doing
        self._bar.update(self._task, **changes)

    def print(self, text: str) -> None:
        """Prints `text` as plain lines above the bar (no markup), the bar redrawn below them."""
        self._bar.refresh()
        self.console.print(Text(text), soft_wrap=True)

    def close(self) -> None:
        """Draws the bar a last time and leaves it on the screen; later output goes below it."""
        self.update("")
        self._bar.stop()
