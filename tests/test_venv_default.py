"""The venv by default (issue 16, point 9): ``--venv``, else ``$VIRTUAL_ENV``, else the ``.venv`` in the current
directory or the nearest parent, as ``uv pip`` finds it; ``wheelstore venv`` without a path makes ``.venv``.

The real CLI, run as wsalice from the directory a user would type in, installing small local wheels offline.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from .conftest import Runner, Users, one_line_error
from .wheelmaker import make_wheel


def _ws(run: Runner, user: str, cwd: Path, *args: str, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    """The installed CLI as ``user``, started in ``cwd`` (the Runner always starts in /)."""
    return subprocess.run([str(run.tool), *args], capture_output=True, text=True, env=run.env(user, env), cwd=cwd,
                          timeout=120, **run.popen_kwargs(user, 0o022))


class Project:
    """A project directory of ``user``'s with a sub-directory, a private store and a find-links directory."""

    def __init__(self, run: Runner, user: str, workdir: Path) -> None:
        self.run, self.user = run, user
        self.root = workdir / "proj"
        self.sub = self.root / "src" / "pkg"
        self.sub.mkdir(parents=True)
        self.links = workdir / "links"
        self.links.mkdir()
        for name in ("demo", "other", "third"):
            make_wheel(self.links, name, "1.0")
        subprocess.run(["chown", "-R", user, str(self.root)], check=True)
        for p in (self.links, *self.links.iterdir()):
            p.chmod(0o755 if p.is_dir() else 0o644)
        self.store = workdir / "store"
        assert run(user, "init", str(self.store)).returncode == 0

    def __call__(self, cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``wheelstore VERB ...`` with this project's store and find-links (offline), without --venv."""
        verb, *rest = args
        sources = ("--no-index", "-f", str(self.links)) if verb in ("install", "sync", "lock") else ()
        return _ws(self.run, self.user, cwd, "--store", str(self.store), verb, *sources, *rest, env=env)

    def venv(self, cwd: Path, *path: str) -> Path:
        done = _ws(self.run, self.user, cwd, "venv", *path)
        assert done.returncode == 0, done.stderr
        created = (cwd / (path[0] if path else ".venv")).absolute()
        assert done.stdout.strip().startswith(f"created venv at {created} ")
        return created


def _names(venv: Path) -> set[str]:
    """What ``venv`` holds, asked of its own pip-free interpreter: the distributions' names."""
    code = "import importlib.metadata as m, json; print(json.dumps([d.metadata['Name'] for d in m.distributions()]))"
    done = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout))


@pytest.fixture
def project(run: Runner, users: Users, workdir: Path) -> Project:
    return Project(run, users.alice, workdir)


def test_venv_without_a_path_makes_dot_venv_here_and_refuses_an_existing_one(project: Project) -> None:
    venv = project.venv(project.root)
    assert venv == project.root / ".venv" and (venv / "pyvenv.cfg").is_file() and (venv / "bin" / "python").exists()
    again = one_line_error(_ws(project.run, project.user, project.root, "venv"))
    assert f"{venv} already is a venv" in again


def test_every_verb_finds_dot_venv_here_and_in_a_parent(project: Project) -> None:
    venv = project.venv(project.root)
    here = project(project.root, "install", "demo==1.0")
    assert here.returncode == 0, here.stderr
    assert here.stderr.splitlines()[0] == f"using the venv at {venv} (found from {project.root})"
    below = project(project.sub, "install", "other==1.0", "third==1.0")
    assert below.returncode == 0, below.stderr
    assert f"using the venv at {venv} (found from {project.sub})" in below.stderr
    assert {"demo", "other", "third"} <= _names(venv)
    listed = project(project.sub, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {"demo", "other", "third"} <= {d["name"] for d in json.loads(listed.stdout)}
    assert project(project.sub, "uninstall", "third").returncode == 0
    edited = project(project.sub, "edit", "demo")
    assert edited.returncode == 0 and f"now private, writable copies in {venv}" in edited.stdout, edited.stderr
    quiet = project(project.sub, "sync", "-q", "demo==1.0")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr  # -q: not even which venv
    assert "other" not in _names(venv) and "demo" in _names(venv)
    # inside the venv itself, as uv: the venv, not a .venv below it
    inside = project(venv / "lib", "list", "--json")
    assert inside.returncode == 0 and f"using the venv at {venv} " in inside.stderr


def test_lock_resolves_for_the_venv_found(project: Project) -> None:
    venv = project.venv(project.root)
    out = project.sub / "pylock.toml"
    done = project(project.sub, "lock", "demo", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert f"using the venv at {venv} " in done.stderr and out.is_file()


def test_virtual_env_wins_over_dot_venv_and_venv_wins_over_both(project: Project) -> None:
    dot = project.venv(project.root)
    active = project.venv(project.root, "active")
    named = project.venv(project.root, "named")
    env = {"VIRTUAL_ENV": str(active)}
    done = project(project.sub, "install", "demo==1.0", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[0] == f"using the venv at {active} (from VIRTUAL_ENV)"
    assert "demo" in _names(active) and "demo" not in _names(dot)
    flagged = project(project.sub, "install", "--venv", str(named), "other==1.0", env=env)
    assert flagged.returncode == 0 and "using the venv" not in flagged.stderr, flagged.stderr  # named: not said
    assert "other" in _names(named) and "other" not in _names(active) and "other" not in _names(dot)


def test_no_venv_anywhere_is_one_line_naming_where_and_the_fix(project: Project, workdir: Path) -> None:
    empty = workdir / "empty"
    empty.mkdir()
    if any((d / ".venv").is_dir() or (d / "pyvenv.cfg").exists() for d in empty.parents):
        pytest.skip("a parent of the test directory has a .venv on this machine")
    for args in (("install", "demo==1.0"), ("sync", "demo==1.0"), ("uninstall", "demo"), ("list",),
                 ("edit", "demo"), ("lock", "demo", "-o", str(empty / "pylock.toml"))):
        line = one_line_error(project(empty, *args))
        assert line == (f"error: no venv found: VIRTUAL_ENV is not set, and neither {empty} nor any parent has a "
                        ".venv (fix: create one here with 'wheelstore venv' (it makes .venv), or name one with "
                        "--venv PATH)"), args
    assert not (empty / "pylock.toml").exists()


def test_what_is_not_a_venv_is_refused_not_skipped(project: Project) -> None:
    (project.root / ".venv").mkdir()
    line = one_line_error(project(project.sub, "install", "demo==1.0"))
    assert f"{project.root / '.venv'} is not a venv (it has no pyvenv.cfg)" in line
    line = one_line_error(project(project.sub, "list", env={"VIRTUAL_ENV": str(project.root)}))
    assert f"VIRTUAL_ENV={project.root} is not a venv" in line and "deactivate it" in line


def test_another_users_dot_venv_above_is_never_run(run: Runner, users: Users, workdir: Path) -> None:
    """Anyone can make a .venv in a shared directory (/tmp): one found by walking up must be the user's own."""
    shared = workdir / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    planted = _ws(run, users.bob, shared, "venv")
    assert planted.returncode == 0, planted.stderr
    marker = shared / "ran"
    trap = shared / ".venv" / "bin" / "python"
    trap.unlink()
    trap.write_text(f"#!/bin/sh\ntouch {marker}\n")
    trap.chmod(0o755)
    os.chown(trap, run.users.uid(users.bob), -1)
    mine = shared / "alice-work"
    mine.mkdir()
    os.chown(mine, run.users.uid(users.alice), -1)
    line = one_line_error(_ws(run, users.alice, mine, "list"))
    assert f"found {shared / '.venv'}, but it belongs to {users.bob}, not you" in line
    assert f"--venv {shared / '.venv'}" in line
    assert not marker.exists()
