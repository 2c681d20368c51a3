"""gc and a store service's roots (issue 20): the roots the service writes for its users are the ones gc, stats and
doctor read in a service store (and only there), and an install through the service pins what it is about to link,
since it takes no gc lock.

Everything is real: ``wheelstore serve`` as its dedicated account (wssvc), users wsalice and wsbob installing through
it from a local index (its access log counts fetches), ``wheelstore gc --grace 0`` run by the service account and by
root, and installs paused at a checkpoint (:mod:`wheelstore.base.hooks`) while a gc runs.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from . import test_service_client as svc
from .conftest import Runner, Users, _ensure_user
from .pyindex import PyIndex

WHEEL = "keptpkg-1.0-py3-none-any.whl"


@pytest.fixture
def index(workdir: Path) -> Iterator[PyIndex]:
    with PyIndex(log_file=workdir / "access.log") as served:
        yield served


@pytest.fixture
def service(run: Runner, users: Users, workdir: Path, index: PyIndex) -> Iterator[svc.Service]:
    _ensure_user(svc.SERVICE_USER, ())
    store, sock = svc._init_service_store(run, workdir, index)
    served = svc._serve(run, store, sock, index)
    yield served
    served.stop()


def _gc(run: Runner, user: str | None, store: Path) -> dict[str, object]:
    done = run(user, "--store", str(store), "gc", "--grace", "0", "--json", timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert isinstance(report, dict)
    return report


def _removed(report: dict[str, object]) -> set[str]:
    units = report["removed"]
    assert isinstance(units, list)
    return {u["key"] for u in units}


def _key_of(store: Path, wheel: str) -> str:
    """The key of the tree the store holds for ``wheel`` (read from its manifest)."""
    keys = [p.stem for p in (store / "manifests").glob("*.json") if json.loads(p.read_text()).get("wheel") == wheel]
    assert len(keys) == 1, keys
    return keys[0]


def _roots(store: Path, user: str | None = None) -> list[dict[str, Any]]:
    found = [json.loads(p.read_text()) for p in sorted((store / "roots").glob("*/*.json"))]
    return [r for r in found if user is None or r["user"] == user]


def _wait_for(what: Callable[[], bool], why: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, f"timed out waiting for {why}"
        time.sleep(0.05)


def _markers(workdir: Path) -> Path:
    markers = workdir / "markers"
    markers.mkdir()
    markers.chmod(0o777)
    return markers


def _release(markers: Path, proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Let a paused install go on, each time it reaches its checkpoint, until it ends."""
    deadline = time.monotonic() + 300
    while proc.poll() is None:
        assert time.monotonic() < deadline, "the install did not end"
        for marker in markers.iterdir():
            marker.unlink(missing_ok=True)
        time.sleep(0.05)
    return proc.communicate()


def _unreferenced_tree(run: Runner, users: Users, workdir: Path, index: PyIndex, service: svc.Service) -> str:
    """A tree of keptpkg, published through the service for alice's venv, which is then deleted: its key."""
    index.add(svc._wheel(svc._files(workdir), "keptpkg"))
    old = svc._venv(run, users.alice, workdir / "old")
    assert svc._install(run, users.alice, service.store, old, index, "keptpkg").returncode == 0
    shutil.rmtree(old)
    return _key_of(service.store, WHEEL)


def _claim(uid: int, user: str, key: str) -> dict[str, object]:
    """A root holding ``key`` for a venv on another node's local disk: believed, if gc reads it at all."""
    return {"format": 1, "uid": uid, "user": user, "venv": "/elsewhere/venv", "node": "another-node",
            "host": "elsewhere", "fs": "local", "fs_type": "ext4", "anchor": [],
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
            "dists": [{"name": "x", "version": "1.0", "dist_info": "lib/x-1.0.dist-info", "key": key, "pyc": None}]}


# -- which roots gc reads --------------------------------------------------------------------------------------------


def test_gc_and_stats_count_the_roots_the_service_writes_until_the_venv_is_gone(
    run: Runner, users: Users, workdir: Path, index: PyIndex, service: svc.Service
) -> None:
    files = svc._files(workdir)
    for name in ("apkg", "bpkg"):
        index.add(svc._wheel(files, name))
    va, vb = svc._venv(run, users.alice, workdir / "va"), svc._venv(run, users.bob, workdir / "vb")
    assert svc._install(run, users.alice, service.store, va, index, "apkg").returncode == 0
    assert svc._install(run, users.bob, service.store, vb, index, "bpkg").returncode == 0
    a, b = (_key_of(service.store, f"{n}-1.0-py3-none-any.whl") for n in ("apkg", "bpkg"))
    svc_uid = pwd.getpwnam(svc.SERVICE_USER).pw_uid
    assert {(p.parent.stat().st_uid, p.stat().st_uid) for p in (service.store / "roots").glob("*/*.json")} == {
        (svc_uid, svc_uid)}  # written by the service, for the users its directories are named for

    for who in (svc.SERVICE_USER, None):  # the service account's gc, and root's
        report = _gc(run, who, service.store)
        assert not {a, b} & _removed(report), (who, report["removed"])
        assert {a, b} <= set(os.listdir(service.store / "trees"))
    stats = json.loads(run(svc.SERVICE_USER, "--store", str(service.store), "stats", "--json").stdout)
    assert sorted((u["user"], u["venvs"]) for u in stats["users"]) == [(users.alice, 1), (users.bob, 1)]
    assert sorted(v["venv"] for v in stats["venvs"]) == sorted(os.path.realpath(v) for v in (va, vb))

    shutil.rmtree(va)  # the root check finds the venv gone: its root holds nothing
    report = _gc(run, svc.SERVICE_USER, service.store)
    assert a in _removed(report) and b not in _removed(report), report["removed"]
    assert [r["user"] for r in _roots(service.store)] == [users.bob]  # alice's stale root swept by the service
    assert svc._import(users.bob, vb, "import bpkg; print(bpkg.VALUE)") == "bpkg"


def test_a_service_root_counts_only_for_the_uid_its_directory_is_named_for(
    run: Runner, users: Users, workdir: Path, index: PyIndex, service: svc.Service
) -> None:
    """In the service's directory for alice, a root saying it is bob's is nobody's; one saying alice's holds."""
    key = _unreferenced_tree(run, users, workdir, index, service)
    svc_pw, alice = pwd.getpwnam(svc.SERVICE_USER), pwd.getpwnam(users.alice).pw_uid
    (mine,) = [d for d in (service.store / "roots").iterdir() if d.name.startswith(f"{alice}-")]
    forged = mine / "forged.json"
    forged.write_text(json.dumps(_claim(pwd.getpwnam(users.bob).pw_uid, users.bob, key)))
    os.chown(forged, svc_pw.pw_uid, svc_pw.pw_gid)
    assert key in _removed(_gc(run, svc.SERVICE_USER, service.store))
    assert svc._install(run, users.alice, service.store, svc._venv(run, users.alice, workdir / "again"), index,
                        "keptpkg").returncode == 0
    shutil.rmtree(workdir / "again")
    forged.write_text(json.dumps(_claim(alice, users.alice, key)))
    os.chown(forged, svc_pw.pw_uid, svc_pw.pw_gid)
    assert key not in _removed(_gc(run, svc.SERVICE_USER, service.store))


def test_a_root_the_group_stores_owner_writes_for_a_member_is_ignored(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """In a group store the rule of a service store does not hold: its owner (any member, as well) may make
    ``roots/<bob's uid>-<random>/``, so a root there speaks for nobody, and gc removes what it claims."""
    wheel = svc._wheel(svc._files(workdir), "plantpkg")
    assert run(users.alice, "--store", str(group_store), "realize", str(wheel)).returncode == 0
    key = _key_of(group_store, wheel.name)
    bob = pwd.getpwnam(users.bob).pw_uid
    planted = group_store / "roots" / f"{bob}-{'0' * 16}"
    text = json.dumps(_claim(bob, users.bob, key))
    script = f"import os; os.mkdir({str(planted)!r}, 0o755); open({str(planted / 'x.json')!r}, 'w').write({text!r})"
    made = subprocess.run(["runuser", "-u", users.alice, "--", "python3", "-c", script], capture_output=True,
                          text=True)
    assert made.returncode == 0, made.stderr
    report = _gc(run, users.alice, group_store)
    assert key in _removed(report), report


# -- an install through the service, racing a gc ---------------------------------------------------------------------


def test_a_gc_after_the_pin_keeps_what_a_client_install_is_linking(
    run: Runner, users: Users, workdir: Path, index: PyIndex, service: svc.Service
) -> None:
    key = _unreferenced_tree(run, users, workdir, index, service)
    venv = svc._venv(run, users.bob, workdir / "v")
    markers = _markers(workdir)
    install = run.popen(users.bob, "--store", str(service.store), "install", "--venv", str(venv), "--index-url",
                        index.simple_url, "keptpkg", env={**svc.ISOLATED, "WHEELSTORE_TEST_HOOK": "linking=wait",
                                                          "WHEELSTORE_TEST_HOOK_DIR": str(markers)})
    _wait_for(lambda: any(markers.iterdir()) or install.poll() is not None, "the install to reach linking")
    assert install.poll() is None, install.communicate()
    (pin,) = _roots(service.store, users.bob)
    assert pin["user"] == users.bob and key in pin["linking"] and pin["dists"] == []
    for who in (svc.SERVICE_USER, None):  # no lock to wait for: the client holds none
        assert key not in _removed(_gc(run, who, service.store)), who
    out, err = _release(markers, install)
    assert install.returncode == 0, err
    assert svc._import(users.bob, venv, "import keptpkg; print(keptpkg.VALUE)") == "keptpkg"
    assert len(index.downloads(WHEEL)) == 1  # linked from the tree the pin kept
    (final,) = _roots(service.store, users.bob)
    assert final["linking"] == [] and [d["key"] for d in final["dists"]] == [key]


def test_a_gc_before_the_pin_has_the_client_publish_the_tree_again(
    run: Runner, users: Users, workdir: Path, index: PyIndex, service: svc.Service
) -> None:
    key = _unreferenced_tree(run, users, workdir, index, service)
    venv = svc._venv(run, users.bob, workdir / "v")
    markers = _markers(workdir)
    install = run.popen(users.bob, "--store", str(service.store), "install", "--venv", str(venv), "--index-url",
                        index.simple_url, "keptpkg", env={**svc.ISOLATED, "WHEELSTORE_TEST_HOOK": "pinning=wait",
                                                          "WHEELSTORE_TEST_HOOK_DIR": str(markers)})
    _wait_for(lambda: any(markers.iterdir()) or install.poll() is not None, "the install to reach pinning")
    assert install.poll() is None, install.communicate()
    assert key in _removed(_gc(run, svc.SERVICE_USER, service.store))  # found by the plan, not pinned yet
    assert key not in os.listdir(service.store / "trees")
    out, err = _release(markers, install)
    assert install.returncode == 0, err
    assert svc._import(users.bob, venv, "import keptpkg; print(keptpkg.VALUE)") == "keptpkg"
    assert len(index.downloads(WHEEL)) == 2  # published again, by the service
    assert _key_of(service.store, WHEEL) == key and key in os.listdir(service.store / "trees")
    (final,) = _roots(service.store, users.bob)
    assert [d["key"] for d in final["dists"]] == [key]
