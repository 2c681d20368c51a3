"""The store service (``wheelstore serve``) against real users and hostile clients.

The service is started by the test, as root on root's store and as a dedicated account (``wssvc``) on the store that
account made; it fetches from the real local index (:mod:`tests.pyindex`) over TCP. Clients are raw protocol peers
(:mod:`tests.svcpeer`) run as wsalice (and wscarol, who is on no allow list). After every attack the service still
answers, nothing was published for the bad request, and no staging is left; and no test user can write anything in
the store.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import AsUser, Runner, Users
from .pyindex import PyIndex
from .wheelmaker import make_wheel, member

SERVICE_USER = "wssvc"
PEER = Path(__file__).with_name("svcpeer.py")
WALKER = """
import os, stat, sys, json
found = []
for top, dirs, files in os.walk(sys.argv[1]):
    for name in [*dirs, *files, "."]:
        path = os.path.join(top, name)
        st = os.lstat(path)
        if stat.S_ISSOCK(st.st_mode):
            continue  # the service's door: connecting is what writing it means
        if not stat.S_ISLNK(st.st_mode) and os.access(path, os.W_OK):
            found.append(path)
print(json.dumps(found))
"""


def _ensure_service_user() -> None:
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--shell", "/usr/sbin/nologin", SERVICE_USER], check=True)


@dataclass
class Service:
    store: Path
    socket: str
    proc: subprocess.Popen[str]
    owner: str
    index: PyIndex
    python: Path
    peer: Path

    def ask(self, user: str, *args: str, timeout: float = 120) -> dict[str, object]:
        done = subprocess.run([str(self.python), str(self.peer), self.socket, *args], capture_output=True, text=True,
                              timeout=timeout, cwd="/", user=user, group=user, extra_groups=[], env=_env(user))
        assert done.returncode == 0, done.stderr
        answer: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
        return answer

    def request(self, user: str, message: dict[str, object]) -> dict[str, object]:
        return self.ask(user, "request", json.dumps(message))

    def hello_ok(self) -> None:
        assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
        assert self.request("wsalice", {"op": "hello"})["ok"] is True

    def nothing_for(self, *keys: str) -> None:
        """Nothing published for ``keys``, no staging left."""
        for key in keys:
            assert not (self.store / "manifests" / f"{key}.json").exists()
            assert not (self.store / "trees" / key).exists()
        assert [n for n in os.listdir(self.store / "trees") if n.startswith(".")] == []
        assert os.listdir(self.store / "staging") == []


def _env(user: str) -> dict[str, str]:
    return {"HOME": pwd.getpwnam(user).pw_dir, "USER": user, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


def _target(python: Path) -> dict[str, object]:
    out = subprocess.run([str(python), "-c", "import sys, json; print(json.dumps([sys.implementation.cache_tag, "
                          "list(sys.version_info[:2])]))"], capture_output=True, text=True, check=True).stdout
    tag, version = json.loads(out)
    return {"cache_tag": tag, "version": version}


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(params=["root", "account"])
def service(request: pytest.FixtureRequest, workdir: Path, run: Runner, users: Users, tool: Path) -> Iterator[Service]:
    owner = "root" if request.param == "root" else SERVICE_USER
    if owner != "root":
        _ensure_service_user()
    peer = workdir / "svcpeer.py"
    peer.write_bytes(PEER.read_bytes())
    peer.chmod(0o644)
    store = workdir / "store"
    as_owner: AsUser = {} if owner == "root" else {"user": owner, "group": owner, "extra_groups": []}
    with PyIndex() as index:
        init = subprocess.run([str(tool), "init", str(store), "--service", "--allow-group", users.group,
                               "--allow-index", index.url + "/files/"], capture_output=True, text=True, cwd="/",
                              env=_env(owner) if owner != "root" else run.env(None), **as_owner)
        assert init.returncode == 0, init.stderr
        proc = subprocess.Popen([str(tool), "serve", "--store", str(store)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd="/",
                                env=_env(owner) if owner != "root" else run.env(None), **as_owner)
        svc = Service(store, str(store / "service.sock"), proc, owner, index, tool.parent / "python", peer)
        deadline = time.monotonic() + 30
        while not os.path.exists(svc.socket):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.05)
        try:
            yield svc
        finally:
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=30)
            print(err)
    assert proc.returncode == 0, err
    assert not os.path.exists(svc.socket), "the socket outlived the service"


def _wheel(workdir: Path, name: str, **options: object) -> Path:
    d = workdir / f"w-{name}"
    d.mkdir(exist_ok=True)
    d.chmod(0o755)
    wheel = make_wheel(d, name, **options)  # type: ignore[arg-type]
    wheel.chmod(0o644)
    return wheel


def _publish(svc: Service, user: str, wheel: Path, sha: str | None = None, url: str | None = None) -> dict[str, object]:
    return svc.request(user, {"op": "publish", "url": url or svc.index.file_url(wheel.name), "filename": wheel.name,
                              "sha256": sha or _sha(wheel), "target": _target(svc.python)})


def _walk_writable(svc: Service, users: Users) -> dict[str, list[str]]:
    found = {}
    for user in (users.alice, users.bob, users.carol):
        done = subprocess.run(["/usr/bin/python3", "-c", WALKER, str(svc.store)], capture_output=True, text=True,
                              user=user, group=user, extra_groups=[users.group] if user != users.carol else [],
                              env=_env(user), cwd="/")
        assert done.returncode == 0, done.stderr
        found[user] = json.loads(done.stdout)
    return found


# -- what works ------------------------------------------------------------------------------------------------------


def test_publish_by_url_once_for_two_users_and_nothing_in_the_store_is_writable(
        service: Service, workdir: Path, users: Users) -> None:
    wheel = _wheel(workdir, "svcok")
    service.index.add(wheel)
    first = _publish(service, users.alice, wheel)
    assert first["ok"] is True and first["unpacked"] is True, first
    assert first["bytecode"] == _target(service.python)["cache_tag"]
    second = _publish(service, users.bob, wheel)
    assert second["ok"] is True and second["unpacked"] is False and second["key"] == first["key"]
    assert len(service.index.downloads(wheel.name)) == 1
    tree = service.store / "trees" / _sha(wheel)
    assert tree.stat().st_uid == pwd.getpwnam(service.owner).pw_uid
    root = service.request(users.alice, {"op": "root", "venv": "/home/wsalice/v", "node": "node-a", "host": "h",
                                         "fs": "local", "fs_type": "ext4", "anchor": [], "dists": [
                                             {"name": "svcok", "version": "1.0", "key": _sha(wheel), "pyc": None,
                                              "dist_info": "lib/x/svcok-1.0.dist-info"}]})
    assert root["ok"] is True, root
    written = service.store / "roots" / str(root["root"])
    assert written.name.endswith(".json") and written.parent.name.startswith(f"{users.uid(users.alice)}-")
    doc = json.loads(written.read_text())
    assert doc["uid"] == users.uid(users.alice) and doc["dists"][0]["key"] == _sha(wheel)
    bad_root = service.request(users.alice, {"op": "root", "venv": "/v", "node": "n", "host": "h", "fs": "local",
                                             "fs_type": "", "anchor": [], "dists": [
                                                 {"name": "x", "version": "1", "dist_info": "../../etc",
                                                  "key": _sha(wheel), "pyc": None}]})
    assert bad_root["ok"] is False and "dist_info" in str(bad_root["error"])
    assert _walk_writable(service, users) == {users.alice: [], users.bob: [], users.carol: []}
    service.nothing_for()


def test_a_user_off_the_allow_list_and_a_url_off_the_indexes_are_refused(
        service: Service, workdir: Path, users: Users) -> None:
    refused = service.request(users.carol, {"op": "hello"})
    assert refused["ok"] is False and "wscarol may not use the store service" in str(refused["error"])
    assert "\n" not in str(refused["error"])
    hello = service.request(users.alice, {"op": "hello"})
    assert hello["uid"] == users.uid(users.alice) and hello["user"] == users.alice
    wheel = _wheel(workdir, "svcoff")
    service.index.add(wheel)
    off = _publish(service, users.alice, wheel, url=service.index.url + "/elsewhere/" + wheel.name)
    assert off["ok"] is False and "not on an index this service fetches from" in str(off["error"])
    allowed = service.index.url + "/files/"  # an allowed prefix, then out of it
    for escape in ("../elsewhere/", "%2e%2e/elsewhere/", "./"):
        out = _publish(service, users.alice, wheel, url=allowed + escape + wheel.name)
        assert out["ok"] is False and "'.' or '..' segments" in str(out["error"]), (escape, out)
    assert service.index.downloads() == []
    service.nothing_for(_sha(wheel))


def test_the_service_must_run_as_the_stores_owner(service: Service, run: Runner, users: Users) -> None:
    done = run(users.alice, "serve", "--store", str(service.store), "--socket", "/tmp/wsalice-svc.sock")
    assert done.returncode != 0
    assert done.stderr.startswith("error: the service of") and len(done.stderr.strip().splitlines()) == 1
    service.hello_ok()


# -- attacks ---------------------------------------------------------------------------------------------------------


def test_a_wrong_sha256_for_a_real_url_publishes_nothing(service: Service, workdir: Path, users: Users) -> None:
    wheel = _wheel(workdir, "svcclaim")
    service.index.add(wheel)
    lie = "0" * 64
    answer = _publish(service, users.alice, wheel, sha=lie)
    assert answer["ok"] is False and "not the expected" in str(answer["error"]), answer
    service.hello_ok()
    service.nothing_for(lie, _sha(wheel))


def test_an_index_serving_other_bytes_publishes_nothing(service: Service, workdir: Path, users: Users) -> None:
    wheel = _wheel(workdir, "svcswap")
    service.index.add(wheel, wrong_bytes=True)
    answer = _publish(service, users.alice, wheel)
    assert answer["ok"] is False and "not the expected" in str(answer["error"]), answer
    service.hello_ok()
    service.nothing_for(_sha(wheel))


def _upload(svc: Service, user: str, wheel: Path, **header: object) -> dict[str, object]:
    message = {"op": "upload", "filename": wheel.name, "target": _target(svc.python), **header}
    return svc.ask(user, "upload", json.dumps(message), str(wheel))


def test_uploads_a_wheel_and_refuses_a_lying_record_and_escaping_members(
        service: Service, workdir: Path, users: Users) -> None:
    good = _wheel(workdir, "svcup")
    done = _upload(service, users.alice, good, sha256=_sha(good))
    assert done["ok"] is True and done["key"] == _sha(good), done
    liar = _wheel(workdir, "svcliar", record_overrides={"svcliar/__init__.py": ("sha256=" + "A" * 43, "10")})
    lied = _upload(service, users.alice, liar)
    assert lied["ok"] is False, lied
    claimed = _upload(service, users.alice, _wheel(workdir, "svcclaimed"), sha256="1" * 64)
    assert claimed["ok"] is False and "not the claimed" in str(claimed["error"])
    escapes = [_wheel(workdir, f"svcslip{i}", extra=[(member(name, 0o100644), b"evil")])
               for i, name in enumerate(["../../evil.py", "/tmp/svc-evil.py", "svcslip2/../../../evil.py"])]
    for wheel in escapes:
        answer = _upload(service, users.alice, wheel)
        assert answer["ok"] is False, (wheel, answer)
    bad_name = service.ask(users.alice, "upload", json.dumps({"op": "upload", "filename": "../x-1.0-py3-none-any.whl",
                                                               "target": _target(service.python)}), str(good))
    assert bad_name["ok"] is False or "answer" in bad_name
    assert not Path("/tmp/svc-evil.py").exists() and not (service.store / "evil.py").exists()
    service.hello_ok()
    service.nothing_for(_sha(liar), *(_sha(w) for w in escapes))


def test_oversized_requests_are_refused(service: Service, workdir: Path, users: Users) -> None:
    from wheelstore.service.protocol import MAX_MESSAGE

    frame = service.ask(users.alice, "frame", str(MAX_MESSAGE + 1))
    assert frame["ok"] is False and "over the limit" in str(frame["error"]), frame
    wheel = _wheel(workdir, "svcbig")
    huge = _upload(service, users.alice, wheel, size=(1 << 30) + 1)
    refused = huge.get("answer", huge)
    assert isinstance(refused, dict) and refused["ok"] is False and "over the service's limit" in str(refused["error"])
    service.hello_ok()
    service.nothing_for(_sha(wheel))


def test_a_flood_of_connections_is_told_busy_and_the_service_stays_up(service: Service, users: Users) -> None:
    from wheelstore.service.server import MAX_CONNECTIONS

    flood = service.ask(users.alice, "flood", "200", "3")
    busy = flood["busy"]
    assert flood["held"] == 200 and isinstance(busy, int) and busy >= 200 - MAX_CONNECTIONS, flood
    deadline = time.monotonic() + 30
    while True:  # the held connections' threads notice their peer is gone
        answer = service.request(users.alice, {"op": "hello"})
        if answer["ok"] is True or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert answer["ok"] is True, answer


def test_a_client_killed_mid_upload_leaves_nothing(service: Service, workdir: Path, users: Users) -> None:
    wheel = _wheel(workdir, "svckill", files={f"svckill/m{i}.py": os.urandom(4096).hex().encode() for i in range(64)})
    header = {"op": "upload", "filename": wheel.name, "target": _target(service.python)}
    proc = subprocess.Popen([str(service.python), str(service.peer), service.socket, "upload", json.dumps(header),
                             str(wheel), str(wheel.stat().st_size // 2)], stdout=subprocess.PIPE, text=True,
                            user=users.alice, group=users.alice, extra_groups=[], env=_env(users.alice), cwd="/")
    assert proc.stdout is not None and proc.stdout.readline().strip() == "sent"
    deadline = time.monotonic() + 10
    while not os.listdir(service.store / "staging") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.listdir(service.store / "staging"), "the upload never reached staging"
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while os.listdir(service.store / "staging") and time.monotonic() < deadline:
        time.sleep(0.1)
    service.hello_ok()
    service.nothing_for(_sha(wheel))


def test_root_serving_an_accounts_store_runs_as_that_account(workdir: Path, run: Runner, users: Users,
                                                              tool: Path) -> None:
    _ensure_service_user()
    store = workdir / "acct"
    init = subprocess.run([str(tool), "init", str(store), "--service", "--allow-index", "http://127.0.0.1:1/"],
                          capture_output=True, text=True, cwd="/", env=_env(SERVICE_USER), user=SERVICE_USER,
                          group=SERVICE_USER, extra_groups=[])
    assert init.returncode == 0, init.stderr
    proc = subprocess.Popen([str(tool), "serve", "--store", str(store)], stderr=subprocess.PIPE, text=True,
                            env=run.env(None), cwd="/")
    sock = store / "service.sock"
    deadline = time.monotonic() + 30
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert sock.stat().st_uid == pwd.getpwnam(SERVICE_USER).pw_uid
        stale = subprocess.run([str(tool), "serve", "--store", str(store)], capture_output=True, text=True,
                               env=run.env(None), cwd="/", timeout=60)
        assert stale.returncode != 0 and "already listens" in stale.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0 and not sock.exists()
    leftover = socket.socket(socket.AF_UNIX)  # a socket of the account's nobody answers on: replaced
    leftover.bind(str(sock))
    leftover.close()
    os.chown(sock, pwd.getpwnam(SERVICE_USER).pw_uid, -1)
    again = subprocess.Popen([str(tool), "serve", "--store", str(store)], stderr=subprocess.PIPE, text=True,
                             env=run.env(None), cwd="/")
    time.sleep(2)
    assert again.poll() is None, again.communicate()[1]
    again.send_signal(signal.SIGTERM)
    again.communicate(timeout=30)
    assert again.returncode == 0
