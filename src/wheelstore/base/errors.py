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


# -- the base ----------------------------------------------------------------------------------------------------------


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


class VenvError(WheelstoreError):
    """The target environment is missing, not a venv, or its interpreter does not run."""


# -- the store: its layout and policy, wheels, trees, gc ---------------------------------------------------------------


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


class EntryPointError(WheelError):
    """A distribution's entry point cannot be given a launcher safely; nothing is installed."""


class NotAFile(WheelstoreError):
    """A store file to be copied is a FIFO, device or socket (planted in a tree by its owner): never read."""


class BytecodeError(WheelstoreError):
    """The target interpreter could not compile a tree's modules."""


class TreeDamaged(WheelstoreError):
    """A published tree differs from its manifest and could not be repaired here; it is not used."""


class RepairError(WheelstoreError):
    """A damaged tree could not be re-derived: no wheel for it, or this user may not move it."""


class RootNotRegistered(WheelstoreError):
    """The venv was filled, but its gc root could not be written: gc may remove the trees it uses."""


class BadMetadata(StoreError):
    """A distribution's METADATA cannot be read, or is not one (a tree's, a wheel's or an installed one's): what it
    requires cannot be checked."""


class GcError(WheelstoreError):
    """gc cannot run safely (no lock on this filesystem) or was given a bad argument."""


# -- fetching ----------------------------------------------------------------------------------------------------------


class FetchError(WheelstoreError):
    """Something could not be fetched: an index or file unreachable, refused, cut off, or not what was promised."""


class DownloadCutOff(FetchError):
    """The connection broke before the whole body arrived: worth another attempt."""


class SourcesError(WheelstoreError):
    """A pip or uv setting that cannot be used: a broken config file, a boolean that is not one."""


class BuildError(WheelstoreError):
    """An sdist could not be built into a wheel for the target interpreter."""


# -- resolving ---------------------------------------------------------------------------------------------------------


class ResolutionError(WheelstoreError):
    """uv could not turn the requirements into a lock: no solution, an unknown package, the network."""


class InputError(WheelstoreError):
    """The inputs cannot be turned into local wheel files: missing, incompatible, inconsistent or malformed."""


class NeedsResolution(WheelstoreError):
    """A requirement not pinned to one version: choosing the version is a resolver's job, and there is none yet."""


class Unsatisfied(WheelstoreError):
    """Distributions of a set require others that the set does not hold, or holds at a version they exclude."""


class Missing(WheelstoreError):
    """Distributions that no allowed source has: not in the store when offline, or on no index."""


class NoSpace(WheelstoreError):
    """A filesystem the command writes to (the store's, a venv's) is full, or the user's quota there is used up."""


# -- venvs -------------------------------------------------------------------------------------------------------------


class InstallError(WheelstoreError):
    """A distribution cannot be installed into or removed from the venv."""


class DamagedDistribution(InstallError):
    """Another tool left a distribution half removed, and what is left cannot be told apart safely."""


class OutsideVenv(WheelstoreError):
    """An install was about to create something outside the venv's directories, or through a symlink."""


class LinkModeError(WheelstoreError):
    """A requested link mode cannot work here, or would be unsafe; the message says why."""


# -- the command line --------------------------------------------------------------------------------------------------


class SharingBroken(WheelstoreError):
    """Doctor found a problem that stops sharing from working for this user."""


# -- interrupts -------------------------------------------------------------------------------------------------------


class ServiceError(WheelstoreError):
    """The store service refused a request, or cannot be reached, or a peer broke the protocol."""


class ServiceUnreachable(ServiceError):
    """The store service is not running, or this user may not connect to it: no request can succeed, so a command
    stops at the first (a refusal, by contrast, is about one request)."""


class ServiceDown(ServiceUnreachable):
    """Nothing listens on the store service's socket (or there is no socket): starting the service is the fix."""


class PeerGone(ServiceError):
    """The service's peer closed the connection or stopped sending mid-request: there is nobody to answer."""


class Cancelled(KeyboardInterrupt):
    """The command was interrupted (Ctrl-C): raised in worker threads as they notice (:mod:`wheelstore.base.cancel`),
    so that every ``except BaseException`` clean-up on the way runs as for the main thread's KeyboardInterrupt, and no
    ``except Exception`` takes it for a failure of the work."""
