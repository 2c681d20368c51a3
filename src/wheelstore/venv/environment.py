"""A venv filled from a store: install, sync, uninstall and list, over the pipeline's stages.

resolve (:mod:`wheelstore.resolve.plan`) -> fetch (:mod:`wheelstore.fetch.download`) -> realize
(:mod:`wheelstore.store.publish`) -> link (:mod:`.linkmode`, :mod:`.install`) -> maintain (:mod:`.checks` before or
while linking, :mod:`wheelstore.store.roots` after). The link
mode is chosen for every tree before the venv is touched, so a mode that cannot work here is refused with nothing
half-installed; a tree the check finds damaged while it is being linked takes the whole install back.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from packaging.version import InvalidVersion, Version

from . import install as inst
from . import checks
from . import damage
from . import oldpip
from . import servicelink
from ..base import cancel
from ..base.distinfo import Distribution, describe, installed, origin, read_regular
from ..base.errors import (
    InstallError,
    LinkModeError,
    RootNotRegistered,
    ServiceError,
    ServiceUnreachable,
    WheelstoreError,
)
from ..base.hooks import checkpoint
from ..resolve.candidates import Candidate
from ..service.client import ServiceClient, service_socket
from ..resolve.plan import Plan, Request, plan
from ..resolve.projects import LocalProjects
from ..resolve.requirements import with_file_indexes
from ..base.interpreter import Interpreter, find_python
from .link import LinkMode
from .linkmode import PairNote, choose, first_told, probe, refuse_beside_old_pip
from .report import InstallReport
from .steps import Step, Work, editable_of, same
from .edit import make_private, relink
from .realize import gone, realize, service_pycs, service_repair, service_root
from .refusal import explained
from .unfold import plan_folds
from .uninstall import Stash, uninstall
from ..base import progress
from ..base.logs import log
from ..base.progress import Kind
from ..base.names import canonical
from ..store.identity import StoreMatch
from ..store.roots import register
from ..fetch.sources import Sources
from ..store.store import Store, Tree
from ..store.storelock import install_lock

if TYPE_CHECKING:
    from packaging.utils import NormalizedName

    from ..resolve.uvproject import UvSync
    from .editable import Done

    from ..resolve.requirements import Pin


#: what ``sync`` leaves alone although it was not asked for: the venv's own installers
SEED_PACKAGES = frozenset({"pip", "setuptools", "wheel"})
#: trees installed at once
INSTALL_THREADS = 4


class Options(NamedTuple):
    """How to install: the link mode (None: auto), bytecode, where downloads come from, output."""

    link_mode: LinkMode | None = None
    compile_bytecode: bool = True
    #: trees published now also get opt-1 and opt-2 pycs (fold, auto: inside the tree)
    compile_optimized: bool = False
    sources: Sources | None = None
    #: a uv project's lock: its own packages (the editable entries) installed by ``uv sync``, as uv would
    project: UvSync | None = None


class Environment:
    """One target venv."""

    def __init__(self, venv: str | os.PathLike[str]) -> None:
        self.path = Path(venv).absolute()
        self.interpreter = Interpreter.inspect(find_python(self.path))

    def distributions(self) -> dict[NormalizedName, Distribution]:
        return installed(self.interpreter)

    def install(self, store: Store, request: Request, options: Options = Options()) -> InstallReport:
        """Install what ``request`` asks (with ``request.exact``, as sync: remove every other distribution but the
        seeds). The venv's distributions are read once, for the plan and the install.

        The gc lock is held shared from finding the trees until the venv's gc root lists them, so a concurrent
        ``wheelstore gc`` cannot sweep them in between.
        """
        # the requirements files' own indexes (poetry and pdm export them) count for the plan and the builds alike
        sources = with_file_indexes(options.sources or Sources.from_environment(), request.requirement_files)
        # builds (local projects, sdists) take their build dependencies from the -f directories too
        builds = sources._replace(find_links=tuple(dict.fromkeys((*sources.find_links, *map(str, request.find_links)))))
        options = options._replace(sources=builds)
        with install_lock(store):
            try:
                work, report, after, done = self._plan_and_install(store, request, options, sources, builds)
            except BaseException as e:
                self._register(store, failed=True)
                self._explain(e, store)
                raise
            self._register(store, after)
        if done is None and work.editables:
            from .editable import install_editables  # here: it runs uv

            done = install_editables(self.interpreter, work.editables, builds)
        if done is None:
            return report
        report.installed += done.installed
        report.removed += done.removed
        report.unchanged += done.unchanged
        return report

    def _plan_and_install(self, store: Store, request: Request, options: Options, sources: Sources, builds: Sources
                          ) -> tuple[Work, InstallReport, dict[NormalizedName, Distribution], Done | None]:
        """Plan and install, planned once more when a gc took trees before the install pinned them (a client of a
        store's service: :meth:`_pin`), so that they are published again. A uv project's own packages are installed
        by ``uv sync`` on the way (:meth:`_uv_sync_first`; what it did is returned)."""
        done: list[Done] = []
        first = self._uv_sync_first(options.project, builds, done)
        for last in (False, True):
            with LocalProjects(self.interpreter, builds, request.editables,
                               all_aside=options.project is not None) as projects:
                present = self.distributions()
                planned = plan(store, self.interpreter, request, sources, present, projects=projects)
                work = Work(request, planned, present, tuple(projects.editables))
                try:
                    try:
                        report, after = self._install(store, work, options, check_while_linking=True, first=first)
                    except _DamagedMeanwhile:  # all taken back: now check first, to name or repair the damage
                        report, after = self._install(store, work, options, check_while_linking=False, first=first)
                except _GoneMeanwhile as e:
                    if last:
                        raise InstallError(f"gc removed {', '.join(e.names)} from {store.root} while this install "
                                           "was about to link it, twice; nothing was linked",
                                           hint="run the command again") from None
                    log.debug("gc removed %s before this install pinned it: planning again", ", ".join(e.names))
                    continue
            return work, report, after, done[0] if done else None
        raise AssertionError("not reached")

    def _uv_sync_first(self, project: UvSync | None, builds: Sources, done: list[Done]
                       ) -> Callable[[Work], Work] | None:
        """For a uv project's lock, what :meth:`_install` does once the store holds every tree the venv is to link
        (downloaded, unpacked) and before it links any: ``uv sync`` of the project's own packages, once (what it did
        is put in ``done``); the work then has the venv's distributions read again. A download or a build that fails
        so changes nothing in the venv, as with ``uv sync``, which fetches and builds everything before it installs."""
        if project is None:
            return None

        def first(work: Work) -> Work:
            if not work.editables:
                return work
            if not done:
                from .editable import install_editables  # here: it runs uv

                done.append(install_editables(self.interpreter, work.editables, builds, project,
                                              [c.name for c in work.plan.candidates]))
            return work._replace(present=self.distributions())

        return first

    def _pin(self, store: Store, present: Mapping[NormalizedName, Distribution], steps: Sequence[Step]) -> None:
        """On a service store, pin the trees and pyc units about to be linked in the venv's root (its clients take no
        gc lock), then check that a gc that ran before the pin took none of them: :class:`_GoneMeanwhile` if it did,
        before anything is linked. Elsewhere nothing: the gc lock, held since the plan, keeps gc out."""
        if not steps:
            return
        tag = self.interpreter.cache_tag
        keys = [k for s in steps for k in ((s.key, f"{s.key}-{tag}") if tag else (s.key,))]
        checkpoint("pinning")  # tests run a gc here: the trees are found, not pinned yet
        if not service_root(store, self.path, self.interpreter, present, keys):
            return
        missing = gone(store, [s.tree for s in steps])
        if missing:
            raise _GoneMeanwhile([f"{t.manifest.name} {t.manifest.version}" for t in missing])

    def _explain(self, e: BaseException, store: Store | None) -> None:
        """Raise ``e`` as the error naming the venv directory that refused, or the full filesystem
        (:mod:`.refusal`), if it is one of those."""
        said = explained(e, self.path, self.interpreter.paths["purelib"], store.root if store else None) \
            if isinstance(e, OSError) else None
        if said is not None:
            raise said from None

    def _register(self, store: Store, after: Mapping[NormalizedName, Distribution] | None = None, *,
                  failed: bool = False) -> None:
        """Refresh this venv's gc root in ``store`` from its distributions (``after``, what an install knows it
        left; else read again). A root that cannot be written leaves the venv unprotected from gc:
        :class:`RootNotRegistered`, an error, unless the command ``failed`` already (its own error comes first, and
        this one is a warning)."""
        try:
            if not service_root(store, self.path, self.interpreter, after):
                register(store, self.path, self.interpreter, after)
        except (RootNotRegistered, OSError, ServiceError) as e:
            if not failed:
                raise
            if not isinstance(e, ServiceUnreachable):  # else the command's own error said it
                log.warning("%s", e.oneline() if isinstance(e, WheelstoreError) else e)

    def _steps(self, store: Store, work: Work, options: Options, report: InstallReport) -> list[Step]:
        """What must be linked, each with its tree and link mode, decided before the venv changes."""
        candidates, present = work.plan.candidates, work.present
        broken = self._damage(present, candidates, work.request.exact, report)
        planned = {c.name: str(c.version) for c in candidates if not same(present.get(c.name), c)}
        old_pip = oldpip.too_old_after(present, planned)
        relink = oldpip.linked(present) if old_pip is not None else set()
        steps = [Step(c) for c in candidates if c.name in broken or c.name in relink
                 or work.request.reinstalls(c.name) or not same(present.get(c.name), c)]
        todo = {s.cand.name for s in steps}
        if old_pip is not None:
            refuse_beside_old_pip(options.link_mode, old_pip)
            self._old_pip_left(old_pip, relink - todo, work, report, brought=oldpip.PIP in planned)
        report.unchanged = [(c.name, str(c.version)) for c in candidates if c.name not in todo]
        self._realize(store, steps, options.sources,
                      compile_into=options.link_mode in (None, LinkMode.FOLD) and options.compile_bytecode,
                      optimized=options.compile_optimized)
        if work.plan.check_after:  # a set taken as complete, now that every tree is here
            work.check_dependencies(steps, self.interpreter)

        modes = self._choose_modes(store, [s.tree for s in steps], options.link_mode, report, old_pip)
        for step in steps:
            step.mode = modes[step.key]
        return steps

    def _install(self, store: Store, work: Work, options: Options, *, check_while_linking: bool,
                 first: Callable[[Work], Work] | None = None) -> tuple[InstallReport, dict[NormalizedName, Distribution]]:
        """Link what the plan chose; the report, and the venv's distributions after it (read once, before, and once
        more after what ``first`` does once the trees are at hand)."""
        report = InstallReport()
        steps = self._steps(store, work, options, report)
        if first is not None:
            work = first(work)
        present = work.present
        self._pin(store, present, steps)
        hardlinked = frozenset(s.key for s in steps if s.mode is LinkMode.HARDLINK)
        # hard links need their check first (link counts, see checks.linked); the rest may be checked meanwhile
        here = checks.HERE_WHEN_FOLDED if all(s.mode is LinkMode.FOLD for s in steps) else 0.0
        later = checks.CheckWhileLinking.start(store, [s.tree for s in steps if s.key not in hardlinked], here) \
            if check_while_linking else None
        try:
            now = [s for s in steps if s.key in hardlinked] if later is not None else steps
            # before the venv changes; a repaired tree comes back under the same key, owned by its repairer
            for step, tree in zip(now, checks.intact_trees(store, [s.tree for s in now], [s.cand.wheel for s in now],
                                                           report.notes, hardlinked, service_repair(store))):
                step.tree = tree
            if options.compile_bytecode:
                self._bytecode(store, steps)
            checkpoint("linking")  # tests pause here: the trees are found, not yet linked
            stashes = self._link_checked(store, steps, present, report, later)
        finally:
            if later is not None:
                later.close()
        report.say_notes()  # once the install is in, so that a refusal is its only line
        for stash in stashes.values():
            stash.discard()
        checks.linked(store, [u for s in steps if s.mode is LinkMode.HARDLINK for u in (s.tree, s.pycs) if u],
                      self.interpreter.cache_tag)
        report.installed = [(s.tree.manifest.name, s.tree.manifest.version, s.link_mode.value) for s in steps]
        after = {n: d for n, d in present.items() if n not in stashes and n not in {s.cand.name for s in steps}}
        after.update((d.name, d) for s in steps if s.dist_info and (d := describe(s.dist_info)) is not None)
        if work.plan.closed is not None:  # once the trees are as they stay (sealed): see remember_closed
            from ..resolve.dependencies import remember_closed

            remember_closed(work.plan.candidates, {s.cand.name: s.tree for s in steps}, work.plan.closed,
                            self.interpreter)
        strays = False
        if work.request.exact:  # removals last: a failed install above must not have cost the venv its other packages
            keep = {c.name for c in work.plan.candidates} | {p.name for p in work.editables} | {
                n for n, d in after.items() if editable_of(d) in {p.project for p in work.editables}}
            strays = self._remove_unwanted(after, keep, report)
        if steps or report.removed or strays:  # a sync with nothing to do changes nothing, not even an mtime
            inst.bump_mtime(self.interpreter)
        return report, after

    def _old_pip_left(self, old_pip: str, linked: set[NormalizedName], work: Work, report: InstallReport, *,
                      brought: bool) -> None:
        """Links this install leaves beside a pip that cannot remove them (:mod:`.oldpip`): an install that brings
        that pip in is refused before anything changes; one that finds it there says so, with the fix."""
        if work.request.exact:
            linked &= {c.name for c in work.plan.candidates} | SEED_PACKAGES
        if not linked:
            return
        names = ", ".join(sorted(linked))
        if brought:  # this install links that pip
            raise LinkModeError(f"pip {old_pip} cannot remove the links into a store that {names} have in "
                                f"{self.path} (pip before 23.1 skips them)",
                                hint=f"install pip>=23.1, or first: wheelstore install --venv {self.path} "
                                     f"--reinstall --link-mode copy {' '.join(sorted(linked))}")
        report.notes.append(f"pip {old_pip} in {self.path} cannot remove the links into a store that {names} have: "
                            f"upgrade it (wheelstore install --venv {self.path} -U pip)")

    def _damage(self, present: dict[NormalizedName, Distribution], candidates: Sequence[Candidate], exact: bool,
                report: InstallReport) -> set[NormalizedName]:
        """The requested distributions another tool left half removed (reinstalled, as they are not "already there"),
        each said; the others' damage is said with its fix (sync removes what it does not keep)."""
        wanted = [c.name for c in candidates]
        found = damage.survey(self.interpreter, present, wanted, strays=False)
        for d in found:
            report.notes.append(f"{d.describe()}: reinstalled it")
        if not exact:  # links nobody claims are doctor's and sync's to find: that costs reading every origin file
            others = [n for n in present if n not in set(wanted) and not damage.has_record(present[n])]
            for d in damage.survey(self.interpreter, present, others, strays=False):
                report.notes.append(f"{d.describe()} (fix: {d.fix(self.path, wanted=False)})")
        return {d.dist.name for d in found if d.dist is not None}

    def _remove_unwanted(self, present: dict[NormalizedName, Distribution], wanted: set[NormalizedName],
                         report: InstallReport) -> bool:
        """sync's removals: every distribution not wanted (whole or half removed by another tool, then what can be
        told as its own), and links into the store nobody claims. ``present`` (the venv's distributions) loses
        those removed; whether there were such links."""
        for name, dist in sorted(present.items()):
            if name in wanted or name in SEED_PACKAGES:
                continue
            if damage.has_record(dist):
                uninstall(dist, self.interpreter)
            else:
                found = damage.Damaged(dist, "", damage.tree_of(dist))
                damage.remove(found, self.interpreter, self.path, forget_unknown=True)
                if found.tree is None:
                    log.warning("removed %s %s's dist-info; it had no RECORD, so files it installed may remain",
                                dist.display_name, dist.version)
            report.removed.append((dist.display_name, dist.version))
            del present[name]
        strays = damage.survey(self.interpreter, present, ())
        for stray in strays:
            log.warning("removing %s", stray.describe())
            damage.remove(stray, self.interpreter, self.path)
        return bool(strays)

    def _link_checked(
        self,
        store: Store,
        steps: Sequence[Step],
        present: dict[NormalizedName, Distribution],
        report: InstallReport,
        later: checks.CheckWhileLinking | None,
    ) -> dict[NormalizedName, Stash]:
        """Link the trees, replacing older versions (kept aside until the caller discards them), and take everything
        back if anything fails, or if the check running meanwhile finds a tree damaged."""
        stashes: dict[NormalizedName, Stash] = {}
        cleared: set[NormalizedName] = set()  # names whose old version is gone or set aside: what is there now is ours
        try:
            for step in steps:  # an upgrade or downgrade replaces the old version's files, kept aside until it is in
                name = step.cand.name
                old = present.get(name)
                cleared.add(name)
                if old is not None and not damage.has_record(old):  # only its remains can go: nothing to keep
                    damage.remove(damage.Damaged(old, "", damage.tree_of(old)), self.interpreter, self.path,
                                  forget_unknown=True)
                elif old is not None:
                    stashes[name] = Stash(self.interpreter.prefix)
                    uninstall(old, self.interpreter, stashes[name])
                    report.removed.append((old.display_name, old.version))
            self._link_all(store, steps)
            if later is not None and not later.intact():
                raise _DamagedMeanwhile()
        except BaseException:
            self._put_back(steps, stashes, cleared)
            raise
        return stashes

    def _put_back(self, steps: Sequence[Step], stashes: dict[NormalizedName, Stash], cleared: set[NormalizedName]
                  ) -> None:
        """After a failed install: remove what it installed (a distribution of the new version where the old one
        was ``cleared`` or absent), and restore the old versions it replaced."""
        now = self.distributions()
        for step in steps:
            name = step.cand.name
            if name in cleared and name in now and same(now[name], step.cand):
                uninstall(now[name], self.interpreter)
        for stash in stashes.values():
            stash.restore()

    def _link_all(self, store: Store, steps: Sequence[Step]) -> None:
        folds = plan_folds([s.tree for s in steps if s.mode is LinkMode.FOLD], self.interpreter)
        # on a service store, hard links are the service's to make (:mod:`.servicelink`)
        via = ServiceClient.of(store) if service_socket(store) and any(s.mode is LinkMode.HARDLINK for s in steps) \
            else None

        def one(step: Step) -> None:
            step.dist_info = inst.install_tree(
                step.tree,
                self.interpreter,
                step.link_mode,
                requested=step.cand.requested,
                direct_url=step.cand.direct_url,
                store_root=str(store.root),
                pycs=step.pycs,
                fold=folds.get(step.key),
                store_id=store.id,
                service=via,
            )

        # Trees are independent, and link()/mkdir() release the GIL: a few threads overlap the syscalls of per-file
        # linking. Folded trees make few: there, threads would only fight over the GIL (and with the check running
        # meanwhile for the other core).
        per_file = sum(1 for s in steps if s.mode is not LinkMode.FOLD)
        if per_file == 0:
            for step in steps:
                one(step)
            return
        # a cancel waits for the linkers to stop and take their files out: _put_back must come after them
        with cancel.threads(max(1, min(INSTALL_THREADS, per_file)), "install", leave=False) as pool:
            list(pool.map(one, steps))

    def uninstall(self, names: Sequence[str]) -> InstallReport:
        """Remove distributions, then refresh the gc roots of the stores they came from."""
        dists = self.distributions()
        # a distribution another tool half removed may have lost its origin file: its links still name the store
        stores = {t[0] for n in names if (d := dists.get(canonical(n))) is not None
                  and (t := damage.tree_of(d)) is not None}
        try:
            report = self._uninstall(names)
        except OSError as e:
            self._explain(e, None)
            raise
        for path in sorted(stores):
            try:
                with Store.open(path) as store, install_lock(store):
                    self._register(store)
            except WheelstoreError as e:  # a store that is gone or unreadable holds nothing of ours anyway
                log.warning("could not refresh the gc root of %s in %s: %s", self.path, path, e.oneline())
        return report

    def _uninstall(self, names: Sequence[str]) -> InstallReport:
        report = InstallReport()
        present = self.distributions()
        missing = [n for n in names if canonical(n) not in present]
        if missing:
            raise WheelstoreError(f"not installed in {self.path}: {', '.join(missing)}")
        for n in dict.fromkeys(canonical(n) for n in names):
            dist = present[n]
            if damage.has_record(dist):
                uninstall(dist, self.interpreter)
            else:  # half removed by another tool: what can be told as its own, or a refusal with the fix
                found = damage.Damaged(dist, "has no RECORD (another tool removed it part way)", damage.tree_of(dist))
                damage.remove(found, self.interpreter, self.path)
                log.warning("%s: removed what wheelstore linked of it", found.describe())
            report.removed.append((dist.display_name, dist.version))
        inst.bump_mtime(self.interpreter)
        return report

    def edit(self, store: Store, name: str, *, undo: bool = False) -> tuple[Distribution, int]:
        """See :meth:`_edit`; under the gc lock (``--undo`` links the tree again), refreshing the venv's root."""
        with install_lock(store):
            try:
                done = self._edit(store, name, undo=undo)
            except BaseException as e:
                self._register(store, failed=True)
                self._explain(e, store)
                raise
            self._register(store)
            return done

    def _edit(self, store: Store, name: str, *, undo: bool = False) -> tuple[Distribution, int]:
        """Give this venv private, writable copies of one distribution's files, or (``undo``) link them again."""
        dist = self.distributions().get(canonical(name))
        if dist is None:
            raise WheelstoreError(f"{name} is not installed in {self.path}")
        found = origin(dist)
        if found is None:
            raise WheelstoreError(f"{dist.display_name} in {self.path} was not installed by wheelstore, so its "
                                  "files are already this venv's own")
        if not StoreMatch(store.id, store.root)(found):
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
            notes = InstallReport()
            via = ServiceClient.of(store) if recorded is LinkMode.HARDLINK and service_socket(store) else None
            # the service's links: auto, so another mode when it cannot link (any more)
            modes = self._choose_modes(store, [tree], None if via else recorded, notes, relinks=via is not None)
            notes.say_notes()
            changed = relink(dist, tree, modes[tree.key], self.interpreter.cache_tag, via)
        else:
            changed = make_private(dist, tree)
        inst.bump_mtime(self.interpreter)
        return dist, len(changed)

    def _bytecode(self, store: Store, steps: Sequence[Step]) -> None:
        """Each tree's pyc unit for this interpreter, compiled once per store. Trees go one at a time: the compiler
        already fans each tree's modules out over every core. Modules compiled count on the display."""
        with progress.phase(Kind.COMPILE, "bytecode", 0, progress.COMPILED):
            for step in steps:
                service_pycs(store, step.tree, self.interpreter)
                step.pycs = checks.intact_pycs(store, step.tree, self.interpreter,
                                               hardlinked=step.mode is LinkMode.HARDLINK)

    def _realize(self, store: Store, steps: Sequence[Step], sources: Sources | None = None, *,
                 compile_into: bool = False, optimized: bool = False) -> None:
        """Give every step its tree: the one the plan found (no file opened, no network), else realized now
        (:mod:`.realize`: here, or by the store's service)."""
        todo = [s for s in steps if s.cand.tree is None]
        trees = realize(store, self.interpreter, [s.cand for s in todo], sources, compile_into=compile_into,
                        optimized=optimized)
        for step, tree in zip(todo, trees, strict=True):
            step.tree = tree

    def _choose_modes(
        self, store: Store, trees: Sequence[Tree], requested: LinkMode | None, report: InstallReport,
        old_pip: str | None = None, relinks: bool = True,
    ) -> dict[str, LinkMode]:
        """The mode for every tree, decided before anything in the venv changes (per file beside an ``old_pip``;
        hard links by a service store's service unless not ``relinks``)."""
        modes: dict[str, LinkMode] = {}
        if not trees:
            return modes
        sample = next((t for t in trees if t.manifest.first is not None), None)
        if sample is None or sample.manifest.first is None:
            return {t.key: requested or LinkMode.COPY for t in trees}
        site = self.interpreter.paths["purelib"]
        found = probe(os.fspath(sample.path / sample.manifest.first), site)
        shared = store.policy.shared != "private"
        service = servicelink.availability(store, site) if relinks and requested in (None, LinkMode.HARDLINK) else None
        for tree in trees:
            mode, note = choose(requested, found, tree_owner_uid=tree.manifest.owner_uid, shared=shared,
                                old_pip=old_pip, service=service)
            modes[tree.key] = mode
            if note and note not in report.notes:
                report.notes.append(note)
                if isinstance(note, PairNote) and not first_told(os.fspath(sample.path / sample.manifest.first), site):
                    report.told_before.add(note)
        return modes


class _DamagedMeanwhile(Exception):
    """The check that ran while the trees were linked found one damaged; what was linked has been taken back."""


class _GoneMeanwhile(Exception):
    """A gc removed trees of a service store's client's install before it pinned them; nothing was linked."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(", ".join(names))
        self.names = names
