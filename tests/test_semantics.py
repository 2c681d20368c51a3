"""install means ``uv pip install`` and sync means ``uv pip sync`` (issue 16, points 1 and 2): dependencies are
installed, what the venv holds is kept when it satisfies the request, ``-U`` and ``--upgrade-package`` upgrade,
``--no-deps`` installs exactly what is named, ``--reinstall`` relinks, and sync refuses an incomplete set."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import SYSTEM_PYTHON, Runner, Users, one_line_error, snapshot
from .pyindex import PyIndex
from .test_fetching import ISOLATED, _import, _venv, _wheel


@pytest.fixture
def index(workdir: Path) -> Iterator[PyIndex]:
    """app 2.0 needs lib>=1.0; keeper 1.0 needs lib<2; lib 1.0 and 2.0."""
    files = workdir / "files"
    files.mkdir()
    with PyIndex() as served:
        served.add(_wheel(files, "app", "2.0", requires=("lib>=1.0",)))
        served.add(_wheel(files, "keeper", "1.0", requires=("lib<2",)))
        served.add(_wheel(files, "lib", "1.0"))
        served.add(_wheel(files, "lib", "2.0"))
        yield served


def _install(run: Runner, user: str, store: Path, venv: Path, index: PyIndex, *args: str,
             verb: str = "install") -> dict[str, list[dict[str, str]]]:
    done = run(user, "--store", str(store), verb, "--venv", str(venv), "--index-url", index.simple_url, "--json",
               *args, env={**ISOLATED, "UV_CACHE_DIR": str(venv.parent / "uvcache")})
    assert done.returncode == 0, done.stderr
    report: dict[str, list[dict[str, str]]] = json.loads(done.stdout)
    return report


def _versions(user: str, venv: Path) -> dict[str, str]:
    code = "import importlib.metadata as m, json; print(json.dumps({d.name: d.version for d in m.distributions()}))"
    found: dict[str, str] = json.loads(_import(user, venv, code))
    return found


def test_a_pin_and_a_wheel_file_install_their_dependencies_and_no_deps_does_not(
    run: Runner, users: Users, workdir: Path, group_store: Path, index: PyIndex
) -> None:
    """Acceptance 1: ``install NAME==V`` and ``install ./x.whl`` install the closure, and the venv passes the real
    ``pip check``; ``--no-deps`` installs the pin alone."""
    with_pip = workdir / "withpip"
    made = subprocess.run(["runuser", "-u", users.alice, "--", SYSTEM_PYTHON, "-m", "venv", str(with_pip)],
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    _install(run, users.alice, group_store, with_pip, index, "app==2.0")
    assert {"app": "2.0", "lib": "2.0"}.items() <= _versions(users.alice, with_pip).items()
    check = subprocess.run(["runuser", "-u", users.alice, "--", str(with_pip / "bin" / "python"), "-m", "pip",
                            "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    bare = _venv(run, users.alice, workdir / "bare")
    report = _install(run, users.alice, group_store, bare, index, "--no-deps", "app==2.0")
    assert [d["name"] for d in report["installed"]] == ["app"]
    assert "lib" not in _versions(users.alice, bare)

    local = workdir / "local"
    local.mkdir(mode=0o755)
    wheel = _wheel(local, "app", "2.0", requires=("lib>=1.0",))
    wheel.chmod(0o644)
    from_file = _venv(run, users.alice, workdir / "fromfile")
    _install(run, users.alice, group_store, from_file, index, str(wheel))
    assert _import(users.alice, from_file, "import app, lib; print(app.VALUE, lib.VALUE)") == "app lib"


def test_install_keeps_what_satisfies_the_request_and_upgrade_changes_that(
    run: Runner, users: Users, workdir: Path, group_store: Path, index: PyIndex
) -> None:
    """Acceptance 2: with lib 1.0 installed (and keeper, which needs lib<2), ``install app`` keeps lib 1.0;
    ``--upgrade-package lib`` and ``-U`` upgrade it, as uv does."""
    venv = _venv(run, users.alice, workdir / "v")
    _install(run, users.alice, group_store, venv, index, "lib==1.0", "keeper==1.0")
    report = _install(run, users.alice, group_store, venv, index, "app")
    assert [(d["name"], d["version"]) for d in report["installed"]] == [("app", "2.0")]
    assert _versions(users.alice, venv)["lib"] == "1.0"  # keeper still works

    other = _venv(run, users.alice, workdir / "other")
    _install(run, users.alice, group_store, other, index, "lib==1.0")
    _install(run, users.alice, group_store, other, index, "app")
    assert _versions(users.alice, other)["lib"] == "1.0"
    report = _install(run, users.alice, group_store, other, index, "--upgrade-package", "lib", "app")
    assert _versions(users.alice, other)["lib"] == "2.0"
    assert {(d["name"], d["version"]) for d in report["removed"]} == {("lib", "1.0")}

    third = _venv(run, users.alice, workdir / "third")
    _install(run, users.alice, group_store, third, index, "lib==1.0")
    _install(run, users.alice, group_store, third, index, "-U", "app")
    assert _versions(users.alice, third)["lib"] == "2.0"


def test_reinstall_links_again_what_is_there(
    run: Runner, users: Users, workdir: Path, group_store: Path, index: PyIndex
) -> None:
    venv = _venv(run, users.alice, workdir / "v")
    _install(run, users.alice, group_store, venv, index, "app==2.0", "lib==1.0")
    again = _install(run, users.alice, group_store, venv, index, "app==2.0", "lib==1.0")
    assert again["installed"] == [] and len(again["unchanged"]) == 2
    one = _install(run, users.alice, group_store, venv, index, "--reinstall-package", "lib", "app==2.0", "lib==1.0")
    assert [d["name"] for d in one["installed"]] == ["lib"]
    every = _install(run, users.alice, group_store, venv, index, "--reinstall", "app==2.0", "lib==1.0")
    assert sorted(d["name"] for d in every["installed"]) == ["app", "lib"]
    assert _import(users.alice, venv, "import app, lib; print(app.VALUE, lib.VALUE)") == "app lib"


def test_sync_takes_its_input_as_the_whole_set_and_names_what_it_lacks(
    run: Runner, users: Users, workdir: Path, group_store: Path, index: PyIndex
) -> None:
    """Point 2: ``sync app==2.0`` lacks lib: one line naming it, before anything is linked (the venv as it was);
    the complete set syncs, and removes what it does not name."""
    venv = _venv(run, users.alice, workdir / "v")
    _install(run, users.alice, group_store, venv, index, "keeper==1.0")
    before = snapshot(venv)
    done = run(users.alice, "--store", str(group_store), "-q", "sync", "--venv", str(venv), "--index-url",
               index.simple_url, "app==2.0", env={**ISOLATED, "UV_CACHE_DIR": str(workdir / "uvcache")})
    line = one_line_error(done)
    assert "app 2.0 requires lib" in line and "not" in line, line
    assert snapshot(venv) == before
    report = _install(run, users.alice, group_store, venv, index, "app==2.0", "lib==2.0", verb="sync")
    assert {d["name"] for d in report["removed"]} == {"keeper", "lib"}
    assert _versions(users.alice, venv) == {"app": "2.0", "lib": "2.0"}
