"""Issue 14, acceptance 4, 5 and 6: what one member (or root's own habits) can do to others through the store's
shared bookkeeping: squatting gc roots, holding locks, and root writing through its own venv. Real users."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

from .conftest import Runner, Users, snapshot
from .wheelmaker import make_wheel


def _key(whl: Path) -> str:
    return hashlib.sha256(whl.read_bytes()).hexdigest()


def _wheel(workdir: Path, name: str) -> Path:
    whl = make_wheel(workdir, name, files={f"{name}/__init__.py": f"NAME = {name!r}\n".encode(),
                                           f"{name}/data.txt": name.encode() * 100})
    whl.chmod(0o644)
    return whl


def _venv(run: Runner, user: str | None, path: Path) -> Path:
    done = run(user, "venv", str(path))
    assert done.returncode == 0, done.stderr
    return path


def _imports(run: Runner, user: str | None, venv: Path, name: str) -> None:
    done = subprocess.run([str(venv / "bin" / "python"), "-c", f"import {name}; assert {name}.NAME == {name!r}"],
                          capture_output=True, text=True, **run.popen_kwargs(user, 0o022))  # type: ignore[call-overload]
    assert done.returncode == 0, done.stderr


def _site(venv: Path) -> Path:
    (site,) = venv.glob("lib/python3.*/site-packages")
    return site


# -- acceptance 6: root's own venvs ------------------------------------------------------------------------------------


def test_roots_default_install_from_a_group_store_keeps_its_writes_private(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """Root installs alice's tree into root's own venv with the default mode, then appends to a module there (as
    root's pip or editor would): the store file, alice's venv and ``verify`` are untouched."""
    whl = _wheel(workdir, "rootedit")
    alice_venv = _venv(run, users.alice, workdir / "alice-venv")
    done = run(users.alice, "--store", str(group_store), "install", "--venv", str(alice_venv), str(whl))
    assert done.returncode == 0, done.stderr
    store_file = group_store / "trees" / _key(whl) / "rootedit/__init__.py"
    stored = hashlib.sha256(store_file.read_bytes()).hexdigest()
    alice_before = snapshot(alice_venv)

    root_venv = _venv(run, None, workdir / "root-venv")
    done = run(None, "--store", str(group_store), "install", "--json", "--venv", str(root_venv), str(whl))
    assert done.returncode == 0, done.stderr
    (installed,) = json.loads(done.stdout)["installed"]
    assert installed["link_mode"] in ("copy", "reflink"), installed
    mine = _site(root_venv) / "rootedit/__init__.py"
    assert not mine.is_symlink() and not os.path.samefile(mine, store_file)
    with open(mine, "a") as f:  # root: file modes do not stop this write
        f.write("ROOT_WAS_HERE = 1\n")

    assert hashlib.sha256(store_file.read_bytes()).hexdigest() == stored
    assert snapshot(alice_venv) == alice_before
    _imports(run, users.alice, alice_venv, "rootedit")
    verified = run(users.alice, "--store", str(group_store), "verify", "--json")
    assert verified.returncode == 0 and json.loads(verified.stdout)["ok"] is True, verified.stdout + verified.stderr


def test_root_may_still_ask_for_symlinks_and_is_warned_once(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    whls = [_wheel(workdir, "rsym1"), _wheel(workdir, "rsym2")]
    assert run(users.alice, "--store", str(group_store), "realize", *map(str, whls)).returncode == 0
    venv = _venv(run, None, workdir / "root-venv")
    done = run(None, "--store", str(group_store), "install", "--link-mode", "symlink", "--venv", str(venv),
               *map(str, whls))
    assert done.returncode == 0, done.stderr
    assert (_site(venv) / "rsym1/__init__.py").is_symlink()
    warnings = [line for line in done.stderr.splitlines() if "--link-mode symlink as root" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: "), done.stderr
    assert "copy or reflink" in warnings[0]
