"""Link modes on real filesystems: XFS and btrfs on loop devices, ext4 (the root filesystem), and real users.

Nothing here mocks the kernel: reflink support, EXDEV across mounts and fs.protected_hardlinks are what the machine
does. The filesystems are made once per session under /var/tmp and unmounted at the end.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from wheelstore.base.errors import LinkModeError
from wheelstore.venv.link import LinkMode, link_file
from wheelstore.venv.linkmode import Probe, choose, fs_type, probe

from .conftest import Filesystems, Runner, Users
from .conftest import _run_checked as _run

MTIME_NS = 1_600_000_000_123_456_789  # nanoseconds matter: they must survive into reflinks and copies
DATA = b"print('hello from the store')\n" * 40_000  # about 1 MiB: several blocks to share


@pytest.fixture
def ext4(filesystems: Filesystems) -> Path:
    """The scratch area on the root filesystem, which must be ext4 for the "unsupported" checks to mean anything."""
    kind = fs_type(str(filesystems.base))
    if kind != "ext4":
        pytest.skip(f"/var/tmp is on {kind}, not ext4")
    return filesystems.base


pytestmark = pytest.mark.usefixtures("cache_home")  # link probe results in a private cache per test


def fresh(root: Path) -> Path:
    d = Path(tempfile.mkdtemp(dir=root))
    os.chmod(d, 0o755)
    return d


def store_file(root: Path, data: bytes = DATA, mode: int = 0o444) -> Path:
    """A file as a published tree holds it: read-only, with a known mtime, its blocks on disk."""
    path = fresh(root) / "mod.py"
    with open(path, "wb") as f:
        f.write(data)
        os.fsync(f.fileno())
    os.chmod(path, mode)
    os.utime(path, ns=(MTIME_NS, MTIME_NS))
    return path


# -- fs_type ---------------------------------------------------------------------------------------------------------


def test_fs_type_names_the_filesystem_holding_a_path(filesystems: Filesystems) -> None:
    assert fs_type(str(filesystems.xfs)) == "xfs"
    assert fs_type(str(filesystems.btrfs / "not" / "there")) == "btrfs"
    expected = subprocess.run(["findmnt", "-no", "FSTYPE", "-T", str(filesystems.base)],
                              capture_output=True, text=True).stdout.strip()
    assert fs_type(str(filesystems.base)) == expected
    assert fs_type("/proc/self") == "proc"


def test_fs_type_reads_escaped_mount_points(filesystems: Filesystems) -> None:
    spaced = fresh(filesystems.base) / "a dir\twith blanks"
    spaced.mkdir()
    _run("mount", "-t", "tmpfs", "-o", "size=1m", "none", str(spaced))
    try:
        assert fs_type(str(spaced / "x")) == "tmpfs"
        assert fs_type(str(spaced.parent)) != "tmpfs"
    finally:
        _run("umount", str(spaced))


# -- link_file -------------------------------------------------------------------------------------------------------


def _filefrag(path: Path) -> str | None:
    if shutil.which("filefrag") is None:
        return None
    return subprocess.run(["filefrag", "-v", str(path)], capture_output=True, text=True).stdout


@pytest.mark.parametrize("kind", ["xfs", "btrfs"])
def test_reflink_is_a_private_inode_sharing_blocks(filesystems: Filesystems, kind: str) -> None:
    root = filesystems.root(kind)
    src, venv = store_file(root), fresh(root)
    dst = venv / "mod.py"
    link_file(str(src), str(dst), LinkMode.REFLINK)

    s, d = src.stat(), dst.stat()
    assert (d.st_dev, d.st_ino) != (s.st_dev, s.st_ino) and d.st_nlink == 1
    assert dst.read_bytes() == DATA
    assert d.st_mtime_ns == MTIME_NS
    assert stat.S_IMODE(d.st_mode) == 0o644  # the source's 0444 plus u+w: the user's own copy
    frag = _filefrag(dst)
    if frag is not None:
        assert "shared" in frag, frag

    with open(dst, "r+b") as f:
        f.write(b"# edited in the venv\n")
    assert src.read_bytes() == DATA
    assert (stat.S_IMODE(src.stat().st_mode), src.stat().st_mtime_ns) == (0o444, MTIME_NS)


def test_reflink_honours_an_explicit_mode(filesystems: Filesystems) -> None:
    src, venv = store_file(filesystems.xfs), fresh(filesystems.xfs)
    old = os.umask(0o077)
    try:
        link_file(str(src), str(venv / "tool"), LinkMode.REFLINK, dst_mode=0o755)
    finally:
        os.umask(old)
    assert stat.S_IMODE((venv / "tool").stat().st_mode) == 0o755


def test_reflink_on_ext4_is_unsupported(ext4: Path) -> None:
    src, venv = store_file(ext4), fresh(ext4)
    with pytest.raises(OSError) as caught:
        link_file(str(src), str(venv / "mod.py"), LinkMode.REFLINK)
    assert caught.value.errno == errno.EOPNOTSUPP
    assert os.listdir(venv) == []  # the half-made file is gone


@pytest.mark.parametrize(("src_kind", "dst_kind"), [("xfs", "ext4"), ("xfs", "btrfs")])
def test_reflink_across_filesystems_is_exdev(filesystems: Filesystems, ext4: Path, src_kind: str,
                                             dst_kind: str) -> None:
    src, venv = store_file(filesystems.root(src_kind)), fresh(filesystems.root(dst_kind))
    with pytest.raises(OSError) as caught:
        link_file(str(src), str(venv / "mod.py"), LinkMode.REFLINK)
    assert caught.value.errno == errno.EXDEV
    assert os.listdir(venv) == []


@pytest.mark.parametrize("kind", ["ext4", "xfs", "btrfs"])
def test_hardlink_symlink_and_copy(filesystems: Filesystems, kind: str) -> None:
    root = filesystems.root(kind)
    src, venv = store_file(root), fresh(root)
    link_file(str(src), str(venv / "hard.py"), LinkMode.HARDLINK)
    link_file(str(src), str(venv / "sym.py"), LinkMode.SYMLINK)
    link_file(str(src), str(venv / "copy.py"), LinkMode.COPY)

    s = src.stat()
    hard = (venv / "hard.py").stat()
    assert (hard.st_dev, hard.st_ino) == (s.st_dev, s.st_ino)
    assert stat.S_IMODE(src.stat().st_mode) == 0o444  # a hard link never changes the store's inode

    assert os.readlink(venv / "sym.py") == str(src)

    copy = (venv / "copy.py").stat()
    assert copy.st_ino != s.st_ino and copy.st_nlink == 1
    assert (venv / "copy.py").read_bytes() == DATA
    assert copy.st_mtime_ns == MTIME_NS
    assert stat.S_IMODE(copy.st_mode) == 0o644


@pytest.mark.parametrize("data", [b"", b"x", DATA], ids=["empty", "byte", "1MiB"])
def test_copy_across_filesystems(filesystems: Filesystems, data: bytes) -> None:
    src, venv = store_file(filesystems.xfs, data, mode=0o555), fresh(filesystems.base)
    link_file(str(src), str(venv / "tool"), LinkMode.COPY)
    st = (venv / "tool").stat()
    assert (venv / "tool").read_bytes() == data
    assert (st.st_mtime_ns, stat.S_IMODE(st.st_mode)) == (MTIME_NS, 0o755)


@pytest.mark.parametrize("mode", list(LinkMode))
def test_an_existing_destination_is_never_replaced(filesystems: Filesystems, mode: LinkMode) -> None:
    src, venv = store_file(filesystems.xfs), fresh(filesystems.xfs)
    mine = venv / "mod.py"
    mine.write_bytes(b"mine")
    with pytest.raises(FileExistsError):
        link_file(str(src), str(mine), mode)
    assert mine.read_bytes() == b"mine" and not mine.is_symlink()
    assert src.read_bytes() == DATA


# -- probe -----------------------------------------------------------------------------------------------------------


def test_probe_finds_what_works(filesystems: Filesystems, ext4: Path) -> None:
    xfs_src = str(store_file(filesystems.xfs))
    ext4_src = str(store_file(ext4))
    xfs_venv, btrfs_venv, ext4_venv = fresh(filesystems.xfs), fresh(filesystems.btrfs), fresh(ext4)

    assert probe(xfs_src, str(xfs_venv)) == Probe(reflink=True, hardlink=True, same_device=True, reasons={})
    assert probe(str(store_file(filesystems.btrfs)), str(btrfs_venv)).reflink

    local = probe(ext4_src, str(ext4_venv))
    assert (local.reflink, local.hardlink, local.same_device) == (False, True, True)
    assert local.reasons == {"reflink": "not supported on this filesystem (ext4, EOPNOTSUPP)"}

    across = probe(xfs_src, str(ext4_venv))
    assert (across.reflink, across.hardlink, across.same_device) == (False, False, False)
    assert set(across.reasons) == {"reflink", "hardlink"}
    assert all("xfs and ext4" in r and "EXDEV" in r for r in across.reasons.values()), across.reasons

    for venv in (xfs_venv, btrfs_venv, ext4_venv):
        assert os.listdir(venv) == []  # no scratch names left behind


def test_probe_answers_from_its_cache(filesystems: Filesystems, cache_home: Path) -> None:
    src, venv = str(store_file(filesystems.xfs)), fresh(filesystems.xfs)
    first = probe(src, str(venv))
    cache = cache_home / "wheelstore" / "linkprobe.json"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert len(json.loads(cache.read_text())["probes"]) == 1

    _run("chattr", "+i", str(venv))  # nothing, not even root, can create a scratch name in it now
    try:
        assert probe(src, str(venv)) == first
        cache.unlink()
        blind = probe(src, str(venv))  # without the cache it really tries, and fails
        assert (blind.reflink, blind.hardlink) == (False, False) and "symlink" in blind.reasons
        assert not cache.exists()  # a failure of this venv directory is not a fact about the filesystems
    finally:
        _run("chattr", "-i", str(venv))


def test_a_broken_cache_breaks_nothing(filesystems: Filesystems, cache_home: Path,
                                       monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    src, venv = str(store_file(filesystems.xfs)), str(fresh(filesystems.xfs))
    cache = cache_home / "wheelstore" / "linkprobe.json"
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json")
    expected = Probe(reflink=True, hardlink=True, same_device=True, reasons={})
    assert probe(src, venv) == expected
    assert json.loads(cache.read_text())["format"] == 1  # replaced by a good one

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # the cache directory cannot be created
    assert probe(src, venv) == expected
    assert os.listdir(venv) == []


# -- choose ----------------------------------------------------------------------------------------------------------

EXT4_REASON = "not supported on this filesystem (ext4, EOPNOTSUPP)"
ALL = Probe(reflink=True, hardlink=True, same_device=True, reasons={})
NO_REFLINK = Probe(reflink=False, hardlink=True, same_device=True, reasons={"reflink": EXT4_REASON})
ROOT = 0


def test_auto_prefers_reflink() -> None:
    assert choose(None, ALL, tree_owner_uid=ROOT, shared=False) == (LinkMode.REFLINK, None)
    assert choose(None, ALL, tree_owner_uid=12345, shared=True) == (LinkMode.REFLINK, None)


def test_auto_falls_back_with_a_note(users: Users) -> None:
    mode, note = choose(None, NO_REFLINK, tree_owner_uid=ROOT, shared=False)
    assert (mode, note) == (LinkMode.FOLD, f"reflink unavailable: {EXT4_REASON}; using fold")
    no_symlinks = Probe(False, True, True, {"reflink": EXT4_REASON, "symlink": "s"})
    assert choose(None, no_symlinks, tree_owner_uid=ROOT, shared=False) == (
        LinkMode.HARDLINK, f"reflink unavailable: {EXT4_REASON}; using hardlink")
    for owner, shared in ((ROOT, True), (users.uid(users.alice), False)):  # root may not link these at all
        mode, note = choose(None, NO_REFLINK, tree_owner_uid=owner, shared=shared)
        assert mode is LinkMode.COPY and note is not None
        assert note.startswith(f"reflink unavailable: {EXT4_REASON}; using copy, because root ignores")
    nothing = Probe(False, False, False, {"reflink": "r", "hardlink": "h", "symlink": "s"})
    assert choose(None, nothing, tree_owner_uid=ROOT, shared=False) == (
        LinkMode.COPY, "reflink unavailable: r; using copy")


def test_explicit_modes(users: Users) -> None:
    assert choose(LinkMode.HARDLINK, ALL, tree_owner_uid=ROOT, shared=False) == (LinkMode.HARDLINK, None)
    mode, note = choose(LinkMode.SYMLINK, NO_REFLINK, tree_owner_uid=ROOT, shared=True)  # honoured, with a warning
    assert mode is LinkMode.SYMLINK and note is not None and note.startswith("--link-mode symlink as root: root ig")
    assert choose(LinkMode.SYMLINK, NO_REFLINK, tree_owner_uid=ROOT, shared=False) == (LinkMode.SYMLINK, None)
    assert choose(LinkMode.COPY, Probe(False, False, False, {"symlink": "s"}), tree_owner_uid=1, shared=True) == (
        LinkMode.COPY, None)

    with pytest.raises(LinkModeError) as caught:
        choose(LinkMode.REFLINK, NO_REFLINK, tree_owner_uid=ROOT, shared=False)
    assert str(caught.value) == (f"reflink cannot be used: {EXT4_REASON} "
                                 "(fix: use --link-mode hardlink or symlink)")


def test_explicit_hardlink_is_refused_where_unsafe(users: Users) -> None:
    with pytest.raises(LinkModeError) as caught:  # even though root could link it (the probe says it can)
        choose(LinkMode.HARDLINK, ALL, tree_owner_uid=users.uid(users.alice), shared=False)
    assert str(caught.value).startswith(f"hardlink cannot be used: the tree belongs to {users.alice}")
    assert "(fix: use --link-mode reflink or copy)" in str(caught.value)  # root: no symlink into alice's tree

    with pytest.raises(LinkModeError) as caught:
        choose(LinkMode.HARDLINK, NO_REFLINK, tree_owner_uid=ROOT, shared=True)
    assert "shared with other users" in str(caught.value)
    assert str(caught.value).endswith("(fix: use --link-mode copy)")
    assert "\n" not in str(caught.value)


def test_beside_an_old_pip_nothing_links_into_the_store(users: Users) -> None:
    """A pip before 23.1 (Debian's) cannot remove links into a store: auto links per file, links are refused."""
    mode, note = choose(None, NO_REFLINK, tree_owner_uid=ROOT, shared=False, old_pip="23.0.1")
    assert mode is LinkMode.HARDLINK and note is not None
    assert note.startswith("the venv's pip 23.0.1 cannot remove links into a store") and "using hardlink" in note
    assert choose(None, NO_REFLINK, tree_owner_uid=ROOT, shared=True, old_pip="23.0.1")[0] is LinkMode.COPY
    assert choose(None, ALL, tree_owner_uid=ROOT, shared=True, old_pip="23.0.1") == (LinkMode.REFLINK, None)
    for requested in (LinkMode.FOLD, LinkMode.SYMLINK):
        with pytest.raises(LinkModeError) as caught:
            choose(requested, NO_REFLINK, tree_owner_uid=ROOT, shared=False, old_pip="22.0.4")
        assert str(caught.value).startswith(f"{requested.value} cannot be used: the venv's pip 22.0.4 cannot")
        assert "(fix: upgrade the venv's pip (install -U pip), or use --link-mode copy or hardlink)" in \
            str(caught.value)
    assert choose(LinkMode.COPY, NO_REFLINK, tree_owner_uid=ROOT, shared=False, old_pip="23.0.1") == (
        LinkMode.COPY, None)


def test_choose_with_a_real_probe(ext4: Path) -> None:
    found = probe(str(store_file(ext4)), str(fresh(ext4)))
    assert choose(None, found, tree_owner_uid=ROOT, shared=False) == (
        LinkMode.FOLD, f"reflink unavailable: {EXT4_REASON}; using fold")
    assert choose(LinkMode.HARDLINK, found, tree_owner_uid=ROOT, shared=False) == (LinkMode.HARDLINK, None)


# -- the kernel fact behind the hardlink rule ------------------------------------------------------------------------

TRY_LINK = """
import errno, os, sys
try:
    os.link(sys.argv[1], sys.argv[2])
    print("linked")
except OSError as e:
    print(errno.errorcode[e.errno])
"""


def test_protected_hardlinks_stop_linking_another_users_file(run: Runner, users: Users, workdir: Path) -> None:
    if Path("/proc/sys/fs/protected_hardlinks").read_text().strip() != "1":
        pytest.skip("fs.protected_hardlinks is not 1 on this machine")
    alices, bobs = workdir / "alice.py", workdir / "bob.py"
    for path, owner in ((alices, users.alice), (bobs, users.bob)):
        path.write_bytes(b"x = 1\n")
        os.chown(path, users.uid(owner), users.uid(owner))
        os.chmod(path, 0o444)

    tried = run.python(users.bob, TRY_LINK, str(alices), str(workdir / "stolen.py"))
    assert tried.stdout.strip() == "EPERM", tried.stderr
    assert not (workdir / "stolen.py").exists()
    own = run.python(users.bob, TRY_LINK, str(bobs), str(workdir / "own.py"))  # the control: his own file links
    assert own.stdout.strip() == "linked", own.stderr

    # root could link alice's file (the probe finds it works), but choose() refuses all the same
    found = probe(str(alices), str(workdir))
    assert found.hardlink
    with pytest.raises(LinkModeError):
        choose(LinkMode.HARDLINK, found, tree_owner_uid=users.uid(users.alice), shared=False)
