"""Fold granularity per directory: namespace packages stay real (pip and uv add to them), data directories fold (a web
server's static root then resolves to where its files are). Real packages, downloaded once; real servers."""

from __future__ import annotations

import hashlib
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from wheelstore.store.store import Store
from wheelstore.venv.fold import ABSENT, folds_to_make, view

from .conftest import SYSTEM_PYTHON, Runner, Users
from .wheelmaker import make_wheel

CACHE = Path("/var/tmp/wheelstore-cache")
#: uv from wheelstore's own environment (a dependency of the project)
UV = Path(sys.executable).parent / "uv"


def _download(name: str, *requirements: str, deps: bool = True) -> Path:
    """Wheels for ``requirements`` in CACHE/name, downloaded once (pip checks the index's hashes); skip if offline."""
    d = CACHE / name
    marker = d / ".complete"
    if not marker.exists():
        d.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(d), *requirements]
        done = subprocess.run(cmd + ([] if deps else ["--no-deps"]), capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot download {' '.join(requirements)}: {done.stderr.strip()[-300:]}")
        marker.write_text("\n".join(requirements) + "\n")
    for p in (CACHE, d, *d.iterdir()):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return d


@pytest.fixture(scope="session")
def protobuf_wheels() -> Path:
    return _download("protobuf", "protobuf", "googleapis-common-protos", "pip")


@pytest.fixture(scope="session")
def tornado_wheels() -> Path:
    return _download("tornado", "tornado>=6.5.9", deps=False)


@pytest.fixture(scope="session")
def jupyterlab_wheels() -> Path:
    return _download("jupyterlab", "jupyterlab")


def _store_and_venv(run: Runner, user: str | None, workdir: Path, name: str = "venv") -> tuple[Path, Path]:
    store, venv = workdir / "store", workdir / name
    if not store.exists():
        assert run(user, "init", str(store)).returncode == 0
    done = run(user, "venv", str(venv), "--python", SYSTEM_PYTHON)
    assert done.returncode == 0, done.stderr
    return store, venv


def _install(run: Runner, user: str | None, store: Path, venv: Path, links: Path, *items: str) -> None:
    done = run(user, "--store", str(store), "install", "--venv", str(venv), "--link-mode", "fold", "--no-index",
               "--find-links", str(links), *items, timeout=300)
    assert done.returncode == 0, done.stderr


def _as(user: str, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", user, "--", *cmd], capture_output=True, text=True, cwd="/",
                          timeout=timeout)


def _site(venv: Path) -> Path:
    return next(venv.glob("lib/python3*/site-packages"))


# -- namespace packages ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("installer", ["pip", "uv"])
def test_pip_and_uv_add_to_a_namespace_package_wheelstore_filled(
    run: Runner, users: Users, workdir: Path, protobuf_wheels: Path, installer: str
) -> None:
    store, venv = _store_and_venv(run, users.alice, workdir)
    _install(run, users.alice, store, venv, protobuf_wheels, "protobuf", *(["pip"] if installer == "pip" else []))
    google = _site(venv) / "google"
    assert google.is_dir() and not google.is_symlink()  # a namespace package: every installer may add to it
    assert (google / "protobuf").is_symlink()  # a regular package in it still folds (anchored by google/_upb)
    if installer == "pip":
        cmd = [str(venv / "bin/python"), "-m", "pip", "install", "-q", "--no-index", "--find-links",
               str(protobuf_wheels), "googleapis-common-protos"]
    else:
        cmd = [str(UV), "pip", "install", "--python", str(venv / "bin/python"), "--no-index", "--find-links",
               str(protobuf_wheels), "--cache-dir", str(workdir / "uv-cache"), "googleapis-common-protos"]
    done = _as(users.alice, *cmd)
    assert done.returncode == 0, done.stderr
    out = _as(users.alice, str(venv / "bin/python"), "-c",
              "import google.api.annotations_pb2, google.rpc.status_pb2, google.protobuf; print('ok')")
    assert out.stdout == "ok\n", out.stderr
    # and wheelstore sees both, complete
    listed = run(users.alice, "--store", str(store), "list", "--venv", str(venv))
    assert "googleapis" in listed.stdout.replace("_", "-") and "protobuf" in listed.stdout, listed.stderr


def test_debian_pip_adds_to_the_namespace(
    run: Runner, users: Users, workdir: Path, protobuf_wheels: Path
) -> None:
    """Debian's pip 23.0.1 (what ``python3 -m venv`` puts in a venv here) installs into ``google/`` too; ``auto``
    links per file beside it (hard links: alice's own trees in her private store), as that pip removes no links."""
    store = workdir / "store"
    assert run(users.alice, "init", str(store)).returncode == 0
    venv = workdir / "venv"
    assert _as(users.alice, SYSTEM_PYTHON, "-m", "venv", str(venv)).returncode == 0
    done = run(users.alice, "--store", str(store), "install", "--venv", str(venv), "--no-index", "--find-links",
               str(protobuf_wheels), "protobuf", timeout=300)
    assert done.returncode == 0 and "(hardlink)" in done.stdout, done
    done = _as(users.alice, str(venv / "bin/python"), "-m", "pip", "install", "-q", "--no-index", "--find-links",
               str(protobuf_wheels), "googleapis-common-protos")
    assert done.returncode == 0, done.stderr
    out = _as(users.alice, str(venv / "bin/python"), "-c", "import google.api, google.protobuf; print('ok')")
    assert out.stdout == "ok\n", out.stderr


# -- data directories ------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()
            code: int = response.status
            return code
    except urllib.error.HTTPError as e:
        return e.code


def _wait(url: str, proc: subprocess.Popen[str], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            _status(url)
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer in {seconds} s")


@pytest.fixture
def server() -> Iterator[list[subprocess.Popen[str]]]:
    """Servers a test starts, stopped by their own process objects afterwards."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


SERVE = """
import sys, asyncio, tornado.web
root = sys.argv[1]
app = tornado.web.Application([(r"/s/(.*)", tornado.web.StaticFileHandler, {"path": root})])
async def main():
    app.listen(int(sys.argv[2]), "127.0.0.1")
    await asyncio.Event().wait()
asyncio.run(main())
"""


def test_tornado_serves_a_folded_data_directory(
    run: Runner, users: Users, workdir: Path, tornado_wheels: Path, server: list[subprocess.Popen[str]]
) -> None:
    files = {"myapp/__init__.py": b"",
             "myapp-1.0.data/data/share/myapp/static/app.js": b"console.log(1)\n",
             "myapp-1.0.data/data/share/myapp/static/sub/x.css": b"a {}\n",
             "myapp-1.0.data/data/share/myapp/static/sub/y.css": b"b {}\n"}
    wheel = make_wheel(workdir, "myapp", files=files)
    wheel.chmod(0o644)
    store, venv = _store_and_venv(run, users.alice, workdir)
    _install(run, users.alice, store, venv, tornado_wheels, "tornado", str(wheel))
    static = venv / "share/myapp/static"
    assert static.is_symlink()  # the static root itself resolves into the store, where its files are
    share_myapp = venv / "share/myapp"
    assert not share_myapp.is_symlink() and (share_myapp / ".myapp-1.0.wheelstore-anchor").is_file()
    record = (_site(venv) / "myapp-1.0.dist-info/RECORD").read_text().splitlines()
    rows = [r.split(",")[0] for r in record]
    fold_row = rows.index("../../../share/myapp/static")
    assert fold_row < rows.index("../../../share/myapp/static/app.js")  # the fold's row first, for row-wise removal
    port = _free_port()
    proc = subprocess.Popen(["runuser", "-u", users.alice, "--", str(venv / "bin/python"), "-c", SERVE, str(static),
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
    server.append(proc)
    _wait(f"http://127.0.0.1:{port}/s/app.js", proc, 20)
    for rel in ("app.js", "sub/x.css", "sub/y.css"):
        assert _status(f"http://127.0.0.1:{port}/s/{rel}") == 200, rel
    # wheelstore's uninstall takes the fold, the marker and the directories left empty, never the store
    done = run(users.alice, "--store", str(store), "uninstall", "--venv", str(venv), "myapp")
    assert done.returncode == 0, done.stderr
    assert not (venv / "share/myapp").exists()
    assert any(store.glob("trees/*/myapp-1.0.data/data/share/myapp/static/sub/x.css"))


def test_current_pip_uninstall_of_a_folded_data_directory(
    run: Runner, users: Users, workdir: Path, protobuf_wheels: Path
) -> None:
    """Current pip removes the fold, its marker and nothing of another distribution sharing ``share/myapp``."""
    mine = make_wheel(workdir, "myapp", files={"myapp/__init__.py": b"",
                                               "myapp-1.0.data/data/share/myapp/static/app.js": b"1\n",
                                               "myapp-1.0.data/data/share/myapp/static/js/b.js": b"2\n"})
    other = make_wheel(workdir, "other", files={"other/__init__.py": b"",
                                                "other-1.0.data/data/share/myapp/other.txt": b"o\n"})
    for w in (mine, other):
        w.chmod(0o644)
    store, venv = _store_and_venv(run, users.alice, workdir)
    _install(run, users.alice, store, venv, protobuf_wheels, "pip", str(mine))
    assert (venv / "share/myapp/static").is_symlink()
    done = _as(users.alice, str(venv / "bin/python"), "-m", "pip", "install", "-q", "--no-index", str(other))
    assert done.returncode == 0, done.stderr
    # pip's uninstall of ``other`` walks share/myapp: the marker is not on its list, so the fold stays
    done = _as(users.alice, str(venv / "bin/python"), "-m", "pip", "uninstall", "-y", "other")
    assert done.returncode == 0, done.stderr
    assert (venv / "share/myapp/static/app.js").is_file() and not (venv / "share/myapp/other.txt").exists()
    done = _as(users.alice, str(venv / "bin/python"), "-m", "pip", "uninstall", "-y", "myapp")
    assert done.returncode == 0, done.stderr
    assert not (venv / "share/myapp").exists()
    assert any(store.glob("trees/*/myapp-1.0.data/data/share/myapp/static/js/b.js"))


#: what /lab references: scripts, styles, icons
_ASSET = re.compile(r'(?:src|href)="(/[^"?#]+)')


def test_jupyterlab_serves_every_asset(
    run: Runner, workdir: Path, jupyterlab_wheels: Path, server: list[subprocess.Popen[str]]
) -> None:
    store, venv = _store_and_venv(run, None, workdir)
    _install(run, None, store, venv, jupyterlab_wheels, "jupyterlab")
    static = venv / "share/jupyter/lab/static"
    assert static.is_symlink() and (venv / "share/jupyter/lab/themes").is_symlink()
    port = _free_port()
    home = workdir / "home"
    home.mkdir()
    env = {"HOME": str(home), "PATH": f"{venv / 'bin'}:/usr/bin:/bin", "LANG": "C.UTF-8",
           "JUPYTER_CONFIG_DIR": str(home / "cfg"), "JUPYTER_DATA_DIR": str(home / "data"),
           "JUPYTER_RUNTIME_DIR": str(home / "run"), "JUPYTER_PLATFORM_DIRS": "1"}
    proc = subprocess.Popen([str(venv / "bin/jupyter"), "lab", "--no-browser", "--allow-root", f"--port={port}",
                             "--ServerApp.token=", "--ServerApp.password=", f"--ServerApp.root_dir={home}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(home), env=env)
    server.append(proc)
    base = f"http://127.0.0.1:{port}"
    _wait(f"{base}/lab", proc, 60)
    with urllib.request.urlopen(f"{base}/lab", timeout=10) as response:
        page = response.read().decode()
    urls = set(_ASSET.findall(page))
    assert any(u.startswith("/static/lab/main.") for u in urls), page[:2000]
    # every file of the static root (the main bundle's chunks among them), every theme, every federated extension
    urls |= {f"/static/lab/{p.relative_to(static)}" for p in static.rglob("*") if p.is_file()}
    themes = venv / "share/jupyter/lab/themes"
    urls |= {f"/lab/api/themes/{p.relative_to(themes)}" for p in themes.rglob("*") if p.is_file()}
    extensions = venv / "share/jupyter/labextensions"
    urls |= {f"/lab/extensions/{p.relative_to(extensions)}" for p in extensions.rglob("*")
             if p.is_file() and "/static/" in f"/{p.relative_to(extensions)}"}
    failed = {u: code for u in sorted(urls) if (code := _status(base + u)) != 200}
    assert not failed, (len(failed), len(urls), dict(list(failed.items())[:5]))


# -- the rule, directory by directory --------------------------------------------------------------------------------


def test_which_directories_fold(run: Runner, users: Users, workdir: Path) -> None:
    """Namespace packages (nested, declared) and shared data directories stay real; regular packages in them, a
    namespace-free directory inside a package, ``*.libs`` and an application's data directory fold."""
    data = "ns-1.0.data/data/"
    files = {"google/protobuf/__init__.py": b"", "google/protobuf/internal/x.py": b"",
             "google/cloud/storage/__init__.py": b"",
             "zope/__init__.py": b"__import__('pkg_resources').declare_namespace(__name__)\n",
             "zope/interface/__init__.py": b"", "ns-1.0.dist-info/namespace_packages.txt": b"zope\n",
             "mypkg/__init__.py": b"", "mypkg/templates/t.py": b"", "mypkg.libs/libx.so.1": b"x",
             f"{data}share/myapp/static/app.js": b"1", f"{data}share/myapp/static/sub/x.css": b"2",
             f"{data}share/man/man1/ns.1": b"3", f"{data}etc/myapp/conf.d/ns.json": b"{}"}
    wheel = make_wheel(workdir, "ns", files=files)
    wheel.chmod(0o644)
    store = workdir / "store"
    assert run(users.alice, "init", str(store)).returncode == 0
    assert run(users.alice, "--store", str(store), "realize", "--no-compile", str(wheel)).returncode == 0
    tree = Store.open(store).lookup(hashlib.sha256(wheel.read_bytes()).hexdigest())
    assert tree is not None
    site, prefix = "/v/lib/python3.11/site-packages", "/v"
    v = view(tree, {"": site, data: prefix}, "ns-1.0.data", None)
    folded = set(folds_to_make([v], lambda _path: ABSENT)[tree.key])
    assert folded == {f"{site}/{d}" for d in ("google/protobuf", "zope/interface", "mypkg", "mypkg.libs")} | {
        f"{prefix}/share/myapp/static"}
    for real in ("google", "google/cloud", "zope"):
        assert f"{site}/{real}" in v.blocked, real
    for real in ("share", "share/myapp", "share/man/man1", "etc/myapp", "etc/myapp/conf.d"):
        assert f"{prefix}/{real}" in v.blocked, real
    assert v.markers == {f"{prefix}/{d}" for d in ("share", "share/myapp", "share/man", "etc", "etc/myapp")}
