"""sdists built once per (sdist, interpreter) with uv, published, and reused by other venvs and users (issue 4)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from wheelstore.base.errors import BuildError, HashMismatch
from wheelstore.base.interpreter import Interpreter
from wheelstore.fetch.build import ensure_built, record_name
from wheelstore.fetch.sources import Sources
from wheelstore.store.store import Store

from .conftest import SYSTEM_PYTHON, Runner, Users
from .wheelmaker import make_sdist


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _venv(path: Path, python: str = SYSTEM_PYTHON) -> Interpreter:
    subprocess.run([python, "-m", "venv", "--without-pip", str(path)], check=True)
    return Interpreter.inspect(path / "bin" / "python")


def test_built_once_and_reused_by_a_second_venv(kit: tuple[Path, Path, Sources], workdir: Path) -> None:
    sdist, markers, sources = kit
    with Store.init(workdir / "store") as store:
        first = _venv(workdir / "v1")
        tree = ensure_built(store, sdist, _sha(sdist), first, sources)
        assert tree.manifest.name == "tinypkg" and "tinypkg/__init__.py" in tree.manifest.files
        record = store.root / "manifests" / record_name(_sha(sdist), first)
        st = record.stat()
        assert stat.S_IMODE(st.st_mode) == 0o400
        assert json.loads(record.read_text())["tree"] == tree.key

        again = ensure_built(store, sdist, _sha(sdist), _venv(workdir / "v2"), sources)
        assert again.key == tree.key
        assert len(list(markers.iterdir())) == 1  # the backend ran once
        assert (record.stat().st_ino, record.stat().st_mtime_ns) == (st.st_ino, st.st_mtime_ns)


def test_another_python_never_matches(kit: tuple[Path, Path, Sources], workdir: Path) -> None:
    other = Path("/root/.pyenv/versions/3.12.1/bin/python3.12")
    if not other.exists():
        pytest.skip("no second Python version here")
    sdist, markers, sources = kit
    with Store.init(workdir / "store") as store:
        py311, py312 = _venv(workdir / "v311"), _venv(workdir / "v312", str(other))
        assert record_name(_sha(sdist), py311) != record_name(_sha(sdist), py312)
        ensure_built(store, sdist, _sha(sdist), py311, sources)
        ensure_built(store, sdist, _sha(sdist), py312, sources)
        assert len(list(markers.iterdir())) == 2


def test_failed_build_is_one_line_and_publishes_nothing(kit: tuple[Path, Path, Sources], workdir: Path) -> None:
    _, markers, sources = kit
    bad_dir = workdir / "bad"
    bad_dir.mkdir()
    bad = make_sdist(bad_dir, markers, fail=True)
    with Store.init(workdir / "store") as store:
        interpreter = _venv(workdir / "v")
        before = {a: sorted(os.listdir(store.root / a)) for a in ("trees", "manifests", "staging")}
        with pytest.raises(BuildError) as e:
            ensure_built(store, bad, _sha(bad), interpreter, sources)
        text = str(e.value)
        assert "\n" not in text and "always fails" in text and "full log: " in text
        log = Path(text.split("full log: ")[1].split()[0].rstrip(";"))
        assert "this backend always fails" in log.read_text()
        assert {a: sorted(os.listdir(store.root / a)) for a in before} == before

        good = kit[0]
        with pytest.raises(HashMismatch):
            ensure_built(store, good, "0" * 64, interpreter, sources)
        assert {a: sorted(os.listdir(store.root / a)) for a in before} == before
        assert not list(markers.iterdir())


_BUILD = """
import sys
from pathlib import Path
from wheelstore.fetch.build import ensure_built
from wheelstore.fetch.sources import Sources
from wheelstore.store.store import Store
from wheelstore.base.interpreter import Interpreter
store, sdist, sha, python, links = sys.argv[1:6]
with Store.open(store) as s:
    tree = ensure_built(s, Path(sdist), sha, Interpreter.inspect(python),
                        Sources(index_urls=(), no_index=True, find_links=(links,), offline=True))
    print(tree.key)
"""


def test_two_users_at_once_build_once(
    kit: tuple[Path, Path, Sources], run: Runner, users: Users, group_store: Path, workdir: Path
) -> None:
    """alice and bob ask for the same sdist at the same time in a group store: one builds, the other waits, reuses."""
    sdist, markers, sources = kit
    interpreter = _venv(workdir / "v")
    python = str(run.tool.parent / "python")  # the tool's venv: wheelstore and uv importable by every user
    args = [python, "-c", _BUILD, str(group_store), str(sdist), _sha(sdist), interpreter.executable,
            sources.find_links[0]]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
                              env=run.env(user), **run.popen_kwargs(user, 0o022))
             for user in (users.alice, users.bob)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert outs[0][0] == outs[1][0]
    assert len(list(markers.iterdir())) == 1
    record = group_store / "manifests" / record_name(_sha(sdist), interpreter)
    assert record.stat().st_uid in (users.uid(users.alice), users.uid(users.bob))

    # and later, bob's second venv reuses it too, without building
    later = _venv(workdir / "v2")
    subprocess.run(["chmod", "-R", "a+rX", str(workdir / "v2")], check=True)
    argv = [str(group_store), str(sdist), _sha(sdist), later.executable, sources.find_links[0]]
    prelude = f"import sys\nsys.path[:0] = {_site_packages(run)!r}\nsys.argv[1:] = {argv!r}\n"
    done = run.python(users.bob, prelude + _BUILD)  # the system Python, given the tool's site-packages
    assert done.returncode == 0, done.stderr
    assert done.stdout == outs[0][0]
    assert len(list(markers.iterdir())) == 1


def _site_packages(run: Runner) -> list[str]:
    return [str(p) for p in (run.tool.parent.parent / "lib").glob("python3*/site-packages")]
