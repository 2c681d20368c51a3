"""The directories above a store, judged as sshd's StrictModes judges those above ``~/.ssh/authorized_keys``.

Whoever may rename an entry of a directory on the way to the store can move the store away and ``init`` their own in
its place: they then own the store, whose sticky areas let its owner rename anyone's trees, and every member's next
install reads what they put there. So from the store's parent up to ``/``, every directory must be owned by root or by
the store's owner (a directory's owner may rename anything in it, and chmod it), and nobody else may write to it
unless the sticky bit limits them to their own entries (like ``/tmp``). sshd asks the same of root or the user.

Group-writable without the sticky bit is allowed, as Debian's sshd allows it, only for a group whose sole member is
the directory's owner (a user private group) and when no ACL grants more. Each path the store is reached by is checked
both as given and resolved: a symlink on the way is an entry of the directory that holds it, and its target's
directories lead to the store as much as the link does.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import shlex
import stat
from pathlib import Path
from typing import NamedTuple

from ..base.errors import StoreError
from ..base.hooks import checkpoint
from .policy import group_name, user_name

_ACL = "system.posix_acl_access"


class Unsafe(NamedTuple):
    """A directory above a store that someone besides root and the store's owner may rename entries in."""

    path: str
    why: str  #: what is wrong, for example "is group-writable (lab) without the sticky bit"
    who: str  #: who could move the store away: "members of group lab", "everyone", "alice"
    fix: str  #: the command that fixes it
    fixer: str  #: who may run ``fix``


def directories_above(path: str | os.PathLike[str]) -> list[str]:
    """Every real directory that leads to ``path``, nearest first: each of its ancestors (``..`` taken lexically)
    resolved, with all of the resolved one's own ancestors, up to ``/``, and the ancestors of ``path`` itself
    resolved, for when it is a symlink. Directories that do not exist yet are included: the caller skips them."""
    absolute = Path(os.path.abspath(path))
    found: dict[str, None] = {}
    for ancestor in (*absolute.parents, *Path(os.path.realpath(absolute)).parents):
        real = Path(os.path.realpath(ancestor))
        for d in (real, *real.parents):
            found.setdefault(str(d), None)
    return list(found)


def unsafe_parents(path: str | os.PathLike[str], owner_uid: int) -> list[Unsafe]:
    """The directories above the store at ``path`` (which may not exist yet) that let anyone but root and
    ``owner_uid`` move it away; empty when there are none. A directory that does not exist yet is skipped (init
    creates it, owned by the store's owner), and so is one this user may not look at (then it cannot reach the store
    through it either)."""
    found = []
    for link in symlinks_on_the_way(path):
        problem = _judge_link(link, owner_uid)
        if problem is not None:
            found.append(problem)
    for d in directories_above(path):
        try:
            st = os.stat(d)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        if not stat.S_ISDIR(st.st_mode):
            continue
        problem = _judge(d, st, owner_uid)
        if problem is not None:
            found.append(problem)
    return found


def symlinks_on_the_way(path: str | os.PathLike[str]) -> list[str]:
    """Every symlink the kernel follows to reach ``path`` (``path`` itself included), by its real location: the
    directories holding them are judged like any other, but a link in a sticky directory is its owner's to replace."""
    todo = [part for part in os.fspath(os.path.abspath(path)).split("/") if part]
    current = "/"
    links: list[str] = []
    while todo and len(links) < 40:  # the kernel's own limit on links followed
        part = todo.pop(0)
        if part == "..":
            current = os.path.dirname(current)
            continue
        if part == ".":
            continue
        candidate = os.path.join(current, part)
        try:
            st = os.lstat(candidate)
        except OSError:
            break  # not there (yet), or not ours to look at: nothing further is reached through it
        if not stat.S_ISLNK(st.st_mode):
            current = candidate
            continue
        links.append(candidate)
        try:
            target = os.readlink(candidate)
        except OSError:
            break
        if target.startswith("/"):
            current = "/"
        todo[:0] = [p for p in target.split("/") if p]
    return links


def _judge_link(link: str, owner_uid: int) -> Unsafe | None:
    """A symlink owned by someone but root and the store's owner, in a sticky directory: its owner may replace it."""
    try:
        st = os.lstat(link)
        holder = os.stat(os.path.dirname(link))
    except OSError:
        return None
    if st.st_uid in (0, owner_uid) or not holder.st_mode & stat.S_ISVTX:
        return None  # in a directory without the sticky bit, only who may rename entries there may replace it
    if not holder.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and holder.st_uid == st.st_uid:
        return None
    owner = user_name(st.st_uid)
    return Unsafe(link, f"is a symlink belonging to {owner} in a sticky directory", owner,
                  f"chown -h root {shlex.quote(link)}", "root")


def _judge(d: str, st: os.stat_result, owner_uid: int) -> Unsafe | None:
    quoted = shlex.quote(d)
    if st.st_uid not in (0, owner_uid):
        return Unsafe(d, f"belongs to {user_name(st.st_uid)}", user_name(st.st_uid), f"chown root {quoted}", "root")
    if st.st_mode & stat.S_ISVTX:
        return None
    owner = user_name(st.st_uid)
    if st.st_mode & stat.S_IWOTH:
        return Unsafe(d, "is world-writable without the sticky bit", "everyone", f"chmod +t {quoted}", owner)
    if st.st_mode & stat.S_IWGRP and not (_sole_member(st.st_gid, st.st_uid) and not _has_acl(d)):
        group = group_name(st.st_gid)
        return Unsafe(d, f"is group-writable ({group}) without the sticky bit", f"members of group {group}",
                      f"chmod +t {quoted}", owner)
    return None


def _sole_member(gid: int, uid: int) -> bool:
    """Whether ``uid`` is the only member of group ``gid``, by primary group or by the group's member list."""
    try:
        group = grp.getgrgid(gid)
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return False
    if any(member != name for member in group.gr_mem):
        return False
    primary = [p.pw_uid for p in pwd.getpwall() if p.pw_gid == gid]
    return all(u == uid for u in primary) and (uid in primary or name in group.gr_mem)


def _has_acl(d: str) -> bool:
    try:
        os.getxattr(d, _ACL)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        return True  # cannot tell: assume the worst
    return True


def require_safe_parents(path: str | os.PathLike[str], owner_uid: int) -> None:
    """Refuse, in one line with the fix, to make a store at ``path`` that someone could move away (init)."""
    _refuse(path, unsafe_parents(path, owner_uid), "refusing to create it there")
    checkpoint("parents-checked")  # tests make a parent here, as another user racing init could


def require_reached_safely(path: Path, fd: int, owner_uid: int) -> None:
    """After init made and opened the store directory ``fd``: the same judgement again, now that every directory on
    the way exists, and ``path`` must still lead to ``fd``.

    The first check skips directories that do not exist yet, and init carries on where one it would make already
    exists: so a parent another user made in between (in a sticky directory, anyone may) would hold the store. Once
    this passes, only root and the store's owner may change what leads to it, so it stays true.
    """
    _refuse(path, unsafe_parents(path, owner_uid), "refusing to make it a store (it is left empty)")
    try:
        st = os.stat(path)
    except OSError as e:
        raise StoreError(f"{path} changed while init made it ({e.strerror})", hint="run init again") from None
    held = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (held.st_dev, held.st_ino):
        raise StoreError(f"{path} was replaced while init made it", hint="run init again")


def _refuse(path: str | os.PathLike[str], found: list[Unsafe], verdict: str) -> None:
    if not found:
        return
    first = found[0]
    raise StoreError(
        f"{first.path} {first.why}, so {first.who} could move a store at {path} away and put their own in its "
        f"place; {verdict}",
        hint=f"as {first.fixer}: {first.fix}, or create the store where only you or root can rename it",
    )
