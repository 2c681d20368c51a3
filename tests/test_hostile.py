"""What another member of the group might plant or do, and odd environments: nothing hangs, nothing is trusted that
should not be, and every failure is one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

from wheelstore.store.store import Store

from .conftest import Runner, Users, one_line_error, snapshot
from .wheelmaker import big_files, make_wheel


def _key(whl: Path) -> str:
    import hashlib

    return hashlib.sha256(whl.read_bytes()).hexdigest()


def _as(run: Runner, user: str, code: str, *args: str) -> None:
    done = run.python(user, code, *args)
    assert done.returncode == 0, done.stderr


def test_wheel_rewritten_in_place_after_hashing(run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    """A group-writable wheel rewritten between hashing and unzipping: the published bytes are the hashed bytes."""
    good = make_wheel(workdir, "swap", files={"swap/__init__.py": b"SAFE = True\n"})
    evil_dir = workdir / "evil"
    evil_dir.mkdir()
    evil = make_wheel(evil_dir, "swap", files={"swap/__init__.py": b"EVIL = True\n"})
    shutil.chown(good, users.alice, users.group)
    os.chmod(good, 0o664)  # a shared download directory, writable by the group
    os.chmod(evil, 0o644)
    key = _key(good)
    markers = workdir / "markers"
    markers.mkdir()
    os.chmod(markers, 0o777)
    env = {"WHEELSTORE_TEST_HOOK": "hashed=wait", "WHEELSTORE_TEST_HOOK_DIR": str(markers)}
    proc = run.popen(users.bob, "--store", str(group_store), "realize", "--json", "--sha256", key, str(good), env=env)
    deadline = time.monotonic() + 60
    while not list(markers.iterdir()):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    # alice rewrites the very same inode with another valid wheel
    _as(run, users.alice, "import sys; open(sys.argv[1], 'r+b').write(open(sys.argv[2], 'rb').read())", str(good),
        str(evil))
    for m in markers.iterdir():
        m.unlink()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    tree = Path(json.loads(out)[0]["tree"])
    assert tree.name == key
    assert (tree / "swap/__init__.py").read_bytes() == b"SAFE = True\n"


def test_planted_manifests_are_not_trusted_and_never_hang(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    plants = {
        "fifo": "import os,sys; os.mkfifo(sys.argv[1], 0o644)",
        "dir": "import os,sys; os.mkdir(sys.argv[1], 0o755)",
        "symlink": "import os,sys; os.symlink('/etc/passwd', sys.argv[1])",
        "writable": "import sys; open(sys.argv[1], 'w').write('{}')",
    }
    for kind, code in plants.items():
        whl = make_wheel(workdir, f"plant{kind}")
        os.chmod(whl, 0o644)
        manifest = group_store / "manifests" / f"{_key(whl)}.json"
        _as(run, users.bob, code, str(manifest))
        result = run(users.alice, "--store", str(group_store), "realize", str(whl), timeout=30)
        line = one_line_error(result)
        assert "is not trustworthy" in line and f"rm -rf {manifest}" in line, line


def test_forged_manifest_for_a_writable_tree_is_refused(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """bob forges a read-only manifest naming alice for a tree he keeps writable."""
    whl = make_wheel(workdir, "forged")
    os.chmod(whl, 0o644)
    key = _key(whl)
    forge = r"""
import json, os, sys
store, key = sys.argv[1:3]
os.makedirs(f"{store}/trees/{key}/forged", mode=0o775)
open(f"{store}/trees/{key}/forged/__init__.py", "w").write("EVIL = 1\n")
doc = {"format": 1, "key": key, "wheel": "forged-1.0-py3-none-any.whl", "name": "forged", "version": "1.0",
       "dist_info": "forged-1.0.dist-info", "root_is_purelib": True, "publisher_uid": 1, "publisher": "wsalice",
       "owner_uid": os.getuid(), "published_at": "2026-01-01T00:00:00+00:00", "dirs": [], "files": {}}
path = f"{store}/manifests/{key}.json"
open(path, "w").write(json.dumps(doc))
os.chmod(path, 0o444)
"""
    _as(run, users.bob, forge, str(group_store), key)
    line = one_line_error(run(users.alice, "--store", str(group_store), "realize", str(whl)))
    assert f"trees/{key} is not trustworthy" in line and "wsbob" in line


def test_planted_lock_files_do_not_block(run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    plants = {
        "fifo": "import os,sys; os.mkfifo(sys.argv[1], 0o600)",
        "dir": "import os,sys; os.mkdir(sys.argv[1], 0o700)",
        "private file": "import os,sys; open(sys.argv[1], 'w'); os.chmod(sys.argv[1], 0o600)",
        "symlink": "import os,sys; os.symlink('/etc/shadow', sys.argv[1])",
    }
    for kind, code in plants.items():
        whl = make_wheel(workdir, f"lock{kind.replace(' ', '')}")
        os.chmod(whl, 0o644)
        _as(run, users.bob, code, str(group_store / "locks" / f"{_key(whl)}.lock"))
        result = run(users.alice, "--store", str(group_store), "realize", "--json", str(whl), timeout=30)
        assert result.returncode == 0, (kind, result.stderr)
        assert json.loads(result.stdout)[0]["unpacked"] is True
        assert result.stderr.startswith("warning: going ahead without lock"), result.stderr


def test_planted_entry_at_tree_path(run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    whl = make_wheel(workdir, "squat")
    os.chmod(whl, 0o644)
    target = group_store / "trees" / _key(whl)
    _as(run, users.alice, "import sys; open(sys.argv[1], 'w').write('squatting')", str(target))
    before = snapshot(group_store)
    line = one_line_error(run(users.bob, "--store", str(group_store), "realize", str(whl)))
    assert "left unfinished by wsalice" in line and f"rm -rf {target}" in line
    assert snapshot(group_store) == before
    # alice, who owns the junk (and the store), realizing it herself moves it aside and publishes
    fixed = run(users.alice, "--store", str(group_store), "realize", "--json", str(whl))
    assert fixed.returncode == 0, fixed.stderr
    assert (target / "squat/__init__.py").read_bytes() == b"VALUE = 1\n"


def test_first_use_of_default_store_by_many_processes(run: Runner, users: Users, workdir: Path) -> None:
    subprocess.run(["rm", "-rf", f"/home/{users.bob}/.local", f"/home/{users.bob}/.config"], check=True)
    wheels = []
    for i in range(6):
        whl = make_wheel(workdir, f"first{i}")
        os.chmod(whl, 0o644)
        wheels.append(whl)
    procs = [run.popen(users.bob, "realize", str(w)) for w in wheels]
    results = [(p.communicate(timeout=60), p.returncode) for p in procs]
    assert [rc for _o, rc in results] == [0] * 6, [o[1] for o, _rc in results]
    store = Store.open(f"/home/{users.bob}/.local/share/wheelstore/store")
    assert len(list(store.trees())) == 6


def test_extreme_umask(run: Runner, users: Users, workdir: Path) -> None:
    """A umask that removes even the owner's access still yields the policy's modes."""
    store = workdir / "odd"
    assert run(users.alice, "init", str(store), "--group", users.group, umask=0o577).returncode == 0
    whl = make_wheel(workdir, "odd", files=big_files(20, 100))
    os.chmod(whl, 0o644)
    result = run(users.alice, "--store", str(store), "realize", "--json", str(whl), umask=0o777)
    assert result.returncode == 0, result.stderr
    reference = workdir / "ref"
    assert run(users.alice, "init", str(reference), "--group", users.group).returncode == 0
    assert run(users.bob, "--store", str(reference), "realize", str(whl)).returncode == 0
    modes = [{k: v[1] for k, v in snapshot(s).items() if not k.startswith("locks/")} for s in (store, reference)]
    assert modes[0] == modes[1]


def test_interrupted_init_can_be_finished(run: Runner, users: Users, workdir: Path) -> None:
    store = workdir / "half"
    store.mkdir()
    for area in ("trees", "locks"):
        (store / area).mkdir()
    (store / ".config.toml.tmp").write_text("partial")
    subprocess.run(["chown", "-R", users.alice, str(store)], check=True)
    line = one_line_error(run(users.alice, "--store", str(store), "info"))
    assert "is not a wheelstore store" in line
    done = run(users.alice, "init", str(store), "--group", users.group)
    assert done.returncode == 0, done.stderr
    assert Store.open(store).policy.group == users.group
    assert not (store / ".config.toml.tmp").exists()


def test_only_publishers_can_lock(run: Runner, users: Users, workdir: Path) -> None:
    """In an 'all' store, readers (non-members) cannot even open a lock file, so cannot hold one forever."""
    store = workdir / "readable"
    assert run(users.alice, "init", str(store), "--group", users.group, "--shared", "all").returncode == 0
    whl = make_wheel(workdir, "lk")
    os.chmod(whl, 0o644)
    hook = {"WHEELSTORE_TEST_HOOK": "locked=pause", "WHEELSTORE_TEST_HOOK_DIR": str(workdir)}
    holder = run.popen(users.alice, "--store", str(store), "realize", str(whl), env=hook)
    deadline = time.monotonic() + 30
    while not list(workdir.glob("locked.*")):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    (lock,) = [p for p in (store / "locks").iterdir() if p.name != "gc.lock"]  # the key's, not init's store lock
    assert oct(lock.stat().st_mode & 0o777) == oct(0o660)
    tried = run.python(users.carol, "import sys; open(sys.argv[1], 'rb')", str(lock))
    assert tried.returncode != 0 and "PermissionError" in tried.stderr
    holder.kill()
    holder.wait()


def test_more_bad_wheels(run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    cases = {}
    enc = make_wheel(workdir, "enc")
    raw = bytearray(enc.read_bytes())
    # set the "encrypted" flag of enc/__init__.py in its central directory entry (zipfile cannot write one)
    at = raw.find(b"PK\x01\x02")
    while raw[at + 46 : at + 46 + len(b"enc/__init__.py")] != b"enc/__init__.py":
        at = raw.find(b"PK\x01\x02", at + 4)
    raw[at + 8] |= 0x1
    enc.write_bytes(bytes(raw))
    cases["encrypted"] = (enc, "is corrupt")
    data_dir = workdir / "d1"
    data_dir.mkdir()
    cases["foreign .data dir"] = (
        make_wheel(data_dir, "dd", files={"dd/__init__.py": b"", "other-1.0.data/scripts/x": b"x"}),
        "expected dd-1.0.data",
    )
    data_dir2 = workdir / "d2"
    data_dir2.mkdir()
    cases["unknown scheme"] = (
        make_wheel(data_dir2, "ds", files={"ds/__init__.py": b"", "ds-1.0.data/evil/x": b"x"}),
        "not under a known .data scheme",
    )
    cases["unhashed RECORD elsewhere"] = (
        make_wheel(workdir, "ur", files={"ur/__init__.py": b"", "ur/RECORD": b"evil"},
                   record_overrides={"ur/RECORD": ("", "")}),
        "RECORD has no hash for 'ur/RECORD'",
    )
    cases["long name"] = (
        make_wheel(workdir, "ln", files={"ln/" + "x" * 300 + ".py": b""}),
        "too long",
    )
    bad_record = make_wheel(workdir, "br")
    with zipfile.ZipFile(bad_record) as zf:
        members2 = {i.filename: zf.read(i) for i in zf.infolist()}
    members2["br-1.0.dist-info/RECORD"] = b"\xff\xfe not utf-8"
    with zipfile.ZipFile(bad_record, "w") as zf:
        for name, content in members2.items():
            zf.writestr(name, content)
    cases["RECORD not UTF-8"] = (bad_record, "not a UTF-8 CSV file")
    for label, (whl, expected) in cases.items():
        os.chmod(whl, 0o644)
        before = snapshot(group_store)
        line = one_line_error(run(users.bob, "--store", str(group_store), "realize", str(whl)))
        assert expected in line, (label, line)
        assert snapshot(group_store) == before, label
