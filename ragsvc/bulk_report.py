"""What ``ragsvc ingest`` shows: one progress bar on a terminal, plain lines in a pipe, a table at the end.

A terminal gets a rich progress bar (documents done, documents/s, ETA, and pages/s once a document with
pages is ready: HTML, Markdown and text have none, and "0.0 pages/s" beside them only misled). CI logs
and pipes get a plain line every few seconds instead of carriage-return redraws, which there pile up as
one unreadable line. The final table goes to stdout, the progress to stderr, so
``ragsvc ingest docs > report.txt`` keeps only the table.
"""

from __future__ import annotations

import time
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, Task, TextColumn
from rich.progress import Progress as RichProgress
from rich.table import Table
from rich.text import Text

from ragsvc.bulk import SUFFIXES, Summary

PLAIN_EVERY_S = 5.0
# A pipe has no width; wrapping the table to rich's 80-column default there would split reasons and
# paths across lines, which breaks grep and log search. Long lines are the lesser harm.
PIPE_WIDTH = 4096


def rates(done: int, pages: int, elapsed: float) -> str:
    """``1.90 documents/s``, with ``4.1 pages/s`` after it only when some document had pages."""
    elapsed = max(elapsed, 1e-6)
    text = f"{done / elapsed:.2f} documents/s"
    return text + (f"  {pages / elapsed:.1f} pages/s" if pages else "")


def eta(done: int, total: int, elapsed: float) -> str:
    """Time left at the rate so far; ``?`` until a document is done."""
    if done >= total:
        return "0:00:00"
    if done == 0 or elapsed <= 0:
        return "?"
    minutes, seconds = divmod(round((total - done) * elapsed / done), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"  # as rich's bar writes it


def plain_line(done: int, total: int, pages: int, elapsed: float) -> str:
    return f"ingest: {done}/{total} documents  {rates(done, pages, elapsed)}  ETA {eta(done, total, elapsed)}"


class PlainProgress:
    """A line when the count changed and ``every_s`` has passed, and a last one at the end."""

    def __init__(self, stream: TextIO, every_s: float = PLAIN_EVERY_S) -> None:
        self.stream, self.every_s = stream, every_s
        self.total = self.done = self.pages = 0
        self.started = 0.0
        self.last_line = float("-inf")  # the first change always gets a line
        self.printed: int | None = None

    def start(self, total: int) -> None:
        self.total, self.started = total, time.monotonic()
        self._write(f"ingest: {total} files to send")

    def update(self, done: int, pages: int) -> None:
        self.done, self.pages = done, pages
        now = time.monotonic()
        if done != self.printed and (now - self.last_line >= self.every_s or done == self.total):
            self._line(now)

    def close(self) -> None:
        if self.printed != self.done:
            self._line(time.monotonic())

    def _line(self, now: float) -> None:
        self._write(plain_line(self.done, self.total, self.pages, now - self.started))
        self.printed, self.last_line = self.done, now

    def _write(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


class _RatesColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        done, elapsed = int(task.completed), task.elapsed or 0.0
        # Our own ETA (rate since the start), not rich's windowed one: duplicates finish in one jump at
        # upload and documents in bursts, which left rich's estimate at "-:--:--" for most of a run.
        return Text(f"{rates(done, task.fields.get('pages', 0), elapsed)}  ETA {eta(done, int(task.total or 0), elapsed)}")


class BarProgress:
    """One rich progress bar on a terminal."""

    def __init__(self, console: Console) -> None:
        self.bar = RichProgress(TextColumn("ingest"), BarColumn(), MofNCompleteColumn(), TextColumn("documents"),
                                _RatesColumn(), console=console)
        self.task = None

    def start(self, total: int) -> None:
        self.bar.start()
        self.task = self.bar.add_task("ingest", total=total, pages=0)

    def update(self, done: int, pages: int) -> None:
        self.bar.update(self.task, completed=done, pages=pages)

    def close(self) -> None:
        self.bar.stop()


def make_progress(stream: TextIO) -> BarProgress | PlainProgress:
    """The bar on a terminal, plain lines anywhere else (CI, pipes, files)."""
    if stream.isatty():
        return BarProgress(Console(file=stream))
    return PlainProgress(stream)


class _PlainTable(Table):
    """Cells as plain text: a file named ``notes[bold].txt`` or a reason quoting ``[1]`` is not rich markup."""

    def add_row(self, *cells: str) -> None:  # type: ignore[override]
        super().add_row(*(Text(c) for c in cells))


def summary_table(s: Summary) -> Table:
    """Ready, duplicate, failed and refused, each file that failed or was refused with its reason."""
    table = _PlainTable()
    table.add_column("Result")
    table.add_column("Files", justify="right")
    table.add_column("File", overflow="fold")
    table.add_column("Detail", overflow="fold")
    ready = [f"{s.new} new"] + ([f"{len(s.versions)} new version(s)"] if s.versions else []) + (
        [f"{s.pages} pages"] if s.pages else [])
    table.add_row("ready", str(s.ready), "", ", ".join(ready))
    for name, old in s.versions:
        table.add_row("", "", name, f"new version; replaces document {old}")
    table.add_row("duplicate", str(s.duplicate), "", "unchanged: the same bytes are already at that path"
                  if s.duplicate else "")
    for label, rows in (("failed", s.failed), ("refused", s.refused)):
        if not rows:
            table.add_row(label, "0", "", "")
        for i, (name, why) in enumerate(rows):
            table.add_row(label if i == 0 else "", str(len(rows)) if i == 0 else "", name, why)
    if s.skipped:
        kinds = ", ".join(f"{suffix} {n}" for suffix, n in sorted(s.skipped.items()))
        table.add_row("skipped", str(sum(s.skipped.values())), "",
                      f"not sent: {kinds} (ragsvc reads {' '.join(sorted(SUFFIXES))})")
    for i, path in enumerate(s.missing):
        table.add_row("not found" if i == 0 else "", str(len(s.missing)) if i == 0 else "", path,
                      "no such file or folder")
    return table


def print_summary(s: Summary, elapsed: float, collection: str, stream: TextIO) -> None:
    console = Console(file=stream) if stream.isatty() else Console(file=stream, width=PIPE_WIDTH)
    console.print(f"ragsvc ingest: {s.files} files into collection {collection!r} in {elapsed:.1f} s",
                  highlight=False, markup=False)
    console.print(summary_table(s))
