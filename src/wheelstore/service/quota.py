"""A service store's budgets: a user may have the service publish a new tree only while what they alone pin, with it,
stays within their budget (``[service] budget_user`` and ``[service.budgets]``, :mod:`wheelstore.store.serviceconf`).

What a user alone pins is what :mod:`wheelstore.store.stats` says (and ``stats`` shows): the units only the
roots the service wrote for their uid hold, plus the trees published for them by this service run that no root holds
yet (an install pins right after it publishes; a client that never pins is still charged until gc takes them). A tree
already in the store is linked, never charged at publication: sharing is what the store is for.

A publication is checked twice: before anything is fetched (with the upload's size, a lower bound of what it unpacks
to), and after it is unpacked (and compiled), with the staged tree's real size, before the rename makes it visible, so
an over-budget tree is never published. Publications of one user in flight count against each other.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..base.errors import ServiceError
from ..base.sizes import binary
from ..store import stats
from ..store.manifest import FileEntry
from ..store.policy import user_name
from ..store.publish import Compiler
from ..store.serviceconf import Budget, ServiceSettings
from ..store.store import Store

if TYPE_CHECKING:
    from .peer import Peer


class Quota:
    """The budgets of one running service: unit sizes measured once, and what it published for whom."""

    def __init__(self, store: Store, settings: ServiceSettings) -> None:
        self.store = store
        self.settings = settings
        self.sizes = stats.UnitSizes(store)
        self._lock = threading.Lock()
        self._published: dict[int, set[str]] = {}  #: by uid: trees published for them, until a root holds them
        self._in_flight: dict[int, int] = {}  #: by uid: bytes of their staged trees admitted, not yet published

    def budget(self, peer: Peer) -> Budget | None:
        if self.settings.budget_user is None and not self.settings.budgets:
            return None
        return self.settings.budget(peer.user, peer.groups())

    def alone(self, uid: int) -> int:
        """The bytes ``uid`` alone pins: their roots' exclusive units, and trees published for them nobody pins."""
        shares = stats.measure_shares(self.store, self.sizes)
        pinned = set().union(*(s.units for s in shares.values()))
        mine = shares.get(uid)
        with self._lock:
            waiting = self._published.get(uid, set()) - pinned
        waiting = stats.present(self.store, waiting)
        with self._lock:
            self._published[uid] = waiting
        return (mine.exclusive.bytes if mine else 0) + sum(self.sizes.of(k).bytes for k in waiting)

    def check(self, peer: Peer, budget: Budget, filename: str, adding: int, *, admit: bool = False) -> None:
        """Refuse ``filename`` if ``adding`` bytes more would bring what ``peer`` alone pins over ``budget``; with
        ``admit``, count them as in flight from now on (the caller takes them back)."""
        alone = self.alone(peer.uid)
        with self._lock:
            total = alone + self._in_flight.get(peer.uid, 0) + adding
            if total > budget.bytes:
                raise _over(filename, peer.user, total, budget)
            if admit:
                self._in_flight[peer.uid] = self._in_flight.get(peer.uid, 0) + adding

    @contextmanager
    def admitting(self, peer: Peer, filename: str, size: int | None, compiler: Compiler | None,
                  ) -> Iterator[Compiler | None]:
        """Around a publication for ``peer``: checked now with ``size`` (if known), and the compiler to publish
        with, which checks the staged tree (after ``compiler``) before it may be renamed into place. Call
        :meth:`published` inside, so that the tree is never out of both counts."""
        budget = self.budget(peer)
        if budget is None:
            yield compiler
            return
        if size:
            self.check(peer, budget, filename, size)
        admitted = [0]

        def staged(root_fd: int, path: Path, names: list[str]) -> tuple[dict[str, FileEntry], list[str], str] | None:
            compiled = compiler(root_fd, path, names) if compiler is not None else None
            size = stats.usage(os.fspath(path)).bytes
            self.check(peer, budget, filename, size, admit=True)
            admitted[0] = size
            return compiled

        try:
            yield staged
        finally:
            if admitted[0]:
                with self._lock:
                    self._in_flight[peer.uid] -= admitted[0]

    def published(self, peer: Peer, key: str) -> None:
        """``key`` was published for ``peer``: theirs alone until a root holds it."""
        with self._lock:
            self._published.setdefault(peer.uid, set()).add(key)


def _over(filename: str, user: str, total: int, budget: Budget) -> ServiceError:
    owner = user_name(os.geteuid())
    return ServiceError(f"publishing {filename} would bring what {user} alone pins to {binary(total)}, over the "
                        f"{binary(budget.bytes)} budget for {budget.whose}; nothing was published",
                        hint=f"remove venvs you no longer use (what only they pin stops counting at {owner}'s next "
                        f"gc); or ask {owner} to raise {budget.setting}")
