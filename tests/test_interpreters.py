"""The interpreter probe's answer is remembered per base interpreter and venv configuration, never across them."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wheelstore.base.interpreter import Interpreter

from .conftest import SYSTEM_PYTHON


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """A private cache for this test, and the interpreters actually asked (each one a subprocess)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calls: list[str] = []
    real = Interpreter._ask.__func__  # type: ignore[attr-defined]  # the classmethod's function, called with cls

    def counting(cls: type[Interpreter], python: str | os.PathLike[str]) -> Interpreter:
        calls.append(os.fspath(python))
        return real(cls, python)  # type: ignore[no-any-return]  # real is untyped (from __func__)

    monkeypatch.setattr(Interpreter, "_ask", classmethod(counting))
    return calls


def _venv(path: Path, python: str = SYSTEM_PYTHON, *options: str) -> Path:
    subprocess.run([python, "-m", "venv", "--without-pip", *options, str(path)], check=True)
    return path / "bin" / "python"


def test_a_second_venv_of_the_same_python_is_not_asked_and_gets_its_own_paths(asked: list[str], tmp_path: Path) -> None:
    first = Interpreter.inspect(_venv(tmp_path / "one"))
    second_python = _venv(tmp_path / "deeper" / "two")
    second = Interpreter.inspect(second_python)
    assert asked == [str(tmp_path / "one" / "bin" / "python")]
    assert second == Interpreter._ask(second_python)  # exactly what asking would have said
    assert second.prefix == str(tmp_path / "deeper" / "two") != first.prefix
    assert second.paths["purelib"].startswith(second.prefix + "/lib/python3")
    assert (cache := tmp_path / "cache" / "wheelstore" / "interpreters.json").stat().st_mode & 0o777 == 0o600
    assert str(tmp_path / "one") not in cache.read_text()  # a template, not one venv's answer


def _another_python() -> str | None:
    """A Python binary other than the system's: the test runner's, else one on PATH or from pyenv, if any."""
    found = [sys.executable, shutil.which("python3"), *sorted(glob.glob("/root/.pyenv/versions/*/bin/python3")),
             *sorted(glob.glob("/usr/local/bin/python3.*"))]
    system = os.path.realpath(SYSTEM_PYTHON)
    return next((p for p in found if p and os.path.realpath(p) != system), None)


def test_another_configuration_or_interpreter_is_asked_again(asked: list[str], tmp_path: Path) -> None:
    another = _another_python()
    if another is None:
        pytest.skip("no Python here but the system's")
    Interpreter.inspect(_venv(tmp_path / "plain"))
    system_site = _venv(tmp_path / "system-site", SYSTEM_PYTHON, "--system-site-packages")
    assert Interpreter.inspect(system_site) == Interpreter._ask(system_site)
    other = _venv(tmp_path / "other-python", another)  # another binary
    assert Interpreter.inspect(other).executable == str(other)
    assert len(asked) == 4  # plain, system-site (twice: inspect, then the comparison), other-python
    assert asked[:2] == [str(tmp_path / "plain" / "bin" / "python"), str(system_site)]


def test_a_foreign_or_writable_cache_file_is_ignored(asked: list[str], tmp_path: Path) -> None:
    Interpreter.inspect(_venv(tmp_path / "one"))
    cache = tmp_path / "cache" / "wheelstore" / "interpreters.json"
    cache.chmod(0o666)
    Interpreter.inspect(_venv(tmp_path / "two"))
    assert len(asked) == 2


@pytest.mark.parametrize("script", ["#!/bin/sh\nexit 0\n", "#!/bin/sh\necho '{\"executable\": 1}'\n"])
def test_a_venv_python_that_gives_no_answer_is_one_line_error(script: str, tmp_path: Path) -> None:
    """A venv whose bin/python runs but is not a Python that answers the probe (printing nothing, or JSON without
    the fields): the command says so in one line, never a traceback."""
    from .conftest import one_line_error

    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (venv / "bin" / "python").write_text(script)
    (venv / "bin" / "python").chmod(0o755)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    done = subprocess.run([sys.executable, "-m", "wheelstore", "list", "--venv", str(venv)], capture_output=True,
                          text=True, env=env)
    line = one_line_error(done)
    assert f"{venv}/bin/python is not a Python interpreter wheelstore can use" in line and "wheelstore venv" in line
