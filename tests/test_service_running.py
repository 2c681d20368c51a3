"""Running the store service (issue 20): socket activation by systemd, the units in docs/systemd/, and what doctor and
info say about a service store.

The service is the real ``wheelstore serve`` as its dedicated account (``wssvc``), over a store that account made with
``init --service``; the users are real (wsalice, wscarol), the index is real (tests/pyindex.py). Socket activation is
done as systemd does it: the test binds and listens on the store's socket, and the service is started with that
socket as fd 3 and ``LISTEN_FDS=1``, ``LISTEN_PID`` its own pid.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Runner, Users, _ensure_user
from .pyindex import PyIndex
from .test_service_client import (
    ISOLATED,
    SERVICE_USER,
    _files,
    _import,
    _init_service_store,
    _install,
    _venv,
    _wheel,
)

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "docs" / "systemd"
#: what the wrapper does before it execs ``wheelstore serve``: what systemd does between fork and exec
ACTIVATE = ("import os, sys; fd = int(sys.argv[1]); os.dup2(fd, 3); os.close(fd); "
            "os.environ['LISTEN_PID'] = str(os.getpid()); os.execv(sys.argv[2], sys.argv[2:])")


@pytest.fixture
def index(workdir: Path) -> Iterator[PyIndex]:
    with PyIndex(log_file=workdir / "access.log") as served:
        yield served


@pytest.fixture
def service_store(run: Runner, workdir: Path, index: PyIndex, users: Users) -> tuple[Path, Path]:
    _ensure_user(SERVICE_USER, ())
    return _init_service_store(run, workdir, index)


def _listener(path: Path | str) -> socket.socket:
    """A listening socket as systemd's ``wheelstore.socket`` makes it (``SocketMode=0666``)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o666)
    listener.listen(16)
    return listener


def _activated(run: Runner, store: Path, listener: socket.socket, index: PyIndex) -> subprocess.Popen[str]:
    """``wheelstore serve`` given ``listener`` the way systemd passes a socket unit's socket."""
    python = run.tool.parent / "python"
    proc = subprocess.Popen(
        [str(python), "-c", ACTIVATE, str(listener.fileno()), str(run.tool), "serve", "--store", str(store)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/", pass_fds=(listener.fileno(),),
        env=run.env(SERVICE_USER, {**ISOLATED, "UV_INDEX_URL": index.simple_url, "LISTEN_FDS": "1"}),
        **run.popen_kwargs(SERVICE_USER, 0o022),
    )
    return proc


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return err


# -- socket activation -----------------------------------------------------------------------------------------------


def test_serve_takes_systemds_socket_and_a_client_installs_through_it(
    run: Runner, users: Users, workdir: Path, index: PyIndex, service_store: tuple[Path, Path]
) -> None:
    store, sock = service_store
    index.add(_wheel(_files(workdir), "activated"))
    listener = _listener(sock)
    try:
        proc = _activated(run, store, listener, index)
        venv = _venv(run, users.alice, workdir / "v")  # a client connecting before serve accepts: systemd's queue
        done = _install(run, users.alice, store, venv, index, "activated")
        assert done.returncode == 0, done.stderr
        assert _import(users.alice, venv, "import activated; print(activated.VALUE)") == "activated"
        err = _stop(proc)
        assert f"serving {store} on {sock} as {SERVICE_USER} (the socket is systemd's)" in err, err
        assert "activated-1.0-py3-none-any.whl" in err  # the publication logged
        # the socket is systemd's: still there, still listening, for the next activation
        assert sock.is_socket()
        listener.settimeout(5)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.connect(str(sock))
            listener.accept()[0].close()
    finally:
        listener.close()


def test_a_passed_socket_for_another_path_is_one_line_and_a_foreign_listen_pid_is_ignored(
    run: Runner, users: Users, workdir: Path, index: PyIndex, service_store: tuple[Path, Path]
) -> None:
    store, sock = service_store
    other = workdir / "other.sock"
    listener = _listener(other)
    try:
        proc = _activated(run, store, listener, index)
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode != 0
        lines = err.strip().splitlines()
        assert lines == [f"error: systemd passed a socket bound to {other}, not to the store's socket {sock} (fix: "
                         f"make ListenStream={sock} in wheelstore.socket, or give --socket)"], err
        assert not sock.exists()
    finally:
        listener.close()
    # LISTEN_PID of another process: not for this one (as sd_listen_fds): it binds its socket itself
    proc = run.popen(SERVICE_USER, "serve", "--store", str(store),
                     env={**ISOLATED, "UV_INDEX_URL": index.simple_url, "LISTEN_FDS": "1", "LISTEN_PID": "1"})
    deadline = time.monotonic() + 30
    while not sock.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
        time.sleep(0.05)
    err = _stop(proc)
    assert "systemd" not in err, err
    assert not sock.exists()
