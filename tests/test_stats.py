"""``wheelstore stats``: logical and physical space agree with ``du`` and with what ``df`` says the filesystem lost.

A private ext4 loop mount keeps ``df`` free of everything else the machine writes meanwhile.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Runner, Users
from .wheelmaker import make_wheel


@pytest.fixture
def ext4() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("loop-mounting a filesystem needs root (CI runs as root)")
    base = Path(tempfile.mkdtemp(prefix="wheelstore-stats-", dir="/var/tmp"))
    image, mnt = base / "ext4.img", base / "mnt"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(128 << 20)
    mounted = False
    try:
        for cmd in (["mkfs.ext4", "-q", "-F", str(image)], ["mount", "-o", "loop", str(image), str(mnt)]):
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"cannot make and mount ext4 here: {done.stderr.strip()}")
        mounted = True
        base.chmod(0o755)
        mnt.chmod(0o1777)
        yield mnt
    finally:
        if mounted and subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def _used(path: Path) -> tuple[int, int]:
    os.sync()
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_files - st.f_ffree


def _du(*paths: Path, inodes: bool = False) -> int:
    flag = "--inodes" if inodes else "--block-size=1"
    out = subprocess.run(["du", "-s", "-c", flag, *map(str, paths)], capture_output=True, text=True, check=True).stdout
    return int(out.strip().splitlines()[-1].split()[0])


def _close(measured: int, expected: int, within: float) -> bool:
    return abs(measured - expected) <= within * expected


def test_two_users_two_venvs_each_agree_with_du_and_df(
    run: Runner, users: Users, workdir: Path, ext4: Path
) -> None:
    """Acceptance 3 in small: 2 users x 2 venvs of the same wheels."""
    wheels = workdir / "wheels"
    wheels.mkdir()
    wheels.chmod(0o755)
    paths = []
    for n in ("sta", "stb", "stc", "std"):
        files = {f"{n}/__init__.py": f"NAME = {n!r}\n".encode()}
        files.update({f"{n}/data/blob{i}.bin": os.urandom(24_000 + 997 * i) for i in range(10)})
        whl = make_wheel(wheels, n, files=files)
        whl.chmod(0o644)
        paths.append(str(whl))
    homes = {}
    for user in (users.alice, users.bob):
        homes[user] = ext4 / user
        homes[user].mkdir()
        os.chown(homes[user], users.uid(user), -1)
    before = _used(ext4)

    store = ext4 / "store"
    assert run(users.alice, "init", str(store), "--group", users.group).returncode == 0
    venvs = []
    for user in (users.alice, users.bob):
        for i in range(2):
            venv = homes[user] / f"venv{i}"
            assert run(user, "venv", str(venv)).returncode == 0
            done = run(user, "--store", str(store), "install", "--link-mode", "symlink", "--venv", str(venv), *paths)
            assert done.returncode == 0, done.stderr
            venvs.append(venv)
    after = _used(ext4)

    done = run(users.alice, "--store", str(store), "stats", "--json")
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert stats["notes"] == []

    # logical: four copies of what each venv links, trees and pyc units alike
    one_copy = _du(store / "trees")
    assert _close(stats["logical_bytes"], 4 * one_copy, 0.03), (stats["logical_bytes"], one_copy)
    assert sorted(v["venv"] for v in stats["venvs"]) == sorted(map(str, venvs))
    assert {v["units"] for v in stats["venvs"]} == {8}  # four trees and their four pyc units
    assert all(0 < v["pyc_logical_bytes"] < v["logical_bytes"] for v in stats["venvs"])
    assert [(u["user"], u["venvs"]) for u in stats["users"]] == [(users.alice, 2), (users.bob, 2)]
    assert sum(u["logical_bytes"] for u in stats["users"]) == stats["logical_bytes"]

    # physical: what du counts over the store and the venvs (each inode once), and what df lost
    du_bytes, du_inodes = _du(store, *venvs), _du(store, *venvs, inodes=True)
    assert _close(stats["physical_bytes"], du_bytes, 0.02), (stats["physical_bytes"], du_bytes)
    assert _close(stats["physical_inodes"], du_inodes, 0.02), (stats["physical_inodes"], du_inodes)
    df_bytes, df_inodes = after[0] - before[0], after[1] - before[1]
    assert _close(stats["physical_bytes"], df_bytes, 0.05), (stats["physical_bytes"], df_bytes)
    assert _close(stats["physical_inodes"], df_inodes, 0.05), (stats["physical_inodes"], df_inodes)
    assert stats["physical_bytes"] == stats["store_bytes"] + sum(v["physical_bytes"] for v in stats["venvs"])
    assert stats["savings_bytes"] == stats["logical_bytes"] - stats["physical_bytes"] > 0

    text = run(users.bob, "--store", str(store), "stats")
    assert text.returncode == 0 and "logical" in text.stdout and str(venvs[0]) in text.stdout


def test_stats_counts_only_live_venvs(run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    whl = make_wheel(workdir, "stl", files={"stl/__init__.py": b"NAME = 'stl'\n"})
    whl.chmod(0o644)
    venvs = [workdir / "a", workdir / "b"]
    for venv in venvs:
        assert run(users.alice, "venv", str(venv)).returncode == 0
        assert run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), str(whl)).returncode == 0
    shutil.rmtree(venvs[0])
    stats = json.loads(run(users.bob, "--store", str(group_store), "stats", "--json").stdout)
    assert [v["venv"] for v in stats["venvs"]] == [str(venvs[1])] and stats["stale_roots"] == 1
