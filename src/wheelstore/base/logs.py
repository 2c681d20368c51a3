"""The ``wheelstore`` logger, made when its first record is.

Importing :mod:`logging` costs about 5 ms (it brings traceback, threading, string and weakref): a twentieth of a warm
install that has nothing to report. Modules log through :data:`log`; the command line sets :data:`threshold` and the
handler (:data:`setup`), which runs once, just before the first record that passes.
"""

from __future__ import annotations

import _thread
from collections.abc import Callable

#: logging's level numbers, which it documents as fixed
DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40

#: records below this level are dropped without importing logging; None (the API's default) leaves it to logging
threshold: int | None = None
#: what the command line does to the logger before its first record (its handler and level), run once
setup: Callable[[], None] | None = None
#: held while ``setup`` runs (a lock from _thread, which threading is built on: importing threading is not needed)
_SETUP_LOCK = _thread.allocate_lock()


class _Log:
    """The few methods of a :class:`logging.Logger` that wheelstore uses."""

    def debug(self, msg: str, *args: object) -> None:
        _emit(DEBUG, msg, args)

    def info(self, msg: str, *args: object) -> None:
        _emit(INFO, msg, args)

    def warning(self, msg: str, *args: object) -> None:
        _emit(WARNING, msg, args)


def _emit(level: int, msg: str, args: tuple[object, ...]) -> None:
    global setup
    if threshold is not None and level < threshold:
        return
    import logging

    with _SETUP_LOCK:  # another thread's first record waits until the handler is there
        if setup is not None:
            setup()
            setup = None
    # the record names the caller of log.warning(...), as logging's own would: not _emit, not _Log
    logging.getLogger("wheelstore").log(level, msg, *args, stacklevel=3)


log = _Log()
