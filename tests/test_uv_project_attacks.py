"""uv projects (issue 21) under attack: what another member of the group can plant in a shared project or above it,
what a user gets wrong, what root runs, an interrupt, a failure half-way; and a sync that has nothing to do.

The harness is test_uv_project's (real users, real uv, a local index), with an index of this module's own whose files
can be made to fail.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import SYSTEM_PYTHON, Runner, Users, flit_core_wheel
from .pyindex import PyIndex, Served
from .test_uv_project import ALICE, WHEELS, Lab, _entries, _error, _installed, _ok, _own, _trees, _write
from .wheelmaker import make_wheel


@pytest.fixture(scope="module")
def served(base_dir: Path) -> Iterator[tuple[PyIndex, dict[str, Served]]]:
    """The index, and what it serves by project name (to inject faults)."""
    wheels = base_dir / "attacks-wheels"
    wheels.mkdir(mode=0o755)
    files = [make_wheel(wheels, name, version, requires=requires) for name, version, requires in WHEELS]
    with PyIndex() as index:
        by_name = {path.name.split("-")[0]: index.add(path) for path in files}
        index.add(flit_core_wheel())
        yield index, by_name


@pytest.fixture(scope="module")
def lab(run: Runner, users: Users, base_dir: Path, served: tuple[PyIndex, dict[str, Served]]) -> Lab:
    top = base_dir / "attacks"
    homes, templates = top / "homes", top / "templates"
    for d in (top, homes, templates):
        d.mkdir(mode=0o755)
    for user in (users.alice, users.bob, "root"):
        _own(homes / user, user, 0o700)
    _write(templates / "alice", ALICE, "myproj")
    found = Lab(run, users, served[0].simple_url, homes, templates)
    _own(templates / "alice", users.alice)
    _ok(found.uv(users.alice, "lock", cwd=templates / "alice"))
    return found


def _shared(lab: Lab, users: Users, workdir: Path) -> Path:
    """alice's project in a directory the group may create entries in (sticky): bob can plant, not remove."""
    proj = lab.project("alice", workdir, users.alice)
    subprocess.run(["chgrp", users.group, str(proj)], check=True)
    proj.chmod(0o3775)
    return proj


def _as(lab: Lab, user: str, *cmd: str, cwd: Path) -> None:
    _ok(lab.as_user(user, *cmd, cwd=cwd))


def test_someone_elses_venv_in_a_shared_project_is_never_used(lab: Lab, users: Users, group_store: Path,
                                                             workdir: Path) -> None:
    alice, bob = users.alice, users.bob
    proj = _shared(lab, users, workdir)
    venv = proj / ".venv"
    rootvenv = workdir / "rootvenv"  # root's own venv, which bob cannot write but can point at
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(rootvenv)], check=True)
    roots = _entries(rootvenv)
    plants = {
        "his venv": (SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(venv)),
        "his empty directory": ("mkdir", "-m", "777", str(venv)),  # uv venv would fill it: his to swap bin/ in
        "his symlink to root's venv": ("ln", "-s", str(rootvenv), str(venv)),
    }
    for what, plant in plants.items():
        _as(lab, bob, *plant, cwd=proj)
        line = _error(lab.ws(alice, group_store, "sync", cwd=proj))
        assert f"found {venv}, but it belongs to {bob}" in line and f"--venv {venv}" in line, (what, line)
        assert "wheelstore venv" not in line and "ask its owner to remove it" in line, line  # not the fix here
        if what == "his symlink to root's venv":  # root trusts alice's project, not bob's link in it
            for args, cwd in ((("sync", "--project", str(proj)), Path("/")), (("install", "gamma"), proj)):
                line = _error(lab.ws(None, group_store, *args, cwd=cwd))  # a venv found as uv pip finds it too
                assert f"belongs to {bob}" in line, line
            assert _entries(rootvenv) == roots
        elif what == "his empty directory":
            assert list(venv.iterdir()) == []
        _as(lab, bob, "rm", "-rf", str(venv), cwd=proj)

    # the venv $UV_PROJECT_ENVIRONMENT names relative to the project is found there just as .venv is
    _as(lab, bob, SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(proj / "env"), cwd=proj)
    line = _error(lab.ws(alice, group_store, "sync", cwd=proj, env={"UV_PROJECT_ENVIRONMENT": "env"}))
    assert f"found {proj / 'env'}, but it belongs to {bob}" in line, line
    # named in full, it is the user's choice, as --venv is (and as VIRTUAL_ENV is for install)
    mine = workdir / "mine"
    done = _ok(lab.ws(alice, group_store, "sync", cwd=proj, env={"UV_PROJECT_ENVIRONMENT": str(mine)}))
    assert f"the venv at {mine}" in done.stderr and "alpha" in _installed(mine)


def test_a_lock_found_above_must_be_the_users(lab: Lab, users: Users, group_store: Path, workdir: Path) -> None:
    """bob's uv.lock in a shared /tmp-like directory above alice's: never synced unasked, a symlink of his to her
    own lock neither; root never syncs alice's project unasked (--project says it is trusted)."""
    alice, bob = users.alice, users.bob
    scratch = _own(workdir / "scratch" / "sub", alice)
    for name in ("uv.lock", "pyproject.toml"):
        _as(lab, bob, "cp", str(lab.templates / "alice" / name), str(workdir / name), cwd=workdir)
    line = _error(lab.ws(alice, group_store, "sync", cwd=scratch))
    assert f"found {workdir / 'uv.lock'}, but {workdir / 'uv.lock'} belongs to {bob}" in line, line
    assert f"--project {workdir}" in line, line

    proj = lab.project("alice", workdir / "scratch", alice)
    for name in ("uv.lock", "pyproject.toml"):
        (workdir / name).unlink()
        _as(lab, bob, "ln", "-s", str(proj / name), str(workdir / name), cwd=workdir)
    line = _error(lab.ws(alice, group_store, "sync", cwd=scratch))
    assert f"belongs to {bob}" in line, line
    line = _error(lab.ws(None, group_store, "sync", cwd=proj))
    assert f"belongs to {alice}" in line and f"--project {proj}" in line, line
    for name in ("uv.lock", "pyproject.toml"):
        (workdir / name).unlink()
    _as(lab, bob, "sh", "-c", f"printf 'lock-version = \"1.0\"\\npackages = []\\n' > {workdir / 'pylock.toml'}",
        cwd=workdir)  # a PEP 751 lock of his, found the same way
    line = _error(lab.ws(alice, group_store, "sync", cwd=scratch))
    assert f"found {workdir / 'pylock.toml'}, but {workdir / 'pylock.toml'} belongs to {bob}" in line, line
    assert not (proj / ".venv").exists() and not (scratch / ".venv").exists() and not (workdir / ".venv").exists()


def test_what_uv_reads_in_and_above_a_project_must_be_the_users(lab: Lab, users: Users, group_store: Path,
                                                                 workdir: Path) -> None:
    """uv makes the venv with the Python a .python-version names, and takes its settings from the project's uv.toml,
    else from the nearest uv.toml (or pyproject.toml with [tool.uv]) above it: bob's there would make alice's venv
    with his interpreter, or fetch her project's build backend from his index."""
    alice, bob = users.alice, users.bob
    proj = _shared(lab, users, workdir)
    python = _own(workdir / "bobpy", bob) / "python3"  # his: he may make it anything later
    _as(lab, bob, "ln", "-s", SYSTEM_PYTHON, str(python), cwd=workdir)
    for name, text in ((".python-version", f"{python}\n"), ("uv.toml", "no-cache = true\n")):
        _as(lab, bob, "sh", "-c", f"printf '{text}' > {proj / name}", cwd=proj)
        line = _error(lab.ws(alice, group_store, "sync", cwd=proj))
        assert f"found {proj / 'uv.lock'}, but {proj / name} belongs to {bob}" in line, line
        _as(lab, bob, "rm", str(proj / name), cwd=proj)
    assert not (proj / ".venv").exists()

    _as(lab, bob, "sh", "-c", f"printf 'no-cache = true\n' > {workdir / 'uv.toml'}", cwd=workdir)
    for args in ((), ("--project", str(proj))):  # above the project: not part of what --project vouches for
        line = _error(lab.ws(alice, group_store, "sync", *args, cwd=proj))
        assert f"from {workdir / 'uv.toml'}, which belongs to {bob}" in line, line
        assert f"UV_CONFIG_FILE={workdir / 'uv.toml'} if you trust it" in line and "UV_NO_CONFIG=1" in line, line
        assert f"add a [tool.uv] table to {proj / 'pyproject.toml'}" in line, line
    assert not (proj / ".venv").exists()
    _ok(lab.ws(alice, group_store, "sync", "--no-dev", cwd=proj, env={"UV_NO_CONFIG": "1"}))
    _ok(lab.ws(alice, group_store, "sync", "--no-dev", cwd=proj, env={"UV_CONFIG_FILE": str(workdir / "uv.toml")}))
    with open(proj / "pyproject.toml", "a") as f:
        f.write("\n[tool.uv]\n")  # uv stops its search there
    done = _ok(lab.ws(alice, group_store, "sync", cwd=proj))
    assert "+ devtool==1.0" in done.stdout, done.stdout


def test_a_venv_path_that_is_no_venv_is_refused_and_kept(lab: Lab, users: Users, group_store: Path,
                                                        workdir: Path) -> None:
    """$UV_PROJECT_ENVIRONMENT set by mistake to a directory of data or to a file: named, refused, left as it is."""
    alice = users.alice
    proj = lab.project("alice", workdir, alice)
    data = _own(proj / "data", alice)
    (data / "results.csv").write_text("1,2\n")
    (proj / "notes.txt").write_text("mine\n")
    for name in ("data", "notes.txt"):
        line = _error(lab.ws(alice, group_store, "sync", cwd=proj, env={"UV_PROJECT_ENVIRONMENT": name}))
        assert f"{proj / name} is not a venv (it has no pyvenv.cfg)" in line, line
        assert "UV_PROJECT_ENVIRONMENT" in line, line
    line = _error(lab.ws(alice, group_store, "sync", "--venv", str(data), cwd=proj))  # named: still no venv
    assert f"{data} is not a venv" in line, line
    assert os.listdir(data) == ["results.csv"] and (proj / "notes.txt").read_text() == "mine\n"


def test_a_sync_with_nothing_to_do_changes_nothing(lab: Lab, users: Users, group_store: Path, workdir: Path) -> None:
    """Twice in a row: nothing relinked, nothing rebuilt, not even the directory's mtime; -q prints nothing. After
    'uv add' (which installs from uv's cache) the next sync links the new package from the store."""
    alice = users.alice
    proj = lab.project("alice", workdir, alice)
    venv = proj / ".venv"
    _ok(lab.ws(alice, group_store, "sync", cwd=proj))
    before = _entries(venv)
    again = _ok(lab.ws(alice, group_store, "sync", cwd=proj))
    assert "0 installed, 0 removed, 4 already there" in again.stdout, again.stdout
    quiet = _ok(lab.ws(alice, group_store, "sync", "-q", cwd=proj))
    assert (quiet.stdout, quiet.stderr) == ("", "")
    assert _entries(venv) == before

    _ok(lab.ws(alice, group_store, "sync", "--no-dev", cwd=proj))
    before = _entries(venv)
    _ok(lab.uv(alice, "run", "--no-dev", "python", "-c", "import myproj", cwd=proj))
    _ok(lab.uv(alice, "sync", "--locked", "--no-dev", cwd=proj))
    assert _entries(venv) == before and "devtool" not in _installed(venv)

    _ok(lab.ws(alice, group_store, "sync", cwd=proj))
    _ok(lab.uv(alice, "add", "gamma", cwd=proj))
    assert "gamma" in _installed(venv) and "gamma" not in _trees(venv, group_store)  # uv's, from its cache
    done = _ok(lab.ws(alice, group_store, "sync", cwd=proj))
    assert "+ gamma==1.0" in done.stdout and "gamma" in _trees(venv, group_store), done.stdout
    before = _entries(venv)
    _ok(lab.uv(alice, "run", "python", "-c", "import gamma", cwd=proj))
    _ok(lab.ws(alice, group_store, "sync", cwd=proj))
    assert _entries(venv) == before


def _child_runs(parent: int, verb: str) -> bool:
    """Whether ``parent`` runs ``uv VERB`` now."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and cmd[0].endswith(b"/uv") and cmd[1:2] == [verb.encode()]:
            return True
    return False


def test_ctrl_c_while_uv_exports_leaves_nothing(lab: Lab, users: Users, group_store: Path, workdir: Path) -> None:
    """uv export waits for a uv cache another uv holds (uv cache clean does so): Ctrl-C then, as a terminal sends it
    to the whole foreground group. 'error: interrupted', status 130, no venv made, no export left behind."""
    alice = users.alice
    proj = lab.project("alice", workdir, alice)
    tmp = _own(workdir / "tmp", alice)
    cache = lab.homes / alice / "uv"
    with open(cache / ".lock", "a") as held:  # made by alice's uv lock; hers in any case
        os.chown(held.fileno(), users.uid(alice), -1)
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = subprocess.Popen([os.fspath(lab.run.tool), "--store", str(group_store), "sync"], cwd=proj,
                                env=lab.env(alice, {"TMPDIR": str(tmp)}), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True,
                                **lab.run.popen_kwargs(alice, 0o022))
        try:
            deadline = time.monotonic() + 30
            while not _child_runs(proc.pid, "export") and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _child_runs(proc.pid, "export") and os.listdir(tmp), "uv export never started"
            os.killpg(proc.pid, signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130 and err == "error: interrupted\n" and out == "", (out, err)
    assert os.listdir(tmp) == [] and not (proj / ".venv").exists()



def test_a_directory_planted_while_uv_venv_starts_is_refused(lab: Lab, users: Users, group_store: Path,
                                                           workdir: Path) -> None:
    """The venv is made while uv export runs: bob's empty .venv put there after wheelstore looked and before uv venv
    made it (both wait here for the uv cache that is held) is filled by uv venv, then refused before its interpreter
    runs, whose bin/ bob could swap."""
    alice, bob = users.alice, users.bob
    proj = _shared(lab, users, workdir)
    with open(lab.homes / alice / "uv" / ".lock", "a") as held:
        os.chown(held.fileno(), users.uid(alice), -1)
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = subprocess.Popen([os.fspath(lab.run.tool), "--store", str(group_store), "sync"], cwd=proj,
                                env=lab.env(alice), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                **lab.run.popen_kwargs(alice, 0o022))
        try:
            deadline = time.monotonic() + 30
            while not (_child_runs(proc.pid, "venv") and _child_runs(proc.pid, "export")) \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _child_runs(proc.pid, "venv") and not (proj / ".venv").exists(), "uv venv never waited"
            _as(lab, bob, "mkdir", "-m", "777", str(proj / ".venv"), cwd=proj)
            fcntl.flock(held, fcntl.LOCK_UN)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    line = _error(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    assert f"found {proj / '.venv'}, but it belongs to {bob}" in line and "put there while the venv" in line, line
    assert not list(proj.glob(".venv/lib/python3*/site-packages/*.dist-info"))

def test_a_download_failing_after_the_project_changed_changes_nothing(
        lab: Lab, users: Users, group_store: Path, workdir: Path, served: tuple[PyIndex, dict[str, Served]]) -> None:
    """The project gains a dependency (uv lock); its wheel comes corrupt from the index, then the project fails to
    build: each time the venv is as it was, the project's own install too (uv sync fetches and builds everything
    before it changes anything)."""
    alice = users.alice
    proj = lab.project("alice", workdir, alice)
    venv = proj / ".venv"
    _ok(lab.ws(alice, group_store, "sync", cwd=proj))
    before = _entries(venv)
    pyproject = proj / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('dependencies = ["alpha"]', 'dependencies = ["alpha", "gamma"]'))
    _ok(lab.uv(alice, "lock", cwd=proj))
    gamma = served[1]["gamma"]
    gamma.wrong_bytes = True
    try:
        done = lab.ws(alice, group_store, "sync", cwd=proj)
    finally:
        gamma.wrong_bytes = False
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines()[-1].startswith("error: ") and "gamma" in done.stderr.splitlines()[-1], done.stderr
    assert _entries(venv) == before

    text = pyproject.read_text()  # now the project fails to build (gamma comes whole, to the store only)
    pyproject.write_text(text.replace("flit_core.buildapi", "flit_core.nosuchmodule"))
    line = lab.ws(alice, group_store, "sync", cwd=proj).stderr.splitlines()[-1]
    assert line.startswith(f"error: uv sync of {proj} failed, before anything was linked"), line
    assert _entries(venv) == before
    pyproject.write_text(text)
    done = _ok(lab.ws(alice, group_store, "sync", cwd=proj))
    assert "+ gamma==1.0" in done.stdout and "gamma" in _trees(venv, group_store), done.stdout


def test_offline_with_a_cold_store_names_what_is_missing(lab: Lab, users: Users, group_store: Path,
                                                          workdir: Path) -> None:
    """--offline, and the store has none of the lock's wheels yet: refused before uv sync or any link, with the fix."""
    proj = lab.project("alice", workdir, users.alice)
    done = lab.ws(users.alice, group_store, "sync", "--offline", cwd=proj)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    line = done.stderr.splitlines()[-1]
    assert line.startswith("error: not in the store, and --offline forbids downloading: alpha==1.0, beta==2.0, "
                           "devtool==1.0") and "fix: run once without --offline" in line, line
    assert _installed(proj / ".venv") == {}
