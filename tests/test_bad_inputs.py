"""Acceptance 5: every bad input gives a one-line error, exits non-zero and leaves the store exactly as it was."""

from __future__ import annotations

import os
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import Runner, Users, one_line_error, snapshot
from .wheelmaker import make_wheel, member, record_hash


def _hash_mismatch(d: Path) -> tuple[Path, list[str]]:
    return make_wheel(d, "hm"), ["--sha256", "0" * 64]


def _truncated(d: Path) -> tuple[Path, list[str]]:
    whl = make_wheel(d, "trunc", files={f"trunc/m{i}.py": os.urandom(2000) for i in range(5)})
    data = whl.read_bytes()
    whl.write_bytes(data[: len(data) // 2])
    return whl, []


def _not_a_zip(d: Path) -> tuple[Path, list[str]]:
    whl = d / "junk-1.0-py3-none-any.whl"
    whl.write_bytes(b"this is not a zip file at all\n" * 10)
    return whl, []


def _record_hash_mismatch(d: Path) -> tuple[Path, list[str]]:
    bad = {"rhm/__init__.py": (record_hash(b"something else\n"), "10")}
    return make_wheel(d, "rhm", files={"rhm/__init__.py": b"0123456789"}, record_overrides=bad), []


def _record_size_mismatch(d: Path) -> tuple[Path, list[str]]:
    data = b"0123456789"
    bad = {"rsm/__init__.py": (record_hash(data), "11")}
    return make_wheel(d, "rsm", files={"rsm/__init__.py": data}, record_overrides=bad), []


def _record_missing_entry(d: Path) -> tuple[Path, list[str]]:
    files = {"rme/__init__.py": b"", "rme/x.py": b"x"}
    return make_wheel(d, "rme", files=files, record_overrides={"rme/x.py": None}), []


def _record_extra_entry(d: Path) -> tuple[Path, list[str]]:
    whl = make_wheel(d, "ree")
    # rewrite RECORD to list a file the archive lacks
    with zipfile.ZipFile(whl) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    members["ree-1.0.dist-info/RECORD"] += f"ree/ghost.py,{record_hash(b'boo')},3\n".encode()
    with zipfile.ZipFile(whl, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return whl, []


def _zip_slip(d: Path) -> tuple[Path, list[str]]:
    return make_wheel(d, "slip", extra=[(member("../../evil.py", stat.S_IFREG | 0o644), b"evil")]), []


def _absolute(d: Path) -> tuple[Path, list[str]]:
    return make_wheel(d, "absm", extra=[(member("/etc/evil.py", stat.S_IFREG | 0o644), b"evil")]), []


def _symlink(d: Path) -> tuple[Path, list[str]]:
    return make_wheel(d, "syml", extra=[(member("syml/passwd", stat.S_IFLNK | 0o777), b"/etc/passwd")]), []


def _device(d: Path) -> tuple[Path, list[str]]:
    return make_wheel(d, "devm", extra=[(member("devm/null", stat.S_IFCHR | 0o666), b"")]), []


def _duplicate(d: Path) -> tuple[Path, list[str]]:
    whl = make_wheel(d, "dup")
    with zipfile.ZipFile(whl, "a") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.writestr("dup/__init__.py", b"second copy")
    return whl, []


def _missing_file(d: Path) -> tuple[Path, list[str]]:
    return d / "absent-1.0-py3-none-any.whl", []


BAD_WHEELS: dict[str, tuple[Callable[[Path], tuple[Path, list[str]]], str]] = {
    "hash mismatch": (_hash_mismatch, "expected 000000"),
    "truncated zip": (_truncated, "truncated or corrupt"),
    "not a zip": (_not_a_zip, "not a valid zip archive"),
    "RECORD hash mismatch": (_record_hash_mismatch, "'rhm/__init__.py' does not match its RECORD hash"),
    "RECORD size mismatch": (_record_size_mismatch, "RECORD says 11"),
    "RECORD missing entry": (_record_missing_entry, "'rme/x.py' is missing from RECORD"),
    "RECORD extra entry": (_record_extra_entry, "RECORD lists 'ree/ghost.py'"),
    "zip-slip": (_zip_slip, "'../../evil.py' escapes the tree"),
    "absolute member": (_absolute, "'/etc/evil.py' is an absolute path"),
    "symlink member": (_symlink, "'syml/passwd' is a symlink"),
    "device member": (_device, "'devm/null' is a device"),
    "duplicate member": (_duplicate, "'dup/__init__.py' appears twice"),
    "missing file": (_missing_file, "no such file"),
}


@pytest.mark.parametrize("case", list(BAD_WHEELS))
def test_bad_wheel_publishes_nothing(run: Runner, users: Users, workdir: Path, group_store: Path, case: str) -> None:
    build, expected = BAD_WHEELS[case]
    # one good tree already in the store, so "unchanged" covers existing content too
    good = make_wheel(workdir, "good")
    os.chmod(good, 0o644)
    assert run(users.alice, "--store", str(group_store), "realize", str(good)).returncode == 0
    whl, extra_args = build(workdir)
    if whl.exists():
        os.chmod(whl, 0o644)
    before = snapshot(group_store)

    line = one_line_error(run(users.bob, "--store", str(group_store), "realize", *extra_args, str(whl)))

    assert expected in line, line
    assert snapshot(group_store) == before


def test_unreadable_store(run: Runner, users: Users, workdir: Path) -> None:
    store = workdir / "bobs"
    assert run(users.bob, "init", str(store)).returncode == 0
    whl = make_wheel(workdir, "unr")
    os.chmod(whl, 0o644)
    before = snapshot(store)
    line = one_line_error(run(users.alice, "--store", str(store), "realize", str(whl)))
    assert f"private to {users.bob}" in line
    assert snapshot(store) == before


def test_wrong_store_path(run: Runner, users: Users, workdir: Path) -> None:
    whl = make_wheel(workdir, "wsp")
    os.chmod(whl, 0o644)
    missing = workdir / "no-such-store"
    line = one_line_error(run(users.alice, "--store", str(missing), "realize", str(whl)))
    assert "there is no store" in line and f"wheelstore init {missing}" in line
    assert not missing.exists()
    not_store = workdir / "plain-dir"
    not_store.mkdir()
    line = one_line_error(run(users.alice, "--store", str(not_store), "realize", str(whl)))
    assert "is not a wheelstore store" in line
    assert list(not_store.iterdir()) == []


def test_group_user_is_not_in(run: Runner, users: Users, workdir: Path) -> None:
    target = workdir / "other"
    line = one_line_error(run(users.alice, "init", str(target), "--group", users.other_group))
    assert f"not a member of group '{users.other_group}'" in line
    assert f"usermod -aG {users.other_group} {users.alice}" in line
    assert not target.exists()


def test_missing_group(run: Runner, users: Users, workdir: Path) -> None:
    target = workdir / "nogroup"
    line = one_line_error(run(users.alice, "init", str(target), "--group", "no-such-group-ws"))
    assert "there is no group 'no-such-group-ws'" in line
    assert not target.exists()


def test_group_mode_without_group(run: Runner, users: Users, workdir: Path) -> None:
    target = workdir / "gmode"
    line = one_line_error(run(users.alice, "init", str(target), "--shared", "group"))
    assert "needs a group" in line
    assert not target.exists()


def test_init_refuses_existing_store_and_nonempty_dir(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    before = snapshot(group_store)
    line = one_line_error(run(users.alice, "init", str(group_store), "--group", users.group))
    assert "already a store" in line
    assert snapshot(group_store) == before
    busy = workdir / "busy"
    busy.mkdir()
    (busy / "precious.txt").write_text("keep me")
    os.chown(busy, users.uid(users.alice), -1)
    line = one_line_error(run(users.alice, "init", str(busy)))
    assert "not empty" in line
    assert [p.name for p in busy.iterdir()] == ["precious.txt"]


def test_one_bad_wheel_in_a_batch(run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    """Wheels are realized in parallel and independently: a bad one is reported, the good ones are published."""
    good = [make_wheel(workdir, f"batch{i}") for i in range(3)]
    bad = make_wheel(workdir, "batchbad", extra=[(member("../x.py", stat.S_IFREG | 0o644), b"")])
    for w in (*good, bad):
        os.chmod(w, 0o644)
    result = run(users.alice, "--store", str(group_store), "realize", "--json", str(good[0]), str(bad),
                 *map(str, good[1:]))
    line = one_line_error(result)
    assert "'../x.py' escapes the tree" in line
    import json

    assert sorted(r["name"] for r in json.loads(result.stdout)) == ["batch0", "batch1", "batch2"]
