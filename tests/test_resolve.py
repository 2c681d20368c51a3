"""Sources from pip's and uv's configuration, and resolution through uv into a pylock (issue 4)."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.pylock import Pylock

from wheelstore.base.errors import ResolutionError, SourcesError
from wheelstore.base.interpreter import Interpreter
from wheelstore.fetch.sources import PYPI, Sources
from wheelstore.resolve.pylock import read_pylock
from wheelstore.resolve.resolver import lock

from .conftest import SYSTEM_PYTHON, Runner, Users, one_line_error

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


# -- configuration -----------------------------------------------------------------------------------------------------


@pytest.fixture
def cfg(tmp_path: Path) -> dict[str, str]:
    """An environment whose HOME and XDG dirs are the test's own (only /etc/pip.conf is the machine's)."""
    (tmp_path / "home").mkdir()
    return {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
            "XDG_CONFIG_DIRS": str(tmp_path / "sys")}


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_default_is_pypi(cfg: dict[str, str]) -> None:
    s = Sources.from_environment(environ=cfg)
    assert (s.index_urls, s.find_links, s.no_index, s.offline) == ((PYPI,), (), False, False)
    assert s.describe()[0] == {"setting": "index-url", "value": PYPI, "from": "default"}


def test_pip_files_in_pips_order(cfg: dict[str, str], tmp_path: Path) -> None:
    _write(tmp_path / "sys/pip/pip.conf", "[global]\nindex-url = file:///sys\nextra-index-url = file:///x1\n")
    _write(tmp_path / "home/.pip/pip.conf", "[global]\nindex-url = file:///legacy\n")
    user = _write(tmp_path / "xdg/pip/pip.conf",
                  "[global]\nindex-url = file:///user\nfind-links =\n  /links/a\n  /links/b\n")
    s = Sources.from_environment(environ=cfg)
    assert s.index_urls == ("file:///user", "file:///x1")  # the XDG user file beats the legacy one and the global
    assert s.find_links == ("/links/a", "/links/b")
    assert ("index-url", "file:///user", f"{user} [global]") in s.origins

    # [install] in any file beats [global] in any file; PIP_* beats every file; CLI lists extend configured ones
    _write(tmp_path / "sys/pip/pip.conf", "[install]\nindex-url = file:///sys-install\nextra-index-url = file:///x1\n")
    assert Sources.from_environment(environ=cfg).index_urls[0] == "file:///sys-install"
    env = {**cfg, "PIP_INDEX_URL": "file:///env", "PIP_EXTRA_INDEX_URL": "file:///e1 file:///e2", "PIP_NO_INDEX": ""}
    s = Sources.from_environment(environ=env, extra_index_urls=["file:///cli"], find_links=["/cli"])
    assert s.index_urls == ("file:///env", "file:///e1", "file:///e2", "file:///cli")
    assert s.find_links == ("/links/a", "/links/b", "/cli")
    s = Sources.from_environment(environ=env, index_url="file:///cli-primary")
    assert s.index_urls[0] == "file:///cli-primary"
    assert Sources.from_environment(environ={**env, "PIP_NO_INDEX": "yes"}).index_urls == ()


def test_pip_config_file_variable(cfg: dict[str, str], tmp_path: Path) -> None:
    _write(tmp_path / "xdg/pip/pip.conf", "[global]\nindex-url = file:///user\nextra-index-url = file:///ux\n")
    _write(tmp_path / "sys/pip/pip.conf", "[global]\nfind-links = /sys-links\n")
    env_file = _write(tmp_path / "env.conf", "[global]\nextra-index-url = file:///from-env-file\n")
    s = Sources.from_environment(environ={**cfg, "PIP_CONFIG_FILE": str(env_file)})
    # an existing PIP_CONFIG_FILE replaces the user files, and the global ones still count
    assert s.index_urls == (PYPI, "file:///from-env-file")
    assert s.find_links == ("/sys-links",)
    s = Sources.from_environment(environ={**cfg, "PIP_CONFIG_FILE": os.devnull})
    assert (s.index_urls, s.find_links) == ((PYPI,), ())


def test_pip_parity(cfg: dict[str, str], tmp_path: Path) -> None:
    """Our reading of a layered pip configuration gives the indexes and links pip itself uses."""
    _write(tmp_path / "sys/pip/pip.conf", "[global]\nindex-url = file:///nope/sys\nfind-links = /nope/sys-links\n")
    _write(tmp_path / "xdg/pip/pip.conf", "[install]\nextra-index-url = file:///nope/u1 file:///nope/u2\n")
    _write(tmp_path / "home/.pip/pip.conf", "[global]\nindex-url = file:///nope/legacy\n")
    env = {**cfg, "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PIP_FIND_LINKS": "/nope/env-links"}
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps",  # [install] counts
                           "--extra-index-url", "file:///nope/cli", "no-such-dist-zz"],
                          capture_output=True, text=True, env=env, timeout=120)
    looked = dict(line.split(": ", 1) for line in done.stdout.splitlines() if line.startswith("Looking in"))
    ours = Sources.from_environment(environ=env, extra_index_urls=["file:///nope/cli"])
    assert looked["Looking in indexes"].split(", ") == list(ours.index_urls)
    assert looked["Looking in links"].split(", ") == list(ours.find_links)


def test_uv_settings_win_over_pips(cfg: dict[str, str], tmp_path: Path) -> None:
    _write(tmp_path / "xdg/pip/pip.conf", "[global]\nindex-url = file:///pip\nextra-index-url = file:///pip-x\n")
    _write(tmp_path / "sys/uv/uv.toml", 'index-url = "file:///uv-sys"\nextra-index-url = ["file:///sys-x"]\n'
                                        'offline = true\n')
    uv_user = _write(tmp_path / "xdg/uv/uv.toml", '[[index]]\nurl = "file:///uv-default"\ndefault = true\n'
                                                  '[[index]]\nurl = "file:///uv-extra"\n'
                                                  '[[index]]\nurl = "/flat"\nformat = "flat"\n'
                                                  '[[index]]\nurl = "file:///only-pinned"\nexplicit = true\n'
                                                  '[pip]\nextra-index-url = ["file:///pip-table"]\n')
    s = Sources.from_environment(environ=cfg)
    # the user file's scalars win, lists are concatenated user first, [pip] first within a file; pip's are unused
    assert s.index_urls == ("file:///uv-default", "file:///pip-table", "file:///uv-extra", "file:///sys-x")
    assert s.find_links == ("/flat",)
    assert s.offline
    assert ("index-url", "file:///uv-default", str(uv_user)) in s.origins

    env = {**cfg, "UV_DEFAULT_INDEX": "mirror=file:///env-default", "UV_INDEX": "file:///i1 named=file:///i2",
           "UV_FIND_LINKS": "/l1,/l2", "UV_OFFLINE": "0"}
    s = Sources.from_environment(environ=env)
    assert s.index_urls[:3] == ("file:///env-default", "file:///i1", "file:///i2")
    assert s.find_links[:2] == ("/l1", "/l2") and not s.offline
    s = Sources.from_environment(environ={**env, "UV_NO_CONFIG": "1"}, offline=True)
    assert s.index_urls == ("file:///env-default", "file:///i1", "file:///i2") and s.offline


def test_bad_settings_are_one_line(cfg: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(SourcesError) as e:
        Sources.from_environment(environ={**cfg, "UV_NO_INDEX": "maybe"})
    assert "UV_NO_INDEX" in str(e.value) and "\n" not in str(e.value)
    _write(tmp_path / "xdg/uv/uv.toml", "index-url = [unclosed\n")
    with pytest.raises(SourcesError, match="not valid TOML"):
        Sources.from_environment(environ=cfg)
    _write(tmp_path / "xdg/uv/uv.toml", "find-links = '/not-a-list'\n")
    with pytest.raises(SourcesError, match="must be a list"):
        Sources.from_environment(environ=cfg)


def test_this_machines_pip_config_is_found() -> None:
    """Whatever extra indexes pip is configured with here (a local mirror), Sources has them too."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    configured = [line.split("=", 1)[1].strip("'") for line in out.splitlines()
                  if line.split("=", 1)[0].endswith(".extra-index-url")]
    if not configured:
        pytest.skip("pip has no extra-index-url configured on this machine")
    urls = Sources.from_environment().index_urls
    for url in configured[-1].split():
        assert url in urls


# -- resolution --------------------------------------------------------------------------------------------------------


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def dist_wheel(directory: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A small wheel that declares dependencies (tests/wheelmaker makes none)."""
    dist_info = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires)
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{dist_info}/METADATA": metadata.encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{p},{record_hash(d)},{len(d)}\n" for p, d in files.items()) + f"{dist_info}/RECORD,,\n"
    files[f"{dist_info}/RECORD"] = record.encode()
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in files.items():
            zf.writestr(zipfile.ZipInfo(member, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return path


@pytest.fixture
def wheels(workdir: Path) -> Path:
    d = workdir / "wheels"
    d.mkdir(mode=0o755)
    dist_wheel(d, "gamma", "1.0", ("delta>=1",))
    for version in ("1.0", "1.5"):
        dist_wheel(d, "delta", version)
    for p in d.iterdir():
        p.chmod(0o644)
    return d


@pytest.fixture
def simple_index(wheels: Path) -> str:
    """A PEP 503 tree over the same wheels, as a ``file://`` URL, with sha256 fragments."""
    root = wheels.parent / "simple"
    for name in ("gamma", "delta"):
        (root / name).mkdir(parents=True)
        links = "".join(f'<a href="../../wheels/{w.name}#sha256={hashlib.sha256(w.read_bytes()).hexdigest()}">'
                        f"{w.name}</a>\n" for w in sorted(wheels.glob(f"{name}-*.whl")))
        (root / name / "index.html").write_text(f"<html><body>\n{links}</body></html>\n")
    return root.as_uri()


@pytest.fixture(scope="module")
def target(base_dir: Path) -> Interpreter:
    """A venv of the system Python, which every test user can run."""
    venv = base_dir / "resolve-venv"
    if not venv.exists():
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True)
    return Interpreter.inspect(venv / "bin" / "python")


def _selected(path: Path, interpreter: Interpreter) -> dict[str, tuple[str, str]]:
    with open(path, "rb") as f:
        pylock = Pylock.from_dict(tomllib.load(f))
    env = {**default_environment(), "python_version": interpreter.python_version,
           "python_full_version": ".".join(map(str, interpreter.version))}
    chosen = {}
    # env is a plain dict where packaging wants its Environment TypedDict; the lock files here hold wheels and
    # sdists only, which have a url and hashes (the other artifact kinds of the union do not)
    for package, artifact in pylock.select(environment=env, tags=interpreter.tags):  # type: ignore[arg-type]
        url = artifact.url or ""  # type: ignore[union-attr]
        chosen[str(package.name)] = (url.rsplit("/", 1)[-1], artifact.hashes["sha256"])  # type: ignore[union-attr]
    return chosen


def _expected(wheels: Path, *names: str) -> dict[str, tuple[str, str]]:
    out = {}
    for name in names:
        w = next(wheels.glob(f"{name}-*.whl"))
        out[name.split("-")[0]] = (w.name, hashlib.sha256(w.read_bytes()).hexdigest())
    return out


def test_lock_with_find_links(wheels: Path, target: Interpreter, workdir: Path) -> None:
    out = lock(["gamma"], [], target, Sources(index_urls=(), no_index=True, find_links=(str(wheels),)),
               workdir / "pylock.toml")
    assert _selected(out, target) == _expected(wheels, "gamma-1.0", "delta-1.5")


def test_lock_with_a_file_index_and_requirement_files(
    wheels: Path, simple_index: str, target: Interpreter, workdir: Path
) -> None:
    reqs = workdir / "requirements.txt"
    reqs.write_text("delta<1.5\n")
    out = lock(["gamma"], [reqs], target, Sources(index_urls=(simple_index,)), workdir / "pylock.toml")
    assert _selected(out, target) == _expected(wheels, "gamma-1.0", "delta-1.0")
    assert read_pylock(out).created_by == "uv"


def test_unsatisfiable_is_one_line_and_leaves_the_lock(wheels: Path, target: Interpreter, workdir: Path) -> None:
    out = workdir / "pylock.toml"
    out.write_text("# an earlier lock\n")
    sources = Sources(index_urls=(), no_index=True, find_links=(str(wheels),))
    with pytest.raises(ResolutionError) as e:
        lock(["gamma>2"], [], target, sources, out)
    assert "gamma" in str(e.value) and "\n" not in str(e.value) and e.value.hint
    assert out.read_text() == "# an earlier lock\n"
    assert sorted(p.name for p in workdir.iterdir()) == ["pylock.toml", "wheels"]  # no staging left behind
    with pytest.raises(ResolutionError, match="is not a requirement"):
        lock(["gamma >>> 1"], [], target, sources, out)


def test_cli_lock(run: Runner, users: Users, wheels: Path, target: Interpreter, workdir: Path) -> None:
    venv = str(Path(target.prefix))
    out = workdir / "pylock.toml"
    result = run(users.alice, "lock", "gamma", "--venv", venv, "-o", str(out), "--no-index", "-f", str(wheels))
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    assert _selected(out, target) == _expected(wheels, "gamma-1.0", "delta-1.5")
    assert out.stat().st_uid == users.uid(users.alice)

    # --offline with nothing in alice's uv cache for this name: one line, naming it, and no lock written
    out2 = workdir / "offline.toml"
    result = run(users.alice, "lock", "wheelstore-surely-absent-dist", "--python", target.executable, "-o", str(out2),
                 "--offline", "--index-url", "https://pypi.org/simple")
    line = one_line_error(result)
    assert "wheelstore-surely-absent-dist" in line and "fix:" in line
    assert not out2.exists()

    # neither --venv nor --python, and no venv to be found from here: lock resolves for the venv install would use
    line = one_line_error(run(users.alice, "lock", "gamma", "-o", str(out2)))
    assert "no venv found" in line and "--venv" in line and not out2.exists()


@pytest.mark.network
def test_cli_lock_requests_from_the_configured_registry(run: Runner, target: Interpreter, workdir: Path) -> None:
    out = workdir / "pylock.toml"
    result = run(None, "lock", "requests", "--venv", str(Path(target.prefix)), "-o", str(out))
    assert result.returncode == 0, result.stderr
    chosen = _selected(out, target)
    assert {"requests", "idna", "urllib3", "certifi", "charset-normalizer"} <= set(chosen)
    assert all(len(sha) == 64 for _, sha in chosen.values())
