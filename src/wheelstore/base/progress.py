"""How far long work has got: the one place every layer reports to, and that the command line shows.

Work that may take over a second (resolving, a download, an sdist build, unpacking and compiling trees, a wait for
another process's lock) opens a :class:`Task` on the :func:`current` reporter, advances it, and finishes it with the
line that should stay. The API's default reporter shows nothing; the command line installs one for the length of a
command (:func:`reporting`): a live display on a terminal, plain lines in a log, nothing with ``-q``. One reporter
per process, not passed down every call: a lock wait deep in the store reports to the same display as the download
that caused it, from whichever thread.
"""

from __future__ import annotations

import _thread
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from enum import Enum
from types import TracebackType
from typing import TextIO

from .errors import printable

__all__ = [
    "Kind", "LineReporter", "Reporter", "Task", "active", "counted", "current", "elapsed", "phase", "reporting",
]


class Kind(Enum):
    """What a task is: the display shows each kind its own way (bytes for downloads, a count for trees)."""

    RESOLVE = "resolving"
    DOWNLOAD = "downloading"
    BUILD = "building"
    UNPACK = "unpacking"
    COMPILE = "compiling"
    WAIT = "waiting"


class Task:
    """One row of the display. This base keeps the row's state, which a display reads when it draws (ten times a
    second, not once per chunk), and shows nothing; methods may be called from any thread."""

    def __init__(self, kind: Kind, label: str, total: int | None = None) -> None:
        self.kind, self.label, self.total = kind, label, total
        self.completed = 0
        self.detail = ""
        self.started = time.monotonic()
        self._lock = _thread.allocate_lock()  # not threading: a warm install never imports it

    def advance(self, n: int = 1) -> None:
        """``n`` more done (bytes for a download, trees, modules)."""
        with self._lock:
            self.completed += n

    def update(self, *, total: int | None = None, detail: str | None = None, more: int = 0,
               completed: int | None = None) -> None:
        """A new total, or ``more`` to add to it (a phase learning its work as it goes); ``completed`` anew (a
        download restarted from zero); the detail shown after the label (a build's last output line)."""
        with self._lock:
            if total is not None:
                self.total = total
            if more:
                self.total = (self.total or 0) + more
            if completed is not None:
                self.completed = completed
            if detail is not None:
                self.detail = detail

    def done(self, summary: str | None = None) -> None:
        """Finished: the row goes, and ``summary`` (if any) stays as a plain line."""

    def __enter__(self) -> Task:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.done()


class Reporter:
    """Where tasks are shown. This base shows nothing: the API's default, and ``-q``."""

    #: whether tasks show as live rows (a terminal): a notice such a row carries (a lock wait's holder) need not be
    #: logged as well
    live = False

    def task(self, kind: Kind, label: str, total: int | None = None) -> Task:
        return Task(kind, label, total)

    def line(self, text: str) -> None:
        """A line that stays, printed above the live rows."""

    def close(self) -> None:
        """Stop the display; called once, when the command ends."""


class _LineTask(Task):
    def __init__(self, reporter: LineReporter, kind: Kind, label: str, total: int | None) -> None:
        super().__init__(kind, label, total)
        self._reporter: LineReporter | None = reporter

    def done(self, summary: str | None = None) -> None:
        reporter, self._reporter = self._reporter, None
        if reporter is not None and summary:
            reporter.line(summary)


class LineReporter(Reporter):
    """Plain lines, no escape codes, for logs and pipes: a task's summary when it is done (one per download or build,
    one per phase), nothing while it runs. A lock wait's line is the lock's own warning, logged when the wait starts
    since this reporter is not :attr:`~Reporter.live`."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = _thread.allocate_lock()

    def task(self, kind: Kind, label: str, total: int | None = None) -> Task:
        return _LineTask(self, kind, label, total)

    def line(self, text: str) -> None:
        with self._lock:
            sys.stdout.flush()  # after what is already on stdout, when both go to one log
            print(printable(text), file=self._stream, flush=True)


_current = Reporter()


def current() -> Reporter:
    """The reporter of this process's command (silent outside one)."""
    return _current


_phases: dict[Kind, Task] = {}


@contextlib.contextmanager
def phase(kind: Kind, label: str, total: int | None = None,
          summary: Callable[[int, float], str] | None = None) -> Iterator[Task]:
    """One task for a stage that several calls add to (trees unpacked, modules compiled), finished with
    ``summary(completed, seconds)`` unless the block raised. A phase of this kind already open (an install's, around
    the fetch and realize calls that open their own) is the one used: it counts everything and summarizes once."""
    outer = _phases.get(kind)
    if outer is not None:
        yield outer
        return
    task = _phases[kind] = current().task(kind, label, total)
    ok = False
    try:
        yield task
        ok = True
    finally:
        del _phases[kind]
        task.done(summary(task.completed, time.monotonic() - task.started) if ok and summary and task.completed
                  else None)


def elapsed(seconds: float) -> str:
    """A duration as uv prints it (its ``elapsed``): ``120ms`` under a second, ``13.03s`` under a minute, then
    ``2m 05s``; the digits are cut, not rounded, as uv's are."""
    whole, nanos = int(seconds), int(seconds * 1e9) % 1_000_000_000
    if whole >= 60:
        return f"{whole // 60}m {whole % 60:02}s"
    if whole > 0:
        return f"{whole}.{nanos // 10_000_000:02}s"
    if nanos >= 1_000_000:
        return f"{nanos // 1_000_000}ms"
    return f"0.{nanos // 10_000:02}ms"


def counted(verb: str, unit: str) -> Callable[[int, float], str]:
    """A phase's summary, as uv words its counts: ``unpacked 3 trees in 1.2s``."""
    return lambda n, seconds: f"{verb} {n} {unit}{'s' if n != 1 else ''} in {elapsed(seconds)}"


#: the summaries of the phases every layer opens alike
UNPACKED, COMPILED = counted("unpacked", "tree"), counted("compiled", "module")


def active(kind: Kind) -> Task:
    """The open :func:`phase` of ``kind``, from any thread; a silent task when none is open."""
    return _phases.get(kind) or Task(kind, "")


@contextlib.contextmanager
def reporting(reporter: Reporter) -> Iterator[Reporter]:
    """Make ``reporter`` the current one for the ``with`` block, and close it after."""
    global _current
    before, _current = _current, reporter
    try:
        yield reporter
    finally:
        _current = before
        reporter.close()
