"""Cancelling a command: one process-wide flag that the first Ctrl-C sets and that long work in every thread checks.

Python raises KeyboardInterrupt in the main thread alone. Worker threads (downloads, unpacking, compiling, linking)
and child processes (compilers) would carry on to the end of their item, and the main thread, unwinding through an
executor's ``with``, would wait for them: Ctrl-C took seconds to act, and a second one left their staging behind.
So the command line's SIGINT handler (:func:`interruptible`) sets this flag, then raises KeyboardInterrupt as Python
would. Loops in workers call :func:`check` between chunks, members, jobs or directories, and raise
:class:`~wheelstore.base.errors.Cancelled`, so their own clean-up runs (a staged tree or download is removed, a half
linked tree taken out of the venv); waits use :func:`sleep`; child processes are killed by a hook (:func:`on_cancel`);
executors are left through :func:`threads`, which cancels what has not started and waits only briefly for the rest.

A second Ctrl-C during that clean-up ends the process at once: what is left is stale staging, which ``gc`` removes and
``doctor`` reports, as after a ``kill -9``.

No threading here: reading a bool is all a check costs, and a warm install starts no thread.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from .errors import Cancelled

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

__all__ = ["STRAGGLERS", "cancel", "cancelled", "check", "interruptible", "on_cancel", "said", "sleep", "threads"]

#: seconds an executor left on cancel waits for its running workers to notice before it goes on without them (each
#: checks often; one blocked in a system call, a read from a stalled server, is left behind and ends with the process)
STRAGGLERS = 0.3
#: how often :func:`sleep` looks at the flag
_TICK = 0.02

_cancelled = False
_said = False  #: the command line has printed its line for the interrupt (:func:`said`)
_hooks: dict[int, Callable[[], None]] = {}


def cancelled() -> bool:
    """Whether this process's command was interrupted."""
    return _cancelled


def check() -> None:
    """Raise :class:`Cancelled` if the command was interrupted: called between steps of long work in any thread."""
    if _cancelled:
        raise Cancelled()


def sleep(seconds: float) -> None:
    """``time.sleep``, cut short by a cancel (which raises :class:`Cancelled`): for waits in worker threads."""
    deadline = time.monotonic() + seconds
    while True:
        check()
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, _TICK))


def cancel() -> None:
    """Set the flag, and run the hooks (each kills what it started: compilers, uv). Safe in a signal handler: hooks
    take no lock."""
    global _cancelled
    _cancelled = True
    for hook in list(_hooks.values()):
        with contextlib.suppress(Exception):
            hook()


def on_cancel(hook: Callable[[], None]) -> Callable[[], None]:
    """Run ``hook`` when the command is cancelled (at once if it already is); returns what unregisters it. A hook runs
    in a signal handler: it must take no lock, and only send signals or close descriptors."""
    key = id(hook)
    _hooks[key] = hook
    if _cancelled:
        with contextlib.suppress(Exception):
            hook()

    def forget() -> None:
        _hooks.pop(key, None)

    return forget


def said() -> None:
    """The command line has printed ``error: interrupted``: a second Ctrl-C from now on exits without a second line."""
    global _said
    _said = True


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """For the length of a command: the first SIGINT cancels (:func:`cancel`) and raises KeyboardInterrupt; a second
    one, during the clean-up, exits at once with 130 and the same one line, never a traceback."""
    import signal

    global _cancelled, _said

    def handler(signum: int, frame: FrameType | None) -> None:
        if _cancelled:
            with contextlib.suppress(OSError):
                if os.isatty(2):  # a live display may have hidden the cursor: show it again, as its stop would
                    os.write(2, b"\x1b[?25h")
                if not _said:
                    os.write(2, b"error: interrupted\n")
            os._exit(130)
        cancel()
        raise KeyboardInterrupt

    _cancelled = _said = False
    try:
        before = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: Python's own handling stays
        yield
        return
    try:
        yield
    finally:
        if not _cancelled:  # once cancelled, a second Ctrl-C until the process ends (exit handlers) exits at once
            signal.signal(signal.SIGINT, before)


def threads(workers: int, name: str, *, leave: bool = True) -> ThreadPoolExecutor:
    """A ThreadPoolExecutor whose ``with`` does not wait for its work once the command is cancelled: what has not
    started is dropped, and running workers get :data:`STRAGGLERS` seconds to notice. Without a cancel (an API
    caller's own Ctrl-C included: the flag is the command line's), exactly the executor's own ``with``.

    ``leave=False``: running workers are waited for to the end, however long they take to notice. For workers that
    change what the caller's clean-up then puts back (linkers writing into a venv): one still writing after that
    clean-up, or removing its own files after it, would leave the venv half changed. A second Ctrl-C still ends it.
    """
    from concurrent.futures import ThreadPoolExecutor

    class Pool(ThreadPoolExecutor):
        def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                     tb: TracebackType | None) -> Any:
            if not _cancelled:
                try:
                    return super().__exit__(kind, value, tb)
                except KeyboardInterrupt:  # Ctrl-C while waiting for the workers: they are told, not waited for
                    self._leave()
                    raise
            self._leave()
            return None

        def _leave(self) -> None:
            self.shutdown(wait=not leave, cancel_futures=True)
            deadline = time.monotonic() + STRAGGLERS
            for thread in list(self._threads):
                thread.join(max(0.0, deadline - time.monotonic()))

    return Pool(workers, thread_name_prefix=name)
