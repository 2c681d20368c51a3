"""Hard links by the store service (issue 20): a service running as root links a published tree's files into a
user's own venv directories, passed to it as descriptors (``SCM_RIGHTS``), never as paths.

The service is the real ``wheelstore serve``, started by the test as root on root's service store (and, where the
mode must be unavailable, as the dedicated account ``wssvc``); the users are real (wsalice, wsbob), the index is real
(tests/pyindex.py). Hostile clients are raw protocol peers run as wsalice: they pass descriptors of directories that
are not theirs to write, names that are not one component, keys with no manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from .conftest import SYSTEM_PYTHON, Runner, Users, _ensure_user, one_line_error
from .pyindex import PyIndex
from .wheelmaker import make_wheel

ISOLATED = {"PIP_CONFIG_FILE": os.devnull, "UV_NO_CONFIG": "1"}
SERVICE_USER = "wssvc"
SITE = "lib/python3.11/site-packages"
#: a raw client: ``python - SOCKET REQUEST_JSON DIR...`` opens each DIR (following links, as a hostile client may)
#: and sends the request with their descriptors; prints the answer
RAW_LINK = r"""
import json, os, socket, struct, sys
path, request, dirs = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
fds = [os.open(d, os.O_RDONLY) for d in dirs]
request.setdefault("fds", len(fds))
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(60)
sock.connect(path)
data = json.dumps(request).encode()
sock.sendall(struct.pack(">I", len(data)) + data)
socket.send_fds(sock, [b"F"], fds)
(length,) = struct.unpack(">I", sock.recv(4, socket.MSG_WAITALL))
print(sock.recv(length, socket.MSG_WAITALL).decode())
"""


class Service:
    """A service store and its running ``wheelstore serve``."""

    def __init__(self, store: Path, proc: subprocess.Popen[str]) -> None:
        self.store, self.proc = store, proc
        self.socket = store / "service.sock"

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


def _start(run: Runner, workdir: Path, index: PyIndex, owner: str | None) -> Service:
    env = {**ISOLATED, "UV_INDEX_URL": index.simple_url, "PIP_INDEX_URL": index.simple_url}
    store = workdir / "store"
    made = run(owner, "init", str(store), "--service", "--allow-index", index.url + "/", env=env)
    assert made.returncode == 0, made.stderr
    proc = run.popen(owner, "serve", "--store", str(store), env=env)
    served = Service(store, proc)
    deadline = time.monotonic() + 30
    while not served.socket.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"wheelstore serve did not start: {proc.communicate()[1]}")
        time.sleep(0.05)
    return served


@pytest.fixture
def service(run: Runner, workdir: Path, index: PyIndex, users: Users) -> Iterator[Service]:
    """Root's service store, served by root: the one that can hard-link."""
    served = _start(run, workdir, index, None)
    yield served
    served.stop()


def _wheel(workdir: Path, index: PyIndex, name: str = "hlpkg") -> Path:
    files = workdir / "files"
    files.mkdir(exist_ok=True)
    files.chmod(0o755)
    wheel = make_wheel(files, name, files={
        f"{name}/__init__.py": f"VALUE = {name!r}\n".encode(),
        f"{name}/sub/__init__.py": b"X = 1\n",
        f"{name}/table.txt": b"table\n",
        f"{name}-1.0.dist-info/entry_points.txt": f"[console_scripts]\n{name} = {name}:VALUE\n".encode(),
    })
    wheel.chmod(0o644)
    index.add(wheel)
    return wheel


def _venv(run: Runner, user: str, path: Path) -> Path:
    made = run(user, "venv", str(path), "--python", SYSTEM_PYTHON)
    assert made.returncode == 0, made.stderr
    return path


def _install(run: Runner, user: str, service: Service, venv: Path, index: PyIndex, *args: str, umask: int = 0o022
             ) -> subprocess.CompletedProcess[str]:
    return run(user, "--store", str(service.store), "install", "--venv", str(venv), "--index-url", index.simple_url,
               *args, env=ISOLATED, timeout=300, umask=umask)


def _link_mode(venv: Path, name: str = "hlpkg") -> str:
    origin = json.loads((venv / SITE / f"{name}-1.0.dist-info" / "WHEELSTORE").read_text())
    return str(origin["link_mode"])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _as(user: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", user, "--", *cmd], capture_output=True, text=True, timeout=120, cwd="/")


def _raw_link(run: Runner, user: str, service: Service, request: Mapping[str, object], *dirs: str) -> dict[str, object]:
    done = run.python(user, RAW_LINK, str(service.socket), json.dumps(request), *dirs)
    assert done.returncode == 0, done.stderr
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def _hello_ok(run: Runner, service: Service) -> None:
    assert service.proc.poll() is None
    done = run.python("wsalice", "import socket, struct, json, sys\ns = socket.socket(socket.AF_UNIX)\n"
                      "s.connect(sys.argv[1]); d = b'{\"op\":\"hello\"}'\ns.sendall(struct.pack('>I', len(d)) + d)\n"
                      "n, = struct.unpack('>I', s.recv(4, socket.MSG_WAITALL)); print(s.recv(n, socket.MSG_WAITALL)"
                      ".decode())", str(service.socket))
    assert done.returncode == 0, done.stderr
    hello = json.loads(done.stdout)
    assert hello["ok"] is True and hello["link"] is True, hello


# -- acceptance 4: shared inodes nobody can change -------------------------------------------------------------------


def test_auto_hardlinks_through_the_service_and_no_user_can_change_the_store(
    run: Runner, users: Users, workdir: Path, index: PyIndex, service: Service
) -> None:
    wheel = _wheel(workdir, index)
    va, vb = _venv(run, users.alice, workdir / "va"), _venv(run, users.bob, workdir / "vb")
    for user, venv in ((users.alice, va), (users.bob, vb)):
        done = _install(run, user, service, venv, index, "hlpkg")
        assert done.returncode == 0, done.stderr
        assert _link_mode(venv) == "hardlink"
    stored = service.store / "trees" / _sha(wheel) / "hlpkg" / "__init__.py"
    mine, bobs = va / SITE / "hlpkg" / "__init__.py", vb / SITE / "hlpkg" / "__init__.py"
    st = stored.stat()
    assert st.st_uid == 0 and not st.st_mode & 0o222
    assert mine.stat().st_ino == st.st_ino == bobs.stat().st_ino and st.st_nlink >= 3
    assert (va / SITE / "hlpkg" / "sub" / "__init__.py").stat().st_ino == \
        (service.store / "trees" / _sha(wheel) / "hlpkg" / "sub" / "__init__.py").stat().st_ino
    # the venv's own files are written fresh, as in every mode
    assert (va / "bin" / "hlpkg").stat().st_uid == users.uid(users.alice)
    assert (va / SITE / "hlpkg-1.0.dist-info" / "RECORD").stat().st_nlink == 1
    assert _as(users.alice, str(va / "bin" / "python"), "-c", "import hlpkg.sub; print(hlpkg.VALUE)").stdout.strip() \
        == "hlpkg"
    before = stored.read_bytes()

    append = _as(users.alice, "sh", "-c", f"echo changed >> {mine}")
    assert append.returncode != 0 and "Permission denied" in append.stderr
    edit = _as(users.alice, "sed", "-i", "s/hlpkg/mine/", str(mine))
    assert edit.returncode == 0, edit.stderr
    assert mine.read_text() == "VALUE = 'mine'\n" and mine.stat().st_ino != st.st_ino
    assert mine.stat().st_uid == users.uid(users.alice)
    assert stored.read_bytes() == before and bobs.read_bytes() == before and bobs.stat().st_ino == st.st_ino
    assert stored.stat().st_nlink == st.st_nlink - 1  # alice's entry is her own file now
    assert _as(users.bob, str(vb / "bin" / "python"), "-c", "import hlpkg; print(hlpkg.VALUE)").stdout.strip() == \
        "hlpkg"
    verify = run(users.alice, "--store", str(service.store), "verify", "--full")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_explicit_hardlink_and_a_group_writable_umask(
    run: Runner, users: Users, workdir: Path, index: PyIndex, service: Service
) -> None:
    _wheel(workdir, index)
    venv = _venv(run, users.alice, workdir / "v")
    done = _install(run, users.alice, service, venv, index, "--link-mode", "hardlink", "hlpkg")
    assert done.returncode == 0, done.stderr
    assert _link_mode(venv) == "hardlink"
    # a umask that would make new directories group-writable: auto takes another mode, and says nothing alarming
    other = _venv(run, users.alice, workdir / "v2")
    done = _install(run, users.alice, service, other, index, "hlpkg", umask=0o002)
    assert done.returncode == 0, done.stderr
    assert _link_mode(other) != "hardlink"
    assert "error" not in done.stderr


def test_many_directories_go_in_batches_and_a_stale_file_in_the_way_is_replaced(
    run: Runner, users: Users, workdir: Path, index: PyIndex, service: Service
) -> None:
    files = workdir / "files"
    files.mkdir()
    files.chmod(0o755)
    # more directories than one request carries (64), more files than one request names (2048)
    members = {f"wide/d{i:03d}/m{j:02d}.py": f"I = {i * 100 + j}\n".encode() for i in range(90) for j in range(25)}
    wheel = make_wheel(files, "wide", files={"wide/__init__.py": b"", **members})
    wheel.chmod(0o644)
    index.add(wheel)
    venv = _venv(run, users.alice, workdir / "v")
    stale = venv / SITE / "wide" / "d089" / "m24.py"
    _as(users.alice, "mkdir", "-p", str(stale.parent))
    _as(users.alice, "sh", "-c", f"echo stale > {stale}")
    done = _install(run, users.alice, service, venv, index, "wide")
    assert done.returncode == 0, done.stderr
    assert _link_mode(venv, "wide") == "hardlink"
    tree = service.store / "trees" / _sha(wheel)
    for rel in ("wide/d000/m00.py", "wide/d063/m24.py", "wide/d064/m00.py", "wide/d089/m24.py"):
        assert (venv / SITE / rel).stat().st_ino == (tree / rel).stat().st_ino, rel
    assert stale.read_text() == "I = 8924\n"
    assert _as(users.alice, str(venv / "bin" / "python"), "-c", "import wide.d089.m24 as m; print(m.I)"
               ).stdout.strip() == "8924"


# -- hostile clients -------------------------------------------------------------------------------------------------


def test_the_service_links_only_into_the_peers_own_unshared_directories(
    run: Runner, users: Users, workdir: Path, index: PyIndex, service: Service
) -> None:
    wheel = _wheel(workdir, index)
    key = _sha(wheel)
    va, vb = _venv(run, users.alice, workdir / "va"), _venv(run, users.bob, workdir / "vb")
    assert _install(run, users.bob, service, vb, index, "hlpkg").returncode == 0
    bobs = vb / SITE
    bobs_before = sorted(os.listdir(bobs))
    one: dict[str, object] = {"op": "link", "key": key, "entries": [[0, "planted.py", "hlpkg/__init__.py"]]}

    refused = _raw_link(run, users.alice, service, one, str(bobs))  # another user's 0755 directory
    assert refused["ok"] is False and "not yours" in str(refused["error"]), refused
    refused = _raw_link(run, users.alice, service, one, "/tmp")  # root's, and world-writable
    assert refused["ok"] is False and "not yours" in str(refused["error"]), refused
    shared = va / "shared"
    _as(users.alice, "mkdir", "-m", "0777", str(shared))
    _as(users.alice, "chmod", "0777", str(shared))
    refused = _raw_link(run, users.alice, service, one, str(shared))  # hers, but others may write it
    assert refused["ok"] is False and "nobody but you may write" in str(refused["error"]), refused
    # a symlink in her venv into bob's: she opens it (following it), the service still gets bob's directory
    _as(users.alice, "ln", "-s", str(bobs), str(va / SITE / "intobob"))
    refused = _raw_link(run, users.alice, service, one, str(va / SITE / "intobob"))
    assert refused["ok"] is False and "not yours" in str(refused["error"]), refused
    refused = _raw_link(run, users.alice, service, one, str(wheel))  # not a directory
    assert refused["ok"] is False and "not a directory" in str(refused["error"]), refused
    refused = _raw_link(run, users.alice, service, {**one, "fds": 2}, str(va / SITE))  # fewer than it says
    assert refused["ok"] is False, refused
    assert sorted(os.listdir(bobs)) == bobs_before and os.listdir(shared) == []
    assert not os.path.lexists("/tmp/planted.py")

    # her own directory, but names that are not one component, and files no manifest lists
    mine = va / SITE
    answer = _raw_link(run, users.alice, service, {"op": "link", "key": key, "entries": [
        [0, "../escaped.py", "hlpkg/__init__.py"], [0, "..", "hlpkg/__init__.py"], [0, "a/b", "hlpkg/__init__.py"],
        [0, "x\u0000y", "hlpkg/__init__.py"], [0, "passwd", "../../../../etc/passwd"],
        [0, "manifest.py", "../../manifests/" + key + ".json"], [0, "ok.py", "hlpkg/__init__.py"]]}, str(mine))
    assert answer["ok"] is True, answer
    results = answer["results"]
    assert isinstance(results, list) and results[-1] is None and all(r is not None for r in results[:-1]), results
    assert {"ok.py", "passwd", "manifest.py", "a", "x"} & set(os.listdir(mine)) == {"ok.py"}
    assert (mine / "ok.py").stat().st_ino == (service.store / "trees" / key / "hlpkg" / "__init__.py").stat().st_ino
    assert not (va / "lib" / "python3.11" / "escaped.py").exists()

    # a key with no manifest: a tree's files under trees/ without their commit are not published
    fake = "f" * 64
    subprocess.run(["cp", "-a", str(service.store / "trees" / key), str(service.store / "trees" / fake)], check=True)
    refused = _raw_link(run, users.alice, service, {**one, "key": fake}, str(mine))
    assert refused["ok"] is False and "no published tree" in str(refused["error"]), refused
    refused = _raw_link(run, users.alice, service, {**one, "key": "../" + key}, str(mine))
    assert refused["ok"] is False, refused
    assert not (mine / "planted.py").exists()
    _hello_ok(run, service)


def test_install_refuses_a_planted_symlink_and_the_service_never_writes_through_it(
    run: Runner, users: Users, workdir: Path, index: PyIndex, service: Service
) -> None:
    _wheel(workdir, index)
    va, vb = _venv(run, users.alice, workdir / "va"), _venv(run, users.bob, workdir / "vb")
    target = vb / "target"
    _as(users.bob, "mkdir", str(target))
    _as(users.alice, "ln", "-s", str(target), str(va / SITE / "hlpkg"))
    done = _install(run, users.alice, service, va, index, "hlpkg")
    assert done.returncode != 0
    assert "symlink" in one_line_error(done)
    assert os.listdir(target) == []


# -- old pip, real paths ---------------------------------------------------------------------------------------------


def test_old_pip_uninstalls_a_service_hardlinked_package_and_real_paths_stay_in_the_venv(
    run: Runner, users: Users, workdir: Path, index: PyIndex, service: Service
) -> None:
    wheel = _wheel(workdir, index)
    venv = workdir / "old"
    made = _as(users.alice, SYSTEM_PYTHON, "-m", "venv", str(venv))
    assert made.returncode == 0, made.stderr
    pip = _as(users.alice, str(venv / "bin" / "python"), "-m", "pip", "--version")
    assert pip.stdout.startswith("pip 23.0.1"), pip.stdout
    done = _install(run, users.alice, service, venv, index, "hlpkg")
    assert done.returncode == 0, done.stderr
    assert _link_mode(venv) == "hardlink"
    module = venv / SITE / "hlpkg" / "__init__.py"
    stored = service.store / "trees" / _sha(wheel) / "hlpkg" / "__init__.py"
    assert module.stat().st_ino == stored.stat().st_ino
    where = _as(users.alice, str(venv / "bin" / "python"), "-c",
                "import os, hlpkg; print(os.path.realpath(hlpkg.__file__))")
    assert where.stdout.strip() == os.path.realpath(module)
    assert where.stdout.strip().startswith(os.path.realpath(venv) + "/")
    links = stored.stat().st_nlink

    removed = _as(users.alice, str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-y", "hlpkg")
    assert removed.returncode == 0, removed.stderr
    left = [p for p in (venv / SITE).iterdir() if p.name.startswith("hlpkg")]
    assert left == [] and not (venv / "bin" / "hlpkg").exists()
    assert stored.stat().st_nlink == links - 1 and stored.read_text() == "VALUE = 'hlpkg'\n"
    verify = run(users.alice, "--store", str(service.store), "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


# -- where the mode is not available ---------------------------------------------------------------------------------


def test_a_service_that_is_not_root_cannot_link_and_auto_falls_back(
    run: Runner, users: Users, workdir: Path, index: PyIndex
) -> None:
    _ensure_user(SERVICE_USER, ())
    service = _start(run, workdir, index, SERVICE_USER)
    try:
        _wheel(workdir, index)
        venv = _venv(run, users.alice, workdir / "v")
        refused = _install(run, users.alice, service, venv, index, "--link-mode", "hardlink", "hlpkg")
        assert refused.returncode != 0
        assert one_line_error(refused) == ("error: hardlink cannot be used: the store service does not run as root, "
                                           "so it cannot hard-link into your venv "
                                           "(fix: use --link-mode symlink or copy)")
        done = _install(run, users.alice, service, venv, index, "hlpkg")
        assert done.returncode == 0, done.stderr
        assert _link_mode(venv) != "hardlink"
        answer = _raw_link(run, users.alice, service, {"op": "link", "key": "0" * 64, "entries": [
            [0, "x.py", "x.py"]]}, str(venv / SITE))
        assert answer["ok"] is False and "does not run as root" in str(answer["error"]), answer
    finally:
        service.stop()
