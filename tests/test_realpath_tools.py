"""Tools that resolve real paths or walk a venv's directories (coverage.py, compileall), as a user runs them on a
venv wheelstore filled in the default mode: what the guide tells them to do works, and nothing writes into the
store."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import SYSTEM_PYTHON, Runner, Users, published

CACHE = Path("/var/tmp/wheelstore-cache")
COVERAGE = "coverage==7.18.0"
COVERAGE_SHA256 = "14574d625824113d0447912fe0b67ac98f89c2fbd53e4216d00f832b76b05bd6"  # cp311 manylinux x86_64


@pytest.fixture(scope="session")
def coverage_wheel() -> Path:
    """The real coverage.py wheel for Debian 12's Python, downloaded once per machine (hash-checked) and kept."""
    folder = CACHE / "coverage"
    found = sorted(folder.glob("coverage-7.18.0-cp311-*.whl"))
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        req = folder / "requirements.txt"
        req.write_text(f"{COVERAGE} --hash=sha256:{COVERAGE_SHA256}\n")
        done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                               "--python-version", "3.11", "--require-hashes", "-r", str(req), "-d", str(folder)],
                              capture_output=True, text=True)
        found = sorted(folder.glob("coverage-7.18.0-cp311-*.whl"))
        if done.returncode != 0 or not found:
            pytest.skip(f"coverage could not be downloaded: {done.stderr.strip()[-200:]}")
    for p in (CACHE, folder, *folder.iterdir()):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return found[0]


def _cached(name: str) -> Path:
    found = sorted((CACHE / "set36").glob(f"{name}-*.whl"))
    if not found:
        pytest.skip(f"{name} is not in {CACHE / 'set36'} (the benchmark wheels: see set36_wheels)")
    found[0].chmod(0o644)
    return found[0]


def _as(run: Runner, user: str, *cmd: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A command as ``user`` would type it, in ``cwd``."""
    return subprocess.run(list(cmd), capture_output=True, text=True, env=run.env(user), cwd=cwd, timeout=120,
                          **run.popen_kwargs(user, 0o022))


def _filled(run: Runner, user: str, store: Path, venv: Path, *wheels: Path, mode: str | None = None) -> Path:
    done = run(user, "venv", str(venv), "--python", SYSTEM_PYTHON)
    assert done.returncode == 0, done.stderr
    how = ("--link-mode", mode) if mode else ()
    done = run(user, "--store", str(store), "install", "--venv", str(venv), *how, "--no-deps", "--json",
               *map(str, wheels))
    assert done.returncode == 0, done.stderr
    modes = {d["link_mode"] for d in json.loads(done.stdout)["installed"]}
    assert modes == {mode or "fold"}, modes  # the default for a member of a group store on one filesystem
    return venv


def _project(workdir: Path, user: str, coveragerc: str | None) -> Path:
    """A user's own project: one module that calls a dependency (idna), a script that runs it."""
    proj = workdir / "proj"
    proj.mkdir()
    (proj / "mymod.py").write_text("import idna\n\ndef encode(name):\n    return idna.encode(name)\n")
    (proj / "app.py").write_text("import mymod\n\nprint(mymod.encode('example.com'))\n")
    if coveragerc is not None:
        (proj / ".coveragerc").write_text(coveragerc)
    shutil.chown(proj, user)
    for p in proj.iterdir():
        shutil.chown(p, user)
    return proj


def _measured(run: Runner, user: str, venv: Path, proj: Path, *options: str) -> set[str]:
    """The files ``coverage run [options] app.py`` measured, as ``coverage json`` names them."""
    done = _as(run, user, str(venv / "bin/coverage"), "run", *options, "app.py", cwd=proj)
    assert done.returncode == 0, done.stderr
    assert "b'example.com'" in done.stdout
    done = _as(run, user, str(venv / "bin/coverage"), "json", "-o", "cov.json", cwd=proj)
    if done.returncode != 0:
        assert "No data" in done.stdout + done.stderr, done.stderr
        return set()
    return set(json.loads((proj / "cov.json").read_text())["files"])


def test_coverage_measures_only_own_code_with_source(
    run: Runner, users: Users, group_store: Path, workdir: Path, coverage_wheel: Path
) -> None:
    """The bug, then the fix the guide documents: coverage resolves a folded dependency to its store path, which is
    no site-packages, so without a ``source`` it counts idna as the user's code; ``[run] source = .`` measures just
    the project."""
    venv = _filled(run, users.alice, group_store, workdir / "venv", coverage_wheel, _cached("idna"))
    proj = _project(workdir, users.alice, None)
    plain = _measured(run, users.alice, venv, proj)
    assert {"mymod.py", "app.py"} <= plain
    assert any(f.startswith(f"{group_store}/trees/") and f.endswith("/idna/core.py") for f in plain), plain

    (proj / ".coveragerc").write_text("[run]\nsource = .\n")
    assert _measured(run, users.alice, venv, proj) == {"mymod.py", "app.py"}
    assert _measured(run, users.alice, venv, proj, "--source=.") == {"mymod.py", "app.py"}


def test_coverage_measures_a_dependency(
    run: Runner, users: Users, group_store: Path, workdir: Path, coverage_wheel: Path
) -> None:
    """Measuring a dependency: ``--include '*/site-packages/*'`` finds nothing in the default mode (coverage matches
    the real path, in the store), while ``source_pkgs`` (found by import) and ``--include`` on the package's own
    directory do; in copy mode the site-packages pattern works as usual."""
    venv = _filled(run, users.alice, group_store, workdir / "venv", coverage_wheel, _cached("idna"))
    proj = _project(workdir, users.alice, "[run]\nsource_pkgs = idna\n")
    by_pkg = _measured(run, users.alice, venv, proj)
    assert any(f.endswith("/idna/core.py") for f in by_pkg), by_pkg
    assert not {"mymod.py", "app.py"} & by_pkg
    (proj / ".coveragerc").unlink()

    assert _measured(run, users.alice, venv, proj, "--include=*/site-packages/*") == set()  # the documented limit
    by_dir = _measured(run, users.alice, venv, proj, "--include=*/idna/*")
    assert by_dir and all("/idna/" in f for f in by_dir), by_dir

    copied = _filled(run, users.alice, group_store, workdir / "copied", coverage_wheel, _cached("idna"), mode="copy")
    in_site = _measured(run, users.alice, copied, proj, "--include=*/site-packages/*")
    assert any(f.endswith("site-packages/idna/core.py") for f in in_site), in_site


@pytest.mark.parametrize("mode", ["fold", "symlink", "copy"])
def test_compileall_on_a_venv_exits_0_and_leaves_the_store(
    run: Runner, users: Users, group_store: Path, workdir: Path, mode: str
) -> None:
    """``python -m compileall V`` in every mode: folded directories are skipped (links), linked pycs are up to
    date, copies are compiled into the venv; the store does not change. ``-f`` too, but in symlink mode."""
    wheels = [_cached(n) for n in ("idna", "python_dateutil", "threadpoolctl", "tzdata")]
    venv = _filled(run, users.alice, group_store, workdir / "venv", *wheels, mode=mode)
    before = published(group_store)
    done = _as(run, users.alice, str(venv / "bin/python"), "-m", "compileall", "-q", str(venv), cwd=workdir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert published(group_store) == before
    forced = _as(run, users.alice, str(venv / "bin/python"), "-m", "compileall", "-q", "-f", str(venv), cwd=workdir)
    if mode == "symlink":  # the documented limit: py_compile will not replace a symlinked pyc
        assert forced.returncode == 1 and "is a symlink" in forced.stdout, forced.stdout + forced.stderr
    else:  # fold copies the pycs it links one by one (threadpoolctl's, in site-packages/__pycache__)
        assert forced.returncode == 0, forced.stdout + forced.stderr
        pyc = next((venv / "lib").glob("python3*/site-packages/__pycache__/threadpoolctl.cpython-3*.pyc"))
        assert pyc.is_file() and not pyc.is_symlink()
        if mode == "fold":  # and edit --undo links it back the same way
            for how in ((), ("--undo",)):
                done = run(users.alice, "--store", str(group_store), "edit", "--venv", str(venv), "threadpoolctl", *how)
                assert done.returncode == 0, done.stderr
            assert pyc.is_file() and not pyc.is_symlink()
            assert (pyc.parent.parent / "threadpoolctl.py").is_symlink()
    assert published(group_store) == before
    imported = _as(run, users.alice, str(venv / "bin/python"), "-c",
                   "import idna, dateutil.tz, threadpoolctl, tzdata; print('ok')", cwd=workdir)
    assert imported.stdout.strip() == "ok", imported.stderr


def test_compile_optimized_puts_opt_pycs_in_the_store_for_python_O(
    run: Runner, users: Users, group_store: Path, workdir: Path
) -> None:
    """``install --compile-optimized``: the tree carries opt-1 and opt-2 pycs, listed in its manifest, so ``python -O``
    and ``-OO`` load them from the folded directory instead of recompiling in memory on every run; nothing is
    written, neither into the venv nor the store. Without the option there are none, and ``-v`` shows the source
    compiled."""
    venv = workdir / "venv"
    assert run(users.alice, "venv", str(venv), "--python", SYSTEM_PYTHON).returncode == 0
    done = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), "--no-deps",
               "--compile-optimized", str(_cached("idna")))
    assert done.returncode == 0, done.stderr
    tree = next(p for p in (group_store / "trees").iterdir() if (p / "idna").is_dir())
    for name in ("core.cpython-311.pyc", "core.cpython-311.opt-1.pyc", "core.cpython-311.opt-2.pyc"):
        assert (tree / "idna/__pycache__" / name).is_file(), name
    site = next(venv.glob("lib/python3*/site-packages"))
    assert (site / "idna").is_symlink()
    before, venv_before = published(group_store), published(venv)
    for flag, suffix in (("-O", ".opt-1.pyc"), ("-OO", ".opt-2.pyc")):
        # -v says where each module's code came from: the pyc when it was valid, else the source, compiled anew
        done = _as(run, users.alice, str(venv / "bin/python"), flag, "-v", "-c", "import idna.core", cwd=workdir)
        assert done.returncode == 0, done.stderr
        pyc = f"idna/__pycache__/core.cpython-311{suffix}"
        assert f"code object from '{site}/{pyc}'" in done.stderr, done.stderr[-2000:]
        assert f"code object from {site}/idna/core.py" not in done.stderr  # (quoted when read from a pyc)
    assert published(group_store) == before and published(venv) == venv_before

    plain = workdir / "plain"
    assert run(users.alice, "venv", str(plain), "--python", SYSTEM_PYTHON).returncode == 0
    other = workdir / "other-store"
    assert run(users.alice, "init", str(other)).returncode == 0
    done = run(users.alice, "--store", str(other), "install", "--venv", str(plain), "--no-deps", str(_cached("idna")))
    assert done.returncode == 0, done.stderr
    done = _as(run, users.alice, str(plain / "bin/python"), "-O", "-v", "-c", "import idna.core", cwd=workdir)
    plain_site = next(plain.glob("lib/python3*/site-packages"))
    assert f"code object from {plain_site}/idna/core.py\n" in done.stderr, done.stderr[-2000:]
