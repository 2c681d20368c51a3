"""The ``wheelstore`` command: argument parsing and printing over the :mod:`wheelstore` API, nothing more."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from .. import __version__
from ..base import logs, progress
from ..base.errors import WheelstoreError, printable
from ..base.interpreter import Interpreter
from ..base.names import canonical
from ..fetch.sources import Sources
from ..resolve.plan import Request
from ..store.config import select_store
from ..store.policy import SHARED_MODES
from ..store.store import Store
from ..venv.create import create as create_venv
from ..venv.environment import Environment, InstallReport, Options
from ..venv.link import LinkMode
from ..venv.locate import LOOKUP, find_venv
from .maintenance import gc_arguments, stats_arguments, verify_arguments
from .options import add_source_options, local_links, sources_from
from .output import err, out, print_json


def cmd_init(args: argparse.Namespace) -> int:
    target = args.path or select_store(args.store).path
    with contextlib.ExitStack() as closing:
        site = closing.enter_context(Store.open(args.upstream)) if args.upstream else None
        store = closing.enter_context(Store.init(target, shared=args.shared, group=args.group, site=site))
        group = f", group {store.policy.group}" if store.policy.group else ""
        over = f", an overlay of the site store {site.root}" if site is not None else ""
        out(args, f"created {store.policy.shared} store at {store.root}{group}{over}")
    return 0


def cmd_realize(args: argparse.Namespace) -> int:
    if args.sha256 and len(args.wheels) != 1:
        raise WheelstoreError("--sha256 applies to one wheel; give one wheel per call")
    results = []
    failures = []
    target = None if args.no_compile else Interpreter.inspect(args.python or sys.executable)
    from ..store.publish import realize_wheels

    with Store.select(args.store) as store:
        for outcome in realize_wheels(store, [(w, args.sha256) for w in args.wheels], compile_for=target):
            if isinstance(outcome, WheelstoreError):
                failures.append(outcome)
                continue
            m = outcome.tree.manifest
            results.append(
                {
                    "wheel": m.wheel,
                    "key": outcome.tree.key,
                    "name": m.name,
                    "version": m.version,
                    "tree": str(outcome.tree.path),
                    "files": len(m.files),
                    "unpacked": outcome.unpacked,
                }
            )
            if not args.json:
                verb = "published" if outcome.unpacked else "already in store:"
                out(args, f"{verb} {m.name} {m.version} ({len(m.files)} files) -> {outcome.tree.path}")
    if args.json:
        print_json(results)
    for failure in failures[:-1]:
        err(f"error: {failure.oneline()}")
    if failures:
        raise failures[-1]
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    selection = select_store(args.store)
    with Store.select(args.store) as store:
        info = store.describe()
    info["selected_by"] = selection.source
    if args.json:
        print_json(info)
    else:
        for k in ("store", "selected_by", "shared", "group", "owner", "trees", "id"):
            out(args, f"{k:12} {info[k] if info[k] is not None else '-'}")
        if isinstance(site := info.get("upstream"), dict):  # an overlay: the chain lookups follow
            out(args, f"{'upstream':12} {site['store']} (id {site['id']}): looked in first; publishes go to the store")
    return 0


def _venv(args: argparse.Namespace) -> Path:
    """``--venv``, else the venv uv would use (:func:`~wheelstore.venv.locate.find_venv`), said on stderr as uv does."""
    if args.venv:
        return Path(args.venv)
    venv, why = find_venv()
    if not args.quiet:
        err(f"using the venv at {venv} ({why})")
    return venv


def _link_mode(args: argparse.Namespace) -> LinkMode | None:
    return None if args.link_mode == "auto" else LinkMode(args.link_mode)


def _print_report(args: argparse.Namespace, report: InstallReport, started: float) -> None:
    if args.json:
        print_json(report.to_json())
        return
    for name, version in report.removed:
        out(args, f" - {name}=={version}")
    for name, version, mode in report.installed:
        out(args, f" + {name}=={version} ({mode})")
    elapsed = (time.perf_counter() - started) * 1000
    out(args, f"{len(report.installed)} installed, {len(report.removed)} removed, "
               f"{len(report.unchanged)} already there, in {elapsed:.0f} ms")


def cmd_venv(args: argparse.Namespace) -> int:
    path = Path(args.path or ".venv").absolute()
    interpreter = create_venv(path, args.python)
    out(args, f"created venv at {path} (Python {'.'.join(map(str, interpreter.version))})")
    if args.seed:
        _seed(args, path)
    return 0


def _seed(args: argparse.Namespace, path: Path) -> None:
    """``--seed``: a current pip from the store, as ``uv venv --seed`` does. Not ensurepip's: a pip before 23.1 cannot
    remove links into a store (:mod:`wheelstore.venv.oldpip`)."""
    started = time.perf_counter()
    request = Request(items=["pip>=23.1"], find_links=local_links(args))
    try:
        with Store.select(args.store) as store:
            report = Environment(path).install(store, request, Options(sources=sources_from(args)))
    except WheelstoreError as e:
        raise WheelstoreError(f"created {path}, but could not seed pip into it: {e.message}",
                              hint=e.hint or f"wheelstore install --venv {path} pip") from None
    _print_report(args, report, started)


def cmd_install(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if not args.items and not args.requirements and not args.editables:
        raise WheelstoreError("nothing to install", hint="give wheels, requirements, a pylock.toml, or -r FILE")
    env = Environment(_venv(args))
    sync = args.verb == "sync"
    request = Request(
        items=args.items, requirement_files=[Path(r) for r in args.requirements], find_links=local_links(args),
        exact=sync, upgrade=not sync and args.upgrade, no_deps=not sync and args.no_deps, editables=args.editables,
        upgrade_packages=frozenset() if sync else frozenset(map(canonical, args.upgrade_package)),
        reinstall=args.reinstall, reinstall_packages=frozenset(map(canonical, args.reinstall_package)),
    )
    with Store.select(args.store) as store:
        report = env.install(store, request, Options(link_mode=_link_mode(args), compile_bytecode=not args.no_compile,
                                                     compile_optimized=args.compile_optimized,
                                                     sources=sources_from(args)))
    _print_report(args, report, started)
    return 0


def cmd_lock(args: argparse.Namespace) -> int:
    from ..base.interpreter import find_python
    from ..resolve.resolver import lock

    started = time.perf_counter()
    python = Path(args.python) if args.python else find_python(_venv(args))
    interpreter = Interpreter.inspect(python)
    sources = Sources.from_environment(index_url=args.index_url, extra_index_urls=tuple(args.extra_index_url),
                                       find_links=tuple(args.find_links), no_index=args.no_index, offline=args.offline)
    written = lock(args.items, [Path(r) for r in args.requirements], interpreter, sources, Path(args.output))
    took = (time.perf_counter() - started) * 1000
    out(args, f"wrote {written} for Python {interpreter.python_version} in {took:.0f} ms")
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    report = Environment(_venv(args)).uninstall(args.names)
    _print_report(args, report, started)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    dists = sorted(Environment(_venv(args)).distributions().values(), key=lambda d: d.name)
    if args.json:
        print_json([d.to_json() for d in dists])
        return 0
    width = max((len(d.display_name) for d in dists), default=7)
    out(args, f"{'Package':{width}}  Version")
    for d in dists:
        out(args, f"{d.display_name:{width}}  {d.version}")
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    env = Environment(_venv(args))
    with Store.select(args.store) as store:
        dist, count = env.edit(store, args.name, undo=args.undo)
    if args.undo:
        out(args, f"{dist.display_name}: {count} files linked from the store again; local edits discarded")
    else:
        out(args, f"{dist.display_name}: {count} files are now private, writable copies in {env.path}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from . import doctor

    report = doctor.run(args.store, args.venv)
    if args.json:
        print_json(report.to_json())
    else:
        for line in report.lines():
            out(args, line)
    problem = report.error()
    if problem is not None:  # sharing cannot work for this user: exit non-zero, the first problem on stderr
        raise problem
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with usage mistakes reported in one line like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command line's parser. When ``argv`` plainly names a verb (:func:`_verb_in`), the parser knows that verb
    alone: adding every verb and its arguments (argparse makes a formatter for each argument and asks gettext for
    every label, each time looking for message catalogs on disk) was 5 ms of every command. Any other command line
    gets them all."""
    common = _Parser(add_help=False)
    common.add_argument("--store", default=argparse.SUPPRESS, help="the store to use (default: see 'wheelstore info')")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="print only errors")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="also say what is being done (downloads, the uv command)")

    parser = _Parser(
        prog="wheelstore",
        description="One shared, safe store of unpacked wheels, and venvs filled from it.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"wheelstore {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True, parser_class=_Parser)
    chosen = _verb_in(sys.argv[1:] if argv is None else argv)
    for verb, text, arguments in _VERBS:
        if chosen in (None, verb):
            arguments(verbs.add_parser(verb, parents=[common], help=text))
    return parser


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
            return word if word in {v for v, _t, _a in _VERBS} else None
    return None


def _init_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", metavar="STORE", help="where to create it (default: the selected store)")
    p.add_argument("--group", help="share with this group; you must be a member")
    p.add_argument("--shared", choices=SHARED_MODES, help="who may read: private, group (default with --group), all")
    p.add_argument("--upstream", metavar="SITE_STORE", help="make an overlay of this read-only site store: installs "
                   "link its trees and publish only what it lacks into the new store")
    p.set_defaults(func=cmd_init)


def _realize_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("wheels", nargs="+", metavar="WHEEL")
    p.add_argument("--sha256", help="the sha256 the wheel must have")
    p.add_argument("--python", help="compile bytecode into the trees for this interpreter (default: the one running "
                                    "wheelstore), as installs do")
    p.add_argument("--no-compile", action="store_true", help="publish the trees without bytecode")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=cmd_realize)


def _info_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=cmd_info)


def _venv_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", metavar="VENV", help="where to create it (default: .venv, as uv venv)")
    p.add_argument("--python", help="the interpreter to base it on (default: python3 on PATH)")
    p.add_argument("--seed", action="store_true", help="add a current pip from the store (as uv venv --seed)")
    add_source_options(p)
    p.set_defaults(func=cmd_venv, json=False)


def _install_arguments(p: argparse.ArgumentParser) -> None:
    """``install`` and ``sync`` take the same arguments, but for what only a resolving install does."""
    p.add_argument("items", nargs="*", metavar="WHEEL_OR_REQ", help="wheels, pins, pylock.toml, project DIRs, sdists")
    p.add_argument("-e", "--editable", dest="editables", action="append", default=[], metavar="DIR")
    p.add_argument("--venv", help=f"the venv ({LOOKUP})")
    p.add_argument("-r", "--requirement", dest="requirements", action="append", default=[], metavar="FILE")
    add_source_options(p)
    p.add_argument("--link-mode", choices=["auto", *(m.value for m in LinkMode)], default="auto")
    p.add_argument("--no-compile", action="store_true",
                   help="do not compile bytecode into the store (Python then compiles into the venv on import)")
    p.add_argument("--compile-optimized", action="store_true",
                   help="trees published now also carry the opt-1 and opt-2 pycs of python -O and -OO")
    p.add_argument("--reinstall", action="store_true", help="link every distribution again, even what is there")
    p.add_argument("--reinstall-package", action="append", default=[], metavar="NAME",
                   help="link this distribution again, even if it is there")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=cmd_install, upgrade=False, no_deps=False, upgrade_package=[])


def _resolving_arguments(p: argparse.ArgumentParser) -> None:
    """``install``'s own: how it treats what the venv holds, and dependencies."""
    _install_arguments(p)
    p.add_argument("-U", "--upgrade", action="store_true",
                   help="take the newest allowed versions, not those the venv holds")
    p.add_argument("-P", "--upgrade-package", action="append", default=[], metavar="NAME",
                   help="take the newest allowed version of this distribution")
    p.add_argument("--no-deps", action="store_true", help="install exactly what is named, without its dependencies")


def _lock_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("items", nargs="*", metavar="REQ", help="requirements, like 'requests' or 'pandas<3'")
    p.add_argument("-r", "--requirement", dest="requirements", action="append", default=[], metavar="FILE")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--venv", help=f"resolve for this venv's interpreter ({LOOKUP})")
    target.add_argument("--python", help="resolve for this interpreter")
    p.add_argument("-o", "--output", default="pylock.toml", metavar="FILE",
                   help="where to write (default: pylock.toml)")
    add_source_options(p)
    p.set_defaults(func=cmd_lock)


def _uninstall_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--venv", help=f"the venv ({LOOKUP})")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=cmd_uninstall)


def _list_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--venv", help=f"the venv ({LOOKUP})")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=cmd_list)


def _edit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")
    p.add_argument("--venv", help=f"the venv ({LOOKUP})")
    p.add_argument("--undo", action="store_true", help="link the distribution from the store again")
    p.set_defaults(func=cmd_edit)


def _doctor_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--venv", help="also check this venv: its interpreter, and linking into it (default: none)")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=cmd_doctor)


#: every verb: its name, its line in the help, and what adds its arguments
_VERBS: list[tuple[str, str, Callable[[argparse.ArgumentParser], None]]] = [
    ("init", "create a store and record its sharing policy", _init_arguments),
    ("realize", "unpack local wheels into the store, without installing", _realize_arguments),
    ("info", "show which store is selected, why, and its policy", _info_arguments),
    ("venv", "create a virtual environment (without pip, like uv venv)", _venv_arguments),
    ("install", "install distributions and their dependencies into a venv from the store", _resolving_arguments),
    ("sync", "make a venv hold exactly the given, complete set of distributions", _install_arguments),
    ("lock", "resolve requirements into a pylock.toml, installing nothing", _lock_arguments),
    ("uninstall", "remove distributions from a venv", _uninstall_arguments),
    ("list", "list the distributions in a venv", _list_arguments),
    ("edit", "give a venv private, writable copies of one distribution", _edit_arguments),
    ("doctor", "check whether sharing works for you here, and how to fix it", _doctor_arguments),
    ("gc", "remove trees no venv uses, and stale staging", gc_arguments),
    ("stats", "report logical and physical space, per user and venv", stats_arguments),
    ("verify", "check the store's trees against their manifests, and repair", verify_arguments),
]


def _log_to_stderr(*, quiet: bool, verbose: bool = False) -> None:
    """Warnings from the API (a lock that could not be taken, ...) as ``warning: ...`` lines; with ``verbose`` also
    what is being done, as ``debug: ...`` lines. The handler is made with the first such line
    (:mod:`wheelstore.base.logs`)."""
    level = logs.ERROR if quiet else logs.DEBUG if verbose else logs.WARNING
    logs.threshold = level
    logs.setup = lambda: _handler(level)


def _handler(level: int) -> None:
    import logging

    class AfterStdout(logging.StreamHandler):  # type: ignore[type-arg]
        def emit(self, record: logging.LogRecord) -> None:
            if (shown := progress.current()).live:  # above the live rows, never through them
                shown.line(self.format(record))
                return
            sys.stdout.flush()
            super().emit(record)

    class Printable(logging.Formatter):  # as every error line: names in warnings come from trees and wheels too
        def format(self, record: logging.LogRecord) -> str:
            # lower case as uv's lines, without renaming logging's levels for the whole process (addLevelName)
            return printable(f"{record.levelname.lower()}: {record.getMessage()}")

    handler = AfterStdout(sys.stderr)
    handler.setFormatter(Printable())
    log = logging.getLogger("wheelstore")
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    args.store = getattr(args, "store", None)
    args.quiet = getattr(args, "quiet", False)
    _log_to_stderr(quiet=args.quiet, verbose=getattr(args, "verbose", False))
    from .display import reporter_for

    try:
        with progress.reporting(reporter_for(quiet=args.quiet)):
            return int(args.func(args))
    except WheelstoreError as e:
        err(f"error: {e.oneline()}")
        return e.exit_code
    except OSError as e:  # the environment, not a bug: a full disk, a read-only or vanished filesystem, ...
        where = f": {e.filename}" if e.filename else ""
        err(f"error: {e.strerror or e}{where}")
        return 1
    except KeyboardInterrupt:
        err("error: interrupted")
        return 130


def entry() -> NoReturn:
    """The ``wheelstore`` command: :func:`main`, then a quick exit.

    At interpreter shutdown a big install's parsed manifests were freed object by object and collected once more:
    15 ms of a 170 ms warm install. Once the exit handlers have run and the output is flushed, the operating system
    frees it all at once. Only when nothing else runs: another thread would be cut short.
    """
    code = main()
    threading = sys.modules.get("threading")  # never imported: no other thread ran
    if threading is not None and threading.active_count() > 1:
        sys.exit(code)
    atexit._run_exitfuncs()  # what interpreter shutdown would run: logging's flush, compilers' close
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe: let the interpreter report it as it always does
        sys.exit(code)
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
