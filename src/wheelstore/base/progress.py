"""How far long work has got: the one place every layer reports to, and that the command line shows.

Work that may take over a second (resolving, a download, an sdist build, unpacking and compiling trees, a wait for
another process's lock) opens a :class:`Task` on the :func:`current` reporter, advances it, and finishes it with the
line that should stay. The API's default reporter shows nothing; the command line installs one for the length of a
command (:func:`reporting`): a live display on a terminal, plain lines in a log, nothing with ``-q``. One reporter
per process, not passed down every call: a lock wait deep in the store reports to the same display as the download
that caused it, from whichever thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from enum import Enum
from types import TracebackType

__all__ = ["Kind", "Reporter", "Task", "current", "reporting"]


class Kind(Enum):
    """What a task is: the display shows each kind its own way (bytes for downloads, a count for trees)."""

    RESOLVE = "resolving"
    DOWNLOAD = "downloading"
    BUILD = "building"
    UNPACK = "unpacking"
    COMPILE = "compiling"
    WAIT = "waiting"


class Task:
    """One row of the display. This base shows nothing; methods may be called from any thread."""

    def __init__(self, kind: Kind, label: str, total: int | None = None) -> None:
        self.kind, self.label, self.total = kind, label, total

    def advance(self, n: int = 1) -> None:
        """``n`` more done (bytes for a download, trees, modules)."""

    def update(self, *, total: int | None = None, detail: str | None = None) -> None:
        """A new total (a download restarted), or the detail shown after the label (a build's last output line)."""

    def done(self, summary: str | None = None) -> None:
        """Finished: the row goes, and ``summary`` (if any) stays as a plain line."""

    def __enter__(self) -> Task:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.done()


class Reporter:
    """Where tasks are shown. This base shows nothing: the API's default, and ``-q``."""

    def task(self, kind: Kind, label: str, total: int | None = None) -> Task:
        return Task(kind, label, total)

    def line(self, text: str) -> None:
        """A line that stays, printed above the live rows."""

    def close(self) -> None:
        """Stop the display; called once, when the command ends."""


_current = Reporter()


def current() -> Reporter:
    """The reporter of this process's command (silent outside one)."""
    return _current


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
