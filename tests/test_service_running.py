"""Running the store service (issue 20): socket activation by systemd, the units in docs/systemd/, and what doctor and
info say about a service store.

The service is the real ``wheelstore serve`` as its dedicated account (``wssvc``), over a store that account made with
``init --service``; the users are real (wsalice, wscarol), the index is real (tests/pyindex.py). Socket activation is
done as systemd does it: the test binds and listens on the store's socket, and the service is started with that
socket as fd 3 and ``LISTEN_FDS=1``, ``LISTEN_PID`` its own pid.
"""

from __future__ import annotations

import os
import shlex
import shutil
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


def _activated(run: Runner, store: Path, listener: socket.socket, index: PyIndex,
               argv: list[str] | None = None) -> subprocess.Popen[str]:
    """``wheelstore serve`` (or ``argv``) given ``listener`` the way systemd passes a socket unit's socket."""
    python = run.tool.parent / "python"
    argv = argv or [str(run.tool), "serve", "--store", str(store)]
    proc = subprocess.Popen(
        [str(python), "-c", ACTIVATE, str(listener.fileno()), *argv],
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


# -- the systemd units -----------------------------------------------------------------------------------------------


def _unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A unit file's sections and settings (a setting may repeat), as systemd reads them."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in (UNITS / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, line
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_the_systemd_units_agree_with_the_cli_and_serve_a_client(
    run: Runner, users: Users, workdir: Path, index: PyIndex
) -> None:
    sock_unit, svc_unit = _unit("wheelstore.socket"), _unit("wheelstore.service")
    sock, svc = sock_unit["Socket"], svc_unit["Service"]
    (exec_start,) = svc["ExecStart"]
    argv = shlex.split(exec_start)
    assert Path(argv[0]).name == "wheelstore" and argv[1:] == ["serve", "--store", "/srv/wheelstore"], argv
    assert sock["ListenStream"] == ["/srv/wheelstore/service.sock"]  # what init --service records by default
    assert svc["User"] == sock["SocketUser"] == ["wheelstore"]
    assert sock.get("Accept", ["no"]) == ["no"]
    assert "/srv/wheelstore" in svc["ReadWritePaths"][0].split()
    assert svc["ProtectSystem"] == ["strict"] and svc["NoNewPrivileges"] == ["yes"] and svc["PrivateTmp"] == ["yes"]
    assert "wheelstore.socket" in svc_unit["Unit"]["Requires"][0].split()

    # the units for real, bar systemd: a store made as the comment says, the socket as the socket unit makes it, the
    # service's ExecStart as its User=, and a client's install through it
    _ensure_user(SERVICE_USER, ())
    store = workdir / "store"
    made = run(SERVICE_USER, "init", str(store), "--service", "--allow-index", index.url + "/",
               env={**ISOLATED, "UV_INDEX_URL": index.simple_url})
    assert made.returncode == 0, made.stderr
    index.add(_wheel(_files(workdir), "unitpkg"))
    path = sock["ListenStream"][0].replace("/srv/wheelstore", str(store))
    listener = _listener(path)
    os.chmod(path, int(sock["SocketMode"][0], 8))
    try:
        proc = _activated(run, store, listener, index,
                          [str(run.tool), *(a.replace("/srv/wheelstore", str(store)) for a in argv[1:])])
        venv = _venv(run, users.alice, workdir / "v")
        done = _install(run, users.alice, store, venv, index, "unitpkg")
        assert done.returncode == 0, done.stderr
        assert _import(users.alice, venv, "import unitpkg; print(unitpkg.VALUE)") == "unitpkg"
        _stop(proc)
    finally:
        listener.close()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze on this machine")
def test_systemd_analyze_verifies_the_units(workdir: Path, tool: Path) -> None:
    """Every setting known to this machine's systemd, every value valid (ExecStart= must name an executable that
    exists: the test's wheelstore stands in for /usr/local/bin's)."""
    units = workdir / "units"
    units.mkdir()
    for name in ("wheelstore.socket", "wheelstore.service"):
        text = (UNITS / name).read_text().replace("/usr/local/bin/wheelstore", str(tool))
        (units / name).write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(units / "wheelstore.socket"),
                           str(units / "wheelstore.service")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "wheelstore" not in done.stderr, done.stderr  # no warning about either unit (unknown key, bad value)
