"""Issue 21 point 3: the locks of poetry and pdm, exported by the real tools and synced by wheelstore.

poetry (with poetry-plugin-export, which ``poetry export`` needs since Poetry 2) and pdm are installed from the
registry once per session (by uv); they lock a small project (dependencies, an optional extra, a dev group, a path
dependency) whose distributions a local index serves, and export it with the commands docs/other_locks.md gives.
wheelstore then syncs exactly the exported set, with the project itself editable. The syntax those exports use (an
editable's marker, ``#egg=``, the files' own index options) is also checked offline, without the tools.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from wheelstore.base.errors import InputError
from wheelstore.base.interpreter import Interpreter
from wheelstore.fetch.sources import PYPI, Sources
from wheelstore.resolve.requirements import parse_requirements_file, with_file_indexes

from .conftest import SYSTEM_PYTHON, Runner, flit_core_wheel
from .pyindex import PyIndex
from .wheelmaker import make_wheel

#: no pip or uv configuration of this machine: wheelstore's only index is the one the exported file names
ISOLATED = {"PIP_CONFIG_FILE": os.devnull, "UV_NO_CONFIG": "1"}
#: what the project's default dependencies lock to on Linux (winonly's marker leaves it out)
MAIN = {"dep", "sub"}


class Tools(NamedTuple):
    poetry: Path
    pdm: Path


@pytest.fixture(scope="session")
def tools(base_dir: Path, tool: Path) -> Tools:
    """Current poetry (+ poetry-plugin-export) and pdm, each in its own venv. Installed by the uv wheelstore depends
    on (pip took 40 s for the two, uv a few); pdm's ``locked`` extra pins the libraries it was released with (a
    newer hishel broke it once)."""
    root = base_dir / "other-lock-tools"
    for name, packages in {"poetry": ["poetry", "poetry-plugin-export"], "pdm": ["pdm[locked]"]}.items():
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(root / name)], check=True)
        done = subprocess.run([str(tool.parent / "uv"), "pip", "install", "-q", "--python",
                               str(root / name / "bin" / "python"), *packages], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    return Tools(root / "poetry" / "bin" / "poetry", root / "pdm" / "bin" / "pdm")


@pytest.fixture(scope="module")
def index(base_dir: Path) -> Iterator[PyIndex]:
    """The project's distributions: dep (which requires sub), two versions of sub, the extra's, the dev group's,
    a Windows-only one, and flit_core, the project's build backend."""
    wheels = base_dir / "other-lock-wheels"
    wheels.mkdir(exist_ok=True)
    made = [make_wheel(wheels, "dep", "1.0", requires=("sub>=1",)), make_wheel(wheels, "sub", "1.0"),
            make_wheel(wheels, "sub", "2.0"), make_wheel(wheels, "fancyx", "1.0"),
            make_wheel(wheels, "devtool", "1.0"), make_wheel(wheels, "winonly", "1.0"),
            Path(shutil.copy(flit_core_wheel(), wheels))]
    with PyIndex() as served:
        for wheel in made:
            served.add(wheel)
        yield served


def _project(where: Path, source: str) -> Path:
    """The project: flit_core-built, with a sibling project in libs/ for path dependencies; ``source`` is the
    tool's table naming the index."""
    for directory, name, text in ((where, "myproj", "VALUE = 1\n"), (where / "libs" / "sibling", "sibling", "")):
        (directory / name).mkdir(parents=True)
        (directory / name / "__init__.py").write_text(text)
        (directory / "pyproject.toml").write_text(
            '[build-system]\nrequires = ["flit_core>=3.2"]\nbuild-backend = "flit_core.buildapi"\n\n'
            f'[project]\nname = "{name}"\nversion = "0.1"\ndescription = "a project"\nrequires-python = ">=3.9"\n')
    with open(where / "pyproject.toml", "a") as f:
        f.write('dependencies = ["dep>=1", "winonly; sys_platform == \'win32\'"]\n\n'
                '[project.optional-dependencies]\nfancy = ["fancyx"]\n\n'
                f'[dependency-groups]\ndev = ["devtool"]\n\n{source}')
    return where


#: a tool run in the project: its arguments in, the file it wrote (``-o FILE``) or its output out (``fails=True``:
#: asserted to fail, its output out)
Tool = Callable[..., str]


def _tool(executable: Path, project: Path, home: Path) -> Tool:
    """Run the tool in ``project``, its caches and settings under ``home``, never creating a venv of its own."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "POETRY_CACHE_DIR": str(home / "poetry"),
           "POETRY_CONFIG_DIR": str(home / "poetry-config"), "POETRY_VIRTUALENVS_CREATE": "false",
           "PDM_HOME": str(home / "pdm"), "PDM_CACHE_DIR": str(home / "pdm-cache"), "PDM_CHECK_UPDATE": "false",
           "PDM_USE_VENV": "false", "PDM_PYTHON": SYSTEM_PYTHON}

    def run(*args: str, fails: bool = False) -> str:
        done = subprocess.run([str(executable), *args], cwd=project, env=env, capture_output=True, text=True,
                              timeout=120)
        assert (done.returncode != 0) == fails, (args, done.stdout, done.stderr)
        if fails:
            return done.stdout + done.stderr
        return (project / args[args.index("-o") + 1]).read_text() if "-o" in args else done.stdout

    return run


def _sync(run: Runner, project: Path, venv: Path, *args: str) -> None:
    """``wheelstore sync ARGS`` typed in the project's directory, with no pip or uv configuration."""
    done = subprocess.run([str(run.tool), "--store", str(project.parent / "store"), "sync", "--venv", str(venv),
                           *args], cwd=project, env=run.env(None, ISOLATED), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, (args, done.stderr)


def _venv(path: Path) -> Path:
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(path)], check=True)
    return path


def _installed(venv: Path) -> dict[str, bool]:
    """Each distribution of the venv and whether it is an editable install (PEP 610)."""
    found = {}
    for dist_info in venv.glob("lib/python3*/site-packages/*.dist-info"):
        name = dist_info.name.split("-")[0].replace("_", "-").lower()
        direct = dist_info / "direct_url.json"
        found[name] = direct.is_file() and json.loads(direct.read_text()).get("dir_info", {}).get("editable", False)
    return found


def _value(venv: Path) -> str:
    done = subprocess.run([str(venv / "bin" / "python"), "-c", "import myproj; print(myproj.VALUE)"],
                          capture_output=True, text=True, cwd="/")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.network
def test_poetry_exports_sync_exactly(run: Runner, workdir: Path, tools: Tools, index: PyIndex) -> None:
    """``poetry export`` leaves the project out (``-e .``); its groups and extras select as poetry says; its
    ``--index-url`` line is the index; a ``develop = true`` path dependency comes as ``-e file:///DIR ; MARKER``."""
    source = (f'[tool.poetry.dependencies]\nsibling = {{path = "libs/sibling", develop = true}}\n\n'
              f'[[tool.poetry.source]]\nname = "local"\nurl = "{index.simple_url}"\npriority = "primary"\n')
    project = _project(workdir / "proj", source)
    text = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(text.replace('"dep>=1", ', '"dep>=1", "sibling", '))
    poetry, venv = _tool(tools.poetry, project, workdir / "home"), _venv(workdir / "venv")
    assert run(None, "init", str(workdir / "store")).returncode == 0
    poetry("lock")
    for options, selected in (((), MAIN), (("--with", "dev"), MAIN | {"devtool"}),
                              (("--extras", "fancy"), MAIN | {"fancyx"}),
                              (("--all-extras", "--all-groups"), MAIN | {"devtool", "fancyx"})):
        exported = poetry("export", "-f", "requirements.txt", "-o", "requirements.txt", *options)
        assert f"--index-url {index.simple_url}\n" in exported and "--hash=sha256:" in exported
        assert f"-e {(project / 'libs' / 'sibling').as_uri()} ; python_version" in exported
        _sync(run, project, venv, "-r", "requirements.txt", "-e", ".")
        assert _installed(venv) == {**dict.fromkeys(selected, False), "myproj": True, "sibling": True}, options

    (project / "myproj" / "__init__.py").write_text("VALUE = 2\n")
    assert _value(venv) == "2"  # the project is the venv's editable install
    exported = poetry("export", "-f", "pylock.toml", "-o", "pylock.toml", "--with", "dev")
    assert 'path = "libs/sibling"' in exported
    _sync(run, project, venv, "pylock.toml", "-e", ".", "-i", index.simple_url)  # -i: flit_core, for -e .
    assert _installed(venv) == {**dict.fromkeys(MAIN | {"devtool"}, False), "myproj": True, "sibling": True}


@pytest.mark.network
def test_pdm_exports_sync_exactly(run: Runner, workdir: Path, tools: Tools, index: PyIndex) -> None:
    """``pdm export`` writes every locked group unless told (``--prod``, ``-G``), an extra only if ``pdm lock``
    locked it; ``--editable-self`` puts the project in the file; its pylock selects the default group alone, and
    the others with ``--group``/``--extra`` (PEP 751 markers); an
    editable path dependency comes as ``-e ./DIR#egg=NAME``."""
    project = _project(workdir / "proj", f'[[tool.pdm.source]]\nname = "pypi"\nurl = "{index.simple_url}"\n')
    pdm, venv = _tool(tools.pdm, project, workdir / "home"), _venv(workdir / "venv")
    assert run(None, "init", str(workdir / "store")).returncode == 0
    pdm("lock")
    assert "fancyx" not in pdm("export", "-G", "fancy", "-o", "requirements.txt")  # not locked: silently left out
    pdm("lock", "-G", ":all")
    for options, selected in (((), MAIN | {"devtool", "fancyx"}), (("--prod",), MAIN),
                              (("--prod", "-G", "fancy"), MAIN | {"fancyx"})):
        exported = pdm("export", "-o", "requirements.txt", *options)
        assert f"--index-url {index.simple_url}\n" in exported and "--hash=sha256:" in exported
        _sync(run, project, venv, "-r", "requirements.txt", "-e", ".")
        assert _installed(venv) == {**dict.fromkeys(selected, False), "myproj": True}, options

    assert "--no-hashes" in pdm("export", "--editable-self", "-o", "req-self.txt", fails=True)
    assert "-e .  # this package" in pdm("export", "--prod", "--editable-self", "--no-hashes", "-o", "req-self.txt")
    _sync(run, project, venv, "-r", "req-self.txt")
    assert _installed(venv) == {**dict.fromkeys(MAIN, False), "myproj": True}
    (project / "myproj" / "__init__.py").write_text("VALUE = 3\n")
    assert _value(venv) == "3"

    pdm("export", "-f", "pylock", "-o", "pylock.toml")
    _sync(run, project, venv, "pylock.toml", "-e", ".", "-i", index.simple_url)  # -i: flit_core, for -e .
    assert _installed(venv) == {**dict.fromkeys(MAIN, False), "myproj": True}  # dev and the extra: not selected
    _sync(run, project, venv, "pylock.toml", "-e", ".", "-i", index.simple_url, "--group", "dev", "--extra", "fancy")
    assert _installed(venv) == {**dict.fromkeys(MAIN | {"devtool", "fancyx"}, False), "myproj": True}

    pdm("add", "--no-sync", "-d", "-e", "./libs/sibling")
    assert "--no-hashes" in pdm("export", "-o", "requirements.txt", fails=True)
    exported = pdm("export", "--no-hashes", "-o", "requirements.txt")  # a path dependency has no hash
    assert "-e ./libs/sibling#egg=sibling\n" in exported
    _sync(run, project, venv, "-r", "requirements.txt", "-e", ".")
    assert _installed(venv) == {**dict.fromkeys(MAIN | {"devtool", "fancyx"}, False), "myproj": True,
                                "sibling": True}


# -- the syntax of those exports, offline ---------------------------------------------------------------------------


def test_editable_lines_as_poetry_and_pdm_write_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``-e DIR ; MARKER`` keeps or drops the editable by its marker (uv's reading; pip ignores the marker);
    ``-e ./DIR#egg=NAME`` is the directory."""
    for name in ("kept", "dropped", "egged"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "1"\n')
    req = tmp_path / "requirements.txt"
    req.write_text(f'-e {(tmp_path / "kept").as_uri()} ; python_version >= "3.9"\n'
                   f'-e {(tmp_path / "dropped").as_uri()} ; sys_platform == "win32"\n'
                   "-e ./egged#egg=egged\n")
    monkeypatch.chdir(tmp_path)
    pins = parse_requirements_file(req, Interpreter.inspect(sys.executable)).pins
    assert [(p.name, p.project, p.editable) for p in pins] == [("kept", tmp_path / "kept", True),
                                                                ("egged", tmp_path / "egged", True)]
    req.write_text(f"-e {tmp_path / 'kept'} ; python_version >>> '3'\n")
    with pytest.raises(InputError, match=r"requirements.txt:1: the marker .* cannot be evaluated"):
        parse_requirements_file(req, Interpreter.inspect(sys.executable))


def test_a_files_indexes_rank_beneath_the_command_line_and_configuration(tmp_path: Path) -> None:
    """As uv ranks them: the file's --index-url only where nothing set one, its extra ones last, --no-index wins;
    included files count; two different --index-url are an error."""
    bare = {"HOME": str(tmp_path), "PIP_CONFIG_FILE": os.devnull, "UV_NO_CONFIG": "1"}
    req = tmp_path / "requirements.txt"
    (tmp_path / "more.txt").write_text("--extra-index-url https://extra.example/simple\n")
    req.write_text("--trusted-host files.example\n-i https://files.example/simple\n-r more.txt\nx==1\n")
    got = with_file_indexes(Sources.from_environment(environ=bare), [req])
    assert got.index_urls == ("https://files.example/simple", "https://extra.example/simple")
    assert {"setting": "index-url", "value": "https://files.example/simple",
            "from": f"{req}:2"} in got.describe()
    for told in (Sources.from_environment(index_url="https://cli.example/simple", environ=bare),
                 Sources.from_environment(environ={**bare, "PIP_INDEX_URL": "https://cli.example/simple"})):
        got = with_file_indexes(told, [req])
        assert got.index_urls == ("https://cli.example/simple", "https://extra.example/simple")
    assert with_file_indexes(Sources.from_environment(environ=bare), []).index_urls == (PYPI,)

    (tmp_path / "off.txt").write_text("--no-index\n")
    got = with_file_indexes(Sources.from_environment(environ=bare), [req, tmp_path / "off.txt"])
    assert (got.index_urls, got.no_index) == ((), True)
    (tmp_path / "other.txt").write_text("--index-url https://other.example/simple\n")
    with pytest.raises(InputError, match=r"other.txt:1: --index-url https://other.example/simple conflicts with "
                                         r"--index-url https://files.example/simple \(.*requirements.txt:2\)"):
        with_file_indexes(Sources.from_environment(environ=bare), [req, tmp_path / "other.txt"])
