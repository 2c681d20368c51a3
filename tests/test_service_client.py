"""The client side of the store service (issue 20): installs, ``realize`` and ``verify --repair`` on a service store
ask the service, create nothing in the store, and say so clearly when the service is down.

The service is the real ``wheelstore serve``, started by the test as a dedicated account (``wssvc``) over a store it
made with ``init --service``; the users are real (wsalice, wsbob), the index is real (tests/pyindex.py, with its
access log). A small stand-in service, a socket speaking the protocol, is used only for the client's own error paths
(a refusal and its hint).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wheelstore.service import protocol

from .conftest import SYSTEM_PYTHON, Runner, Users, _ensure_user, flit_core_wheel, one_line_error, snapshot
from .pyindex import PyIndex
from .wheelmaker import make_sdist, make_wheel

#: no pip or uv configuration of this machine: only what a test names
ISOLATED = {"PIP_CONFIG_FILE": os.devnull, "UV_NO_CONFIG": "1"}
SERVICE_USER = "wssvc"


class Service:
    """A service store and its running ``wheelstore serve``, as its dedicated account."""

    def __init__(self, store: Path, socket_path: Path, proc: subprocess.Popen[str]) -> None:
        self.store, self.socket, self.proc = store, socket_path, proc

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()


@pytest.fixture
def index(workdir: Path) -> Iterator[PyIndex]:
    with PyIndex(log_file=workdir / "access.log") as served:
        yield served


@pytest.fixture(scope="session")
def service_user(users: Users) -> str:
    _ensure_user(SERVICE_USER, ())
    return SERVICE_USER


def _init_service_store(run: Runner, workdir: Path, index: PyIndex) -> tuple[Path, Path]:
    """A service store made by the service account, allowed to fetch from the test's index."""
    store, sock = workdir / "store", workdir / "svc.sock"
    made = run(SERVICE_USER, "init", str(store), "--service", "--socket", str(sock),
               env={**ISOLATED, "UV_INDEX_URL": index.simple_url, "PIP_INDEX_URL": index.simple_url})
    assert made.returncode == 0, made.stderr
    config = store / "config.toml"
    st = config.stat()
    text = config.read_text()
    # files are served under /files/, beside /simple: the whole index host is the allowed prefix
    text = re.sub(r"(?m)^indexes = .*$", f"indexes = [{json.dumps(index.url + '/')}]", text)
    config.write_text(text)
    os.chown(config, st.st_uid, st.st_gid)
    return store, sock


def _serve(run: Runner, store: Path, sock: Path, index: PyIndex) -> Service:
    proc = run.popen(SERVICE_USER, "serve", "--store", str(store),
                     env={**ISOLATED, "UV_INDEX_URL": index.simple_url, "PIP_INDEX_URL": index.simple_url})
    deadline = time.monotonic() + 30
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"wheelstore serve did not start: {err or out}")
        time.sleep(0.05)
    return Service(store, sock, proc)


@pytest.fixture
def service(run: Runner, workdir: Path, index: PyIndex, service_user: str) -> Iterator[Service]:
    store, sock = _init_service_store(run, workdir, index)
    served = _serve(run, store, sock, index)
    yield served
    served.stop()


def _wheel(directory: Path, name: str, version: str = "1.0", requires: tuple[str, ...] = ()) -> Path:
    path = make_wheel(directory, name, version, files={f"{name}/__init__.py": f"VALUE = {name!r}\n".encode()},
                      requires=requires)
    path.chmod(0o644)
    return path


def _files(workdir: Path) -> Path:
    files = workdir / "files"
    files.mkdir(exist_ok=True)
    files.chmod(0o755)
    return files


def _venv(run: Runner, user: str, path: Path) -> Path:
    made = run(user, "venv", str(path), "--python", SYSTEM_PYTHON)
    assert made.returncode == 0, made.stderr
    return path


def _import(user: str, venv: Path, code: str) -> str:
    done = subprocess.run(["runuser", "-u", user, "--", str(venv / "bin" / "python"), "-c", code],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _install(run: Runner, user: str, store: Path, venv: Path, index: PyIndex, *reqs: str,
             ) -> subprocess.CompletedProcess[str]:
    return run(user, "--store", str(store), "install", "--venv", str(venv), "--index-url", index.simple_url, *reqs,
               env=ISOLATED, timeout=300)


def _owned_by_service(store: Path) -> None:
    """Every published entry is the service account's and nobody else may write it."""
    import pwd

    uid = pwd.getpwnam(SERVICE_USER).pw_uid
    for area in ("trees", "manifests"):
        for p in [store / area, *(store / area).rglob("*")]:
            st = p.lstat()
            assert st.st_uid == uid, (p, st.st_uid)
            if not p.is_symlink():
                assert not st.st_mode & 0o022, (p, oct(st.st_mode))


# -- end to end, with the real service -------------------------------------------------------------------------------


def test_two_users_install_overlapping_sets_at_once_each_file_fetched_once(
    run: Runner, users: Users, workdir: Path, index: PyIndex, service: Service
) -> None:
    files = _files(workdir)
    for name in ("sharedpkg", "alicepkg", "bobpkg"):
        index.add(_wheel(files, name, requires=("sharedpkg",) if name != "sharedpkg" else ()))
    va, vb = _venv(run, users.alice, workdir / "va"), _venv(run, users.bob, workdir / "vb")
    procs = [run.popen(u, "--store", str(service.store), "install", "--venv", str(v), "--index-url",
                       index.simple_url, pkg, env=ISOLATED)
             for u, v, pkg in ((users.alice, va, "alicepkg"), (users.bob, vb, "bobpkg"))]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert _import(users.alice, va, "import alicepkg, sharedpkg; print(alicepkg.VALUE)") == "alicepkg"
    assert _import(users.bob, vb, "import bobpkg, sharedpkg; print(bobpkg.VALUE)") == "bobpkg"
    for name in ("sharedpkg", "alicepkg", "bobpkg"):
        assert len(index.downloads(f"{name}-1.0-py3-none-any.whl")) == 1, name
    _owned_by_service(service.store)
    # each venv is a gc root, written by the service for its user
    roots = [json.loads(p.read_text()) for p in (service.store / "roots").rglob("*.json")]
    assert {(r["user"], r["venv"]) for r in roots} == {(users.alice, os.path.realpath(va)),
                                                      (users.bob, os.path.realpath(vb))}


def test_a_client_install_creates_nothing_in_the_store_itself(
    run: Runner, users: Users, workdir: Path, index: PyIndex, service: Service
) -> None:
    import pwd

    files = _files(workdir)
    index.add(_wheel(files, "onepkg"))
    local = _wheel(files, "localpkg")
    venv = _venv(run, users.alice, workdir / "v")
    done = run(users.alice, "--store", str(service.store), "install", "--venv", str(venv), "--index-url",
               index.simple_url, "onepkg", str(local), env=ISOLATED, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr, done.stderr  # the store lock taken through a read-only fd
    alice = pwd.getpwnam(users.alice).pw_uid
    made_by_alice = [k for k, v in snapshot(service.store).items() if v[2] == alice]
    assert made_by_alice == []
    assert _import(users.alice, venv, "import onepkg, localpkg; print(onepkg.VALUE, localpkg.VALUE)") == \
        "onepkg localpkg"
    _owned_by_service(service.store)


def test_service_down_is_one_line_naming_the_socket_and_the_serve_command(
    run: Runner, users: Users, workdir: Path, index: PyIndex, service: Service
) -> None:
    files = _files(workdir)
    index.add(_wheel(files, "downpkg"))
    service.stop()
    venv = _venv(run, users.alice, workdir / "v")
    before, store_before = snapshot(venv), snapshot(service.store)
    done = _install(run, users.alice, service.store, venv, index, "downpkg")
    error = one_line_error(done)
    assert error.startswith(f"error: the store service for {service.store} is not running"), error
    assert str(service.socket) in error and f"wheelstore serve --store {service.store}" in error, error
    assert snapshot(venv) == before
    assert snapshot(service.store) == store_before


def test_realize_and_an_sdist_install_upload_their_wheel(
    run: Runner, users: Users, workdir: Path, index: PyIndex, service: Service
) -> None:
    files = _files(workdir)
    wheel = _wheel(files, "mywheel")
    done = run(users.alice, "--store", str(service.store), "realize", str(wheel))
    assert done.returncode == 0, done.stderr
    assert "published mywheel 1.0" in done.stdout, done.stdout
    markers = workdir / "markers"
    markers.mkdir()
    markers.chmod(0o1777)
    index.add(make_sdist(files, markers))
    index.add(flit_core_wheel())
    venv = _venv(run, users.bob, workdir / "v")
    built = _install(run, users.bob, service.store, venv, index, "tinypkg")
    assert built.returncode == 0, built.stderr
    assert _import(users.bob, venv, "import tinypkg; print(tinypkg.VALUE)") == "42"
    assert len(list(markers.iterdir())) == 1  # built once, by bob, on his side
    wheels = {json.loads(p.read_text()).get("wheel") for p in (service.store / "manifests").glob("*.json")}
    assert {"mywheel-1.0-py3-none-any.whl"} <= wheels and any(str(w).startswith("tinypkg-") for w in wheels)
    _owned_by_service(service.store)


def test_verify_repair_asks_the_service(
    run: Runner, users: Users, workdir: Path, index: PyIndex, service: Service
) -> None:
    files = _files(workdir)
    index.add(_wheel(files, "fixpkg"))
    venv = _venv(run, users.alice, workdir / "v")
    assert _install(run, users.alice, service.store, venv, index, "fixpkg").returncode == 0
    (tree,) = [p for p in (service.store / "trees").iterdir() if (p / "fixpkg").is_dir()]
    target = tree / "fixpkg" / "__init__.py"
    target.chmod(0o644)
    target.write_text("VALUE = 'damaged'\n")  # root damages it: no user could
    target.chmod(0o444)
    done = run(users.alice, "--store", str(service.store), "verify", "--repair", env=ISOLATED, timeout=300)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "repaired: fixpkg 1.0" in done.stdout, done.stdout
    assert "fixpkg" in (tree / "fixpkg" / "__init__.py").read_text()
    _owned_by_service(service.store)


# -- the client's own error paths, against a stand-in service ----------------------------------------------------------


def _stand_in(path: Path, answer: dict[str, object]) -> threading.Thread:
    """A socket that answers every request with ``answer`` (as a service refusing it would)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    os.chmod(path, 0o666)
    server.listen()

    def serve() -> None:
        with server:
            conn, _ = server.accept()
            with conn:
                protocol.recv_message(conn)
                protocol.send_message(conn, answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def _service_store_by_hand(workdir: Path, sock: Path) -> Path:
    """A store (made by root) whose config names a service socket: enough for the client's error paths."""
    from wheelstore.store.store import Store

    store = workdir / "store"
    with Store.init(store, shared="all"):
        pass
    with open(store / "config.toml", "a") as f:
        f.write(f"\n[service]\nsocket = {json.dumps(str(sock))}\n")
    return store


def test_a_refusal_is_one_line_with_the_services_hint(run: Runner, users: Users, workdir: Path) -> None:
    sock = workdir / "stand-in.sock"
    store = _service_store_by_hand(workdir, sock)
    wheel = _wheel(_files(workdir), "refusedpkg")
    thread = _stand_in(sock, {"ok": False, "error": "uploads are over 10 bytes", "hint": "ask the store's owner"})
    done = run(users.alice, "--store", str(store), "realize", str(wheel))
    thread.join(timeout=30)
    error = one_line_error(done)
    assert error == ("error: the store service refused the upload request: uploads are over 10 bytes "
                     "(fix: ask the store's owner)"), error


@pytest.mark.parametrize("state", ["no socket", "nobody listens"])
def test_a_service_that_is_not_there_is_named_with_how_to_start_it(
    run: Runner, users: Users, workdir: Path, state: str
) -> None:
    sock = workdir / "gone.sock"
    store = _service_store_by_hand(workdir, sock)
    if state == "nobody listens":  # a socket left by a service that died
        left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        left.bind(str(sock))
        os.chmod(sock, 0o666)
        left.close()
    wheel = _wheel(_files(workdir), "lonelypkg")
    before = snapshot(store)
    done = run(users.alice, "--store", str(store), "realize", str(wheel))
    error = one_line_error(done)
    why = f"no socket at {sock}" if state == "no socket" else f"nothing listens on {sock}"
    assert error == (f"error: the store service for {store} is not running ({why}) (fix: start it as the store's "
                     f"owner: wheelstore serve --store {store})"), error
    assert snapshot(store) == before
