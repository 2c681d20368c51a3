"""The ``wheelstore`` command line's parser: every verb, its arguments, and its help page with examples, as uv's.

The commands themselves are :mod:`wheelstore.cli.main`'s (and :mod:`~wheelstore.cli.maintenance`'s); they come in
as a mapping, so that this module imports none of them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, NoReturn

from .. import __version__
from ..store.policy import SHARED_MODES
from ..venv.link import LinkMode
from ..venv.locate import LOOKUP
from .options import add_source_options

Command = Callable[[argparse.Namespace], int]


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written; an option's help wrapped line by line, so a list stays a list; its
    spellings with the value once (``-r, --requirement FILE``), as uv's help."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        value = self._format_args(action, self._get_default_metavar_for_optional(action))
        return f"{', '.join(action.option_strings)} {value}"

    def _split_lines(self, text: str, width: int) -> list[str]:
        split = super()._split_lines  # not in the comprehension: its scope has no super() before Python 3.12
        return [line for part in text.splitlines() for line in split(part, width)]


class _Parser(argparse.ArgumentParser):
    """argparse, with usage mistakes reported in one line like every other error, naming the help of the verb
    they were made in."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """Words left over are this parser's mistake: argparse would hand a verb's up to the top level, whose
        error names the top level's help."""
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


class _Command(_Parser):
    """The top level: with no arguments at all it shows its help (on stderr, exit 2, as ``uv`` does), and it checks
    what only the whole command line shows (``--store`` may come before the verb)."""

    verb_parsers: dict[str, _Parser]

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if not (sys.argv[1:] if args is None else args):
            self.print_help(sys.stderr)
            self.exit(2)
        parsed, extras = super().parse_known_args(args, namespace)
        store, path = getattr(parsed, "store", None), getattr(parsed, "path", None)
        if parsed.verb == "init" and store and path and os.path.abspath(store) != os.path.abspath(path):
            self.verb_parsers["init"].error(f"--store {store} and STORE {path} name two stores: give one")
        return parsed, extras


class Verb(NamedTuple):
    """A verb of the command line."""

    name: str
    #: its line in the top level's help, and (capitalized) its help page's description
    summary: str
    #: what adds its arguments
    arguments: Callable[[argparse.ArgumentParser], None]
    #: (what it does, the command line) for its help page
    examples: tuple[tuple[str, str], ...]


def build_parser(argv: Sequence[str] | None, commands: Mapping[str, Command]) -> argparse.ArgumentParser:
    """The command line's parser, each verb running ``commands[verb]``. When ``argv`` plainly names a verb
    (:func:`_verb_in`), the parser knows that verb alone: adding every verb and its arguments (argparse makes a
    formatter for each argument and asks gettext for every label, each time looking for message catalogs on disk)
    was 5 ms of every command. Any other command line gets them all."""
    parser = _Command(prog="wheelstore", description="One shared, safe store of unpacked wheels, and venvs filled "
                      "from it.")
    _common_options(parser, None)
    parser.add_argument("--version", action="version", version=f"wheelstore {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True, parser_class=_Parser,
                                  help="what to do; 'wheelstore VERB --help' shows its options and examples")
    chosen = _verb_in(sys.argv[1:] if argv is None else argv)
    parser.verb_parsers = {}
    for verb in VERBS:
        if chosen in (None, verb.name):
            p = verbs.add_parser(verb.name, help=verb.summary, description=verb.summary[0].upper() + verb.summary[1:],
                                 epilog=_epilog(verb.examples))
            _common_options(p, verb.name)
            verb.arguments(p)
            p.set_defaults(func=commands[verb.name])
            parser.verb_parsers[verb.name] = p
    return parser


def _epilog(examples: tuple[tuple[str, str], ...]) -> str:
    return "examples:\n" + "\n".join(f"  # {what}\n  {line}" for what, line in examples)


def _verb_in(argv: Sequence[str]) -> str | None:
    """The verb ``argv`` names: its first word, after the top level's own options spelt out in full (``--store`` and
    its value, ``-q``, ``-v``). None for anything else before it (-h, --version, an abbreviation such as ``--sto``,
    combined flags such as ``-qv``, ``--``), which argparse must see with every verb, or when no verb is named."""
    words = iter(argv)
    for word in words:
        if word == "--store":
            next(words, None)
        elif word in ("-q", "--quiet", "-v", "--verbose") or word.startswith("--store="):
            continue
        else:
            return word if word in {v.name for v in VERBS} else None
    return None


#: --store's help where it is not "the store to use"
_STORE_HELP = {
    "init": "where to create the store (the same as STORE; give one of them)",
    "venv": "the store --seed takes pip from (default: the one 'wheelstore info' shows)",
    "lock": "not used: lock installs nothing",
    "uninstall": "not used: the venv's files name the stores they came from",
    "list": "not used: list reads only the venv",
}


def _common_options(p: argparse.ArgumentParser, verb: str | None) -> None:
    """The options every verb takes, also before it; each verb's page says what --store means for it."""
    p.add_argument("--store", default=argparse.SUPPRESS, metavar="DIR",
                   help=_STORE_HELP.get(verb or "", "the store to use (default: the one 'wheelstore info' shows)"))
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="print only errors and the problems found (and a --json report)")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="also print what is being done, as 'debug:' lines on stderr")


def _init_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", metavar="STORE",
                   help="where to create the store (default: --store, else the one 'wheelstore info' shows)")
    p.add_argument("--group", help="share with this group; you must be a member")
    p.add_argument("--shared", choices=SHARED_MODES, help="who may read: private, group (default with --group), all")
    p.add_argument("--upstream", metavar="SITE_STORE", help="make an overlay of this read-only site store: installs "
                   "link its trees and publish only what it lacks into the new store")
    p.add_argument("--service", action="store_true", help="make a store that only its owner's service ('wheelstore "
                   "serve') writes, for users who do not trust each other; readable by all (or --group)")
    p.add_argument("--socket", metavar="PATH", help="the service's Unix socket (with --service; default: "
                   "STORE/service.sock)")
    p.add_argument("--allow-user", action="append", default=[], metavar="USER",
                   help="a user the service serves (with --service; repeat it; none and no --allow-group: anyone "
                   "who can reach the socket)")
    p.add_argument("--allow-group", action="append", default=[], metavar="GROUP",
                   help="serve the members of this group (with --service; repeat it)")
    p.add_argument("--allow-index", action="append", default=[], metavar="URL",
                   help="a URL prefix the service may fetch wheels from (with --service; repeat it; default: the "
                   "index configured here, and its file host)")


def _realize_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("wheels", nargs="+", metavar="WHEEL", help="the wheel files (.whl) to unpack")
    p.add_argument("--sha256", metavar="HEX", help="the sha256 the wheel must have (with one WHEEL)")
    p.add_argument("--python", help="compile bytecode into the trees for this interpreter (default: the one running "
                                    "wheelstore), as installs do")
    p.add_argument("--no-compile", action="store_true", help="publish the trees without bytecode")
    _json(p)


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON report")


def _venv_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--venv", metavar="DIR", help=f"the venv to use ({LOOKUP})")


def _venv_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", metavar="VENV", help="where to create it (default: .venv, as uv venv)")
    p.add_argument("--python", help="the interpreter to base it on (default: python3 on PATH)")
    p.add_argument("--seed", action="store_true", help="add a current pip from the store (as uv venv --seed); "
                   "the index options below say where it comes from")
    add_source_options(p)
    p.set_defaults(json=False)


#: what each --link-mode means, for its help
_LINK_MODES = """how the venv gets the store's files:
auto: the first of reflink, fold, hardlink, symlink, copy allowed here (default)
reflink: a private copy sharing the store's blocks (XFS, btrfs)
hardlink: the store's own file (your trees, in a store only you use; or made by \
a service store's root service, auto's first choice there)
symlink: a link per file to the read-only store file
copy: a private copy
fold: a link per directory only one distribution fills, else per file"""


def _install_arguments(p: argparse.ArgumentParser, what: str) -> None:
    """``install`` and ``sync`` take the same arguments, but for what only a resolving install does."""
    p.add_argument("items", nargs="*", metavar="PACKAGE", help=f"{what}: requirements ('requests', 'pandas<3'), wheel "
                   "files (.whl), pylock.toml files, project directories ('.', './myproj') and sdists (.tar.gz, .zip)")
    p.add_argument("-e", "--editable", dest="editables", action="append", default=[], metavar="DIR",
                   help="a project directory to install editable: the venv imports its source")
    _venv_option(p)
    p.add_argument("-r", "--requirement", dest="requirements", action="append", default=[], metavar="FILE",
                   help="a requirements file (pip's format: --hash, -r, -f, -e, markers)")
    add_source_options(p)
    p.add_argument("--link-mode", choices=["auto", *(m.value for m in LinkMode)], default="auto", metavar="MODE",
                   help=_LINK_MODES)
    p.add_argument("--no-compile", action="store_true",
                   help="do not compile bytecode into the store (Python then compiles into the venv on import)")
    p.add_argument("--compile-optimized", action="store_true",
                   help="trees published now also carry the opt-1 and opt-2 pycs of python -O and -OO")
    p.add_argument("--reinstall", action="store_true", help="link every distribution again, even what is there")
    p.add_argument("--reinstall-package", action="append", default=[], metavar="NAME",
                   help="link this distribution again, even if it is there")
    _json(p)
    p.set_defaults(upgrade=False, no_deps=False, upgrade_package=[])


def _sync_arguments(p: argparse.ArgumentParser) -> None:
    _install_arguments(p, "the complete set the venv is to hold, dependencies included (none: the project's lock)")
    project = p.add_argument_group("a project's lock", "with no PACKAGE, -r or -e: the uv.lock (else pylock.toml)\n"
                                    "of this directory or the nearest parent, synced into the project's venv\n"
                                    "($UV_PROJECT_ENVIRONMENT, else .venv), the project editable, as uv sync does;\n"
                                    "the options below select as uv sync's do (from a pylock.toml too,\n"
                                    "its extras and groups as PEP 751 selects them)")
    project.add_argument("--project", metavar="DIR", help="look for the lock from DIR (default: this directory)")
    project.add_argument("--extra", dest="extras", action="append", default=[], metavar="EXTRA",
                         help="include this optional dependency group of the project")
    project.add_argument("--all-extras", action="store_true", help="include every extra")
    project.add_argument("--group", dest="groups", action="append", default=[], metavar="GROUP",
                         help="include this dependency group")
    project.add_argument("--only-group", dest="only_groups", action="append", default=[], metavar="GROUP",
                         help="only this dependency group, without the project's own dependencies")
    project.add_argument("--no-dev", action="store_true", help="leave out the dev group (included by default)")
    project.add_argument("--all-groups", action="store_true", help="include every dependency group")
    project.add_argument("--no-default-groups", action="store_true",
                         help="leave out the default groups (tool.uv.default-groups, else dev)")
    project.add_argument("--package", dest="packages", action="append", default=[], metavar="NAME",
                         help="sync this workspace member instead of the workspace's root")
    project.add_argument("--all-packages", action="store_true", help="sync every workspace member")


def _resolving_arguments(p: argparse.ArgumentParser) -> None:
    """``install``'s own: how it treats what the venv holds, and dependencies."""
    _install_arguments(p, "what to install, with its dependencies")
    p.add_argument("-U", "--upgrade", action="store_true",
                   help="take the newest allowed versions, not those the venv holds")
    p.add_argument("-P", "--upgrade-package", action="append", default=[], metavar="NAME",
                   help="take the newest allowed version of this distribution")
    p.add_argument("--no-deps", action="store_true", help="install exactly what is named, without its dependencies")


def _lock_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("items", nargs="*", metavar="REQUIREMENT",
                   help="what to resolve: requirements ('requests', 'pandas<3'), project directories ('./myproj')")
    p.add_argument("-r", "--requirement", dest="requirements", action="append", default=[], metavar="FILE",
                   help="a requirements file to resolve (pip's format)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--venv", metavar="DIR", help=f"resolve for this venv's interpreter ({LOOKUP})")
    target.add_argument("--python", help="resolve for this interpreter")
    p.add_argument("-o", "--output", default="pylock.toml", metavar="FILE",
                   help="where to write (default: pylock.toml)")
    add_source_options(p)


def _uninstall_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="+", metavar="NAME", help="the distributions to remove")
    _venv_option(p)
    _json(p)


def _list_arguments(p: argparse.ArgumentParser) -> None:
    _venv_option(p)
    _json(p)


def _edit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="the distribution to copy into the venv")
    _venv_option(p)
    p.add_argument("--undo", action="store_true", help="link the distribution from the store again")


def _doctor_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--venv", metavar="DIR",
                   help="also check this venv: its interpreter, and linking into it (default: none)")
    _json(p)


def _gc_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grace", metavar="DURATION", help="keep unused trees younger than this (default 1d; 0, 90s, 12h)")
    p.add_argument("--root-expiry", metavar="DURATION",
                   help="believe a root this gc cannot check (a venv on another node) for this long after a node last "
                        "confirmed it (default: the store's [gc] root_expiry, else 30d)")
    p.add_argument("--dry-run", action="store_true", help="only say what would be removed, and list the roots")
    _json(p)


def _verify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--full", action="store_true", help="re-hash every file, not only those whose ctime moved")
    p.add_argument("--repair", action="store_true", help="publish damaged trees again from their wheels: from the "
                   "-f directories, else downloaded from the indexes")
    add_source_options(p)
    _json(p)


def _serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", metavar="PATH", help="listen here instead of the socket the store's config names")


#: every verb, in the top level's order
VERBS = [
    Verb("init", "create a store and record its sharing policy", _init_arguments, (
        ("a private store of your own (the default one is made on first use)", "wheelstore init ~/wheelstore"),
        ("a store for group 'lab'; no root needed if you are in 'lab'",
         "wheelstore init /srv/wheelstore --group lab"),
        ("your store, over a read-only site store",
         "wheelstore init --upstream /srv/wheelstore ~/.local/share/wheelstore/store"),
        ("a store only its service writes, for group 'lab' (as the service's user)",
         "wheelstore init /srv/wheelstore --service --group lab --allow-group lab"))),
    Verb("realize", "unpack local wheels into the store, without installing", _realize_arguments, (
        ("publish a wheel's tree, with bytecode for the python3 on PATH",
         "wheelstore realize ./dist/mypkg-1.0-py3-none-any.whl --python python3"),
        ("every wheel of a directory, without bytecode", "wheelstore realize --no-compile ./wheels/*.whl"))),
    Verb("info", "show which store is selected, why, and its policy", _json, (
        ("the store commands here use", "wheelstore info"),
        ("another store's policy, as JSON", "wheelstore --store /srv/wheelstore info --json"))),
    Verb("venv", "create a virtual environment (without pip, like uv venv)", _venv_arguments, (
        (".venv in this directory", "wheelstore venv"),
        ("another place and interpreter, with a current pip",
         "wheelstore venv ~/venvs/tools --python python3.12 --seed"))),
    Verb("install", "install distributions and their dependencies into a venv from the store",
         _resolving_arguments, (
             ("requirements, resolved by uv; the venv's versions kept where they fit",
              "wheelstore install requests 'pandas<3'"),
             ("pinned requirements (with or without --hash), wheels from a directory",
              "wheelstore install -r requirements.txt -f ./wheels"),
             ("a wheel file and a PEP 751 lock", "wheelstore install ./dist/mypkg-1.0-py3-none-any.whl pylock.toml"),
             ("a project directory and an sdist, built with uv build",
              "wheelstore install ./myproj ./dist/x-1.0.tar.gz"),
             ("your own project, editable", "wheelstore install -e ."),
             ("the newest allowed versions, into another venv",
              "wheelstore install -U --venv ~/venvs/tools black"))),
    Verb("sync", "make a venv hold exactly the given, complete set of distributions", _sync_arguments, (
        ("exactly this set; the rest is removed (not pip, setuptools, wheel)",
         "wheelstore sync -r requirements.txt -f ./wheels"),
        ("what a lock pins, from the store only", "wheelstore sync pylock.toml --offline"),
        ("a uv project's .venv from its uv.lock, with an extra; then 'uv run' keeps it",
         "wheelstore sync --extra plot"))),
    Verb("lock", "resolve requirements into a pylock.toml, installing nothing", _lock_arguments, (
        ("a lock for the venv's interpreter", "wheelstore lock -r requirements.in -o pylock.toml"),
        ("a lock for another interpreter", "wheelstore lock requests 'pandas<3' --python python3.12"))),
    Verb("uninstall", "remove distributions from a venv", _uninstall_arguments, (
        ("from the venv here", "wheelstore uninstall mypkg"),
        ("from another venv", "wheelstore uninstall --venv ~/venvs/tools black isort"))),
    Verb("list", "list the distributions in a venv", _list_arguments, (
        ("the venv here", "wheelstore list"),
        ("another venv, as JSON", "wheelstore list --venv ~/venvs/tools --json"))),
    Verb("edit", "give a venv private, writable copies of one distribution", _edit_arguments, (
        ("files to put prints and breakpoints in", "wheelstore edit requests"),
        ("back to the store's files; local edits are discarded", "wheelstore edit requests --undo"))),
    Verb("doctor", "check whether sharing works for you here, and how to fix it", _doctor_arguments, (
        ("the selected store", "wheelstore doctor"),
        ("a group's store, and linking into a venv", "wheelstore --store /srv/wheelstore doctor --venv .venv"))),
    Verb("gc", "remove trees no venv uses, and stale staging", _gc_arguments, (
        ("what would go, and every venv keeping trees", "wheelstore gc --dry-run"),
        ("remove unused trees older than 12 hours", "wheelstore gc --grace 12h"))),
    Verb("stats", "report logical and physical space, per user and venv", _json, (
        ("the space the store saves", "wheelstore stats"),
        ("another store, as JSON", "wheelstore --store /srv/wheelstore stats --json"))),
    Verb("verify", "check the store's trees against their manifests, and repair", _verify_arguments, (
        ("a quick check: files whose ctime moved", "wheelstore verify"),
        ("re-hash every file", "wheelstore verify --full"),
        ("publish damaged trees again, wheels from a directory first", "wheelstore verify --repair -f ./wheels"))),
    Verb("serve", "run the store's service: the one writer of a store made with init --service", _serve_arguments, (
        ("serve a service store, as its owner", "wheelstore serve --store /srv/wheelstore"),
        ("on another socket", "wheelstore serve --store /srv/wheelstore --socket /run/wheelstore.sock"))),
]
