"""A root service's store as a user meets it (issue 20): sync, the quick check across users' hard links, edit,
uninstall, verify and doctor in a service-hardlinked venv, and the service account's gc once such a venv is gone.

The service is the real ``wheelstore serve`` run by root (the one that hard-links, see tests/test_service_link.py),
the users are real (wsalice, wsbob), the index is real (tests/pyindex.py).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Runner, Users
from .pyindex import PyIndex
from .test_service_link import ISOLATED, SITE, Service, _as, _link_mode, _start, _venv
from .wheelmaker import make_wheel

NAMES = ("tga", "tgb", "tgc")


@pytest.fixture
def index(workdir: Path) -> Iterator[PyIndex]:
    with PyIndex(log_file=workdir / "access.log") as served:
        yield served


@pytest.fixture
def service(run: Runner, workdir: Path, index: PyIndex, users: Users) -> Iterator[Service]:
    served = _start(run, workdir, index, None)
    yield served
    served.stop()


def _wheels(workdir: Path, index: PyIndex, files: int = 20) -> None:
    out = workdir / "files"
    out.mkdir(exist_ok=True)
    out.chmod(0o755)
    for name in NAMES:
        content = {f"{name}/__init__.py": f"VALUE = {name!r}\n".encode()}
        content.update({f"{name}/m{i}.py": f"X = {i}\n".encode() * 50 for i in range(files)})
        wheel = make_wheel(out, name, files=content)
        wheel.chmod(0o644)
        index.add(wheel)


def _ws(run: Runner, user: str, service: Service, *args: str) -> dict[str, object] | str:
    done = run(user, "--store", str(service.store), *args, env=ISOLATED, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout) if "--json" in args else done.stdout + done.stderr


def _imports(user: str, venv: Path, *names: str) -> str:
    code = "import importlib, sys; print(' '.join(importlib.import_module(n).VALUE for n in sys.argv[1:]))"
    done = _as(user, str(venv / "bin" / "python"), "-c", code, *names)
    return done.stdout.strip() if done.returncode == 0 else done.stderr


def _checked(run: Runner, user: str, service: Service) -> dict[str, int]:
    report = _ws(run, user, service, "verify", "--json")
    assert isinstance(report, dict) and report["ok"] is True, report
    checked = report["checked"]
    assert isinstance(checked, dict)
    return checked


def test_sync_through_the_service_makes_the_exact_set_and_removes_the_rest(
    run: Runner, users: Users, workdir: Path, index: PyIndex, service: Service
) -> None:
    _wheels(workdir, index, files=2)
    venv = _venv(run, users.alice, workdir / "v")
    _ws(run, users.alice, service, "sync", "--venv", str(venv), "--index-url", index.simple_url, "tga", "tgb")
    assert _imports(users.alice, venv, "tga", "tgb") == "tga tgb"
    assert _link_mode(venv, "tga") == "hardlink"
    _ws(run, users.alice, service, "sync", "--venv", str(venv), "--index-url", index.simple_url, "tgb", "tgc")
    assert _imports(users.alice, venv, "tgb", "tgc") == "tgb tgc"
    assert not (venv / SITE / "tga").exists() and not list((venv / SITE).glob("tga-*.dist-info"))
    alices = users.uid(users.alice)
    assert not [p for p in service.store.rglob("*") if p.lstat().st_uid == alices]  # she writes nothing there
    assert _checked(run, users.alice, service)["rehashed"] == 0


def test_other_users_hard_links_do_not_make_a_users_checks_rehash(
    run: Runner, users: Users, workdir: Path, index: PyIndex, service: Service
) -> None:
    _wheels(workdir, index)
    install = ("install", "--index-url", index.simple_url, *NAMES)
    vb = _venv(run, users.bob, workdir / "vb")
    _ws(run, users.bob, service, *install[:1], "--venv", str(vb), *install[1:])
    assert _checked(run, users.bob, service)["rehashed"] == 0
    for round_ in range(2):
        va = _venv(run, users.alice, workdir / f"va{round_}")
        _ws(run, users.alice, service, *install[:1], "--venv", str(va), *install[1:])
        assert _link_mode(va, "tga") == "hardlink"
        checked = _checked(run, users.bob, service)
        assert checked["rehashed"] == 0 and checked["relinked"] > 0, checked
        shutil.rmtree(va)
        assert _checked(run, users.bob, service)["rehashed"] == 0
        vb2 = _venv(run, users.bob, workdir / f"vb{round_ + 1}")
        _ws(run, users.bob, service, *install[:1], "--venv", str(vb2), *install[1:])
        assert _checked(run, users.bob, service)["rehashed"] == 0
        assert _checked(run, users.alice, service)["rehashed"] == 0
    assert _imports(users.bob, vb, *NAMES) == " ".join(NAMES)


def test_edit_undo_uninstall_verify_and_doctor_in_a_service_hardlinked_venv(
    run: Runner, users: Users, workdir: Path, index: PyIndex, service: Service
) -> None:
    _wheels(workdir, index, files=2)
    venv = _venv(run, users.alice, workdir / "v")
    _ws(run, users.alice, service, "install", "--venv", str(venv), "--index-url", index.simple_url, *NAMES)
    mine = venv / SITE / "tga" / "__init__.py"
    stored = mine.stat()
    assert stored.st_uid == 0 and stored.st_nlink >= 2
    _ws(run, users.alice, service, "edit", "--venv", str(venv), "tga")
    assert mine.stat().st_uid == users.uid(users.alice) and mine.stat().st_nlink == 1
    mine.write_text("VALUE = 'edited'\n")  # as root, for the test; her own file
    assert _imports(users.alice, venv, "tga") == "edited"
    _ws(run, users.alice, service, "edit", "--undo", "--venv", str(venv), "tga")
    # linked by the service again, as the install did (not a symlink, which the record would not say)
    assert not mine.is_symlink() and mine.lstat().st_ino == stored.st_ino, mine.lstat()
    assert mine.lstat().st_nlink == stored.st_nlink and _imports(users.alice, venv, "tga") == "tga"
    assert _link_mode(venv, "tga") == "hardlink"
    _ws(run, users.alice, service, "uninstall", "--venv", str(venv), "tgb")
    assert not (venv / SITE / "tgb").exists() and _imports(users.alice, venv, "tga", "tgc") == "tga tgc"
    assert mine.lstat().st_nlink == stored.st_nlink
    report = _ws(run, users.alice, service, "verify", "--full", "--json")
    assert isinstance(report, dict) and report["ok"] is True, report
    doctor = run(users.alice, "--store", str(service.store), "doctor", "--venv", str(venv), env=ISOLATED, timeout=300)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr


def test_the_service_accounts_gc_after_a_hardlinked_venv_is_deleted(
    run: Runner, users: Users, workdir: Path, index: PyIndex, service: Service
) -> None:
    _wheels(workdir, index, files=2)
    va, vb = _venv(run, users.alice, workdir / "va"), _venv(run, users.bob, workdir / "vb")
    _ws(run, users.alice, service, "install", "--venv", str(va), "--index-url", index.simple_url, *NAMES)
    _ws(run, users.bob, service, "install", "--venv", str(vb), "--index-url", index.simple_url, "tga")
    trees = {p.name for p in (service.store / "trees").iterdir()}
    shutil.rmtree(va)
    done = run(None, "--store", str(service.store), "gc", "--grace", "0", "--json", timeout=300)
    assert done.returncode == 0, done.stderr
    left = {p.name for p in (service.store / "trees").iterdir()}
    assert left < trees and left, (trees, left)
    manifests = {p.stem for p in (service.store / "manifests").glob("*.json")}
    assert manifests == left, (manifests, left)
    assert _imports(users.bob, vb, "tga") == "tga"
    assert not list(service.store.glob("staging/*"))
    report = _ws(run, users.bob, service, "verify", "--json")
    assert isinstance(report, dict) and report["ok"] is True, report
    stats = run(None, "--store", str(service.store), "stats", "--json", env=ISOLATED)
    assert stats.returncode == 0, stats.stderr
    users_ = json.loads(stats.stdout)["users"]
    assert [u["user"] for u in users_] == [users.bob] and users_[0]["exclusive_units"] >= 1, users_
