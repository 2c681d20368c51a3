"""A uv project's venv, made by ``uv venv`` while ``uv export`` reads the lock (issue 21, P8): the venv is there when
the export succeeds, and never left behind when either fails. Real uv, offline, a project with no dependencies (the
export and the venv are what is tested, not the store), run as alice through the installed CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .conftest import Runner, Users, one_line_error


def _project(where: Path, uv: Path, owner: str) -> Path:
    """A locked uv project of alice's with nothing to install."""
    where.mkdir()
    (where / "pyproject.toml").write_text('[project]\nname = "plain"\nversion = "0.1"\nrequires-python = ">=3.8"\n'
                                          "dependencies = []\n")
    subprocess.run([str(uv), "lock", "-q", "--offline", "--no-config", "--cache-dir", str(where.parent / "uv-cache")],
                   cwd=where, check=True, capture_output=True)
    subprocess.run(["chown", "-R", owner, str(where)], check=True)
    return where


def test_a_refused_lock_leaves_no_venv_and_a_good_one_gets_it(run: Runner, users: Users, group_store: Path,
                                                              workdir: Path) -> None:
    alice = users.alice
    proj = _project(workdir / "proj", run.tool.parent / "uv", alice)
    pyproject, venv = proj / "pyproject.toml", proj / ".venv"
    text = pyproject.read_text()
    pyproject.write_text(text.replace('version = "0.1"', 'version = "0.2"'))  # the lock is stale now
    line = one_line_error(run(alice, "--store", str(group_store), "sync", "-q", "--offline", "--project", str(proj)))
    assert str(proj / "uv.lock") in line and "'uv lock'" in line, line
    assert sorted(p.name for p in proj.iterdir()) == ["pyproject.toml", "uv.lock"]  # no venv, not even made meanwhile

    pyproject.write_text(text)
    done = run(alice, "--store", str(group_store), "sync", "--offline", "--project", str(proj))
    assert done.returncode == 0, done.stderr
    assert f"created venv at {venv} (Python 3." in done.stderr
    assert (venv / "pyvenv.cfg").is_file() and venv.stat().st_uid == proj.stat().st_uid


def test_a_venv_uv_cannot_make_is_one_line_after_a_good_export(run: Runner, users: Users, group_store: Path,
                                                               workdir: Path) -> None:
    alice = users.alice
    proj = _project(workdir / "proj", run.tool.parent / "uv", alice)
    closed = workdir / "closed"  # root's: alice cannot make the venv in it
    closed.mkdir(mode=0o755)
    line = one_line_error(run(alice, "--store", str(group_store), "sync", "-q", "--offline", "--project", str(proj),
                              "--venv", str(closed / "venv")))
    assert line.startswith(f"error: uv venv could not create {closed / 'venv'}: "), line
    assert list(closed.iterdir()) == [] and not (proj / ".venv").exists()


def test_a_store_that_cannot_be_used_leaves_no_venv(run: Runner, users: Users, workdir: Path) -> None:
    """The store is opened before the project's venv is made: a store alice may not use refuses the sync, and no
    new, empty .venv is left behind."""
    alice = users.alice
    proj = _project(workdir / "proj", run.tool.parent / "uv", alice)
    private = workdir / "roots-store"
    assert run(None, "init", str(private)).returncode == 0  # root's private store: alice may not use it
    line = one_line_error(run(alice, "--store", str(private), "sync", "-q", "--offline", "--project", str(proj)))
    assert str(private) in line, line
    assert sorted(p.name for p in proj.iterdir()) == ["pyproject.toml", "uv.lock"]
