"""The ``wheelstore`` logger, made when its first record is.

Importing :mod:`logging` costs about 5 ms (it brings traceback, threading, string and weakref): a twentieth of a warm
install that has nothing to report. Modules log through :data:`log`; the command line sets :data:`threshold` and the
handler (:data:`setup`), which runs once, just before the first record that passes.
"""

from __future__ import annotations

from collections.abc import Callable

#: logging's level numbers, which it documents as fixed
DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40

#: records below this level are dropped without importing logging; None (the API's default) leaves it to logging
threshold: int | None = None
#: what the command line does to the logger before its first record (its handler and level), run once
setup: Callable[[], None] | None = None


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

    if setup is not None:
        first, setup = setup, None
        first()
    logging.getLogger("wheelstore").log(level, msg, *args)


log = _Log()
