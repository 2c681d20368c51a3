"""Issue 18 on real cluster filesystems (tests/cluster.py mounts them): a GlusterFS volume mounted twice stands for
two nodes; sshfs for a network filesystem whose locks do not cross clients."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .cluster import Mounts, SshfsPair
from .conftest import Runner, Users


def _locks_cross(one: Path, two: Path) -> bool:
    """Whether an flock taken through one mount keeps the other mount from taking it."""
    (one / "lockfile").write_bytes(b"")
    a = os.open(one / "lockfile", os.O_RDWR)
    b = os.open(two / "lockfile", os.O_RDWR)
    try:
        fcntl.flock(a, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            fcntl.flock(b, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False
    finally:
        os.close(a)
        os.close(b)


def test_gluster_is_two_clients_of_one_volume_with_locks_that_cross(gluster: Mounts, run: Runner,
                                                                    users: Users) -> None:
    one, two = gluster.fresh()
    assert os.stat(one).st_dev != os.stat(two).st_dev  # two mounts, as two nodes would have
    done = run.python(users.alice, "import sys; open(sys.argv[1], 'w').write('hi')", str(one / "f"))
    assert done.returncode == 0, done.stderr
    assert (two / "f").read_text() == "hi"
    assert (two / "f").stat().st_uid == users.uid(users.alice)
    assert _locks_cross(one, two)


def test_sshfs_is_two_clients_of_one_directory_with_locks_that_do_not_cross(sshfs_pair: SshfsPair, run: Runner,
                                                                           users: Users) -> None:
    one, two = sshfs_pair.fresh()
    done = run.python(users.alice, "import sys; open(sys.argv[1], 'w').write('hi')", str(one / "f"))
    assert done.returncode == 0, done.stderr
    assert (two / "f").read_text() == "hi"
    assert (two / "f").stat().st_uid == 0  # the server wrote it as root, who logged in
    assert not _locks_cross(one, two)
    mine_one, mine_two = sshfs_pair.as_user(users.alice).fresh()
    done = run.python(users.alice, "import sys; open(sys.argv[1], 'w').write('hi')", str(mine_one / "f"))
    assert done.returncode == 0, done.stderr
    assert (mine_two / "f").stat().st_uid == users.uid(users.alice)
