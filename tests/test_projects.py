"""Local projects (issue 16, point 4): ``-e DIR``, ``DIR``, a local sdist and ``name @ file:///DIR``, built through uv
offline with a local flit_core, installed through the CLI."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from wheelstore.base.interpreter import Interpreter
from wheelstore.fetch.sources import Sources
from wheelstore.resolve.findlinks import FindLinks
from wheelstore.resolve.pylock import pins_from_pylock
from wheelstore.resolve.requirements import lazy_environment, parse_requirement

from .conftest import SYSTEM_PYTHON, Runner, Users, one_line_error
from .wheelmaker import make_wheel


def _project(where: Path, name: str = "myproj", value: int = 1) -> Path:
    """A project directory with a flit_core backend and one module."""
    (where / name).mkdir(parents=True)
    (where / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["flit_core>=3.2"]\nbuild-backend = "flit_core.buildapi"\n\n'
        f'[project]\nname = "{name}"\nversion = "0.1"\ndescription = "a local project"\n')
    (where / name / "__init__.py").write_text(f"VALUE = {value}\n")
    for p in (where, *where.rglob("*")):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return where


def _venv(path: Path, user: str | None = None) -> Path:
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(path)], check=True, capture_output=True)
    if user:
        subprocess.run(["chown", "-R", user, str(path)], check=True)
    return path


def _offline(links: Path) -> list[str]:
    return ["--no-index", "-f", str(links), "--offline"]


def _value(venv: Path, module: str = "myproj") -> str:
    done = subprocess.run([str(venv / "bin" / "python"), "-c", f"import {module}; print({module}.VALUE)"],
                          capture_output=True, text=True, cwd="/")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _published(store: Path) -> tuple[list[str], list[str]]:
    return sorted(os.listdir(store / "trees")), sorted(os.listdir(store / "manifests"))


def _site(venv: Path) -> Path:
    (site,) = venv.glob("lib/python3*/site-packages")
    return site


@pytest.fixture
def links(kit: tuple[Path, Path, Sources]) -> Path:
    """The find-links directory with flit_core, the build backend of every project here."""
    return Path(kit[2].find_links[0])


def test_editable_edits_show_and_the_store_is_untouched(run: Runner, workdir: Path, links: Path) -> None:
    store, venv, proj = workdir / "store", _venv(workdir / "venv"), _project(workdir / "proj")
    assert run(None, "init", str(store)).returncode == 0
    other = make_wheel(workdir, "other", "1.0", files={"other/__init__.py": b"VALUE = 7\n"})
    assert run(None, "--store", str(store), "install", "--venv", str(venv), str(other)).returncode == 0
    before = _published(store)
    done = run(None, "--store", str(store), "install", "--venv", str(venv), "-e", str(proj), *_offline(links))
    assert done.returncode == 0, done.stderr
    assert "+ myproj==0.1 (editable)" in done.stdout
    assert _value(venv) == "1"
    (proj / "myproj" / "__init__.py").write_text("VALUE = 2\n")
    assert _value(venv) == "2"  # the venv imports the project's own source
    assert _published(store) == before
    direct = json.loads(next(_site(venv).glob("myproj-*.dist-info")).joinpath("direct_url.json").read_text())
    assert direct == {"url": proj.as_uri(), "dir_info": {"editable": True}}

    listed = run(None, "list", "--venv", str(venv), "--json")
    assert {d["name"] for d in json.loads(listed.stdout)} == {"myproj", "other"}
    again = run(None, "--store", str(store), "install", "--venv", str(venv), str(other))  # a plain install later
    assert again.returncode == 0 and "myproj" not in again.stderr, again.stderr  # nothing said damaged
    req = workdir / "req.txt"
    req.write_text(f"-e {proj}\n{other}\n")
    synced = run(None, "--store", str(store), "sync", "--venv", str(venv), "-r", str(req), *_offline(links))
    assert synced.returncode == 0, synced.stderr
    assert "- myproj" not in synced.stdout.replace("(editable)", "")  # sync kept the editable
    assert _value(venv) == "2" and _value(venv, "other") == "7"
    removed = run(None, "uninstall", "--venv", str(venv), "myproj")
    assert removed.returncode == 0, removed.stderr
    assert not list(_site(venv).glob("myproj*")) and _published(store) == before


def test_project_directory_is_built_and_published_once(run: Runner, workdir: Path, links: Path) -> None:
    store, proj = workdir / "store", _project(workdir / "proj")
    assert run(None, "init", str(store)).returncode == 0
    first = _venv(workdir / "v1")
    done = subprocess.run([str(run.tool), "--store", str(store), "install", "--venv", str(first), "./proj",
                           *_offline(links)], capture_output=True, text=True, cwd=workdir)  # relative, as typed
    assert done.returncode == 0, done.stderr
    assert _value(first) == "1"
    dist_info = next(_site(first).glob("myproj-*.dist-info"))
    assert json.loads((dist_info / "direct_url.json").read_text()) == {"url": proj.as_uri(), "dir_info": {}}
    published = _published(store)
    assert len(published[0]) == 1
    second = _venv(workdir / "v2")
    assert run(None, "--store", str(store), "install", "--venv", str(second), str(proj),
               *_offline(links)).returncode == 0
    assert _value(second) == "1"
    assert _published(store) == published  # flit_core builds the unchanged project byte for byte: the same tree

    (proj / "myproj" / "__init__.py").write_text("VALUE = 3\n")  # a changed project: a new tree, installed again
    changed = run(None, "--store", str(store), "install", "--venv", str(second), str(proj), *_offline(links))
    assert changed.returncode == 0 and "+ myproj==0.1" in changed.stdout, changed.stderr
    assert _value(second) == "3" and _value(first) == "1" and len(_published(store)[0]) == 2


def test_local_sdist_is_built_once_per_store(run: Runner, workdir: Path, kit: tuple[Path, Path, Sources],
                                             links: Path) -> None:
    sdist, markers, _ = kit
    store = workdir / "store"
    assert run(None, "init", str(store)).returncode == 0
    for i, spelling in enumerate([str(sdist), f"tinypkg @ {sdist.as_uri()}"]):
        venv = _venv(workdir / f"v{i}")
        done = run(None, "--store", str(store), "install", "--venv", str(venv), spelling, *_offline(links))
        assert done.returncode == 0, done.stderr
        assert _value(venv, "tinypkg") == "42"
    assert len(list(markers.iterdir())) == 1  # the backend ran once for both venvs


def test_name_at_file_url_of_a_directory(run: Runner, workdir: Path, links: Path) -> None:
    store, venv, proj = workdir / "store", _venv(workdir / "venv"), _project(workdir / "proj")
    assert run(None, "init", str(store)).returncode == 0
    req = workdir / "req.txt"
    req.write_text(f"myproj @ {proj.as_uri()}\n")
    done = run(None, "--store", str(store), "install", "--venv", str(venv), "-r", str(req), *_offline(links))
    assert done.returncode == 0, done.stderr
    assert _value(venv) == "1"
    wrong = run(None, "--store", str(store), "install", "--venv", str(venv), f"yourproj @ {proj.as_uri()}")
    assert "is myproj, not yourproj" in one_line_error(wrong)


def test_resolved_with_uv_projects_come_with_their_dependencies(run: Runner, workdir: Path, links: Path) -> None:
    """When uv resolves (an unpinned requirement), a project is locked as a ``directory`` entry with its
    dependencies, and an ``-e`` line of a requirements file as an editable one."""
    store, venv = workdir / "store", _venv(workdir / "venv")
    assert run(None, "init", str(store)).returncode == 0
    for name in ("dep", "other"):
        make_wheel(links, name, "1.0", files={f"{name}/__init__.py": b"VALUE = 5\n"}).chmod(0o644)
    proj, editable = _project(workdir / "proj"), _project(workdir / "ed", "edproj")
    text = (proj / "pyproject.toml").read_text()
    (proj / "pyproject.toml").write_text(text + 'dependencies = ["dep"]\n')
    req = workdir / "req.txt"
    req.write_text(f"-e {editable}\n")
    done = run(None, "--store", str(store), "install", "--venv", str(venv), str(proj), "other", "-r", str(req),
               *_offline(links))
    assert done.returncode == 0, done.stderr
    assert {"+ dep==1.0", "+ myproj==0.1", "+ other==1.0", "+ edproj==0.1 (editable)"} <= {
        line.strip().split(" (fold")[0].split(" (copy")[0] for line in done.stdout.splitlines()}, done.stdout
    assert [_value(venv, m) for m in ("myproj", "dep", "edproj")] == ["1", "5", "1"]


def test_a_directory_that_is_not_a_project_is_one_line(run: Runner, workdir: Path) -> None:
    venv, plain = _venv(workdir / "venv"), workdir / "plain"
    plain.mkdir()
    assert run(None, "init", str(workdir / "store")).returncode == 0
    for args in ([str(plain)], ["-e", str(plain)], [str(workdir / "missing-1.0.tar.gz")]):
        line = one_line_error(run(None, "--store", str(workdir / "store"), "install", "--venv", str(venv), *args))
        assert line.count(str(plain)) == 1 or line.count("missing-1.0.tar.gz") == 1, line
        assert "pyproject.toml" in line or "no such file" in line, line


def test_editable_files_are_the_users_own(run: Runner, users: Users, group_store: Path, workdir: Path,
                                          links: Path) -> None:
    venv, proj = _venv(workdir / "venv", users.alice), _project(workdir / "proj")
    subprocess.run(["chown", "-R", users.alice, str(proj)], check=True)
    before = _published(group_store)
    done = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), "-e", str(proj),
               *_offline(links))
    assert done.returncode == 0, done.stderr
    alice = int(subprocess.run(["id", "-u", users.alice], capture_output=True, text=True).stdout)
    mine = [p for p in _site(venv).iterdir() if p.name.startswith("myproj")]
    assert mine and all(p.lstat().st_uid == alice and not p.is_symlink() for p in mine)
    for p in (f for d in mine for f in ([d, *d.rglob("*")] if d.is_dir() else [d])):
        assert p.lstat().st_uid == alice and stat.S_IMODE(p.lstat().st_mode) & stat.S_IWUSR, p
    assert _published(group_store) == before
    assert _value(venv) == "1"


def test_lock_entries_of_local_projects_are_project_pins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What uv 0.13.9 writes in a pylock for ``-e DIR``, ``DIR`` and an sdist path, read back as project pins."""
    interpreter = Interpreter.inspect(sys.executable)
    proj = _project(tmp_path / "proj")
    sdist = tmp_path / "sd" / "third-0.1.tar.gz"
    sdist.parent.mkdir()
    sdist.write_bytes(b"not read here")
    lock = tmp_path / "pylock.toml"
    lock.write_text('lock-version = "1.0"\ncreated-by = "uv"\n\n'
                    '[[packages]]\nname = "myproj"\ndirectory = { path = "proj", editable = true }\n\n'
                    '[[packages]]\nname = "other"\ndirectory = { path = "proj" }\n\n'
                    '[[packages]]\nname = "third"\nversion = "0.1"\n'
                    f'archive = {{ path = "sd/third-0.1.tar.gz", hashes = {{ sha256 = "{"a" * 64}" }} }}\n')
    env = lazy_environment(interpreter)
    editable, plain, archive = pins_from_pylock(lock, env, interpreter, FindLinks([], interpreter))
    assert (editable.name, editable.project, editable.editable) == ("myproj", proj, True)
    assert (plain.project, plain.editable) == (proj, False)
    assert archive.remote is not None and archive.remote.url == sdist.as_uri() and archive.hashes == {"a" * 64}
    assert (archive.name, str(archive.version)) == ("third", "0.1")
    monkeypatch.chdir(tmp_path)
    for text in ("./proj", str(proj), f"myproj @ {proj.as_uri()}"):
        pin = parse_requirement(text, "command line", env)
        assert pin is not None and (pin.name, pin.project, pin.editable) == ("myproj", proj, False), text
    monkeypatch.chdir(proj)
    pin = parse_requirement(".", "command line", env)
    assert pin is not None and pin.project == proj
