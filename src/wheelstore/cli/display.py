"""How the command line shows long work (:mod:`wheelstore.base.progress`): one live display on a terminal, plain
lines in a log, nothing with ``-q``.

On a terminal every task is one row of a single rich ``Live`` on stderr, redrawn ten times a second from the tasks'
state: what it is, a name and version (never a file name: ``pyarrow-26.0.1-cp311-…whl`` did not fit 80 columns),
then bytes or a count done of the total, or for a build its last output line, or for a lock wait who holds it.
Each row is cut to the terminal's width, so none wraps. The display runs only while a task is open: between
phases nothing is drawn, so the report on stdout never meets a redraw. rich is imported with the first task: a
warm install opens none.
"""

from __future__ import annotations

import _thread
import sys
import time
from typing import Any, TextIO

from ..base import sizes
from ..base.errors import printable
from ..base.progress import Kind, LineReporter, Reporter, Task

__all__ = ["LineReporter", "LiveReporter", "reporter_for"]


def reporter_for(*, quiet: bool, stream: TextIO | None = None) -> Reporter:
    """Silent with ``quiet``; a live display on a terminal; plain lines otherwise."""
    out = stream if stream is not None else sys.stderr
    if quiet:
        return Reporter()
    try:
        tty = out.isatty()
    except (AttributeError, ValueError):
        tty = False
    return LiveReporter(out) if tty else LineReporter(out)


# -- the live display -------------------------------------------------------------------------------------------------

#: what each kind counts, after "done/total"
_UNITS = {Kind.UNPACK: "trees", Kind.COMPILE: "modules"}
_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
#: cells of a row's bar
BAR = 16


class _Row(Task):
    def __init__(self, reporter: LiveReporter, kind: Kind, label: str, total: int | None) -> None:
        super().__init__(kind, label, total)
        self._reporter = reporter
        self._done = False

    def done(self, summary: str | None = None) -> None:
        if not self._done:
            self._done = True
            self._reporter._finish(self, summary)


class LiveReporter(Reporter):
    """One rich ``Live`` on a terminal, with a row per open task; lines printed above it.

    Two locks, always taken in this order: ``_lock`` around every call into rich (start, stop, print), which takes
    the ``Live``'s own lock inside; ``_rows_lock`` around the list of rows alone, which rich's refresh thread takes
    while it holds the ``Live``'s lock to draw them. The refresh thread must never wait for ``_lock``: a thread
    printing a summary holds it and waits for the ``Live``'s lock (a deadlock, every thread of the install stuck).
    """

    live = True

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = _thread.RLock()
        self._rows_lock = _thread.allocate_lock()  #: a leaf: nothing is called while it is held
        self._rows: list[_Row] = []
        self._live: Any = None
        self._console: Any = None

    def task(self, kind: Kind, label: str, total: int | None = None) -> Task:
        row = _Row(self, kind, label, total)
        with self._lock:
            with self._rows_lock:
                self._rows.append(row)
            if self._live is None:
                self._start()
        return row

    def line(self, text: str) -> None:
        with self._lock:
            if self._console is None:
                sys.stdout.flush()
                print(printable(text), file=self._stream, flush=True)
                return
            from rich.text import Text

            self._console.print(Text(printable(text)))  # rich wraps a long line itself: the terminal never does

    def close(self) -> None:
        with self._lock:
            with self._rows_lock:
                self._rows.clear()
            self._stop()

    def _finish(self, row: _Row, summary: str | None) -> None:
        with self._lock:
            with self._rows_lock:
                if row in self._rows:
                    self._rows.remove(row)
                empty = not self._rows
            if summary:
                self.line(summary)
            if empty:  # no row can have come meanwhile: adding one takes _lock
                self._stop()

    def _start(self) -> None:
        from rich.console import Console
        from rich.live import Live

        if self._console is None:
            self._console = Console(file=self._stream, highlight=False, soft_wrap=False)
        sys.stdout.flush()
        self._live = Live(_Rows(self), console=self._console, transient=True, refresh_per_second=10,
                          redirect_stdout=False, redirect_stderr=False)
        self._live.start()

    def _stop(self) -> None:
        if self._live is not None:  # forgotten only once stopped: a Ctrl-C inside stop() leaves close() to retry
            self._live.stop()
            self._live = None

    def snapshot(self) -> list[_Row]:
        """The rows as they are now: called by rich's refresh thread, which holds the ``Live``'s lock."""
        with self._rows_lock:
            return list(self._rows)


class _Rows:
    """The renderable the ``Live`` redraws: the reporter's rows, as they are now, each cut to the width."""

    def __init__(self, reporter: LiveReporter) -> None:
        self._reporter = reporter

    def __rich_console__(self, console: Any, options: Any) -> Any:
        width = options.max_width
        now = time.monotonic()
        for row in self._reporter.snapshot():
            if row.total == 0 and row.kind in _UNITS:  # a phase with nothing in it yet (no module to compile)
                continue
            yield render_row(row, width, now)


def render_row(row: Task, width: int, now: float) -> Any:
    """One row: spinner, what, the name and any detail (cut to fit), then the numbers at the right."""
    from rich.cells import cell_len
    from rich.text import Text

    spin = _SPINNER[int(now * 10) % len(_SPINNER)]
    right = _right(row, now)
    room = max(0, width - 2 - cell_len(right.plain) - (1 if right.plain else 0))
    middle = Text()
    middle.append(f"{row.kind.value} ", style="bold")
    middle.append(printable(row.label))
    if row.detail:
        middle.append(f"  {printable(row.detail)}", style="dim")
    middle.truncate(room, overflow="ellipsis", pad=True)
    text = Text()
    text.append(f"{spin} ", style="cyan")
    text.append_text(middle)
    if right.plain:
        text.append(" ")
        text.append_text(right)
    text.no_wrap = True
    text.overflow = "ellipsis"
    text.truncate(width, overflow="ellipsis")
    return text


def _right(row: Task, now: float) -> Any:
    """The numbers of a row: bytes or a count with a bar, else the time it has taken so far."""
    from rich.text import Text

    total, completed = row.total, row.completed
    if row.kind is Kind.DOWNLOAD and completed and total is None:
        return Text(sizes.decimal(completed))
    if row.kind in (Kind.DOWNLOAD, Kind.UNPACK, Kind.COMPILE) and total:
        filled = min(BAR, BAR * completed // total)
        text = Text()
        text.append("━" * filled, style="magenta")
        text.append("━" * (BAR - filled), style="grey23")
        numbers = f"{sizes.decimal(completed)}/{sizes.decimal(total)}" if row.kind is Kind.DOWNLOAD else \
            f"{completed}/{total} {_UNITS[row.kind]}"
        text.append(f" {numbers}")
        return text
    text = Text()
    text.append(_elapsed(now - row.started), style="dim")
    return text


def _elapsed(seconds: float) -> str:
    s = int(seconds)
    return f"{s}s" if s < 60 else f"{s // 60}m{s % 60:02d}s"
