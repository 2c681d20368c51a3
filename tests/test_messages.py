"""What the command line says (issue 19, point 4): the reflink fallback once per filesystem pair, a member's gc in
one line per owner, plurals and signs, uv's durations, edit's counts, and errors that name what refused and why, in
wheelstore's terms. Real users, real processes, real filesystems (tmpfs mounts for the full ones)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from wheelstore.base.errors import BuildError
from wheelstore.base.interpreter import Interpreter
from wheelstore.cli.output import elapsed_text
from wheelstore.fetch.build import ensure_built
from wheelstore.fetch.sources import Sources
from wheelstore.store.store import Store

from .conftest import PROGRESS, SYSTEM_PYTHON, Runner, Users, one_line_error
from .test_gc import _venv, _wheels
from .wheelmaker import make_sdist, make_wheel

REFLINK_NOTE = "reflink unavailable: not supported on this filesystem (ext4, EOPNOTSUPP); using fold"


def _cache(workdir: Path, user: str) -> dict[str, str]:
    """A fresh cache of the user's own, so what they were told before (in their real home) does not count."""
    return {"XDG_CACHE_HOME": str(workdir / f"cache-{user}")}


def test_reflink_fallback_is_a_note_once_per_filesystem_pair_and_user(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    w = _wheels(workdir / "wheels", ["ra", "rb", "rc"])
    a1, a2 = _venv(run, users.alice, workdir / "a1"), _venv(run, users.alice, workdir / "a2")
    env = _cache(workdir, users.alice)

    def install(user: str, venv: Path, wheel: Path, *extra: str) -> str:
        done = run(user, *extra, "--store", str(group_store), "install", "--venv", str(venv), str(wheel),
                   env=_cache(workdir, user))
        assert done.returncode == 0, done.stderr
        assert "warning:" not in done.stderr, done.stderr  # the same fact doctor calls ok is no warning
        # what stays: the progress summaries of a log (unpacked, compiled) are not messages
        return "".join(line for line in done.stderr.splitlines(keepends=True) if not PROGRESS.match(line))

    first = install(users.alice, a1, w["ra"])
    assert first == f"note: {REFLINK_NOTE} (said once for these filesystems; -v says it every time)\n"
    assert install(users.alice, a1, w["rb"]) == ""  # the venv it already filled
    assert install(users.alice, a2, w["ra"]) == ""  # another venv on the same filesystem
    assert f"debug: {REFLINK_NOTE}\n" in install(users.alice, a2, w["rc"], "-v")
    json_notes = run(users.alice, "--store", str(group_store), "install", "--venv", str(a2), "--reinstall", "--json",
                     str(w["rc"]), env=env)
    assert json.loads(json_notes.stdout)["notes"] == [REFLINK_NOTE]  # --json always has it
    # another user is told once too, in their own cache
    b = _venv(run, users.bob, workdir / "b")
    assert install(users.bob, b, w["ra"]).startswith(f"note: {REFLINK_NOTE}")
    assert install(users.bob, b, w["rb"]) == ""


def test_members_gc_says_one_line_per_owner(run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    """bob's gc meets alice's unused trees (he may not remove them) and alice's gc meets bob's (the store owner
    unpublishes them, their files stay bob's): each is one line per owner with how many, how big and who frees them;
    -v and --json list every entry."""
    names = [f"g{i}" for i in range(6)]
    w = _wheels(workdir / "wheels", names)
    va, vb = _venv(run, users.alice, workdir / "va"), _venv(run, users.bob, workdir / "vb")
    for user, venv, mine in ((users.alice, va, names[:4]), (users.bob, vb, names[4:])):
        done = run(user, "--store", str(group_store), "install", "--link-mode", "symlink", "--venv", str(venv),
                   *(str(w[n]) for n in mine), env=_cache(workdir, user))
        assert done.returncode == 0, done.stderr
    shutil.rmtree(va)
    shutil.rmtree(vb)

    gc = ("--store", str(group_store), "gc", "--grace", "0")
    dry = run(users.bob, *gc, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    left = [line for line in dry.stdout.splitlines() if "cannot remove" in line]
    assert len(left) == 1, dry.stdout  # 8 units of alice's (4 trees, 4 pyc units): one line
    assert re.fullmatch(rf"cannot remove 8 unused entries \(\d+\.\d KiB\) of {users.alice}: only {users.alice} "
                        rf"\(its owner\) or root can, with 'wheelstore --store {group_store} gc' \(-v lists them\)",
                        left[0]), left[0]
    assert "not removable" not in dry.stdout

    verbose = run(users.bob, "-v", *gc, "--dry-run")
    assert len([line for line in verbose.stdout.splitlines() if line.startswith("   trees/")]) == 8, verbose.stdout
    listed = json.loads(run(users.bob, *gc, "--dry-run", "--json").stdout)["not_removable"]
    assert len(listed) == 8 and {u["owner"] for u in listed} == {users.alice}

    done = run(users.alice, *gc)  # the store owner: removes her own, unpublishes bob's
    assert done.returncode == 0, done.stderr
    assert re.search(rf"^unpublished 4 unused entries \(\d+\.\d KiB\) of {users.bob}: their files stay until "
                     rf"{users.bob} \(its owner\) or root runs 'wheelstore --store {group_store} gc' \(-v lists "
                     r"them\)$", done.stdout, re.M), done.stdout
    assert re.search(r"^removed 8 entries \(\d+\.\d KiB\); kept 0 in use by 0 venvs and 0 younger than the grace "
                     "period$", done.stdout, re.M), done.stdout
    assert len(done.stdout.splitlines()) == 2 + sum(1 for line in done.stdout.splitlines() if line.startswith(" - "))
    assert "1 entries" not in done.stdout


def test_stats_plurals_and_a_cost_said_as_one(run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    w = _wheels(workdir / "wheels", ["sa", "sb"], size=100_000)
    venv = _venv(run, users.alice, workdir / "one")
    env = _cache(workdir, users.alice)
    assert run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), str(w["sa"]),
               env=env).returncode == 0
    assert run(users.alice, "--store", str(group_store), "realize", str(w["sb"])).returncode == 0  # linked nowhere
    one = run(users.alice, "--store", str(group_store), "stats")
    assert one.returncode == 0, one.stderr
    assert f"user {users.alice}: 1 venv, " in one.stdout and "links 1 unit, " in one.stdout, one.stdout
    assert re.search(r": costs \d+\.\d [KM]iB more than copies would \(\+\d+%\)$", one.stdout, re.M), one.stdout
    assert "saves -" not in one.stdout and "(-" not in one.stdout and "1 venvs" not in one.stdout
    for i in range(4):
        v = _venv(run, users.alice, workdir / f"more{i}")
        assert run(users.alice, "--store", str(group_store), "install", "--venv", str(v), str(w["sa"]), str(w["sb"]),
                   env=env).returncode == 0
    many = run(users.alice, "--store", str(group_store), "stats")
    assert f"user {users.alice}: 5 venvs, " in many.stdout, many.stdout
    assert re.search(r": saves \d+\.\d [KM]iB against copies \(\d+%\)$", many.stdout, re.M), many.stdout


def test_durations_are_said_as_uv_says_them(run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    # uv's elapsed(): milliseconds under a second, seconds with two digits cut (not rounded) under a minute
    assert [elapsed_text(s) for s in (0.0004, 0.120, 0.9999, 1.0, 13.0309, 59.999, 125.4)] == [
        "0.40ms", "120ms", "999ms", "1.00s", "13.03s", "59.99s", "2m 05s"]
    w = _wheels(workdir / "wheels", ["du"])
    venv = _venv(run, users.alice, workdir / "v")
    done = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), str(w["du"]),
               env=_cache(workdir, users.alice))
    assert re.search(r"^1 installed, 0 removed, 0 already there, in (\d+ms|\d+\.\d\ds)$", done.stdout, re.M), done


@pytest.mark.parametrize("mode", ["fold", "symlink"])
def test_edit_and_undo_count_the_same_files(run: Runner, users: Users, workdir: Path, group_store: Path,
                                            mode: str) -> None:
    whl = make_wheel(workdir, "ed", files={"ed/__init__.py": b"X = 1\n", **{f"ed/sub/m{i}.py": b"Y = 2\n"
                                                                         for i in range(5)}})
    whl.chmod(0o644)
    venv = _venv(run, users.alice, workdir / "v")
    env = _cache(workdir, users.alice)
    assert run(users.alice, "--store", str(group_store), "install", "--link-mode", mode, "--venv", str(venv),
               str(whl), env=env).returncode == 0
    edit = run(users.alice, "--store", str(group_store), "edit", "--venv", str(venv), "ed", env=env)
    undo = run(users.alice, "--store", str(group_store), "edit", "--venv", str(venv), "ed", "--undo", env=env)
    assert edit.returncode == undo.returncode == 0, edit.stderr + undo.stderr
    made = re.fullmatch(rf"ed: (\d+) files are now private, writable copies in {venv}\n", edit.stdout)
    back = re.fullmatch(rf"ed: (\d+) files linked from the store again in {venv}; local edits discarded\n",
                        undo.stdout)
    assert made and back, (edit.stdout, undo.stdout)
    assert made.group(1) == back.group(1) and int(made.group(1)) >= 6


def test_a_requirement_that_does_not_parse_says_where(run: Runner, users: Users, workdir: Path,
                                                       group_store: Path) -> None:
    venv = _venv(run, users.alice, workdir / "v")
    line = one_line_error(run(users.alice, "--store", str(group_store), "install", "--venv", str(venv),
                              "foo>=1,<<2"))
    assert line == ("error: command line: 'foo>=1,<<2' is not a requirement: expected comma (within version "
                    "specifier), semicolon (after version specifier) or end, at character 8 ('<<2') (fix: write it "
                    "like 'name', 'name>=1.2' or 'name[extra]==1.2')")
    line = one_line_error(run(users.alice, "lock", "--python", SYSTEM_PYTHON, "-o", str(workdir / "l.toml"),
                              "foo[bar"))
    assert "'foo[bar' is not a requirement: expected matching ']' for '[', after extras, at its end" in line
    assert "~" not in line and "^" not in line


def test_offline_misses_name_the_cache_and_the_index(run: Runner, users: Users, workdir: Path,
                                                     group_store: Path) -> None:
    uv_cache = workdir / "uv-cache"
    index = "http://127.0.0.1:9/simple"
    line = one_line_error(run(users.alice, "lock", "--offline", "--python", SYSTEM_PYTHON, "--index-url", index,
                              "-o", str(workdir / "l.toml"), "sixish", env={"UV_CACHE_DIR": str(uv_cache)}))
    assert line == (f"error: cannot resolve sixish: sixish is not in uv's cache of the index ({uv_cache}; index "
                    f"{index}), and --offline forbids downloading (fix: run once without --offline, or give the "
                    "wheels with --find-links DIR)")
    venv = _venv(run, users.alice, workdir / "v")
    line = one_line_error(run(users.alice, "--store", str(group_store), "install", "--offline", "--venv", str(venv),
                              "--index-url", index, "sixish"))
    assert f"sixish is not in the store ({group_store}), and --offline forbids downloading" in line, line
    assert "cache" not in line


def test_another_users_venv_is_named_with_why_and_the_fix(run: Runner, users: Users, workdir: Path,
                                                          group_store: Path) -> None:
    w = _wheels(workdir / "wheels", ["oa", "ob"])
    venv = _venv(run, users.alice, workdir / "v")
    assert run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), str(w["oa"]),
               env=_cache(workdir, users.alice)).returncode == 0
    site = venv / "lib" / "python3.11" / "site-packages"
    said = (f"error: cannot write {site}: the venv {venv} belongs to {users.alice}, and you ({users.bob}) may not "
            f"change it (fix: create a venv of your own (wheelstore venv DIR), or ask {users.alice} to run this "
            "command)")
    assert one_line_error(run(users.bob, "--store", str(group_store), "install", "--venv", str(venv),
                              str(w["ob"]), env=_cache(workdir, users.bob))) == said
    assert one_line_error(run(users.bob, "uninstall", "--venv", str(venv), "oa")) == said


@pytest.fixture
def small_fs(workdir: Path) -> Iterator[Path]:
    """A 400 KiB tmpfs anyone may create entries in: a filesystem that fills up for real."""
    mnt = workdir / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k,mode=1777", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _big_wheel(directory: Path, owner: str | None, files: int = 8) -> Path:
    """About 40 KiB compressed and 80 KiB unpacked per file."""
    directory.mkdir(exist_ok=True)
    directory.chmod(0o755)
    whl = make_wheel(directory, "big", files={f"big/m{i}.py": os.urandom(40_000).hex().encode() for i in range(files)})
    whl.chmod(0o644)
    if owner:
        shutil.chown(whl, owner)
    return whl


def test_a_full_store_filesystem_is_named_with_the_fix(run: Runner, users: Users, workdir: Path,
                                                       small_fs: Path) -> None:
    store = small_fs / "store"
    assert run(users.alice, "init", str(store)).returncode == 0
    venv = _venv(run, users.alice, workdir / "v")
    fix = f"(fix: free space there, or remove the trees no venv uses: wheelstore --store {store} gc)"
    # a wheel only alice can rewrite is unpacked straight away; root's is first copied into the store's staging
    for whl, doing in ((_big_wheel(workdir / "mine", users.alice), "unpacking big-1.0-py3-none-any.whl"),
                       (_big_wheel(workdir / "roots", None, 16), "copying big-1.0-py3-none-any.whl into its staging")):
        for args in (("install", "--venv", str(venv)), ("realize",)):
            line = one_line_error(run(users.alice, "--store", str(store), *args, str(whl),
                                      env=_cache(workdir, users.alice)))
            assert line == (f"error: no space left on the store's filesystem (tmpfs at {small_fs}, 400.0 KiB in "
                            f"all) while {doing} {fix}")
    assert os.listdir(store / "trees") == []


def test_a_full_venv_filesystem_is_named_with_the_fix(run: Runner, users: Users, workdir: Path, group_store: Path,
                                                      small_fs: Path) -> None:
    whl = _big_wheel(workdir / "w", None)
    venv = _venv(run, users.alice, small_fs / "v")
    line = one_line_error(run(users.alice, "--store", str(group_store), "install", "--link-mode", "copy", "--venv",
                              str(venv), str(whl), env=_cache(workdir, users.alice)))
    assert line == (f"error: no space left on the venv's filesystem (tmpfs at {small_fs}, 400.0 KiB in all) while "
                    f"installing into {venv} (fix: free space on that filesystem, or create the venv on one with "
                    "room)")


def _sdist_printing(directory: Path, text: str) -> Path:
    """An sdist whose backend prints ``text`` on stderr and fails, as a build missing a C header does."""
    files = {
        "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "failing"\nbackend-path = ["."]\n\n'
                          '[project]\nname = "needsc"\nversion = "0.3"\n',
        "failing.py": f"import sys\n\ndef build_wheel(wheel_directory, config_settings=None, metadata_directory=None):"
                      f"\n    print({text!r}, file=sys.stderr)\n    raise SystemExit(1)\n",
        "PKG-INFO": "Metadata-Version: 2.1\nName: needsc\nVersion: 0.3\n",
    }
    path = directory / "needsc-0.3.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for rel, body in files.items():
            data = body.encode()
            info = tarfile.TarInfo(f"needsc-0.3/{rel}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_failed_build_says_what_it_printed_where_the_log_is_and_what_to_try(
    kit: tuple[Path, Path, Sources], workdir: Path
) -> None:
    _, markers, sources = kit
    (workdir / "bad").mkdir()
    bad = make_sdist(workdir / "bad", markers, fail=True)
    needs_c = _sdist_printing(workdir, "src/ext.c:1:10: fatal error: yaml.h: No such file or directory")
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(workdir / "v")], check=True)
    interpreter = Interpreter.inspect(workdir / "v" / "bin" / "python")
    with Store.init(workdir / "store") as store:
        with pytest.raises(BuildError) as plain:
            ensure_built(store, bad, hashlib.sha256(bad.read_bytes()).hexdigest(), interpreter, sources)
        with pytest.raises(BuildError) as header:
            ensure_built(store, needs_c, hashlib.sha256(needs_c.read_bytes()).hexdigest(), interpreter, sources)
    text = plain.value.oneline()
    assert text.startswith("building tinypkg-0.1.tar.gz for cpython 3.11 failed: call to "
                           "`countingbackend.build_wheel` failed (exit status: 1); the build said: RuntimeError: "
                           "this backend always fails; full log: "), text
    log = Path(text.split("full log: ")[1].split()[0])
    assert log.is_file() and "this backend always fails" in log.read_text()
    assert text.endswith("(fix: the package's own build failed, not wheelstore: read the end of that log (tail -n "
                         "30); or install a version of tinypkg that has a wheel for cpython 3.11 (say "
                         "'tinypkg!=0.1'), or give its wheel with --find-links DIR)"), text
    assert "usually indicate" not in text and "wheelstore-build-" not in text
    said = header.value.oneline()
    assert "the build said: src/ext.c:1:10: fatal error: yaml.h: No such file or directory; full log: " in said
    assert "(fix: the build needs yaml.h, which this machine lacks: install the system package that provides it " \
           "and run this again; or install a version of needsc that has a wheel" in said, said
