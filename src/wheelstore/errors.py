"""Exceptions wheelstore raises for problems a user can act on.

Each one carries a complete one-line message, ideally with the fix, so the CLI can print it as it is and never show a
traceback for a user's mistake. Bugs stay ordinary exceptions.
"""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with every character a terminal could act on spelled out as Python does (``\\x1b``, ``\\u202e``):
    file and member names come from wheels and from other members' trees, and an escape sequence in one must not
    reach anyone's terminal. Printable text, non-ASCII letters included, is kept as it is."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


class WheelstoreError(Exception):
    """Base class: a problem with the user's input or environment, explained in one line."""

    #: process exit status the CLI uses for this kind of error
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(self.oneline())

    def oneline(self) -> str:
        """The message and, when there is one, the fix, on a single line."""
        text = " ".join(self.message.split())
        if self.hint:
            text += f" (fix: {' '.join(self.hint.split())})"
        return printable(text)


class StoreError(WheelstoreError):
    """The store is missing, unreadable, or not a wheelstore store."""


class StoreNotFound(StoreError):
    """No store exists at the selected path."""


class StoreAccessDenied(StoreError):
    """The user may not read or write the store, typically because they are not in its group."""


class PolicyError(WheelstoreError):
    """A requested policy cannot be applied: unknown group, a group the user is not in, a bad mode name."""


class WheelError(WheelstoreError):
    """A wheel file is invalid; nothing from it was published."""


class HashMismatch(WheelError):
    """A file's sha256 differs from the one it was expected to have."""


class UnsafeMember(WheelError):
    """A wheel member could write outside its tree or create something other than a regular file."""


class RecordMismatch(WheelError):
    """A wheel's RECORD does not describe its members exactly."""
