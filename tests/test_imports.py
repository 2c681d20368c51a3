"""Start-up: what the CLI imports before it knows what it will do, and the package's lazy re-exports.

A warm ``install -r`` is benchmarked against ``uv pip sync``; modules only some verbs, a cold store or unusual input
need are imported where they are used. These tests run a fresh interpreter, so nothing imported by the test session
hides a module-level import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import SET36

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _fresh(code: str) -> object:
    """What ``code`` prints as JSON, run by a new interpreter importing this tree's wheelstore."""
    env = {**os.environ, "PYTHONPATH": SRC}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout)


#: never needed to install from a warm store: the realize stage and wheel reader, packaging's requirement parser,
#: and the modules of other verbs
NOT_AT_START = ["wheelstore.store.publish", "zipfile", "packaging.requirements", "packaging.markers",
                "wheelstore.store.stats", "wheelstore.cli.doctor", "wheelstore.fetch.download", "wheelstore.fetch.http",
                "wheelstore.fetch.index", "wheelstore.resolve.resolver", "wheelstore.fetch.build", "ctypes", "shlex",
                "urllib.request"]


def test_the_cli_starts_without_what_a_warm_install_never_needs() -> None:
    loaded = _fresh("import json, sys; before = set(sys.modules); import wheelstore.cli.main; "
                    "print(json.dumps(sorted(set(sys.modules) - before)))")  # not what site imported already
    assert isinstance(loaded, list) and "wheelstore.venv.environment" in loaded
    assert [m for m in NOT_AT_START if m in loaded] == []


def test_the_package_reexports_load_on_first_use() -> None:
    got = _fresh(
        "import json, sys, wheelstore\n"
        "before = sorted(m for m in sys.modules if m.startswith('wheelstore.'))\n"
        "from wheelstore import Policy, Realized, Store, Tree, WheelstoreError, realize_wheel\n"
        "from wheelstore.base import errors\n"
        "from wheelstore.cli import doctor\n"
        "from wheelstore.store import policy, publish, store\n"
        "same = [Policy is policy.Policy, Realized is publish.Realized, Store is store.Store, Tree is store.Tree,\n"
        "        WheelstoreError is errors.WheelstoreError, doctor.__name__ == 'wheelstore.cli.doctor',\n"
        "        realize_wheel is publish.realize_wheel]\n"
        "try:\n"
        "    wheelstore.nothing_by_this_name\n"
        "    missing = None\n"
        "except AttributeError as e:\n"
        "    missing = str(e)\n"
        "print(json.dumps([before, same, missing, sorted(wheelstore.__all__)]))"
    )
    assert got == [[], [True] * 7, "module 'wheelstore' has no attribute 'nothing_by_this_name'",
                   ["Policy", "Realized", "Store", "Tree", "WheelstoreError", "__version__", "realize_wheel",
                    "realize_wheels"]]


def test_plain_pins_need_no_requirement_parser(tmp_path: Path) -> None:
    """A hashed, pinned requirements file (the benchmark's) is read without packaging's parser or markers; a line
    with a marker still gets both."""
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from wheelstore.resolve.requirements import parse_requirements_file\n"
        "from wheelstore.base.interpreter import Interpreter\n"
        "py = Interpreter.inspect(sys.executable)\n"
        "pins = parse_requirements_file(Path(sys.argv[1]), py).pins\n"
        "print(json.dumps([len(pins), 'packaging.requirements' in sys.modules, 'packaging.markers' in sys.modules]))"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    for text, expected in ((SET36.read_text() if SET36.exists() else "six==1.17.0 --hash=sha256:" + "a" * 64, False),
                           ("six==1.17.0 ; python_version >= '3'\n", True)):
        path = tmp_path / "requirements.txt"
        path.write_text(text)
        done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env,
                              check=True)
        count, parser, markers = json.loads(done.stdout)
        assert count >= 1 and (parser, markers) == (expected, expected), text[:80]


def test_the_command_exits_with_mains_code_after_all_its_output(tmp_path: Path) -> None:
    """``python -m wheelstore`` leaves through os._exit once main() is done (interpreter teardown cost a warm install
    15 ms): every line it wrote still arrives through a pipe, and the exit code is main()'s."""
    env = {**os.environ, "PYTHONPATH": SRC}
    store = tmp_path / "store"
    made = subprocess.run([sys.executable, "-m", "wheelstore", "init", str(store)], capture_output=True, text=True,
                          env=env)
    assert made.returncode == 0, made.stderr
    stats = subprocess.run([sys.executable, "-m", "wheelstore", "--store", str(store), "stats", "--json"],
                           capture_output=True, text=True, env=env)
    assert stats.returncode == 0 and json.loads(stats.stdout)["store"] == str(store), stats
    missing = subprocess.run([sys.executable, "-m", "wheelstore", "--store", str(tmp_path / "nowhere"), "stats"],
                             capture_output=True, text=True, env=env)
    assert missing.returncode != 0 and missing.stderr.startswith("error: ") and missing.stdout == ""


#: a warm install's bill before this list was cut: packaging.tags alone brought logging, platform, subprocess and
#: sysconfig (11 ms); platformdirs brought tempfile (6 ms); specifiers 3 ms. Each is still imported where it is needed
#: (a cold store, an unpinned requirement, a new interpreter, a message to print).
NOT_IN_A_WARM_INSTALL = ["packaging.tags", "packaging.utils", "packaging.specifiers", "logging", "platformdirs",
                         "subprocess", "tempfile", "zipfile", "wheelstore.store.publish", "wheelstore.store.commit",
                         "datetime"]


def test_a_warm_install_imports_none_of_the_heavy_modules(tmp_path: Path) -> None:
    """Two installs of hashed pins from a find-links directory, each into a new venv, by new interpreters: the first
    publishes the trees and fills the user's cache (it imports all of these); the second needs none of them, and its
    venv works."""
    from .conftest import SYSTEM_PYTHON
    from .wheelmaker import make_wheel

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    made = [make_wheel(wheels, "alpha", files={"alpha/__init__.py": b"A = 1\n"}),
            make_wheel(wheels, "Beta_Two", files={"beta_two/__init__.py": b"B = 2\n"})]
    import hashlib

    requirements = tmp_path / "requirements.txt"
    requirements.write_text("".join(
        f"{w.name.split('-')[0]}=={w.name.split('-')[1]} --hash=sha256:{hashlib.sha256(w.read_bytes()).hexdigest()}\n"
        for w in made))
    env = {**os.environ, "PYTHONPATH": SRC, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    store = tmp_path / "store"
    subprocess.run([sys.executable, "-m", "wheelstore", "init", str(store)], check=True, env=env)
    # not what site imported
    code = ("import json, sys\nbefore = set(sys.modules)\nfrom wheelstore.cli.main import main\n"
            "code = main(sys.argv[1:])\nprint(json.dumps([code, sorted(set(sys.modules) - before)]))")
    loaded = []
    for n in (1, 2):
        venv = tmp_path / f"venv{n}"
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True)
        done = subprocess.run([sys.executable, "-c", code, "--store", str(store), "install", "-q", "--venv", str(venv),
                               "-r", str(requirements), "-f", str(wheels)], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        code_, modules = json.loads(done.stdout)
        assert code_ == 0
        loaded.append([m for m in NOT_IN_A_WARM_INSTALL if m in modules])
    assert loaded[0] != [] and loaded[1] == [], loaded
    ran = subprocess.run([tmp_path / "venv2" / "bin" / "python", "-c",
                          "import alpha, beta_two; print(alpha.A + beta_two.B)"], capture_output=True, text=True)
    assert ran.stdout.strip() == "3", ran.stderr


def test_only_the_verb_run_gets_its_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    """The parser for ``install`` knows install alone; each verb's own --help still lists its options, and the
    top-level help (also when asked before a verb) and a word that is no verb get every verb."""
    from wheelstore.cli import main as cli
    from wheelstore.cli.parser import VERBS

    verbs = [v.name for v in VERBS]
    for argv, expected in ((["--store", "s", "install", "--venv", "v"], ["install"]), (["-q", "gc"], ["gc"]),
                           (["--store", "gc", "list"], ["list"]), (["--help"], verbs), (["--help", "gc"], verbs),
                           (["nonsense"], verbs), ([], verbs), (["--store=s", "-v", "install"], ["install"]),
                           # what only argparse reads right: abbreviations, combined flags, "--"
                           (["--sto", "s", "install"], verbs), (["-qv", "install"], verbs), (["--", "install"], verbs),
                           (["-", "install"], verbs), (["--he", "install"], verbs)):
        parser = cli.build_parser(argv)
        choices = next(a for a in parser._actions if a.dest == "verb").choices
        assert isinstance(choices, dict), argv  # the subparsers' verb -> parser
        assert sorted(choices) == sorted(expected), argv
        assert all(p._actions for p in choices.values()), argv
    for verb in verbs:
        with pytest.raises(SystemExit) as done:
            cli.main([verb, "--help"])
        assert done.value.code == 0 and f"usage: wheelstore {verb} " in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    top = capsys.readouterr().out
    assert [v for v in verbs if v not in top] == []


def test_log_records_name_their_caller_and_pass_the_threshold(caplog: pytest.LogCaptureFixture,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """wheelstore.base.logs: with no threshold (the API's default) records reach logging's "wheelstore" logger, naming
    the function that logged; below the command line's threshold they are dropped."""
    from wheelstore.base import logs

    monkeypatch.setattr(logs, "threshold", None)
    monkeypatch.setattr(logs, "setup", None)

    def somewhere_in_wheelstore() -> None:
        logs.log.warning("could not %s", "do it")
        logs.log.debug("a detail")

    with caplog.at_level("DEBUG", logger="wheelstore"):
        somewhere_in_wheelstore()
        monkeypatch.setattr(logs, "threshold", logs.WARNING)
        somewhere_in_wheelstore()
    got = [(r.levelname, r.getMessage(), r.funcName, Path(r.pathname).name) for r in caplog.records]
    here = ("somewhere_in_wheelstore", "test_imports.py")
    assert got == [("WARNING", "could not do it", *here), ("DEBUG", "a detail", *here),
                   ("WARNING", "could not do it", *here)]
