"""Old and current pip on venvs wheelstore filled (issue 17, points 2 and 3), as a real user with a group store.

pip 23.0.1 is what Debian 12's ``python3 -m venv`` gives. It resolves each RECORD path to its real path and skips
what then lies outside the venv, so it cannot remove a link into the store. wheelstore therefore never leaves links
beside it: ``auto`` links per file (copy here: the store is shared, so no hard links), an explicit ``fold`` or
``symlink`` is refused, installing that pip beside links is refused, and an install relinks per file the linked
distributions it touches. Current pip removes every mode.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import SYSTEM_PYTHON, Runner, Users, one_line_error, published, snapshot
from .wheelmaker import make_wheel

PIP_CACHE = Path("/var/tmp/wheelstore-cache/pip")
MODES = ("fold", "symlink", "copy")
#: Debian 12's own pip wheel, what ensurepip installs
OLD_PIP_WHEELS = Path("/usr/share/python-wheels")
FOLD_ROWS = pytest.mark.xfail(strict=True, reason="a folded directory's RECORD row is what lets current pip remove "
                              "it; readers of files() see a directory: known limit")


@pytest.fixture(scope="session")
def current_pip() -> Path:
    """A current pip wheel, downloaded once per machine into the shared cache."""
    if not list(PIP_CACHE.glob("pip-*.whl")):
        PIP_CACHE.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                               "-d", str(PIP_CACHE), "pip>=25"], capture_output=True)
        if done.returncode != 0:
            pytest.skip("no current pip wheel could be downloaded")
    for p in (PIP_CACHE.parent, PIP_CACHE, *PIP_CACHE.iterdir()):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return PIP_CACHE


@pytest.fixture
def wheels(workdir: Path) -> Path:
    """Two versions of a small package with a subpackage, a data file and a console script."""
    d = workdir / "wheels"
    d.mkdir()
    for version in ("1.0", "2.0"):
        files = {
            "wsdemo/__init__.py": f"VERSION = {version!r}\ndef main() -> None:\n    print(VERSION)\n".encode(),
            "wsdemo/sub/__init__.py": b"X = 1\n",
            "wsdemo/data/table.txt": f"table {version}\n".encode(),
            f"wsdemo-{version}.dist-info/entry_points.txt": b"[console_scripts]\nwsdemo = wsdemo:main\n",
        }
        make_wheel(d, "wsdemo", version, files)
    os.chmod(d, 0o755)
    for w in d.iterdir():
        w.chmod(0o644)
    return d


def _as(run: Runner, user: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, env=run.env(user), cwd="/", timeout=300,
                          **run.popen_kwargs(user, 0o022))


def _venv(run: Runner, users: Users, where: Path, pip: str, current_pip: Path) -> Path:
    """A venv made by alice with Debian's python3 -m venv (pip 23.0.1), upgraded to a current pip if asked."""
    venv = where / f"venv-{pip}"
    done = _as(run, users.alice, SYSTEM_PYTHON, "-m", "venv", str(venv))
    assert done.returncode == 0, done.stderr
    if pip == "current":
        done = _as(run, users.alice, str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index",
                   "-f", str(current_pip), "pip>=25")
        assert done.returncode == 0, done.stderr
    return venv


def _install(run: Runner, users: Users, store: Path, venv: Path, mode: str, wheels: Path,
             pin: str = "wsdemo==1.0") -> subprocess.CompletedProcess[str]:
    """Install ``pin``; ``auto`` beside pip 23.0.1 must come out per file (copy: a group store allows no hard links)."""
    chosen = () if mode == "auto" else ("--link-mode", mode)
    done = run(users.alice, "--store", str(store), "install", "--venv", str(venv), *chosen, "--no-index",
               "-f", str(wheels), pin)
    assert done.returncode == 0, done.stderr
    assert f"({'copy' if mode == 'auto' else mode})" in done.stdout, done.stdout
    return done


def _pip(run: Runner, users: Users, venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _as(run, users.alice, str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", *args)


def _left(venv: Path) -> list[str]:
    return sorted(str(p.relative_to(venv)) for p in venv.rglob("*") if "wsdemo" in p.name)


#: current pip in every mode; pip 23.0.1 in what wheelstore lets it have (auto, and copy asked for)
CASES = [pytest.param("current", m, id=f"current-pip-{m}") for m in MODES] + [
    pytest.param("old", m, id=f"old-pip-{m}") for m in ("auto", "copy")]


@pytest.mark.parametrize(("pip", "mode"), CASES)
def test_pip_uninstall_removes_everything(run: Runner, users: Users, group_store: Path, workdir: Path,
                                          wheels: Path, current_pip: Path, pip: str, mode: str) -> None:
    venv = _venv(run, users, workdir, pip, current_pip)
    _install(run, users, group_store, venv, mode, wheels)
    store_before = published(group_store)
    done = _pip(run, users, venv, "uninstall", "-y", "wsdemo")
    assert done.returncode == 0, done.stderr
    imported = _as(run, users.alice, str(venv / "bin" / "python"), "-c", "import wsdemo")
    assert imported.returncode != 0 and "No module named 'wsdemo'" in imported.stderr
    assert _left(venv) == []
    assert published(group_store) == store_before


@pytest.mark.parametrize(("pip", "mode"), CASES)
def test_pip_upgrade_works_or_changes_nothing(run: Runner, users: Users, group_store: Path, workdir: Path,
                                              wheels: Path, current_pip: Path, pip: str, mode: str) -> None:
    venv = _venv(run, users, workdir, pip, current_pip)
    _install(run, users, group_store, venv, mode, wheels)
    store_before, venv_before = published(group_store), snapshot(venv)
    done = _pip(run, users, venv, "install", "--no-index", "-f", str(wheels), "--upgrade", "wsdemo==2.0")
    assert published(group_store) == store_before
    if done.returncode != 0:
        assert snapshot(venv) == venv_before
        return
    version = _as(run, users.alice, str(venv / "bin" / "wsdemo"))
    assert version.stdout.strip() == "2.0", (version.stdout, version.stderr)
    site = next(venv.glob("lib/python3*/site-packages"))
    assert sorted(p.name for p in site.glob("wsdemo-*.dist-info")) == ["wsdemo-2.0.dist-info"]
    assert (site / "wsdemo" / "data" / "table.txt").read_text() == "table 2.0\n"


READ_ALL = """
import importlib.metadata as m, json, sys
files = m.files('wsdemo')
print(json.dumps({str(f): len(f.read_binary()) for f in files}))
"""


@pytest.mark.parametrize("mode", [pytest.param(m, marks=[FOLD_ROWS] if m == "fold" else []) for m in MODES])
def test_metadata_files_read_end_to_end(run: Runner, users: Users, group_store: Path, workdir: Path,
                                        wheels: Path, current_pip: Path, mode: str) -> None:
    venv = _venv(run, users, workdir, "current", current_pip)
    _install(run, users, group_store, venv, mode, wheels)
    done = _as(run, users.alice, str(venv / "bin" / "python"), "-c", READ_ALL)
    assert done.returncode == 0, done.stderr
    sizes = json.loads(done.stdout)
    assert sizes["wsdemo/data/table.txt"] == len("table 1.0\n")
    shown = _pip(run, users, venv, "show", "-f", "wsdemo")
    assert shown.returncode == 0, shown.stderr
    site = next(venv.glob("lib/python3*/site-packages"))
    listed = [line.strip() for line in shown.stdout.split("Files:")[1].splitlines() if line.strip()]
    assert "wsdemo/__init__.py" in listed
    assert [f for f in listed if (site / f).is_dir()] == []


def test_seed_puts_a_current_pip_from_the_store(run: Runner, users: Users, group_store: Path, workdir: Path,
                                                wheels: Path, current_pip: Path) -> None:
    venv = workdir / "seeded"
    done = run(users.alice, "--store", str(group_store), "venv", str(venv), "--seed", "--no-index",
               "-f", str(current_pip))
    assert done.returncode == 0, done.stderr
    assert "+ pip==" in done.stdout
    version = _pip(run, users, venv, "--version")
    assert version.returncode == 0 and int(version.stdout.split()[1].split(".")[0]) >= 25, version.stdout
    _install(run, users, group_store, venv, "fold", wheels)
    assert _pip(run, users, venv, "uninstall", "-y", "wsdemo").returncode == 0
    assert _left(venv) == []


def _doctor_pip(run: Runner, users: Users, store: Path, venv: Path) -> dict[str, str]:
    done = run(users.alice, "doctor", "--store", str(store), "--venv", str(venv), "--json")
    checks: dict[str, dict[str, str]] = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    return checks["venv-pip"]


def _folded_then_old_pip(run: Runner, users: Users, store: Path, workdir: Path, wheels: Path) -> Path:
    """A venv wheelstore made without pip, wsdemo folded into it, then pip 23.0.1 added by ensurepip (as a user may)."""
    venv = workdir / "later-pip"
    done = run(users.alice, "venv", str(venv))
    assert done.returncode == 0, done.stderr
    _install(run, users, store, venv, "fold", wheels)
    done = _as(run, users.alice, str(venv / "bin" / "python"), "-m", "ensurepip")
    assert done.returncode == 0, done.stderr
    assert _pip(run, users, venv, "--version").stdout.startswith("pip 23.0.1 "), "ensurepip gave another pip"
    return venv


@pytest.mark.parametrize("mode", ["fold", "symlink"])
def test_links_asked_for_beside_old_pip_are_refused(run: Runner, users: Users, group_store: Path, workdir: Path,
                                                    wheels: Path, current_pip: Path, mode: str) -> None:
    venv = _venv(run, users, workdir, "old", current_pip)
    store_before, venv_before = published(group_store), snapshot(venv)
    done = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), "--link-mode", mode,
               "--no-index", "-f", str(wheels), "wsdemo==1.0")
    assert done.returncode != 0
    assert one_line_error(done).startswith(f"error: {mode} cannot be used: the venv's pip 23.0.1 cannot remove "
                                           "links into a store"), done.stderr
    assert "upgrade the venv's pip" in done.stderr and "--link-mode copy" in done.stderr, done.stderr
    assert snapshot(venv) == venv_before and published(group_store) == store_before


def test_old_pip_is_not_installed_beside_links(run: Runner, users: Users, group_store: Path, workdir: Path,
                                               wheels: Path) -> None:
    venv = workdir / "no-pip"
    assert run(users.alice, "venv", str(venv)).returncode == 0
    _install(run, users, group_store, venv, "fold", wheels)
    before = snapshot(venv)
    old = ("--no-index", "-f", str(OLD_PIP_WHEELS), "pip==23.0.1")
    done = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), *old)
    assert done.returncode != 0
    assert one_line_error(done).startswith("error: pip 23.0.1 cannot remove the links into a store that wsdemo have"), \
        done.stderr
    assert snapshot(venv) == before
    # the fix it names: relink per file first, then that pip may come in, and its uninstall removes everything
    first = done.stderr.split("or first: wheelstore ")[1].rstrip(")\n").split()
    assert first == ["install", "--venv", str(venv), "--reinstall", "--link-mode", "copy", "wsdemo"], done.stderr
    relinked = run(users.alice, "--store", str(group_store), *first, "--no-index", "-f", str(wheels))
    assert relinked.returncode == 0 and "+ wsdemo==1.0 (copy)" in relinked.stdout, relinked
    done = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), *old)
    assert done.returncode == 0, done.stderr
    assert _pip(run, users, venv, "uninstall", "-y", "wsdemo").returncode == 0
    assert _left(venv) == []


def test_install_relinks_per_file_what_it_touches_beside_old_pip(run: Runner, users: Users, group_store: Path,
                                                                 workdir: Path, wheels: Path) -> None:
    venv = _folded_then_old_pip(run, users, group_store, workdir, wheels)
    done = _install(run, users, group_store, venv, "auto", wheels)  # already there, but folded: relinked
    assert "+ wsdemo==1.0 (copy)" in done.stdout and "pip 23.0.1 cannot remove links" in done.stderr, done
    removed = _pip(run, users, venv, "uninstall", "-y", "wsdemo")
    assert removed.returncode == 0, removed.stderr
    assert _left(venv) == []


def test_doctor_warns_about_old_pip_and_its_fix_works(run: Runner, users: Users, group_store: Path, workdir: Path,
                                                      wheels: Path, current_pip: Path) -> None:
    venv = _folded_then_old_pip(run, users, group_store, workdir, wheels)
    check = _doctor_pip(run, users, group_store, venv)
    assert check["status"] == "warn" and "23.0.1" in check["detail"] and "wsdemo" in check["detail"], check
    assert check["fix"] == f"wheelstore install --venv {venv} -U pip"
    fixed = run(users.alice, "--store", str(group_store), *check["fix"].split()[1:], "--no-index",
                "-f", str(current_pip))
    assert fixed.returncode == 0, fixed.stderr
    assert _doctor_pip(run, users, group_store, venv)["status"] == "ok"
    assert _pip(run, users, venv, "uninstall", "-y", "wsdemo").returncode == 0
    assert _left(venv) == []
