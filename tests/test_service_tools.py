"""Tools that resolve real paths, on a venv a root store service hard-linked (issue 20, acceptance 4): coverage.py's
``--include '*/site-packages/NAME/*'`` and ``source_pkgs``, and a Jupyter-style static file server (tornado's
``StaticFileHandler``, which refuses a file whose real path leaves its root) behave exactly as in a copied venv from
the same service store. A symlinked venv is the control: there both tools see the store's paths, so the comparison
would catch a hard-linked venv that behaved like it.

Real ``wheelstore serve`` as root on root's service store (tests/test_service_link.py), real users, the local index
offering the real coverage and tornado wheels from the test kit's cache: offline.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from .conftest import Runner, Users, published
from .pyindex import PyIndex
from .test_granularity import SERVE, _free_port, _status, _wait, server, tornado_wheels
from .test_realpath_tools import coverage_wheel
from .test_service_link import SITE, Service, _install, _link_mode, _sha, _venv, index, service
from .wheelmaker import make_wheel

__all__ = ["coverage_wheel", "index", "server", "service", "tornado_wheels"]  # fixtures, imported for pytest

NAME = "svtools"
MODULE = b"""def describe(n):
    if n > 0:
        return "positive"
    return "other"
"""
STATIC = {"app.js": b"console.log(1)\n", "sub/y.css": b"a {}\n"}


def _package(workdir: Path, index: PyIndex) -> Path:
    """A small package with a module and a static directory inside it, as Jupyter extensions ship their assets."""
    files = workdir / "files"
    files.mkdir(exist_ok=True)
    files.chmod(0o755)
    wheel = make_wheel(files, NAME, files={f"{NAME}/__init__.py": MODULE,
                                           **{f"{NAME}/static/{rel}": data for rel, data in STATIC.items()}})
    wheel.chmod(0o644)
    index.add(wheel)
    return wheel


def _filled(run: Runner, user: str, service: Service, workdir: Path, index: PyIndex, mode: str, tool: Path) -> Path:
    """A venv of ``user``'s, filled through the service in ``mode`` with ``tool`` (a real wheel) and the package."""
    index.add(tool)
    venv = _venv(run, user, workdir / mode)
    done = _install(run, user, service, venv, index, "--link-mode", mode, tool.name.split("-")[0], NAME)
    assert done.returncode == 0, done.stderr
    assert _link_mode(venv, NAME) == mode
    return venv


def _as(run: Runner, user: str, *cmd: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, env=run.env(user), cwd=cwd, timeout=120,
                          **run.popen_kwargs(user, 0o022))


def _project(workdir: Path, user: str, name: str) -> Path:
    proj = workdir / name
    proj.mkdir()
    (proj / "app.py").write_text(f"import {NAME}\n\nprint({NAME}.describe(1))\n")
    shutil.chown(proj, user)
    shutil.chown(proj / "app.py", user)
    return proj


def _measured(run: Runner, user: str, venv: Path, proj: Path, *options: str) -> dict[str, list[list[int]]]:
    """What ``coverage run [options] app.py`` measured: each file (relative to the venv, or "STORE/..." when coverage
    names the store) with its executed and missing lines."""
    for stale in (".coverage", "cov.json"):
        (proj / stale).unlink(missing_ok=True)
    done = _as(run, user, str(venv / "bin/coverage"), "run", *options, "app.py", cwd=proj)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "positive"
    done = _as(run, user, str(venv / "bin/coverage"), "json", "-o", "cov.json", cwd=proj)
    if done.returncode != 0:
        assert "No data" in done.stdout + done.stderr, done.stderr
        return {}
    files = json.loads((proj / "cov.json").read_text())["files"]
    prefix = f"{venv}/"
    return {(f[len(prefix):] if f.startswith(prefix) else "STORE/" + f.rsplit(f"/{NAME}/", 1)[-1]):
            [d["executed_lines"], d["missing_lines"]] for f, d in files.items()}


def _coverage_of(run: Runner, user: str, venv: Path, workdir: Path) -> dict[str, dict[str, list[list[int]]]]:
    proj = _project(workdir, user, f"proj-{venv.name}")
    by_include = _measured(run, user, venv, proj, f"--include=*/site-packages/{NAME}/*")
    (proj / ".coveragerc").write_text(f"[run]\nsource_pkgs = {NAME}\n")
    by_pkg = _measured(run, user, venv, proj)
    return {"include": by_include, "source_pkgs": by_pkg}


def test_coverage_measures_a_service_hardlinked_package_as_a_copied_one(
    run: Runner, users: Users, workdir: Path, index: PyIndex, service: Service, coverage_wheel: Path
) -> None:
    wheel = _package(workdir, index)
    venvs = {mode: _filled(run, users.alice, service, workdir, index, mode, coverage_wheel)
             for mode in ("hardlink", "copy", "symlink")}
    linked = venvs["hardlink"] / SITE / NAME / "__init__.py"
    assert linked.stat().st_ino == (service.store / "trees" / _sha(wheel) / NAME / "__init__.py").stat().st_ino
    before = published(service.store)
    got = {mode: _coverage_of(run, users.alice, venv, workdir) for mode, venv in venvs.items()}

    module = f"{SITE}/{NAME}/__init__.py"
    expected = {module: [[1, 2, 3], [4]]}
    assert got["copy"] == {"include": expected, "source_pkgs": expected}, got["copy"]
    assert got["hardlink"] == got["copy"]
    # the control: coverage matches a symlink's real path, in the store (the documented limit of symlink mode)
    assert got["symlink"]["include"] == {}, got["symlink"]
    assert published(service.store) == before


def test_tornado_serves_a_service_hardlinked_static_directory_as_a_copied_one(
    run: Runner, users: Users, workdir: Path, index: PyIndex, service: Service, tornado_wheels: Path,
    server: list[subprocess.Popen[str]]
) -> None:
    wheel = _package(workdir, index)
    (tornado,) = tornado_wheels.glob("tornado-*.whl")
    venvs = {mode: _filled(run, users.alice, service, workdir, index, mode, tornado)
             for mode in ("hardlink", "copy", "symlink")}
    static = venvs["hardlink"] / SITE / NAME / "static"
    assert not static.is_symlink() and static.stat().st_uid == users.uid(users.alice)
    assert (static / "app.js").stat().st_ino == \
        (service.store / "trees" / _sha(wheel) / NAME / "static" / "app.js").stat().st_ino
    before = published(service.store)

    statuses: dict[str, list[int]] = {}
    for mode, venv in venvs.items():
        port = _free_port()
        proc = subprocess.Popen([str(venv / "bin/python"), "-c", SERVE, str(venv / SITE / NAME / "static"), str(port)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=run.env(users.alice),
                                cwd="/", **run.popen_kwargs(users.alice, 0o022))
        server.append(proc)
        _wait(f"http://127.0.0.1:{port}/s/app.js", proc, 20)
        statuses[mode] = [_status(f"http://127.0.0.1:{port}/s/{rel}") for rel in (*STATIC, "missing.js")]
    assert statuses["copy"] == [200, 200, 404]
    assert statuses["hardlink"] == statuses["copy"]
    # the control: tornado refuses a file whose real path leaves its root (the documented limit of symlink mode)
    assert statuses["symlink"] == [403, 403, 404], statuses
    assert published(service.store) == before

