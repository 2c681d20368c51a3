"""Which link mode a tree gets in a venv: a probe of what works between the store's filesystem and the venv's
(found by trying, and remembered in the user's cache), and the rule (:func:`choose`) that picks a safe mode from it.

The modes themselves, and linking one file in one of them, are :mod:`wheelstore.venv.link`'s; the safety rule
behind them is in its docstring.
"""

from __future__ import annotations

import errno
import os
from typing import NamedTuple

from ..base import usercache
from ..base.errors import LinkModeError
from ..base.node import fs_type as fs_type  # also asked for here, by doctor
from ..store.policy import user_name
from .link import REFLINK_UNSUPPORTED, LinkMode, link_file

#: probe failures that are properties of the filesystem pair and the users, so worth remembering
_DURABLE = {
    "reflink": REFLINK_UNSUPPORTED,
    "hardlink": frozenset({errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP}),
    "symlink": frozenset({errno.EPERM, errno.EOPNOTSUPP}),
}
_CACHE_NAME = "linkprobe.json"
_CACHE_FORMAT = 1
_CACHE_MAX = 64


# -- what works where ----------------------------------------------------------------------------------------------


class ServiceHardlink(NamedTuple):
    """Whether a service store's service (as root) can hard-link into this venv for this user, and if not why
    (:func:`wheelstore.venv.servicelink.availability`)."""

    usable: bool
    why: str


class Probe(NamedTuple):
    """What linking from one store filesystem into one venv filesystem can do, found by trying it."""

    reflink: bool
    hardlink: bool
    same_device: bool
    #: mode value -> one-line reason it is unavailable (symlink appears only where symlinks fail)
    reasons: dict[str, str]


def probe(tree_file: str, venv_dir: str) -> Probe:
    """Try reflink, hardlink and symlink for real from ``tree_file`` to a scratch name in ``venv_dir``.

    Only trying tells the truth: support depends on filesystem, kernel, mount and ownership. The answer is remembered
    per (tree filesystem, venv filesystem, user, tree owner) in the user's cache, so later installs skip the probe.
    Answers that reflect a passing problem (an unwritable venv, a full disk) are not remembered. The cache is only
    an optimization: it cannot make :func:`choose` unsafe (that rule does not trust the probe), a stale entry only
    makes a mode fail loudly, and a cache that cannot be read or written is ignored.
    """
    tree_st = os.stat(tree_file, follow_symlinks=False)
    venv_st = os.stat(venv_dir)
    key = _cache_key(tree_file, tree_st, venv_dir, venv_st)
    found = _cache_load().get(key)
    if found is None:
        found, durable = probe_now(tree_file, tree_st, venv_dir, venv_st)
        if durable:
            _cache_store(key, found)
    return found


def probe_now(
    tree_file: str, tree_st: os.stat_result, venv_dir: str, venv_st: os.stat_result
) -> tuple[Probe, bool]:
    """Probe without the cache; return the result and whether it is worth remembering."""
    fs_tree, fs_venv = fs_type(tree_file), fs_type(venv_dir)
    reasons: dict[str, str] = {}
    durable = True
    for mode in (LinkMode.REFLINK, LinkMode.HARDLINK, LinkMode.SYMLINK):
        scratch = os.path.join(venv_dir, f".wheelstore-probe-{os.getpid()}-{os.urandom(6).hex()}")
        try:
            link_file(tree_file, scratch, mode)
        except OSError as e:
            reasons[mode.value] = _reason(mode, e, fs_tree, fs_venv, tree_st.st_uid)
            durable = durable and e.errno in _DURABLE[mode.value]
        else:
            try:
                os.unlink(scratch)
            except OSError:
                pass
    result = Probe(
        reflink="reflink" not in reasons,
        hardlink="hardlink" not in reasons,
        same_device=tree_st.st_dev == venv_st.st_dev,
        reasons=reasons,
    )
    return result, durable


def _reason(mode: LinkMode, e: OSError, fs_tree: str, fs_venv: str, tree_owner: int) -> str:
    name = _errno_name(e.errno)
    if e.errno == errno.EXDEV:
        return f"the store and the venv are on different filesystems ({fs_tree} and {fs_venv}, EXDEV)"
    if mode is LinkMode.REFLINK and e.errno in REFLINK_UNSUPPORTED:
        if fs_tree == fs_venv:
            return f"not supported on this filesystem ({fs_tree}, {name})"
        return f"not supported between {fs_tree} and {fs_venv} ({name})"
    if mode is LinkMode.HARDLINK and e.errno == errno.EPERM and tree_owner != os.geteuid() and _protected_hardlinks():
        return "fs.protected_hardlinks=1 forbids linking another user's read-only file (EPERM)"
    return f"it failed in the venv's directory: {e.strerror} ({name})"


def _errno_name(number: int | None) -> str:
    if number == errno.EOPNOTSUPP:  # the same number as ENOTSUP on Linux; the kernel docs say EOPNOTSUPP
        return "EOPNOTSUPP"
    return errno.errorcode.get(number or 0, str(number))


def _protected_hardlinks() -> bool:
    try:
        with open("/proc/sys/fs/protected_hardlinks", encoding="ascii") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


# -- the cache -----------------------------------------------------------------------------------------------------


def _cache_key(tree_file: str, tree_st: os.stat_result, venv_dir: str, venv_st: os.stat_result) -> str:
    """The filesystem pair and the users: device numbers alone get reused (loop devices, btrfs anonymous devices),
    so each side also carries its filesystem id (derived from the UUID on ext4, XFS and btrfs)."""
    try:
        tree_fsid, venv_fsid = os.statvfs(tree_file).f_fsid, os.statvfs(venv_dir).f_fsid
    except OSError:
        tree_fsid = venv_fsid = 0
    return (
        f"{tree_st.st_dev}/{tree_fsid}:{venv_st.st_dev}/{venv_fsid}"
        f":uid={os.geteuid()}:owner={tree_st.st_uid}"
    )


def _cache_entries() -> dict[str, object]:
    data = usercache.read_json(_CACHE_NAME)
    if not isinstance(data, dict) or data.get("format") != _CACHE_FORMAT or not isinstance(data.get("probes"), dict):
        return {}
    return dict(data["probes"])


def _cache_load() -> dict[str, Probe]:
    result: dict[str, Probe] = {}
    for key, raw in _cache_entries().items():
        if not isinstance(raw, dict):
            continue
        flags = [raw.get(k) for k in ("reflink", "hardlink", "same_device")]
        reasons = raw.get("reasons")
        if not all(isinstance(v, bool) for v in flags) or not isinstance(reasons, dict):
            continue
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in reasons.items()):
            continue
        result[key] = Probe(bool(flags[0]), bool(flags[1]), bool(flags[2]), dict(reasons))
    return result


def _cache_store(key: str, found: Probe) -> None:
    """Add one answer, keeping the newest few."""
    entries = _cache_entries()
    entries.pop(key, None)
    entries[key] = {
        "reflink": found.reflink,
        "hardlink": found.hardlink,
        "same_device": found.same_device,
        "reasons": found.reasons,
    }
    usercache.write_json(_CACHE_NAME, {"format": _CACHE_FORMAT, "probes": dict(list(entries.items())[-_CACHE_MAX:])})


# -- what the user was told ----------------------------------------------------------------------------------------

_TOLD_NAME = "told.json"


class PairNote(str):
    """A note that states a fact about a filesystem pair (reflink does not work between the store's and the venv's):
    said once per pair to each user (:func:`first_told`); later installs say it only with -v, as doctor says it
    every time."""


def first_told(tree_file: str, venv_dir: str) -> bool:
    """Whether this user has not been told the fallback for this pair of filesystems (the store's, the venv's) yet;
    it is remembered as told from now on. A cache that cannot be read or written only means telling again."""
    try:
        pair = f"{_fs_id(tree_file)}:{_fs_id(venv_dir)}"
    except OSError:
        return True
    data = usercache.read_json(_TOLD_NAME)
    told = data.get("reflink") if isinstance(data, dict) and data.get("format") == _CACHE_FORMAT else None
    told = dict(told) if isinstance(told, dict) else {}
    if pair in told:
        return False
    told[pair] = True
    usercache.write_json(_TOLD_NAME, {"format": _CACHE_FORMAT, "reflink": dict(list(told.items())[-_CACHE_MAX:])})
    return True


def _fs_id(path: str) -> str:
    """A filesystem: its device number and its id (device numbers alone get reused, see :func:`_cache_key`)."""
    return f"{os.stat(path).st_dev}/{os.statvfs(path).f_fsid}"


# -- the rule ------------------------------------------------------------------------------------------------------


def choose(
    requested: LinkMode | None, probe: Probe, *, tree_owner_uid: int, shared: bool, old_pip: str | None = None,
    service: ServiceHardlink | None = None,
) -> tuple[LinkMode, str | None]:
    """Pick the link mode for a tree; return it and a one-line note for the user when ``auto`` had to fall back (or
    when an explicit mode is honoured although it is unsafe for root).

    Usable modes: reflink when the probe found it works; hardlink when it works *and* is safe, that is the linking
    user (euid) owns the tree and the store is not shared (root linking a root-owned tree of a private store
    included), since otherwise a write in the venv could change the store or what other users see; symlink unless
    the probe found symlinks fail; copy always.

    Root ignores the store's read-only modes, so for root every link into a tree that is not root's own in a private
    store (:func:`_root_refusal`) is a way for root's pip, editor or Python to change the store for everyone: ``auto``
    never gives root symlink or fold there (reflink or copy instead), an explicit ``fold`` is refused, and an
    explicit ``symlink`` is honoured with a note saying so.

    ``auto`` (``requested`` None) takes the first usable of reflink, fold, hardlink, symlink, copy, with a note naming
    why reflink was not used unless it got reflink. Reflink comes first because its files behave exactly like copies
    (an edit stays in the venv); fold (proven on 331 distributions by ``bench/foldproof.py``) before hardlink because
    it is as safe where both are usable and links a few hundred entries where hardlink links every file. An explicit
    mode that is not usable raises LinkModeError saying why, with the usable alternatives as the fix. The result
    depends only on the arguments and the euid.

    On a service store (``service`` given), hardlink means links made by its service as root, into inodes the user
    can never change: usable as ``service`` says, and ``auto``'s first choice where it is.

    ``old_pip`` is the version of a pip the venv will hold that cannot remove links into a store
    (:mod:`.oldpip`): then neither symlink nor fold is usable, so that pip's uninstall removes all it claims.
    """
    refuse_beside_old_pip(requested, old_pip)
    refusal = _hardlink_refusal(tree_owner_uid, shared) if service is None else service.why or None
    if requested is None and service is not None and service.usable:
        return LinkMode.HARDLINK, None
    symlinks = LinkMode.SYMLINK.value not in probe.reasons
    for_root, for_pip = _root_refusal(tree_owner_uid, shared), _old_pip_refusal(old_pip)
    against_links = for_root or for_pip
    usable = {
        LinkMode.REFLINK: probe.reflink,
        LinkMode.HARDLINK: refusal is None and (probe.hardlink or service is not None),
        LinkMode.SYMLINK: symlinks and against_links is None,
        LinkMode.COPY: True,
    }
    if requested is not None:  # an old pip's refusal came first: what is left to refuse is root's
        return _explicit(requested, probe, usable, for_root, refusal)
    mode = next(m for m, ok in usable.items() if ok)
    if mode is not LinkMode.REFLINK and symlinks and against_links is None:
        mode = LinkMode.FOLD  # whole directories at a time: far fewer inodes and syscalls
    if mode is LinkMode.REFLINK:
        return mode, None
    why = probe.reasons.get(LinkMode.REFLINK.value, "it did not work when tried here")
    if for_pip is not None and for_root is None:
        return mode, f"{for_pip}; using {mode.value} (once that pip is upgraded, later installs can fold)"
    if for_root is not None and mode is LinkMode.COPY:
        return mode, PairNote(f"reflink unavailable: {why}; using copy, because {for_root}")
    return mode, PairNote(f"reflink unavailable: {why}; using {mode.value}")


def _explicit(requested: LinkMode, probe: Probe, usable: dict[LinkMode, bool], for_root: str | None,
              refusal: str | None) -> tuple[LinkMode, str | None]:
    """:func:`choose` for a mode the user named: it, or LinkModeError saying why not, with the usable ones."""
    symlinks = LinkMode.SYMLINK.value not in probe.reasons
    if requested is LinkMode.FOLD:
        if symlinks and for_root is None:
            return requested, None
        usable[LinkMode.FOLD] = False
    elif requested is LinkMode.SYMLINK and symlinks and for_root is not None:
        return requested, (f"--link-mode symlink as root: {for_root}; "
                           "root's own venvs are safe with --link-mode copy or reflink")
    elif usable[requested]:
        return requested, None
    reason = refusal if requested is LinkMode.HARDLINK and refusal else None
    if requested is LinkMode.FOLD and for_root is not None:
        reason = reason or f"{for_root} (a folded directory would take new files too)"
    reason = reason or probe.reasons.get(LinkMode.SYMLINK.value if requested is LinkMode.FOLD else "", None)
    reason = reason or probe.reasons.get(requested.value, "it did not work when tried here")
    alternatives = [m.value for m, ok in usable.items() if ok and m is not requested][:2]
    raise LinkModeError(f"{requested.value} cannot be used: {reason}",
                        hint=f"use --link-mode {' or '.join(alternatives)}")


def _root_refusal(tree_owner_uid: int, shared: bool) -> str | None:
    """Why a link (symlink, fold) into this tree would let this user's writes reach the store, or None.

    Only root: for anyone else the store's read-only modes stop a write through a link (and an editor that renames
    replaces the link with a private file). Root ignores them, so a link is safe for root only into root's own tree
    of a private store, where no one else's files or venvs are behind it.
    """
    if os.geteuid() != 0 or (tree_owner_uid == 0 and not shared):
        return None
    return ("root ignores the store's read-only modes, so root's writes through a link would change the store "
            "and every venv linking it")


def refuse_beside_old_pip(requested: LinkMode | None, old_pip: str | None) -> None:
    """Refuse an explicit link mode that ``old_pip`` could not remove; callable before anything is fetched."""
    reason = _old_pip_refusal(old_pip)
    if reason is not None and requested in (LinkMode.FOLD, LinkMode.SYMLINK):
        raise LinkModeError(f"{requested.value} cannot be used: {reason}",
                            hint="upgrade the venv's pip (install -U pip), or use --link-mode copy or hardlink")


def _old_pip_refusal(old_pip: str | None) -> str | None:
    """Why a link into a store would be half removed by the venv's pip, or None."""
    if old_pip is None:
        return None
    return (f"the venv's pip {old_pip} cannot remove links into a store (pip before 23.1 skips them and says "
            "it uninstalled the package)")


def _hardlink_refusal(tree_owner_uid: int, shared: bool) -> str | None:
    """Why a hard link into this tree would be unsafe for this user, or None when it is safe."""
    euid = os.geteuid()
    if tree_owner_uid != euid:
        owner = user_name(tree_owner_uid)
        if euid != 0 and _protected_hardlinks():
            return (f"the tree belongs to {owner} and fs.protected_hardlinks=1 forbids linking another user's "
                    "read-only file")
        return (f"the tree belongs to {owner}, not {user_name(euid)}: the venv would share its inode, "
                "so a write there could change the store")
    if shared:
        return ("the store is shared with other users: the venv would share a store inode, "
                "so a write there could change what they see")
    return None
