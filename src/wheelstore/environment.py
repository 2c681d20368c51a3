"""A venv filled from a store: install, sync, uninstall and list, over the pipeline's stages.

resolve (:mod:`inputs`) -> realize (:mod:`realize`, in the store) -> link (:mod:`link`, :mod:`install`). The link
mode is chosen for every tree before the venv is touched, so a mode that cannot work here is refused with nothing
half-installed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version

from . import install as inst
from .bytecode import ensure_pycs
from .errors import WheelstoreError
from .inputs import Candidate
from .link import LinkMode, choose, probe
from .store import Store, Tree
from .venv import Interpreter, find_python

log = logging.getLogger("wheelstore")

#: what ``sync`` leaves alone although it was not asked for: the venv's own installers
SEED_PACKAGES = frozenset({"pip", "setuptools", "wheel"})
#: trees installed at once
INSTALL_THREADS = 4


@dataclass
class Report:
    """What an install or sync did, for the CLI and ``--json``."""

    installed: list[tuple[str, str, str]] = field(default_factory=list)  #: (name, version, link mode)
    removed: list[tuple[str, str]] = field(default_factory=list)
    unchanged: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "installed": [{"name": n, "version": v, "link_mode": m} for n, v, m in self.installed],
            "removed": [{"name": n, "version": v} for n, v in self.removed],
            "unchanged": [{"name": n, "version": v} for n, v in self.unchanged],
            "notes": self.notes,
        }


class Environment:
    """One target venv."""

    def __init__(self, venv: str | os.PathLike[str]) -> None:
        self.path = Path(venv).absolute()
        self.interpreter = Interpreter.inspect(find_python(self.path))

    def distributions(self) -> dict[NormalizedName, inst.Distribution]:
        return inst.installed(self.interpreter)

    def install(
        self,
        store: Store,
        candidates: Sequence[Candidate],
        *,
        link_mode: LinkMode | None = None,
        exact: bool = False,
        compile_bytecode: bool = True,
    ) -> Report:
        """Install ``candidates``; with ``exact`` (sync) also remove every other distribution but the seeds."""
        report = Report()
        present = self.distributions()
        wanted = {c.name: c for c in candidates}
        todo = [c for c in candidates if not _same(present.get(c.name), c)]
        report.unchanged = [(c.name, str(c.version)) for c in candidates if c not in todo]

        trees = self._realize(store, todo)
        modes = self._choose_modes(store, trees, link_mode, report)
        pycs = self._bytecode(store, trees) if compile_bytecode else {}

        for cand in todo:  # an upgrade or downgrade replaces the old version's files
            old = present.get(cand.name)
            if old is not None:
                inst.uninstall(old, self.interpreter)
                report.removed.append((old.display_name, old.version))

        def one(pair: tuple[Candidate, Tree]) -> None:
            cand, tree = pair
            inst.install_tree(
                tree,
                self.interpreter,
                modes[tree.key],
                requested=cand.requested,
                direct_url=cand.direct_url,
                store_root=str(store.root),
                pycs=pycs.get(tree.key),
            )

        # Trees are independent, and link()/mkdir() release the GIL: a few threads overlap the syscalls.
        with ThreadPoolExecutor(max(1, min(INSTALL_THREADS, len(todo))), thread_name_prefix="install") as pool:
            list(pool.map(one, zip(todo, trees)))
        report.installed = [(t.manifest.name, t.manifest.version, modes[t.key].value) for t in trees]
        if exact:  # removals last: a failed install above must not have cost the venv its other packages
            for name, dist in sorted(present.items()):
                if name not in wanted and name not in SEED_PACKAGES:
                    inst.uninstall(dist, self.interpreter)
                    report.removed.append((dist.display_name, dist.version))
        inst.bump_mtime(self.interpreter)
        return report

    def uninstall(self, names: Sequence[str]) -> Report:
        report = Report()
        present = self.distributions()
        missing = [n for n in names if canonicalize_name(n) not in present]
        if missing:
            raise WheelstoreError(f"not installed in {self.path}: {', '.join(missing)}")
        for n in dict.fromkeys(canonicalize_name(n) for n in names):
            dist = present[n]
            inst.uninstall(dist, self.interpreter)
            report.removed.append((dist.display_name, dist.version))
        inst.bump_mtime(self.interpreter)
        return report

    def edit(self, store: Store, name: str, *, undo: bool = False) -> tuple[inst.Distribution, int]:
        """Give this venv private, writable copies of one distribution's files, or (``undo``) link them again."""
        dist = self.distributions().get(canonicalize_name(name))
        if dist is None:
            raise WheelstoreError(f"{name} is not installed in {self.path}")
        found = inst.origin(dist)
        if found is None:
            raise WheelstoreError(f"{dist.display_name} in {self.path} was not installed by wheelstore, so its "
                                  "files are already this venv's own")
        if found.get("store") != str(store.root):
            raise WheelstoreError(f"{dist.display_name} in {self.path} came from the store at {found.get('store')}, "
                                  f"not {store.root}", hint=f"pass --store {found.get('store')}")
        tree = store.lookup(str(found.get("key")))
        if tree is None:
            raise WheelstoreError(f"the store at {store.root} no longer has the tree of {dist.display_name}",
                                  hint=f"reinstall it: wheelstore install --venv {self.path} ...")
        if undo:
            try:
                recorded: LinkMode | None = LinkMode(found.get("link_mode"))
            except ValueError:
                recorded = None
            # the safety rule is applied again: the store's policy or the tree's owner may have changed since
            modes = self._choose_modes(store, [tree], recorded, Report())
            changed = inst.relink(dist, tree, modes[tree.key])
        else:
            changed = inst.make_private(dist, tree)
        inst.bump_mtime(self.interpreter)
        return dist, len(changed)

    def _bytecode(self, store: Store, trees: Sequence[Tree]) -> dict[str, Tree]:
        """Each tree's pyc unit for this interpreter, compiled once per store. Trees go one at a time: the compiler
        already fans each tree's modules out over every core."""
        units = {}
        for tree in trees:
            unit = ensure_pycs(store, tree, self.interpreter)
            if unit is not None:
                units[tree.key] = unit
        return units

    def _realize(self, store: Store, todo: Sequence[Candidate]) -> list[Tree]:
        """Trees for the candidates: looked up by hash when the input gave one (no need to open the wheel), else
        realized (which publishes what the store lacks)."""
        known = {c.sha256: store.lookup(c.sha256) for c in todo if c.sha256}
        if all(known.get(c.sha256 or "") for c in todo):
            return [t for c in todo if (t := known[c.sha256 or ""]) is not None]
        outcomes = store.realize_many([(c.wheel, c.sha256) for c in todo])
        errors = [o for o in outcomes if isinstance(o, WheelstoreError)]
        if errors:
            raise errors[0]
        return [o.tree for o in outcomes if not isinstance(o, WheelstoreError)]

    def _choose_modes(
        self, store: Store, trees: Sequence[Tree], requested: LinkMode | None, report: Report
    ) -> dict[str, LinkMode]:
        """The mode for every tree, decided before anything in the venv changes."""
        modes: dict[str, LinkMode] = {}
        if not trees:
            return modes
        sample = next((t for t in trees if t.manifest.files), None)
        if sample is None:
            return {t.key: requested or LinkMode.COPY for t in trees}
        site = self.interpreter.paths["purelib"]
        found = probe(os.fspath(sample.path / next(iter(sample.manifest.files))), site)
        shared = store.policy.shared != "private"
        for tree in trees:
            mode, note = choose(requested, found, tree_owner_uid=tree.manifest.owner_uid, shared=shared)
            modes[tree.key] = mode
            if note and note not in report.notes:
                report.notes.append(note)
                log.warning("%s", note)
        return modes


def _same(dist: inst.Distribution | None, cand: Candidate) -> bool:
    """Whether the venv already holds exactly this version (installed by anyone)."""
    if dist is None:
        return False
    try:
        return Version(dist.version) == cand.version
    except InvalidVersion:
        return False
