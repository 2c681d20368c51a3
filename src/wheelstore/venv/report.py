"""What an install or sync did: the lines the command line prints, ``--json``, and the notes said once."""

from __future__ import annotations

from ..base.logs import log
from .linkmode import PairNote

__all__ = ["InstallReport"]


class InstallReport:
    """What an install or sync did, for the CLI and ``--json``."""

    def __init__(self) -> None:
        self.installed: list[tuple[str, str, str]] = []  #: (name, version, link mode)
        self.removed: list[tuple[str, str]] = []
        self.unchanged: list[tuple[str, str]] = []
        self.notes: list[str] = []
        #: notes about the filesystem pair this user was told by an earlier install (said only with -v)
        self.told_before: set[str] = set()

    def to_json(self) -> dict[str, object]:
        return {
            "installed": [{"name": n, "version": v, "link_mode": m} for n, v, m in self.installed],
            "removed": [{"name": n, "version": v} for n, v in self.removed],
            "unchanged": [{"name": n, "version": v} for n, v in self.unchanged],
            "notes": self.notes,
        }

    def say_notes(self) -> None:
        """Each note as a warning, but a fact about the filesystem pair (:class:`PairNote`): a ``note:`` the first
        time this user meets the pair, later a debug line (-v), since it is no news and doctor calls it fine."""
        for note in self.notes:
            if not isinstance(note, PairNote):
                log.warning("%s", note)
            elif note in self.told_before:
                log.debug("%s", note)
            else:
                log.info("%s (said once for these filesystems; -v says it every time)", note)
