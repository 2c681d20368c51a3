"""Issue 19, point 3: the first Ctrl-C stops an install within half a second, undoes what the venv got, keeps what is
fully published and removes this process's own staging; a kill -9 leaves only what gc removes (a plain gc, once the
killed process's last heartbeat is a minute old), and doctor names it with the command that does.

Real processes of a test user with a group store, a real local index serving a slow download, real signals. SIGINT
goes to the wheelstore process alone (``kill -INT pid``), the harder case: a terminal's Ctrl-C also reaches the
compilers and uv it runs, which then stop by themselves. The exit times are printed (``pytest -s``) and bounded
generously: the figure for the note is the measured one. On the 2-core development machine, SIGINT to exit, before
(main at b10e091) and after: mid-download 4.98 s -> 0.03 s, mid-unpack 2.39 s -> 0.02 s, mid-compile 0.85 s ->
0.23 s (up to 1 s with the machine loaded: deleting what was unpacked, some 90 us a file here), mid-linking 2.81 s ->
0.04 to 0.12 s.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import SYSTEM_PYTHON, Runner, Users, snapshot
from .pyindex import PyIndex
from .test_concurrency import _hook, _wait_for
from .wheelmaker import big_files, make_wheel

#: what the issue asks is half a second; the bound here is generous (a loaded CI machine), the figure is printed
BOUND = 2.0
ISOLATED = {"PIP_CONFIG_FILE": os.devnull, "UV_NO_CONFIG": "1"}


@pytest.fixture
def index(workdir: Path) -> Iterator[PyIndex]:
    with PyIndex() as served:
        yield served


def _wheel(directory: Path, name: str, version: str = "1.0", files: dict[str, bytes] | None = None) -> Path:
    whl = make_wheel(directory, name, version, files=files or {f"{name}/__init__.py": b"VALUE = 1\n"})
    whl.chmod(0o644)
    return whl


def _venv(run: Runner, user: str, path: Path) -> Path:
    made = run(user, "venv", str(path), "--python", SYSTEM_PYTHON)
    assert made.returncode == 0, made.stderr
    return path


def _staging(store: Path) -> list[str]:
    """The store's staging entries: ``staging/*`` and the hidden ``trees/.*``."""
    return sorted([f"staging/{n}" for n in os.listdir(store / "staging")]
                  + [f"trees/{n}" for n in os.listdir(store / "trees") if n.startswith(".")])


def _until(condition: Callable[[], bool], proc: subprocess.Popen[str], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the install ended before {what}: {proc.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout}s")
        time.sleep(0.005)


def _interrupt(proc: subprocess.Popen[str], phase: str) -> tuple[float, str]:
    """SIGINT to the process; the seconds it took to exit, and its stderr. It must exit with 130 and one line."""
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        _out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"{phase}: still running 60s after SIGINT") from None
    took = time.monotonic() - sent
    print(f"\nSIGINT {phase}: exited in {took:.3f}s")
    assert "Traceback" not in err, err
    assert proc.returncode == 130, (proc.returncode, err)
    assert err.strip().splitlines()[-1:] == ["error: interrupted"], err
    assert [line for line in err.splitlines() if line.startswith("error:")] == ["error: interrupted"], err
    return took, err


def _install(run: Runner, user: str, store: Path, venv: Path, index: PyIndex, *args: str,
             env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return run.popen(user, "--store", str(store), "install", "--venv", str(venv), "--index-url", index.simple_url,
                     *args, env={**ISOLATED, **(env or {})})


def _verified(run: Runner, user: str, store: Path) -> None:
    done = run(user, "--store", str(store), "verify")
    assert done.returncode == 0, done.stdout + done.stderr


def test_ctrl_c_mid_download_stops_at_once_keeping_what_is_published(
    run: Runner, users: Users, workdir: Path, group_store: Path, index: PyIndex
) -> None:
    """A small wheel is published while a big one still downloads, slowly: SIGINT then stops the download at once,
    removes its staging directory, keeps the small wheel's tree, and leaves the venv as it was."""
    files = workdir / "files"
    files.mkdir()
    index.add(_wheel(files, "smallpkg"))
    index.add(_wheel(files, "bigpkg", files={"bigpkg/__init__.py": b"", "bigpkg/blob.bin": os.urandom(16 << 20)}),
              pace=0.02)
    venv = _venv(run, users.alice, workdir / "v")
    before = snapshot(venv)
    proc = _install(run, users.alice, group_store, venv, index, "smallpkg==1.0", "bigpkg==1.0")
    downloads = group_store / "staging"
    _until(lambda: len(os.listdir(group_store / "manifests")) == 1
           and any(f.stat().st_size > 1 << 20 for d in downloads.glob("download-*") for f in d.iterdir()),
           proc, "download half-way with the small wheel published")
    took, _err = _interrupt(proc, "mid-download")
    assert took < BOUND
    assert snapshot(venv) == before
    assert _staging(group_store) == []
    assert len(os.listdir(group_store / "manifests")) == 1  # the small wheel's tree stays
    _verified(run, users.alice, group_store)


@pytest.mark.parametrize("phase", ["unpack", "compile"])
def test_ctrl_c_mid_unpack_or_compile_removes_the_staged_trees(
    run: Runner, users: Users, workdir: Path, group_store: Path, index: PyIndex, phase: str
) -> None:
    """Three wheels of thousands of modules, unpacked and compiled on worker threads, caught while they are unpacked,
    or while their modules are compiled into the staged trees: the staged trees go, the compilers stop, and the venv
    is as it was."""
    files = workdir / "files"
    files.mkdir()
    names = ["manya", "manyb", "manyc"]
    for name in names:
        index.add(_wheel(files, name, files=big_files(3000, 1500, prefix=name)))
    venv = _venv(run, users.alice, workdir / "v")
    before = snapshot(venv)
    proc = _install(run, users.alice, group_store, venv, index, *(f"{n}==1.0" for n in names))
    trees = group_store / "trees"

    def staged() -> list[Path]:
        return list(trees.glob(".tree-*"))

    if phase == "unpack":
        _until(lambda: any(len(list(p.glob("*/sub0/*"))) > 20 for p in staged()), proc, "a tree being unpacked")
    else:
        _until(lambda: any(any(p.glob("*/sub0/__pycache__")) for p in staged()), proc, "a tree being compiled")
    took, _err = _interrupt(proc, f"mid-{phase}")
    assert took < BOUND
    assert snapshot(venv) == before
    assert _staging(group_store) == []
    assert not _compilers_of(users.alice)
    _verified(run, users.alice, group_store)  # what was published before the interrupt, if anything


def _compilers_of(user: str) -> list[str]:
    """The compiler processes of ``user`` still running (they read jobs from wheelstore: ``-c`` with ``_SERVE``)."""
    done = subprocess.run(["pgrep", "-u", user, "-f", "_code_to_timestamp_pyc"], capture_output=True, text=True)
    return done.stdout.split()


def test_ctrl_c_mid_linking_puts_the_old_version_back(
    run: Runner, users: Users, workdir: Path, group_store: Path, index: PyIndex
) -> None:
    """An upgrade caught while the new version's thousands of files are being copied into the venv: the copied files
    go, the old version comes back, and the trees (published before linking) stay and verify."""
    files = workdir / "files"
    files.mkdir()
    index.add(_wheel(files, "linkpkg", "1.0"))
    index.add(_wheel(files, "linkpkg", "2.0", files=big_files(6000, 1500, prefix="linkpkg")))
    venv = _venv(run, users.alice, workdir / "v")
    first = _install(run, users.alice, group_store, venv, index, "linkpkg==1.0")
    assert first.wait(timeout=120) == 0, first.communicate()
    before = snapshot(venv)
    markers = workdir / "markers"
    proc = _install(run, users.alice, group_store, venv, index, "--link-mode", "copy", "linkpkg==2.0",
                    env=_hook(markers, "linking=wait"))
    marker = _wait_for(markers, "linking.*", proc, timeout=120)
    site = next((venv / "lib").glob("python*/site-packages"))
    marker.unlink()
    _until(lambda: len(list((site / "linkpkg").glob("sub*/*"))) > 100, proc, "the new version half copied")
    took, _err = _interrupt(proc, "mid-linking")
    assert took < BOUND
    assert snapshot(venv) == before
    assert _staging(group_store) == []
    assert len([m for m in os.listdir(group_store / "manifests") if "-" not in m]) == 2  # and a pyc unit
    _verified(run, users.alice, group_store)


def test_a_second_ctrl_c_during_the_clean_up_exits_at_once_in_one_line(
    run: Runner, users: Users, workdir: Path, group_store: Path, index: PyIndex
) -> None:
    """Two SIGINTs a few milliseconds apart, the second landing in the clean-up the first started: the process exits
    with 130 and one line, never a traceback; whatever the clean-up had no time for is stale staging (doctor's)."""
    files = workdir / "files"
    files.mkdir()
    for name in ("twoa", "twob"):
        index.add(_wheel(files, name, files=big_files(3000, 1500, prefix=name)))
    venv = _venv(run, users.alice, workdir / "v")
    proc = _install(run, users.alice, group_store, venv, index, "twoa==1.0", "twob==1.0")
    _until(lambda: any(any(p.glob("*/sub0/__pycache__")) for p in (group_store / "trees").glob(".tree-*")), proc,
           "a tree being compiled")
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.003)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    print(f"\ntwo SIGINTs: exited in {time.monotonic() - sent:.3f}s")
    assert proc.returncode == 130, (proc.returncode, err)
    assert "Traceback" not in err, err
    assert [line for line in err.splitlines() if line.startswith("error:")] == ["error: interrupted"], err


def test_kill_9_mid_download_leaves_staging_doctor_names_with_its_command(
    run: Runner, users: Users, workdir: Path, group_store: Path, index: PyIndex
) -> None:
    """kill -9 cleans nothing up: the download's staging stays. doctor names it (how much, whose, how old): at once,
    with when gc can remove it (its lease, made here, is free, which proves its process gone, but gc waits for a
    minute of missed heartbeats); a minute after its last heartbeat, with the command that removes it, a plain gc.
    That command, run as printed by its owner, removes it (and the download's lock and lease), and not the unused
    tree published a moment ago, which is younger than gc's grace."""
    files = workdir / "files"
    files.mkdir()
    spare = _wheel(files, "sparepkg")
    assert run(users.alice, "--store", str(group_store), "realize", str(spare)).returncode == 0
    trees = {n for n in os.listdir(group_store / "trees") if not n.startswith(".")}
    assert len(trees) == 1  # no venv uses it: a gc --grace 1s would remove it
    index.add(_wheel(files, "bigpkg", files={"bigpkg/__init__.py": b"", "bigpkg/blob.bin": os.urandom(16 << 20)}),
              pace=0.02)
    venv = _venv(run, users.alice, workdir / "v")
    proc = _install(run, users.alice, group_store, venv, index, "bigpkg==1.0")
    downloads = group_store / "staging"
    _until(lambda: any(f.stat().st_size > 1 << 20 for d in downloads.glob("download-*") for f in d.iterdir()),
           proc, "a download half-way")
    proc.kill()
    proc.communicate()
    left = _staging(group_store)
    assert len(left) == 1 and left[0].startswith("staging/download-"), left

    soon = _staging_line(run, users.alice, group_store)
    print(f"\ndoctor, at once:\n{soon[0]}")
    assert re.search(rf"\b\d+\.\d MiB of {users.alice}'s in 1 staging entry left by killed work, unchanged for "
                     rf"\d+s; {users.alice} or root can remove it with gc in \d+s, a minute after its process's last "
                     rf"heartbeat$", soon[0]), soon[0]
    assert soon[1] is None  # nothing to run yet
    (lease,) = [n for n in os.listdir(group_store / "locks") if n.startswith("lease-")]
    then = time.time() - 61  # its last heartbeat a minute ago
    os.utime(group_store / "locks" / lease, (then, then))

    line, fix = _staging_line(run, users.alice, group_store)
    print(f"doctor, a minute on:\n{line}\n{fix}")
    assert re.search(rf"\b\d+\.\d MiB of {users.alice}'s in 1 staging entry left by killed work, unchanged for "
                     rf"6\d+s; {users.alice} or root can remove it$", line), line
    command = re.fullmatch(r"\s+fix: (wheelstore --store \S+ gc)", fix or "")
    assert command is not None, fix
    # another member sees it too, though not how much is in alice's private directory, nor her lease's flock
    other = run(users.bob, "--store", str(group_store), "doctor")
    assert f"of {users.alice}'s (at least: not all readable by you) in 1 staging entry" in other.stdout, other.stdout
    done = run(users.alice, *command.group(1).split()[1:])
    assert done.returncode == 0, done.stderr
    assert _staging(group_store) == []
    assert {n for n in os.listdir(group_store / "trees") if not n.startswith(".")} == trees
    assert os.listdir(group_store / "locks") == ["gc.lock"]  # the lease and the download's lock went with it
    again = run(users.alice, "--store", str(group_store), "doctor")
    assert re.search(r"^ok\s+staging\s+no work left over by killed processes$", again.stdout, re.M), again.stdout


def _staging_line(run: Runner, user: str, store: Path) -> tuple[str, str | None]:
    """doctor's ``staging`` warning, and its fix line if it has one."""
    doctor = run(user, "--store", str(store), "doctor")
    lines = doctor.stdout.splitlines()
    line = next((x for x in lines if x.split()[:2] == ["warn", "staging"]), None)
    assert line is not None, doctor.stdout
    after = lines[lines.index(line) + 1:][:1]
    return line, after[0] if after and after[0].split()[:1] == ["fix:"] else None
