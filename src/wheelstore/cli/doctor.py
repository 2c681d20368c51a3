"""``wheelstore doctor``: whether sharing will work for this user here, and the exact command that fixes each problem.

Every check asks the module that decides the matter in real use (store selection and opening, the policy's modes and
membership rule, the link probe and :func:`~wheelstore.venv.linkmode.choose`), so doctor cannot drift from what
install does.
It never changes the store: the only entries it makes are private, uniquely named scratch entries (a file and a
directory in ``staging/``, a file in ``locks/``), named like every staging entry so that a killed doctor leaves
something recognisably stale, and removed at once.
"""

from __future__ import annotations

import os
import secrets
import shlex
import stat
from collections.abc import Callable
from pathlib import Path

from ..base import fsio
from ..base.distinfo import installed, origin
from ..base.errors import (
    StoreAccessDenied,
    StoreError,
    StoreNotFound,
    VenvError,
    WheelstoreError,
)
from ..base.interpreter import Interpreter, find_python
from ..base.names import canonical
from ..store import upstream
from ..store.config import Selection, select_store
from ..store.parents import unsafe_parents
from ..store.policy import Policy, Role, current_user, group_name, in_group, user_name
from ..store.store import AREAS, CONFIG, Store
from ..store.storelock import judge_gc_lock
from ..venv import damage
from ..venv.link import LinkMode
from ..venv.linkmode import choose, fs_type, probe_now
from ..venv.oldpip import LINKED_MODES, pip_too_old
from . import doctor_locks, doctor_service, doctor_staging
from .doctor_report import Check, DoctorReport, Status
from .output import count, size_text

#: below these, the store's filesystem gets a warning; below the hard ones, publishing cannot work (a failure)
LOW_SPACE = 1 << 30
LOW_INODES = 50_000
LOW_FRACTION = 0.05
NO_SPACE = 64 << 20
NO_INODES = 1_000
#: bytes in the scratch file the link probe clones: several blocks, as a real tree file has
_PROBE_BYTES = 64 << 10

#: network and cluster filesystems by their mountinfo type, with what each means for a shared store beyond locks
#: (the locks check says what each does with flock between nodes)
NETWORK_FS = {
    "nfs": ("NFS", "other clients may see new trees a few seconds late (attribute caching)"),
    "nfs4": ("NFS", "other clients may see new trees a few seconds late (attribute caching)"),
    "lustre": ("Lustre", "there is no reflink, so venvs get symlinks or copies"),
    "gpfs": ("GPFS", "there is no reflink, so venvs get symlinks or copies"),
    "cifs": ("SMB", "POSIX modes, setgid and sticky bits are emulated or ignored, so the policy cannot be enforced"),
    "smb3": ("SMB", "POSIX modes, setgid and sticky bits are emulated or ignored, so the policy cannot be enforced"),
    "ceph": ("CephFS", "there is no reflink, so venvs get symlinks or copies"),
    "beegfs": ("BeeGFS", "there is no reflink, so venvs get symlinks or copies"),
    "fuse.sshfs": ("sshfs", "files belong to the user who logged in to the server, whatever their policy, and other "
                            "clients may see changes late (attribute caching)"),
    "fuse.glusterfs": ("GlusterFS", "every stat and rename goes through the network; there is no reflink"),
}


def run(
    store: str | os.PathLike[str] | Selection | None = None, venv: str | os.PathLike[str] | None = None
) -> DoctorReport:
    """Check the selected store (and ``venv``, if given) for this user. Never creates the store, never raises for a
    problem it can describe: each becomes a check."""
    venv_path = Path(venv).absolute() if venv is not None else None
    try:
        selection = store if isinstance(store, Selection) else select_store(store)
    except StoreError as e:  # a broken config file: nothing else can be judged without a store
        report = DoctorReport(None, None, venv_path, current_user())
        report.checks.append(Check("store", "fail", e.message, None))
        return report
    report = DoctorReport(selection.path, selection.source, venv_path, current_user())
    _Doctor(selection, venv_path, report).run()
    return report


class _Doctor:
    """The checks, sharing what earlier ones found (the opened store, the venv's interpreter)."""

    def __init__(self, selection: Selection, venv: Path | None, report: DoctorReport) -> None:
        self.sel = selection
        self.root = selection.path
        self.venv = venv
        self.report = report
        self.store: Store | None = None
        self.interpreter: Interpreter | None = None
        self.venv_writable = False
        self.denied = False  #: the store exists but this user may not open it

    def run(self) -> None:
        checks: list[tuple[str, Callable[[], Check | None]]] = [
            ("store", self.check_store),
            ("upstream", self.check_upstream),
            ("membership", self.check_membership),
            ("access", self.check_access),
            ("modes", self.check_modes),
            ("parents", self.check_parents),
            ("venv", self.check_venv),
            ("venv-writable", self.check_venv_writable),
            ("venv-damage", self.check_venv_damage),
            ("venv-pip", self.check_venv_pip),
            ("service", lambda: None if self.store is None else doctor_service.check(self.store, self.interpreter)),
            ("umask", self.check_umask),
            ("filesystems", self.check_filesystems),
            ("network-fs", self.check_network),
            ("reflink", self.check_reflink),
            ("protected-hardlinks", self.check_protected_hardlinks),
            ("locks", self.check_locks),
            ("gc-lock", lambda: None if self.store is None else Check("gc-lock", *judge_gc_lock(self.store))),
            ("staging", lambda: None if self.store is None else doctor_staging.check(self.store)),
            ("space", self.check_space),
        ]
        try:
            for name, check in checks:
                try:
                    found = check()
                except WheelstoreError as e:
                    found = Check(name, "fail", e.message, None)
                except OSError as e:  # the machine would not tell: inconclusive, not a verdict
                    where = f" ({e.filename})" if e.filename else ""
                    found = Check(name, "warn", f"could not check: {e.strerror or e}{where}", None)
                if found is not None:
                    self.report.checks.append(found)
        finally:
            if self.store is not None:
                self.store.close()

    # -- the store and who may use it -------------------------------------------------------------------------------

    def check_store(self) -> Check:
        why = f"selected by {self.sel.source}"
        try:
            self.store = Store.open(self.root)
        except StoreNotFound:
            if self.sel.is_default:
                return Check("store", "warn", f"the default private store {self.root} does not exist yet; the first "
                             f"install creates it ({why})", f"wheelstore init {shlex.quote(str(self.root))}")
            return Check("store", "fail", f"there is no store at {self.root} ({why})",
                         f"wheelstore init {shlex.quote(str(self.root))}")
        except StoreError as e:
            self.denied = isinstance(e, StoreAccessDenied)
            fix = f"wheelstore init {shlex.quote(str(self.root))}" if _lacks_config(self.root) else None
            return Check("store", "fail", f"{e.message} ({why})", fix)
        p = self.store.policy
        group = f" for group {p.group}" if p.group else ""
        return Check("store", "ok", f"{self.root} ({why}): a {p.shared} store{group}, owned by "
                     f"{user_name(self.store.owner_uid)}")

    def check_upstream(self) -> Check | None:
        """An overlay: its site store (opened and its id matched with the overlay's, or the store check failed), and
        whether the site's gc reads this overlay's roots."""
        if self.store is None or self.store.upstream is None:
            return None
        site = self.store.upstream
        chain = (f"{self.root} -> {site.root} (site store {site.id}, {user_name(site.owner_uid)}'s): installs link "
                 f"its trees first and publish only into {self.root}")
        if upstream.known_to(site, self.root):
            return Check("upstream", "ok", f"{chain}; the site's gc keeps what this overlay's venvs link")
        return Check("upstream", "warn", f"{chain}; but the site's gc does not read this overlay's roots, so it may "
                     "remove site trees this overlay's venvs link", f"ask {user_name(site.owner_uid)} to add "
                     f"{shlex.quote(str(self.root))} to overlays in the [gc] table of {site.root}/config.toml")

    def _ownership(self) -> tuple[int, int | None, str | None, str] | None:
        """The store's (owner, gid, group, shared), from its policy or, when it cannot be opened, its directory."""
        if self.store is not None:
            p = self.store.policy
            return self.store.owner_uid, p.gid, p.group, p.shared
        if not self.denied:
            return None
        try:
            st = os.stat(self.root)
        except OSError:
            return None
        if not stat.S_ISDIR(st.st_mode) or not st.st_mode & 0o070:
            return st.st_uid, None, None, "private"
        return st.st_uid, st.st_gid, group_name(st.st_gid), "group"

    def check_membership(self) -> Check | None:
        found = self._ownership()
        if found is None:
            return None
        owner, gid, group, shared = found
        me, euid = current_user(), os.geteuid()
        served = Check("membership", "ok", f"only {user_name(owner)}'s store service writes this store; it publishes "
                       "for you (see the service check)")
        if gid is None or group is None:
            if euid in (0, owner):
                return Check("membership", "ok", "you own this store" if euid == owner else "you are root")
            if shared == "all" and self.store is not None and self.store.service is not None:
                return served
            if shared == "all":
                return Check("membership", "warn", f"only {user_name(owner)} publishes into this store; you may "
                             "link what is already published")
            return Check("membership", "fail", f"the store is private to {user_name(owner)}; nobody else can use "
                         "it", None)
        if in_group(gid):
            return Check("membership", "ok", "you are root" if euid == 0 else f"you are in group {group}, the "
                         "store's group")
        # the policy's own membership rule, as it judges publishers (the group database, not this session's groups)
        if Policy("group", group, gid).trusted_writer(os.getuid(), -1):
            return Check("membership", "fail", f"{me} was added to group {group} after this login session began; "
                         f"log in again, or start a shell in the group with `newgrp {group}`", f"newgrp {group}")
        if shared == "all" and self.store is not None and self.store.service is not None:
            return served
        if shared == "all":
            return Check("membership", "warn", f"{me} is not in group {group}: you may link published trees but "
                         f"not publish; to publish, ask an admin to add you, then log in again or run `newgrp "
                         f"{group}`", f"usermod -aG {group} {me}")
        return Check("membership", "fail", f"the store belongs to group {group} and {me} is not a member: ask an "
                     f"admin to add you (as root), then log in again or run `newgrp {group}`",
                     f"usermod -aG {group} {me}")

    def check_access(self) -> Check | None:
        if self.store is None:
            return None
        described = self.store.describe()["trees"]
        trees = described if isinstance(described, int) else 0
        try:
            self.store.require_publish_access()
        except StoreAccessDenied as e:
            if self.store.service is not None:  # nobody but its owner may: the service publishes
                return Check("access", "ok", f"you may read ({count(trees, 'tree')}); the store service publishes "
                             "for you")
            reader = self.store.policy.shared == "all" and not self.store.policy.trusted_writer(
                os.geteuid(), self.store.owner_uid)
            return Check("access", "warn" if reader else "fail", f"{e.message} ({count(trees, 'tree')} readable)"
                         + ("" if reader else "; see the modes check"), None)
        return Check("access", "ok", f"you may read and publish ({count(trees, 'tree')})")

    def check_modes(self) -> Check | None:
        """The recorded policy against the actual root, config and areas: who must run what to restore it."""
        if self.store is None:
            return None
        policy, owner = self.store.policy, self.store.owner_uid
        problems: list[str] = []
        commands: list[str] = []
        status: Status = "ok"
        expected = [(".", Role.STORE_ROOT), (CONFIG, Role.CONFIG), *((a, Role.AREA) for a in AREAS)]
        for rel, role in expected:
            path = self.root if rel == "." else self.root / rel
            label = "the store directory" if rel == "." else (rel if role is Role.CONFIG else f"{rel}/")
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                problems.append(f"{label} is missing (the store is damaged)")
                status = "fail"
                continue
            want_dir = role is not Role.CONFIG
            if not (stat.S_ISDIR(st.st_mode) if want_dir else stat.S_ISREG(st.st_mode)):
                problems.append(f"{label} is not a {'directory' if want_dir else 'regular file'}")
                status = "fail"
                continue
            quoted = shlex.quote(str(path))
            have, want = stat.S_IMODE(st.st_mode), policy.mode(role)
            wrong_group = policy.gid is not None and st.st_gid != policy.gid
            if wrong_group:
                problems.append(f"{label} has group {group_name(st.st_gid)}, not {policy.group}")
                commands.append(f"chgrp {policy.group} {quoted}")
                status = "fail"
            if have != want or wrong_group:
                commands.append(f"chmod {want:04o} {quoted}")
            if have != want:
                consequence = _drift(have, want)
                problems.append(f"{label} is {have:04o}, the {policy.shared} policy wants {want:04o} ({consequence})")
                if want & ~have & 0o777:
                    status = "fail"
                elif status == "ok":
                    status = "warn"
            if not policy.trusted_writer(st.st_uid, owner):
                problems.append(f"{label} belongs to {user_name(st.st_uid)}, who is not a trusted publisher")
                commands.append(f"chown {user_name(owner)} {quoted}")
                status = "fail"
        if not problems:
            return Check("modes", "ok", f"the store directory, {CONFIG} and its areas have the modes and group its "
                         f"{policy.shared} policy records")
        who = f"run as {user_name(owner)} (the store's owner) or root"
        return Check("modes", status, "; ".join(problems) + (f"; {who}" if commands else ""),
                     " && ".join(commands) or None)

    def check_parents(self) -> Check:
        """The directories above the store, as ``init`` judges them (:mod:`wheelstore.store.parents`)."""
        found = self._ownership()
        owner = found[0] if found is not None else os.geteuid()
        if not (problems := unsafe_parents(self.root, owner)):
            return Check("parents", "ok", f"only root and {user_name(owner)} may rename entries above the store")
        detail = "; ".join(f"{u.path} {u.why}, so {u.who} could move the store away and put their own in its place "
                           f"(the fix is for {u.fixer} to run)" for u in problems)
        return Check("parents", "fail", detail, " && ".join(dict.fromkeys(u.fix for u in problems)))

    # -- the venv ------------------------------------------------------------------------------------------------------

    def check_venv(self) -> Check | None:
        if self.venv is None:
            return None
        try:
            self.interpreter = Interpreter.inspect(find_python(self.venv))
        except VenvError as e:
            fix = None if os.path.lexists(self.venv) else f"wheelstore venv {shlex.quote(str(self.venv))}"
            return Check("venv", "fail", e.message, fix)
        i = self.interpreter
        return Check("venv", "ok", f"its Python {'.'.join(map(str, i.version))} runs; site-packages is "
                     f"{i.paths['purelib']}")

    def check_venv_writable(self) -> Check | None:
        if self.interpreter is None:
            return None
        effective = os.access in os.supports_effective_ids
        dirs = [Path(self.interpreter.paths[k]) for k in ("purelib", "scripts")]
        closed = [d for d in dirs if not os.access(d, os.W_OK | os.X_OK, effective_ids=effective)]
        if closed:
            owner = user_name(os.stat(closed[0]).st_uid)
            return Check("venv-writable", "fail", f"you cannot write to {closed[0]} (it belongs to {owner}), so "
                         "nothing can be installed into this venv by you", None)
        self.venv_writable = True
        return Check("venv-writable", "ok", "you may install into it")

    def check_venv_damage(self) -> Check | None:
        """Distributions another tool left half removed: install says nothing of them unless asked for them."""
        if self.interpreter is None or self.venv is None:
            return None
        found = damage.survey(self.interpreter, installed(self.interpreter))
        if not found:
            return Check("venv-damage", "ok", "no distribution is half removed, and every link into a store is "
                         "claimed by one")
        return Check("venv-damage", "warn", "; ".join(d.describe() for d in found),
                     "; ".join(d.fix(self.venv) for d in found))

    def check_venv_pip(self) -> Check | None:
        """A pip older than 23.1 resolves every path to its real one and silently skips what lies outside the venv:
        on a venv with links into a store its uninstall removes the metadata and leaves the package importable."""
        if self.interpreter is None or self.venv is None:
            return None
        dists = installed(self.interpreter)
        pip = dists.get(canonical("pip"))
        if pip is None:
            return None
        linked = sorted(d.display_name for d in dists.values()
                        if (found := origin(d)) is not None and found.get("link_mode") in LINKED_MODES)
        if not linked or not pip_too_old(pip.version):
            return Check("venv-pip", "ok", f"pip {pip.version} can remove what wheelstore linked here")
        venv = shlex.quote(str(self.venv))
        return Check("venv-pip", "warn", f"pip {pip.version} is older than 23.1: it cannot remove links into a store "
                     f"(its uninstall of {', '.join(linked[:3])}{' ...' if len(linked) > 3 else ''} would remove "
                     "their metadata and leave the package importable)", f"wheelstore install --venv {venv} -U pip")

    # -- the machine ---------------------------------------------------------------------------------------------------

    def check_umask(self) -> Check:
        return Check("umask", "ok", f"{fsio.umask():04o}; it does not matter: wheelstore sets the mode (and group) of "
                     "everything it creates explicitly from the store's recorded policy, whatever the umask")

    def _sides(self) -> list[tuple[str, Path]]:
        sides = [("store", _existing(self.root))]
        if self.venv is not None:
            sides.append(("venv", _existing(self.venv)))
        return sides

    def check_filesystems(self) -> Check:
        (_, store_at), *rest = self._sides()
        kind, dev = fs_type(str(store_at)), os.stat(store_at).st_dev
        where = "" if store_at == self.root else f" (it does not exist yet; {store_at} is)"
        if not rest:
            return Check("filesystems", "ok", f"the store is on {kind}, device {_dev(dev)}{where}; give --venv to "
                         "compare a venv's")
        venv_at = rest[0][1]
        vkind, vdev = fs_type(str(venv_at)), os.stat(venv_at).st_dev
        if dev == vdev:
            return Check("filesystems", "ok", f"the store and the venv are both on {kind}, device {_dev(dev)}{where}")
        return Check("filesystems", "warn", f"the store is on {kind} (device {_dev(dev)}), the venv on {vkind} "
                     f"(device {_dev(vdev)}): different devices, so hard links and reflinks between them are "
                     "impossible and venvs get symlinks or copies; a venv on the store's filesystem avoids that")

    def check_network(self) -> Check:
        found = [(label, fs_type(str(path))) for label, path in self._sides()]
        remote = [(label, kind) for label, kind in found if kind in NETWORK_FS]
        if not remote:
            kinds = ", ".join(sorted({k for _, k in found}))
            return Check("network-fs", "ok", f"local filesystems only ({kinds})")
        label, kind = remote[0]
        name, meaning = NETWORK_FS[kind]
        return Check("network-fs", "warn", f"the {label} is on {name} ({kind}): {meaning}; see the locks check")

    def check_protected_hardlinks(self) -> Check:
        try:
            with open("/proc/sys/fs/protected_hardlinks", encoding="ascii") as f:
                value = f.read().strip()
        except OSError:
            return Check("protected-hardlinks", "ok", "fs.protected_hardlinks is not readable here (not Linux?); "
                         "wheelstore never hard-links another user's trees anyway")
        if value == "1":
            return Check("protected-hardlinks", "ok", "fs.protected_hardlinks=1: a hard link to another user's file "
                         "needs write access to it, so hardlink mode works only for your own trees (and auto never "
                         "hard-links a shared store's trees anyway)")
        return Check("protected-hardlinks", "warn", f"fs.protected_hardlinks={value}: any user may hard-link any "
                     "file they can see, which the classic /tmp attacks rely on; wheelstore still never hard-links a "
                     "shared store's trees", "sysctl -w fs.protected_hardlinks=1")

    # -- trying it for real -------------------------------------------------------------------------------------------

    def check_reflink(self) -> Check | None:
        """Clone, hard-link and symlink a scratch file for real (never the cached answer: this is the diagnosis)
        and ask :func:`choose` what ``auto`` makes of it."""
        if self.store is None:
            return None
        store = self.store
        if self.venv is not None and not self.venv_writable:
            return Check("reflink", "warn", "not probed: the venv is not usable by you (see above)")
        if not os.access(store.root / "staging", os.W_OK | os.X_OK):  # no scratch file (nor lease) to make
            return self._reflink_from_tree()
        staging = store.area_fd("staging")
        name = store.staging_name("doctor", secrets.token_hex(32))
        try:
            fd = store.policy.create(name, dir_fd=staging)
        except PermissionError:
            return self._reflink_from_tree()
        try:
            try:
                os.write(fd, secrets.token_bytes(_PROBE_BYTES))
                os.fsync(fd)
            finally:
                os.close(fd)
            source = str(store.root / "staging" / name)
            return self._probe(source, os.geteuid())
        finally:
            os.unlink(name, dir_fd=staging)

    def _reflink_from_tree(self) -> Check:
        """A reader who may not write the store: probe with a file of a published tree instead."""
        assert self.store is not None
        if self.interpreter is None:
            return Check("reflink", "warn", "not probed: you may not write to the store; give --venv to try linking "
                         "into a venv")
        tree = next((t for t in self.store.trees() if t.manifest.files), None)
        if tree is None:
            return Check("reflink", "warn", "not probed: you may not write to the store and it holds no trees yet")
        return self._probe(str(tree.path / next(iter(tree.manifest.files))), tree.manifest.owner_uid)

    def _probe(self, source: str, owner: int) -> Check:
        assert self.store is not None
        target = self.interpreter.paths["purelib"] if self.interpreter else str(self.store.root / "staging")
        found, _durable = probe_now(source, os.stat(source, follow_symlinks=False), target, os.stat(target))
        shared = self.store.policy.shared != "private"
        mode, _note = choose(None, found, tree_owner_uid=owner, shared=shared)
        self.report.auto_link_mode = mode.value
        into = "into the venv" if self.interpreter else "within the store's filesystem"
        if mode is LinkMode.REFLINK:
            return Check("reflink", "ok", f"reflink works {into} ({fs_type(source)}): auto picks reflink, private "
                         "inodes that share the store's blocks")
        why = found.reasons.get("reflink", "it did not work when tried")
        if mode is LinkMode.FOLD:
            how = "one read-only symlink per directory only one distribution fills; edit a dependency with " \
                  "wheelstore edit"
        elif mode is LinkMode.HARDLINK:
            how = "your own trees in a store nobody else uses may share inodes safely"
        elif shared and found.hardlink:
            how = "a shared store's trees are never hard-linked, since a write in one venv would change everyone's"
        elif "hardlink" in found.reasons:
            how = f"hardlink is unavailable too: {found.reasons['hardlink']}"
        else:
            how = "hardlink is not safe here"
        if mode is LinkMode.COPY:
            how += f"; symlink is unavailable: {found.reasons.get('symlink', 'it failed')}"
        return Check("reflink", "warn" if mode is LinkMode.COPY else "ok",
                     f"reflink unavailable {into}: {why}; auto will pick {mode.value} ({how})")

    def check_locks(self) -> Check | None:
        """The store's filesystem and what its locking does between nodes, and flock tried as wheelstore uses it
        (:mod:`.doctor_locks`)."""
        return None if self.store is None else doctor_locks.check(self.store)

    def check_space(self) -> Check:
        at = _existing(self.root)
        sv = os.statvfs(at)
        free, total = sv.f_bavail * sv.f_frsize, sv.f_blocks * sv.f_frsize
        text = f"{size_text(free)} free of {size_text(total)}"
        text += f", {sv.f_favail:,} of {sv.f_files:,} inodes free" if sv.f_files else ", no fixed inode limit"
        text += f" on the store's filesystem ({fs_type(str(at))})"
        if free < NO_SPACE or (sv.f_files and sv.f_favail < NO_INODES):
            return Check("space", "fail", f"{text}: too little to publish anything", None)
        if (free < LOW_SPACE or free < LOW_FRACTION * total
                or (sv.f_files and (sv.f_favail < LOW_INODES or sv.f_favail < LOW_FRACTION * sv.f_files))):
            return Check("space", "warn", f"{text}: running low (a large wheel such as torch needs several GB and "
                         "thousands of inodes)", None)
        return Check("space", "ok", text)


def _drift(have: int, want: int) -> str:
    """What a mode drift means, in a few words."""
    lost, extra = want & ~have, have & ~want
    words = []
    if lost & 0o777:
        words.append("users the policy admits are locked out")
    if lost & stat.S_ISGID:
        words.append("new entries would not get the store's group")
    if lost & stat.S_ISVTX:
        words.append("members could delete or replace each other's entries")
    if extra & 0o777:
        words.append("more users may read or write than the policy admits")
    if extra & ~0o777:
        words.append("set-id or sticky bits the policy does not use")
    return ", ".join(words)


def _lacks_config(root: Path) -> bool:
    try:
        os.lstat(root / CONFIG)
    except FileNotFoundError:
        return os.path.isdir(root)
    except OSError:
        return False
    return False


def _existing(path: Path) -> Path:
    """``path``, or its nearest ancestor that exists: where a store not yet made would live."""
    while not os.path.exists(path) and path != path.parent:
        path = path.parent
    return path


def _dev(dev: int) -> str:
    return f"{os.major(dev)}:{os.minor(dev)}"
