"""The command line's help, as uv's: every verb described with examples, every option explained, help pages that fit
a terminal, no arguments showing the help, and usage mistakes pointing at the help of the verb they were made in."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from wheelstore.cli.main import build_parser
from wheelstore.cli.parser import VERBS

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _cli(*argv: str, columns: int = 80, **env: str) -> subprocess.CompletedProcess[str]:
    """The real command, from this tree's source, in a terminal ``columns`` wide."""
    return subprocess.run([sys.executable, "-m", "wheelstore", *argv], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": SRC, "COLUMNS": str(columns), **env})


def _verb_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every verb's parser, from the full parser (no verb named, so all of them are added)."""
    parser = build_parser([])
    choices = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert isinstance(choices, dict)
    return choices


def _examples(epilog: str) -> list[list[str]]:
    """The command lines of an epilog's examples, as the shell would split them."""
    return [shlex.split(line) for line in epilog.splitlines() if line.startswith("  wheelstore ")]


def test_every_verb_has_a_description_and_examples() -> None:
    parsers = _verb_parsers()
    assert sorted(parsers) == sorted(v.name for v in VERBS)
    for verb, p in parsers.items():
        assert p.description and "\n" not in p.description.strip(), verb
        assert p.epilog and p.epilog.startswith("examples:\n"), verb
        assert len(_examples(p.epilog)) >= 2, verb


def test_every_option_and_positional_has_help() -> None:
    parser = build_parser([])
    for p in [parser, *_verb_parsers().values()]:
        for action in p._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            assert action.help and action.help.strip(), (p.prog, action.option_strings or action.dest)


def test_every_example_is_a_valid_command_line() -> None:
    """Each example parses with the parser the command would build for it, naming the verb it documents."""
    seen = 0
    for verb, p in _verb_parsers().items():
        for words in _examples(p.epilog or ""):
            assert words[0] == "wheelstore", words
            args = build_parser(words[1:]).parse_args(words[1:])
            assert args.verb == verb, words
            seen += 1
    assert seen >= 2 * len(VERBS)


def test_link_mode_help_explains_every_mode() -> None:
    text = _cli("install", "--help").stdout
    for mode in ("auto", "reflink", "hardlink", "symlink", "copy", "fold"):
        assert f"  {mode}: " in text, mode
    assert "(default)" in text.split("auto: ", 1)[1].split("reflink: ", 1)[0]


def test_install_names_what_it_takes_leading_with_requirements() -> None:
    text = _cli("install", "--help").stdout
    positional = text.split("positional arguments:\n", 1)[1].split("\n\n", 1)[0]
    taken = " ".join(positional.split())
    assert "requirements ('requests', 'pandas<3')" in taken
    assert taken.index("requirements") < taken.index("wheel files") < taken.index("pylock.toml") \
        < taken.index("project directories") < taken.index("sdists")


@pytest.mark.parametrize("verb", [None, *(v.name for v in VERBS)])
def test_help_pages_fit_80_columns(verb: str | None) -> None:
    done = _cli(*([verb] if verb else []), "--help")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    wide = [line for line in done.stdout.splitlines() if len(line) > 80]
    assert wide == [], wide
    if verb:
        assert done.stdout.startswith(f"usage: wheelstore {verb} ") and "\nexamples:\n" in done.stdout


def test_no_arguments_show_the_help_as_uv_does() -> None:
    """``uv`` alone prints its help on stderr and exits 2: a command line with nothing to do is still a mistake."""
    bare = _cli()
    helped = _cli("--help")
    assert (bare.returncode, bare.stdout) == (2, "")
    assert bare.stderr == helped.stdout and "    install " in bare.stderr


def test_usage_mistakes_name_the_help_of_their_verb() -> None:
    cases = {
        ("install", "--bogus"): "error: unrecognized arguments: --bogus (see 'wheelstore install --help')",
        ("--store", "s", "gc", "--grace"):
            "error: argument --grace: expected one argument (see 'wheelstore gc --help')",
        ("realize",): "error: the following arguments are required: WHEEL (see 'wheelstore realize --help')",
        ("sync", "--link-mode", "hard"): "error: argument --link-mode: invalid choice: 'hard' (choose from 'auto', "
                                         "'reflink', 'hardlink', 'symlink', 'copy', 'fold') "
                                         "(see 'wheelstore sync --help')",
        # before the verb, or no verb: the top level's
        ("--bogus", "list"): "error: unrecognized arguments: --bogus (see 'wheelstore --help')",
        ("instal",): "error: argument VERB: invalid choice: 'instal' (choose from 'init', 'realize', 'info', 'venv', "
                     "'install', 'sync', 'lock', 'uninstall', 'list', 'edit', 'doctor', 'gc', 'stats', 'verify', "
                     "'serve') "
                     "(see 'wheelstore --help')",
    }
    for argv, line in cases.items():
        done = _cli(*argv)
        assert (done.returncode, done.stdout, done.stderr) == (2, "", line + "\n"), argv


def test_init_takes_one_store(tmp_path: Path) -> None:
    """``--store`` and the STORE positional both say where init creates the store: two different ones are refused
    before anything is made; the same one twice, either alone, or STORE over $WHEELSTORE_STORE are fine."""
    a, b = tmp_path / "a", tmp_path / "b"
    for argv in (["--store", str(a), "init", str(b)], ["init", str(b), "--store", str(a)]):
        done = _cli(*argv)
        assert (done.returncode, done.stdout) == (2, ""), done
        assert done.stderr == f"error: --store {a} and STORE {b} name two stores: give one " \
                              "(see 'wheelstore init --help')\n"
        assert not a.exists() and not b.exists()
    made = {a: ["--store", str(a), "init", str(tmp_path / "x" / ".." / "a")],
            b: ["init", "--store", str(b)],
            tmp_path / "c": ["init", str(tmp_path / "c")]}
    for store, argv in made.items():
        done = _cli(*argv, WHEELSTORE_STORE=str(tmp_path / "elsewhere"))
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("created private store at ") and (store / "config.toml").is_file(), done.stdout
    assert not (tmp_path / "elsewhere").exists()
