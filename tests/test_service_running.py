"""Running the store service (issue 20): socket activation by systemd, the units in docs/systemd/, and what doctor and
info say about a service store.

The service is the real ``wheelstore serve`` as its dedicated account (``wssvc``), over a store that account made with
``init --service``; the users are real (wsalice, wscarol), the index is real (tests/pyindex.py). Socket activation is
done as systemd does it: the test binds and listens on the store's socket, and the service is started with that
socket as fd 3 and ``LISTEN_FDS=1``, ``LISTEN_PID`` its own pid.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Runner, Users, _ensure_user, one_line_error
from .pyindex import PyIndex
from .test_service_client import (
    ISOLATED,
    SERVICE_USER,
    _files,
    _import,
    _init_service_store,
    _install,
    _serve,
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


# -- doctor and info -------------------------------------------------------------------------------------------------


def _doctor(run: Runner, user: str, store: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """doctor's run, and each check's line (its fix, if any, after a `` | fix: ``)."""
    done = run(user, "--store", str(store), "doctor", *args, env=ISOLATED)
    found: dict[str, str] = {}
    last = ""
    for line in done.stdout.splitlines():
        status, _, rest = line.partition("  ")
        if status.strip() in ("ok", "warn", "fail"):
            name, _, detail = rest.strip().partition(" ")
            last = name
            found[name] = f"{status.strip()}: {detail.strip()}"
        elif line.strip().startswith("fix: ") and last:
            found[last] += f" | {line.strip()}"
    return done, found


def test_doctor_says_whether_the_service_serves_this_user_and_how_to_start_it(
    run: Runner, users: Users, workdir: Path, index: PyIndex
) -> None:
    _ensure_user(SERVICE_USER, ())
    store, sock = workdir / "store", workdir / "svc.sock"
    made = run(SERVICE_USER, "init", str(store), "--service", "--socket", str(sock), "--allow-user", users.alice,
               "--allow-index", index.url + "/", env=ISOLATED)
    assert made.returncode == 0, made.stderr
    down = f"the store service is not running: no socket at {sock}"
    done, checks = _doctor(run, users.alice, store)
    assert checks["service"] == f"fail: {down} | fix: sudo -u {SERVICE_USER} wheelstore serve --store {store}"
    assert one_line_error(done) == (f"error: sharing cannot work for {users.alice} here: {down} (fix: sudo -u "
                                    f"{SERVICE_USER} wheelstore serve --store {store})")
    _done, checks = _doctor(run, SERVICE_USER, store)
    assert checks["service"] == f"fail: {down} | fix: wheelstore serve --store {store}"

    service = _serve(run, store, sock, index)
    try:
        done, checks = _doctor(run, users.alice, store)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stderr == "", done.stderr  # no lease tried in a store this user may not write
        tag = subprocess.run([str(run.tool.parent / "python"), "-c", "import sys; print(sys.implementation.cache_tag)"],
                             capture_output=True, text=True, check=True).stdout.strip()  # the service's interpreter's
        assert checks["service"] == (f"ok: the store service answers on {sock} (wheelstore 0.1.0, protocol 1) and "
                                     f"serves you ({users.alice}); it compiles bytecode for {tag}")
        assert checks["membership"] == (f"ok: only {SERVICE_USER}'s store service writes this store; it publishes "
                                        "for you (see the service check)")
        assert checks["access"] == "ok: you may read (0 trees); the store service publishes for you"
        as_json = json.loads(run(users.alice, "--store", str(store), "doctor", "--json", env=ISOLATED).stdout)
        (entry,) = [c for c in as_json["checks"] if c["name"] == "service"]
        assert entry["status"] == "ok" and entry["fix"] is None

        # wscarol is on no allow list: the service's own refusal, its hint with it
        done, checks = _doctor(run, users.carol, store)
        assert checks["service"] == (f"fail: the store service refused the hello request: {users.carol} may not use "
                                     f"the store service of {store}; ask {SERVICE_USER}, its owner, to add you to "
                                     "[service] allow_users")
        assert one_line_error(done).startswith(f"error: sharing cannot work for {users.carol} here: the store "
                                               "service refused the hello request")
    finally:
        service.proc.kill()  # as a crash would: its socket stays, and nothing listens on it
        service.proc.communicate()
    assert sock.is_socket()
    _done, checks = _doctor(run, users.alice, store)
    assert checks["service"] == (f"fail: the store service for {store} is not running (nothing listens on {sock}) | "
                                 f"fix: sudo -u {SERVICE_USER} wheelstore serve --store {store}")


@pytest.mark.skipif(not Path("/etc/systemd/system").is_dir(), reason="no /etc/systemd/system on this machine")
def test_doctor_names_the_systemd_socket_unit_that_starts_the_service(
    run: Runner, users: Users, workdir: Path, index: PyIndex, service_store: tuple[Path, Path]
) -> None:
    store, sock = service_store
    unit = Path("/etc/systemd/system") / f"wstest-{workdir.name}.socket"
    unit.write_text(f"[Socket]\nListenStream={sock}\n")
    try:
        _done, checks = _doctor(run, users.alice, store)
    finally:
        unit.unlink()
    assert checks["service"] == f"fail: the store service is not running: no socket at {sock} | fix: systemctl " \
                                f"start {unit.name}"


def test_info_shows_the_service_settings(run: Runner, users: Users, workdir: Path, index: PyIndex) -> None:
    _ensure_user(SERVICE_USER, ())
    store, sock = workdir / "store", workdir / "svc.sock"
    made = run(SERVICE_USER, "init", str(store), "--service", "--socket", str(sock), "--allow-user", users.alice,
               "--allow-group", users.group, "--allow-index", index.url + "/", env=ISOLATED)
    assert made.returncode == 0, made.stderr
    done = run(users.bob, "--store", str(store), "info", env=ISOLATED)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-5:] == [
        f"service      {sock} (mode 0666): only its service writes the store",
        f"allow        users {users.alice}; groups {users.group}",
        f"indexes      {index.url}/",
        "max_upload   1.0 GiB",
        "pythons      its own interpreter",
    ], done.stdout
    info = json.loads(run(users.bob, "--store", str(store), "info", "--json", env=ISOLATED).stdout)
    assert info["service"] == {"socket": str(sock), "socket_mode": "0666", "allow_users": [users.alice],
                               "allow_groups": [users.group], "indexes": [index.url + "/"], "max_upload": 1 << 30,
                               "pythons": []}
    assert run(users.alice, "init", str(workdir / "plain")).returncode == 0
    plain = run(users.alice, "--store", str(workdir / "plain"), "info", "--json", env=ISOLATED)
    assert json.loads(plain.stdout)["service"] is None, plain.stderr
