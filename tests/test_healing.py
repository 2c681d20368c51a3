"""Distributions another tool left half removed: install, sync, uninstall and doctor say so, with the fix, and
install and sync repair them. The damage is made by Debian's own pip 23.0.1 where it can be (its uninstall of a
folded package deletes RECORD and keeps what resolves into the store), else by deleting what it would. wheelstore
links nothing into the store beside that pip, so it comes into each venv after wheelstore's install, by ``ensurepip``,
as a user may add it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import SYSTEM_PYTHON, Runner, one_line_error
from .wheelmaker import make_wheel


@pytest.fixture
def setup(run: Runner, workdir: Path) -> tuple[Path, Path, dict[str, Path]]:
    """A private store of root's, a venv of ``python3 -m venv --without-pip`` (Debian's pip 23.0.1 comes with the
    first pip command), and two wheels."""
    store, venv = workdir / "store", workdir / "venv"
    assert run(None, "init", str(store)).returncode == 0
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True)
    wheels = {
        "plain": make_wheel(workdir, "plain", files={"plain/__init__.py": b"V = 1\n", "plain/sub/mod.py": b"X = 2\n"}),
        "other": make_wheel(workdir, "other", files={"other/__init__.py": b"O = 1\n"}),
    }
    return store, venv, wheels


def _site(venv: Path) -> Path:
    return next(venv.glob("lib/python3*/site-packages"))


def _ws(run: Runner, store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(None, "--store", str(store), *args)


def _ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, done.stderr
    return done


def _pip(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Debian's pip 23.0.1 in the venv: added by ``ensurepip`` the first time, after what wheelstore linked."""
    env = {k: v for k, v in os.environ.items() if k != "PIP_REQUIRE_VIRTUALENV"}
    if not (venv / "bin/pip").exists():
        subprocess.run([str(venv / "bin/python"), "-m", "ensurepip"], capture_output=True, env=env, check=True)
    return subprocess.run([str(venv / "bin/python"), "-m", "pip", *args], capture_output=True, text=True, env=env,
                          check=True)


def _doctor(run: Runner, store: Path, venv: Path) -> dict[str, object]:
    done = _ws(run, store, "doctor", "--venv", str(venv), "--json")
    checks = json.loads(done.stdout)["checks"]
    (found,) = [c for c in checks if c["name"] == "venv-damage"]
    assert isinstance(found, dict)
    return found


def _store_snapshot(store: Path) -> dict[str, tuple[int, str | None]]:
    """Mode and content of every entry of the store's trees: a removal must never reach them."""
    out: dict[str, tuple[int, str | None]] = {}
    for p in sorted((store / "trees").rglob("*")):
        st = p.lstat()
        out[str(p)] = (st.st_mode, hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else None)
    return out


def _imports(venv: Path, module: str) -> bool:
    return subprocess.run([str(venv / "bin/python"), "-c", f"import {module}"], capture_output=True).returncode == 0


def test_pip_23_uninstall_of_a_folded_package_is_reported_everywhere_and_sync_restores_it(
        run: Runner, setup: tuple[Path, Path, dict[str, Path]]) -> None:
    store, venv, wheels = setup
    site = _site(venv)
    _ok(_ws(run, store, "install", "--venv", str(venv), str(wheels["plain"])))
    assert (site / "plain").is_symlink()  # folded: ext4 has no reflink, auto folds root's own private trees
    assert "pip 23.0.1" in _pip(venv, "--version").stdout

    _pip(venv, "uninstall", "-y", "plain")
    # what pip 23.0.1 leaves: the folded link and the dist-info's links into the store, without RECORD
    assert (site / "plain").is_symlink()
    assert sorted(p.name for p in (site / "plain-1.0.dist-info").iterdir()) == ["METADATA", "WHEEL"]

    found = _doctor(run, store, venv)
    assert found["status"] == "warn" and "plain 1.0 has no RECORD" in str(found["detail"]), found
    assert found["fix"] == f"wheelstore install --venv {venv} plain==1.0"

    other = _ok(_ws(run, store, "install", "--venv", str(venv), str(wheels["other"])))
    assert "plain 1.0 has no RECORD" in other.stderr and f"wheelstore uninstall --venv {venv} plain" in other.stderr

    synced = _ok(_ws(run, store, "sync", "--venv", str(venv), str(wheels["plain"]), str(wheels["other"])))
    assert "plain 1.0 has no RECORD (another tool removed it part way): reinstalled it" in synced.stderr
    assert "1 already there" in synced.stdout and "1 installed" in synced.stdout
    assert (site / "plain-1.0.dist-info" / "RECORD").is_file() and _imports(venv, "plain.sub.mod")
    assert _doctor(run, store, venv)["status"] == "ok"
    assert "plain" in _pip(venv, "list").stdout


def test_deleted_record_is_reinstalled_by_install_and_removed_by_uninstall(
        run: Runner, setup: tuple[Path, Path, dict[str, Path]]) -> None:
    store, venv, wheels = setup
    site = _site(venv)
    _ok(_ws(run, store, "install", "--venv", str(venv), str(wheels["plain"])))
    (site / "plain-1.0.dist-info" / "RECORD").unlink()

    again = _ok(_ws(run, store, "install", "--venv", str(venv), str(wheels["plain"])))
    assert "already there" in again.stdout and "0 already there" in again.stdout, again.stdout
    assert "plain 1.0 has no RECORD" in again.stderr
    assert (site / "plain-1.0.dist-info" / "RECORD").is_file() and _imports(venv, "plain")

    (site / "plain-1.0.dist-info" / "RECORD").unlink()
    before = _store_snapshot(store)
    gone = _ok(_ws(run, store, "uninstall", "--venv", str(venv), "plain"))
    assert "plain 1.0 has no RECORD" in gone.stderr and " - plain==1.0" in gone.stdout
    assert not os.path.lexists(site / "plain") and not (site / "plain-1.0.dist-info").exists()
    assert _store_snapshot(store) == before
    assert _doctor(run, store, venv)["status"] == "ok"


def test_pip_23_remains_are_uninstalled_without_touching_the_store(
        run: Runner, setup: tuple[Path, Path, dict[str, Path]]) -> None:
    store, venv, wheels = setup
    site = _site(venv)
    _ok(_ws(run, store, "install", "--venv", str(venv), str(wheels["plain"]), str(wheels["other"])))
    _pip(venv, "uninstall", "-y", "plain")
    before = _store_snapshot(store)
    _ok(_ws(run, store, "uninstall", "--venv", str(venv), "plain"))
    assert not os.path.lexists(site / "plain") and not (site / "plain-1.0.dist-info").exists()
    assert _store_snapshot(store) == before and _imports(venv, "other")
    assert "plain" not in _ws(run, store, "list", "--venv", str(venv)).stdout


def test_links_no_dist_info_claims_are_reported_and_sync_removes_them(
        run: Runner, setup: tuple[Path, Path, dict[str, Path]]) -> None:
    store, venv, wheels = setup
    site = _site(venv)
    _ok(_ws(run, store, "install", "--venv", str(venv), str(wheels["plain"])))
    _pip(venv, "uninstall", "-y", "plain")
    shutil.rmtree(site / "plain-1.0.dist-info")  # what is left: one link into the store nobody claims

    found = _doctor(run, store, venv)
    assert found["status"] == "warn" and "no installed distribution claims it" in str(found["detail"]), found
    assert found["fix"] == f"rm {site / 'plain'}"
    _ok(_ws(run, store, "install", "--venv", str(venv), str(wheels["other"])))

    before = _store_snapshot(store)
    synced = _ok(_ws(run, store, "sync", "--venv", str(venv), str(wheels["other"])))
    assert "removing" in synced.stderr and not os.path.lexists(site / "plain")
    assert _store_snapshot(store) == before and _imports(venv, "other")
    assert _doctor(run, store, venv)["status"] == "ok"


def test_record_less_distribution_of_another_installer_is_refused_with_the_fix(
        run: Runner, setup: tuple[Path, Path, dict[str, Path]]) -> None:
    store, venv, wheels = setup
    site = _site(venv)
    _pip(venv, "install", "-q", "--no-index", str(wheels["plain"]))
    (site / "plain-1.0.dist-info" / "RECORD").unlink()

    line = one_line_error(_ws(run, store, "uninstall", "--venv", str(venv), "plain"))
    assert "plain 1.0" in line and "has no RECORD and was not linked by wheelstore" in line
    assert f"wheelstore install --venv {venv} plain==1.0" in line and "then uninstall it" in line
    assert (site / "plain" / "__init__.py").is_file()  # refused: nothing removed

    _ok(_ws(run, store, "install", "--venv", str(venv), str(wheels["plain"])))  # installs over it: a RECORD again
    _ok(_ws(run, store, "uninstall", "--venv", str(venv), "plain"))
    assert not os.path.lexists(site / "plain") and not (site / "plain-1.0.dist-info").exists()


def test_files_gone_from_a_recorded_distribution_are_reported_and_reinstalled(
        run: Runner, setup: tuple[Path, Path, dict[str, Path]]) -> None:
    store, venv, wheels = setup
    site = _site(venv)
    _ok(_ws(run, store, "install", "--venv", str(venv), str(wheels["plain"])))
    (site / "plain").unlink()  # an install that stopped half way, or a hand's rm: RECORD is intact

    found = _doctor(run, store, venv)
    assert found["status"] == "warn" and "has lost 5 of the files its RECORD lists, such as plain " in str(
        found["detail"]), found
    again = _ok(_ws(run, store, "install", "--venv", str(venv), str(wheels["plain"])))
    assert "1 installed" in again.stdout and "has lost 5 of the files" in again.stderr
    assert _imports(venv, "plain.sub.mod") and _doctor(run, store, venv)["status"] == "ok"


def test_rows_below_a_folded_directory_are_judged_by_it_but_a_climbing_row_on_its_own(tmp_path: Path) -> None:
    """missing_files skips the rows below a folded directory's row without looking at them, but a row that only
    seems to be below it (``pkg/../gone.py``) is looked at, and a quoted RECORD is read the same way."""
    from wheelstore.base.distinfo import Distribution
    from wheelstore.base.names import canonical
    from wheelstore.venv.damage import missing_files

    venv = tmp_path / "venv"
    site = venv / "lib" / "python3.11" / "site-packages"
    (tmp_path / "tree" / "pkg").mkdir(parents=True)
    site.mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (site / "pkg").symlink_to(tmp_path / "tree" / "pkg")  # folded: its files are the store's business
    info = site / "pkg-1.0.dist-info"
    info.mkdir()
    (site / "here.py").write_text("")
    dist = Distribution(canonical("pkg"), "pkg", "1.0", info, "wheelstore")
    for quote in ("", '"'):
        (info / "RECORD").write_text(f"pkg,,\n{quote}pkg/never-there.py{quote},,\n{quote}pkg/../gone.py{quote},,\n"
                                     "here.py,,\npkg-1.0.dist-info/RECORD,,\n")
        assert missing_files(dist) == ["pkg/../gone.py"], quote


def test_an_origin_file_that_is_a_fifo_is_no_origin_and_never_blocks(tmp_path: Path) -> None:
    """doctor reads other users' venvs: their dist-info's origin file may be a FIFO, which must never hang it."""
    info = tmp_path / "pkg-1.0.dist-info"
    info.mkdir()
    os.mkfifo(info / "WHEELSTORE")
    code = ("import sys; from pathlib import Path; from wheelstore.base.distinfo import Distribution, origin; "
            "print(origin(Distribution('pkg', 'pkg', '1.0', Path(sys.argv[1]), '')))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    done = subprocess.run([sys.executable, "-c", code, str(info)], capture_output=True,
                          text=True, env=env, timeout=20)
    assert done.returncode == 0 and done.stdout.strip() == "None", done.stderr
