"""What a person at a terminal sees during and after a scan (rich, on stderr)."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from tagger.names import display

if TYPE_CHECKING:
    from tagger.records import VideoResult
    from tagger.scan import ScanSummary

console = Console(stderr=True, highlight=False)
#: Failures listed by name in the summary; the output table has them all.
_LISTED_FAILURES = 10


class Reporter:
    """A progress bar of videos with clips/s and ETA; silent when stderr is not a terminal."""

    def __init__(self, total: int) -> None:
        self.clips = 0
        self.progress: Progress | None = None
        if sys.stderr.isatty():
            self.progress = Progress(
                TextColumn("[bold]tagging"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("videos  {task.fields[rate]} clips/s"),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            )
            self.task = self.progress.add_task("tagging", total=total, rate="-")

    def __enter__(self) -> Reporter:
        if self.progress:
            self.progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.progress:
            self.progress.stop()

    def update(self, result: VideoResult, skipped: bool) -> None:
        if not self.progress:
            return
        if not skipped:
            self.clips += result.clips
        elapsed = self.progress.tasks[0].elapsed or 0.0
        rate = f"{self.clips / elapsed:.1f}" if elapsed > 0 and self.clips else "-"
        self.progress.update(self.task, advance=1, rate=rate)


def print_summary(summary: ScanSummary) -> None:
    """One small table: what was tagged, skipped and failed, and how fast."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("videos", str(summary.videos))
    table.add_row("tagged", str(summary.tagged))
    table.add_row("already tagged", str(summary.skipped))
    table.add_row("failed", str(len(summary.failed)))
    table.add_row("clips", str(summary.clips))
    table.add_row("time", f"{summary.seconds:.1f} s")
    table.add_row("clips/s", f"{summary.clips_per_s:.1f}")
    console.print(table)
    for result in summary.failed[:_LISTED_FAILURES]:
        # Escaped: a file named "[bold]x.mp4" is a name, not markup.
        text = escape(f"{display(result.path)}: {display(result.error)}")
        console.print(f"[red]error[/red] {text}", soft_wrap=True)
    if len(summary.failed) > _LISTED_FAILURES:
        console.print(f"... and {len(summary.failed) - _LISTED_FAILURES} more (status=error in the output)")
    for message in summary.sidecar_errors:
        console.print(f"[red]sidecar[/red] {escape(display(message))}", soft_wrap=True)
