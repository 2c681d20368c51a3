"""Downloads into the store: checked before anything is published, retried when transient, and exactly once in total
however many processes of however many users ask at the same time."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wheelstore.base.errors import FetchError, HashMismatch
from wheelstore.base.interpreter import Interpreter
from wheelstore.base.progress import LineReporter, reporting
from wheelstore.fetch.download import download, fetch_trees, obtain, remove_download
from wheelstore.fetch.http import Http
from wheelstore.fetch.index import RemoteFile
from wheelstore.fetch.sources import Sources
from wheelstore.store import staging
from wheelstore.store.store import Store

from . import conftest
from .conftest import Runner, Users, one_line_error, snapshot
from .pyindex import PyIndex
from .wheelmaker import big_files, make_wheel


@pytest.fixture
def index(workdir: Path) -> Iterator[PyIndex]:
    with PyIndex(log_file=workdir / "access.log") as served:
        yield served


def _wheel(workdir: Path, name: str, version: str = "1.0", size: int = 20) -> Path:
    path = make_wheel(workdir, name, version, files=big_files(size, 2000, prefix=name))
    os.chmod(path, 0o644)
    return path


def _fetch(run: Runner, tool: Path, user: str, store: Path, index: PyIndex, *requirements: str,
           umask: int = 0o022, retries: int = 5, jobs: int = 4,
           env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``python -m wheelstore.fetch.download`` from the installed tool, as ``user``: index pages, choice, downloads,
    realize."""
    kwargs = run.popen_kwargs(user, umask)  # user, group, extra_groups, umask
    proc = subprocess.Popen(
        [str(tool.parent / "python"), "-m", "wheelstore.fetch.download", "--store", str(store), "--index-url",
         index.simple_url, "--quiet", "--retries", str(retries), "--jobs", str(jobs), *requirements],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=run.env(user, env), cwd="/",
        **kwargs,
    )
    conftest._SPAWNED.append(proc)
    return proc


def _done(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _remote(index: PyIndex, wheel: Path, **hashes: str) -> RemoteFile:
    sha = hashes.get("sha256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    return RemoteFile(wheel.name, index.file_url(wheel.name), {"sha256": sha}, size=wheel.stat().st_size)


# -- nothing published from bad bytes -------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["wrong_bytes", "cut"])
def test_bad_download_publishes_nothing(
    run: Runner, users: Users, tool: Path, workdir: Path, group_store: Path, index: PyIndex, fault: str
) -> None:
    wheel = _wheel(workdir, "victim")
    index.add(wheel, **({"wrong_bytes": True} if fault == "wrong_bytes" else {"cut": -1}))
    before = snapshot(group_store)
    result = _done(_fetch(run, tool, users.alice, group_store, index, "victim"))
    line = one_line_error(result)
    assert wheel.name in line
    assert ("sha256" in line) if fault == "wrong_bytes" else ("cut off" in line)
    assert snapshot(group_store) == before  # no tree, no manifest, no staging, no lock left behind
    hits = index.downloads(wheel.name, status=None)
    if fault == "cut":  # tried again from the start, then given up
        assert len(hits) == 3 and all(0 < h.sent < wheel.stat().st_size for h in hits)
    else:
        assert len(hits) == 1


def test_cut_once_then_complete(
    run: Runner, users: Users, tool: Path, workdir: Path, group_store: Path, index: PyIndex
) -> None:
    wheel = _wheel(workdir, "flaky")
    index.add(wheel, cut=1)
    result = _done(_fetch(run, tool, users.bob, group_store, index, "flaky", umask=0o077))
    assert result.returncode == 0, result.stderr
    assert [h.sent for h in index.downloads(wheel.name, status=None)] == [
        wheel.stat().st_size // 2, wheel.stat().st_size]
    assert os.listdir(group_store / "staging") == []


def test_503_twice_then_success(
    run: Runner, users: Users, tool: Path, workdir: Path, group_store: Path, index: PyIndex
) -> None:
    wheel = _wheel(workdir, "busy")
    index.add(wheel, fail=2)
    result = _done(_fetch(run, tool, users.alice, group_store, index, "busy"))
    assert result.returncode == 0, result.stderr
    (report,) = json.loads(result.stdout)
    assert Path(report["tree"]).is_dir()
    assert [h.status for h in index.downloads(wheel.name, status=None)] == [503, 503, 200]
    log = (index.log_file or Path()).read_text().splitlines()
    assert [line.split()[2] for line in log if "/files/" in line] == ["503", "503", "200"]


def test_503_forever_is_a_clear_error(
    run: Runner, users: Users, tool: Path, workdir: Path, group_store: Path, index: PyIndex
) -> None:
    wheel = _wheel(workdir, "down", size=2)
    index.add(wheel, fail=1000)
    before = snapshot(group_store)
    line = one_line_error(_done(_fetch(run, tool, users.alice, group_store, index, "down", retries=2)))
    assert "HTTP 503 (after 2 retries)" in line and wheel.name in line
    assert len(index.downloads(wheel.name, status=503)) == 3
    assert snapshot(group_store) == before


# -- exactly once ---------------------------------------------------------------------------------------------------


def test_concurrent_cold_fetches_download_each_wheel_once(
    run: Runner, users: Users, tool: Path, workdir: Path, group_store: Path, index: PyIndex
) -> None:
    names = [f"crowd{i}" for i in range(5)]
    wheels = {}
    for name in names:
        wheels[name] = _wheel(workdir, name, size=60)
        index.add(wheels[name], delay=0.2)  # slow enough that the processes surely overlap
    # 8 processes of two users under three umasks, each asking for an overlapping set of 4 of the 5
    asks = [[names[(i + k) % 5] for k in range(4)] for i in range(8)]
    procs = [
        _fetch(run, tool, users.alice if i % 2 else users.bob, group_store, index, *asks[i],
               umask=(0o022, 0o077, 0o002)[i % 3])
        for i in range(8)
    ]
    results = [_done(p) for p in procs]
    assert [r.returncode for r in results] == [0] * 8, [r.stderr for r in results]
    for wheel in wheels.values():
        assert len(index.downloads(wheel.name)) == 1, index.downloads(wheel.name)
    log = (index.log_file or Path()).read_text().splitlines()
    downloaded = [line.split()[1] for line in log if line.startswith("GET /files/")]
    assert sorted(downloaded) == sorted(f"/files/{w.name}" for w in wheels.values())  # the log file says the same
    store = Store.open(group_store)
    trees = {t.manifest.wheel: t for t in store.trees()}
    assert set(trees) == {w.name for w in wheels.values()}
    for ask, result in zip(asks, results, strict=True):
        reports = json.loads(result.stdout)
        assert [r["filename"].split("-")[0] for r in reports] == ask
        for r in reports:
            assert r["tree"] == str(trees[r["filename"]].path)
    assert os.listdir(group_store / "staging") == []
    assert not [n for n in os.listdir(group_store / "trees") if n.startswith(".")]


def test_concurrent_fetchers_split_the_set_instead_of_queueing(
    run: Runner, users: Users, tool: Path, workdir: Path, group_store: Path, index: PyIndex
) -> None:
    """P2's lockstep: a process must not wait for a wheel another process is fetching while others are left to do.

    alice fetches the largest wheel and stops, holding its locks. bob, with one download at a time, asks for all four:
    he puts the busy one aside, publishes the other three while alice is still stopped, and only then waits for hers.
    """
    wheels = [_wheel(workdir, "held", size=40), *(_wheel(workdir, f"free{i}", size=5) for i in range(3))]
    for wheel in wheels:
        index.add(wheel)
    markers = workdir / "markers"
    markers.mkdir()
    os.chmod(markers, 0o777)
    hook = {"WHEELSTORE_TEST_HOOK": "locked=wait", "WHEELSTORE_TEST_HOOK_DIR": str(markers)}
    holder = _fetch(run, tool, users.alice, group_store, index, "held", env=hook)
    marker = _wait_for_file(markers, holder)
    sharer = _fetch(run, tool, users.bob, group_store, index, "held", "free0", "free1", "free2", jobs=1)
    store = Store.open(group_store)
    shas = {w.name.split("-")[0]: hashlib.sha256(w.read_bytes()).hexdigest() for w in wheels}
    deadline = time.monotonic() + 60
    while not all(store.has(shas[f"free{i}"]) for i in range(3)):
        assert sharer.poll() is None, _done(sharer).stderr
        assert time.monotonic() < deadline, "bob queued behind alice's wheel instead of fetching the others"
        time.sleep(0.02)
    assert not store.has(shas["held"]) and sharer.poll() is None  # bob now waits for alice's wheel, and only for it
    marker.unlink()  # alice goes on
    assert _done(holder).returncode == 0
    result = _done(sharer)
    assert result.returncode == 0, result.stderr
    assert [r["filename"].split("-")[0] for r in json.loads(result.stdout)] == ["held", "free0", "free1", "free2"]
    for wheel in wheels:
        assert len(index.downloads(wheel.name)) == 1, index.downloads(wheel.name)
    trees = {name: store.lookup(sha) for name, sha in shas.items()}
    publishers = {name: tree.manifest.publisher_uid if tree else None for name, tree in trees.items()}
    assert publishers == {"held": users.uid(users.alice), **{f"free{i}": users.uid(users.bob) for i in range(3)}}


def _wait_for_file(directory: Path, proc: subprocess.Popen[str], timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while not (found := list(directory.iterdir())):
        assert proc.poll() is None, _done(proc).stderr
        assert time.monotonic() < deadline, f"nothing appeared in {directory}"
        time.sleep(0.02)
    return found[0]


def test_warm_store_never_touches_the_network(
    run: Runner, users: Users, tool: Path, workdir: Path, group_store: Path, index: PyIndex
) -> None:
    wheel = _wheel(workdir, "warm")
    index.add(wheel)
    assert _done(_fetch(run, tool, users.alice, group_store, index, "warm")).returncode == 0
    again = _done(_fetch(run, tool, users.bob, group_store, index, "warm", umask=0o077))
    assert again.returncode == 0, again.stderr
    assert len(index.downloads(wheel.name, status=None)) == 1  # only the index page was read again
    with Store.open(group_store) as store:  # and the API with the network forbidden
        (tree,) = fetch_trees(store, [_remote(index, wheel)], Http(offline=True))
        assert tree.manifest.wheel == wheel.name


# -- the API, in process --------------------------------------------------------------------------------------------


def test_api_fetches_in_order_and_reports(workdir: Path, group_store: Path, index: PyIndex) -> None:
    wheels = [_wheel(workdir, f"api{i}", size=3) for i in range(3)]
    for w in wheels:
        index.add(w)
    files = [_remote(index, w) for w in wheels]
    out = io.StringIO()
    with Store.open(group_store) as store:
        with reporting(LineReporter(out)):
            trees = fetch_trees(store, [*files, files[0]], Http(), jobs=2)
        assert [t.manifest.wheel for t in trees] == [*(w.name for w in wheels), wheels[0].name]
    # one line per download (the duplicate was fetched once), then the phase's
    *lines, summary = out.getvalue().splitlines()
    assert sorted(line.split(" (")[0] for line in lines) == sorted(f"downloaded {w.name}" for w in wheels)
    assert summary.startswith("unpacked 3 trees in "), summary


def test_api_wrong_hash_from_the_lock(workdir: Path, group_store: Path, index: PyIndex) -> None:
    wheel = _wheel(workdir, "locked", size=3)
    index.add(wheel)
    before = snapshot(group_store)
    with Store.open(group_store) as store:
        with pytest.raises(HashMismatch, match=f"{wheel.name} from {index.file_url(wheel.name)} has sha256"):
            fetch_trees(store, [_remote(index, wheel, sha256="0" * 64)], Http())
        with pytest.raises(FetchError, match=f"{wheel.name} .* has no sha256 hash"):
            fetch_trees(store, [RemoteFile(wheel.name, index.file_url(wheel.name))], Http())
        with pytest.raises(FetchError, match="not a sha256 hex digest"):  # it would name a store entry
            fetch_trees(store, [_remote(index, wheel, sha256="../../config")], Http())
        wrong_size = RemoteFile(wheel.name, index.file_url(wheel.name), _remote(index, wheel).hashes, size=10)
        with pytest.raises(FetchError, match="longer than the 10 bytes"):
            fetch_trees(store, [wrong_size], Http())
    assert snapshot(group_store) == before


def test_api_local_wheel_is_realized_in_place(workdir: Path, group_store: Path) -> None:
    wheel = _wheel(workdir, "local", size=3)
    with Store.open(group_store) as store:
        (tree,) = fetch_trees(store, [RemoteFile(wheel.name, wheel.as_uri())], Http(offline=True))
        assert tree.key == hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert os.listdir(group_store / "staging") == []


def test_api_download_of_an_sdist(workdir: Path, group_store: Path, index: PyIndex) -> None:
    sdist = workdir / "thing-1.0.tar.gz"
    sdist.write_bytes(os.urandom(5000))
    index.add(sdist)
    with Store.open(group_store) as store:
        path = download(store, _remote(index, sdist), Http())
        assert path.name == sdist.name and path.parent.parent == group_store / "staging"
        assert path.read_bytes() == sdist.read_bytes()
        assert (path.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777) == (0o600, 0o700)
        remove_download(store, path)
    assert os.listdir(group_store / "staging") == []


def test_killed_downloader_leaves_only_stale_staging(
    run: Runner, users: Users, tool: Path, workdir: Path, group_store: Path, index: PyIndex
) -> None:
    """kill -9 mid-download: the lock dies with it, the next process publishes, the leftover is recognisably stale."""
    wheel = _wheel(workdir, "killed")
    served = index.add(wheel, delay=60)  # the body never comes while the first process waits for it
    victim = _fetch(run, tool, users.alice, group_store, index, "killed")
    deadline = time.monotonic() + 60
    while not os.listdir(group_store / "staging"):  # its download has begun
        assert time.monotonic() < deadline and victim.poll() is None, victim.communicate()
        time.sleep(0.02)
    victim.kill()
    victim.communicate()
    served.delay = 0
    result = _done(_fetch(run, tool, users.bob, group_store, index, "killed", umask=0o077))
    assert result.returncode == 0, result.stderr
    with Store.open(group_store) as store:
        (entry,) = staging.entries(store)
        assert (entry.kind, entry.stale, entry.state) == ("download", True, "free")
        assert f"pid {victim.pid} on {os.uname().nodename}" in entry.why
        assert entry.key == hashlib.sha256(wheel.read_bytes()).hexdigest()
        assert [t.manifest.wheel for t in store.trees()] == [wheel.name]


def test_a_file_name_that_is_a_path_is_refused(group_store: Path, index: PyIndex) -> None:
    with Store.open(group_store) as store, pytest.raises(FetchError, match="not a wheel or sdist file name"):
        download(store, RemoteFile("../evil-1.0.tar.gz", index.file_url("x"), {"sha256": "0" * 64}), Http())
    assert os.listdir(group_store / "staging") == []


@pytest.mark.network
def test_pypi_json_and_download(tmp_path: Path) -> None:
    """The real registry: PEP 691 JSON from pypi.org, a download from its CDN, published as a tree."""
    from wheelstore.base.interpreter import Interpreter
    from wheelstore.fetch.index import IndexClient
    from wheelstore.fetch.sources import Sources

    http = Http()
    best = IndexClient(Sources(), http).best_wheel("six", "==1.17.0", Interpreter.inspect(sys.executable))
    assert best is not None and best.size and best.sha256 and best.url.startswith("https://")
    with Store.init(tmp_path / "store") as store:
        (tree,) = fetch_trees(store, [best], http)
        assert tree.manifest.wheel == best.filename and (tree.path / "six.py").is_file()


def test_obtain_wheels_and_an_sdist_over_http(
    workdir: Path, index: PyIndex, kit: tuple[Path, Path, Sources]
) -> None:
    """``obtain``: wheels fetched, the sdist downloaded from the index and built once (the build is test_build's)."""
    sdist, markers, sources = kit
    wheel = _wheel(workdir, "beside", size=3)
    index.add(wheel)
    index.add(sdist)
    files = [_remote(index, sdist), _remote(index, wheel)]
    with Store.init(workdir / "private") as store:
        trees = obtain(store, files, Interpreter.inspect("/usr/bin/python3"), sources, http=Http())
        assert [t.manifest.name for t in trees] == ["tinypkg", "beside"]
        assert len(os.listdir(markers)) == 1
        assert obtain(store, files, Interpreter.inspect("/usr/bin/python3"), sources, http=Http()) == trees
        assert len(os.listdir(markers)) == 1  # built once
        assert os.listdir(store.root / "staging") == []
