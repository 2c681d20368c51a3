"""The ``wheelstore`` command: argument parsing and printing over the :mod:`wheelstore` API, nothing more."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any, NoReturn

from .. import __version__
from ..base import logs
from ..base.errors import WheelstoreError, printable
from ..base.interpreter import Interpreter
from ..fetch.sources import Sources
from ..resolve.plan import plan
from ..resolve.projects import LocalProjects
from ..store.config import select_store
from ..store.policy import SHARED_MODES
from ..store.store import Store
from ..venv.create import create as create_venv
from ..venv.environment import Environment, InstallReport, Options
from ..venv.link import LinkMode
from ..venv.locate import LOOKUP, find_venv


def _out(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text)


def _json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def cmd_init(args: argparse.Namespace) -> int:
    target = args.path or select_store(args.store).path
    store = Store.init(target, shared=args.shared, group=args.group)
    with store:
        group = f", group {store.policy.group}" if store.policy.group else ""
        _out(args, f"created {store.policy.shared} store at {store.root}{group}")
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
                _out(args, f"{verb} {m.name} {m.version} ({len(m.files)} files) -> {outcome.tree.path}")
    if args.json:
        _json(results)
    for failure in failures[:-1]:
        _err(f"error: {failure.oneline()}")
    if failures:
        raise failures[-1]
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    selection = select_store(args.store)
    with Store.select(args.store) as store:
        info = store.describe()
    info["selected_by"] = selection.source
    if args.json:
        _json(info)
    else:
        for k in ("store", "selected_by", "shared", "group", "owner", "trees"):
            _out(args, f"{k:12} {info[k] if info[k] is not None else '-'}")
    return 0


def _venv(args: argparse.Namespace) -> Path:
    """``--venv``, else the venv uv would use (:func:`~wheelstore.venv.locate.find_venv`), said on stderr as uv does."""
    if args.venv:
        return Path(args.venv)
    venv, why = find_venv()
    if not args.quiet:
        _err(f"using the venv at {venv} ({why})")
    return venv


def _link_mode(args: argparse.Namespace) -> LinkMode | None:
    return None if args.link_mode == "auto" else LinkMode(args.link_mode)


def _print_report(args: argparse.Namespace, report: InstallReport, started: float) -> None:
    if args.json:
        _json(report.to_json())
        return
    for name, version in report.removed:
        _out(args, f" - {name}=={version}")
    for name, version, mode in report.installed:
        _out(args, f" + {name}=={version} ({mode})")
    elapsed = (time.perf_counter() - started) * 1000
    _out(args, f"{len(report.installed)} installed, {len(report.removed)} removed, "
               f"{len(report.unchanged)} already there, in {elapsed:.0f} ms")


def cmd_venv(args: argparse.Namespace) -> int:
    path = Path(args.path or ".venv").absolute()
    interpreter = create_venv(path, args.python)
    _out(args, f"created venv at {path} (Python {'.'.join(map(str, interpreter.version))})")
    return 0


def _sources(args: argparse.Namespace) -> Sources:
    """The CLI's index options over the pip and uv configuration the user already has."""
    return Sources.from_environment(
        index_url=args.index_url,
        extra_index_urls=tuple(args.extra_index_url),
        find_links=tuple(f for f in args.find_links if "://" in f),
        no_index=args.no_index,
        offline=args.offline,
    )


def _local_links(args: argparse.Namespace) -> list[Path]:
    return [Path(f) for f in args.find_links if "://" not in f]


def cmd_install(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if not args.items and not args.requirements and not args.editables:
        raise WheelstoreError("nothing to install", hint="give wheels, requirements, a pylock.toml, or -r FILE")
    env = Environment(_venv(args))
    sources = _sources(args)  # builds (local projects, sdists) take their build deps from the -f directories too:
    builds = sources._replace(find_links=tuple(dict.fromkeys((*sources.find_links, *args.find_links))))
    with Store.select(args.store) as store, LocalProjects(env.interpreter, builds, args.editables) as projects:
        candidates = plan(store, env.interpreter, args.items, [Path(r) for r in args.requirements],
                          _local_links(args), sources, quiet=args.quiet, projects=projects)
        report = env.install(store, candidates, Options(link_mode=_link_mode(args), exact=args.verb == "sync",
                                                        compile_bytecode=not args.no_compile, sources=builds,
                                                        quiet=args.quiet, editables=projects.editables))
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
    out = lock(args.items, [Path(r) for r in args.requirements], interpreter, sources, Path(args.output),
               quiet=args.quiet)
    took = (time.perf_counter() - started) * 1000
    _out(args, f"wrote {out} for Python {interpreter.python_version} in {took:.0f} ms")
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    report = Environment(_venv(args)).uninstall(args.names)
    _print_report(args, report, started)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    dists = sorted(Environment(_venv(args)).distributions().values(), key=lambda d: d.name)
    if args.json:
        _json([d.to_json() for d in dists])
        return 0
    width = max((len(d.display_name) for d in dists), default=7)
    _out(args, f"{'Package':{width}}  Version")
    for d in dists:
        _out(args, f"{d.display_name:{width}}  {d.version}")
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    env = Environment(_venv(args))
    with Store.select(args.store) as store:
        dist, count = env.edit(store, args.name, undo=args.undo)
    if args.undo:
        _out(args, f"{dist.display_name}: {count} files linked from the store again; local edits discarded")
    else:
        _out(args, f"{dist.display_name}: {count} files are now private, writable copies in {env.path}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from . import doctor

    report = doctor.run(args.store, args.venv)
    if args.json:
        _json(report.to_json())
    else:
        for line in report.lines():
            _out(args, line)
    problem = report.error()
    if problem is not None:  # sharing cannot work for this user: exit non-zero, the first problem on stderr
        raise problem
    return 0


def _size(n: int) -> str:
    if abs(n) < 1024:
        return f"{n} B"
    value, shown = float(n), "B"
    for unit in ("KiB", "MiB", "GiB"):
        value, shown = value / 1024, unit
        if abs(value) < 1024:
            break
    return f"{value:.1f} {shown}"


def cmd_gc(args: argparse.Namespace) -> int:
    from ..store import gc

    grace = gc.DEFAULT_GRACE if args.grace is None else gc.parse_duration(args.grace)
    with Store.select(args.store) as store:
        report = gc.collect_garbage(store, grace=grace, dry_run=args.dry_run)
    if args.json:
        _json(report.to_json())
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for u in report.removed:
        what = f"{u.name} {u.version}".strip() or u.kind
        _out(args, f" - {u.path} ({what}, {_size(u.bytes)})")
    for u in report.unpublished:
        _out(args, f"unpublished {u.path} ({u.name} {u.version}); its files belong to {u.owner}: "
                   f"they are freed by {u.owner}'s 'wheelstore gc' or root's")
    for u in report.not_removable:
        what = f"{u.name} {u.version}".strip() or u.kind
        _out(args, f"not removable: {u.path} ({what}) belongs to {u.owner}; only {gc.who_can(u.owner)} can remove it")
    for problem in report.problems:
        _out(args, f"skipped: {problem}")
    _out(args, f"{verb} {len(report.removed)} entries ({_size(report.freed_bytes)}); kept {report.live} in use by "
               f"{report.roots_live} venvs and {report.young} younger than the grace period")
    if report.cache_entries_removed:
        _out(args, f"also removed {report.cache_entries_removed} entries for trees no longer in the store from your "
                   "cache")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from ..store import stats

    with Store.select(args.store) as store:
        result = stats.measure(store)
    data = result.to_json()
    if args.json:
        _json(data)
        return 0
    _out(args, f"store {data['store']}: {_size(result.store_usage.bytes)}, {result.store_usage.inodes} inodes")
    for v in result.venvs:
        _out(args, f"venv {v.venv} ({v.user}): links {len(v.units)} units, {_size(v.logical.bytes)} as copies; "
                   f"its own files {_size(v.physical.bytes)}, {v.physical.inodes} inodes")
    users: Any = data["users"]
    for u in users:
        _out(args, f"user {u['user']}: {u['venvs']} venvs, {_size(u['logical_bytes'])} as copies, "
                   f"{_size(u['physical_bytes'])} own files")
    logical, physical = result.logical, result.physical
    saved = f"{100 * (1 - physical.bytes / logical.bytes):.0f}%" if logical.bytes else "-"
    _out(args, f"logical {_size(logical.bytes)} ({logical.inodes} inodes), physical {_size(physical.bytes)} "
               f"({physical.inodes} inodes): saves {_size(logical.bytes - physical.bytes)} ({saved})")
    for note in result.notes:
        _out(args, f"note: {note}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from ..store import repair, verify

    sources = _sources(args)
    local = repair.local_wheels(_local_links(args))
    with Store.select(args.store) as store, ExitStack() as cleanup:

        def find(filename: str | None, sha256: str) -> Path | None:
            """A wheel to repair from: in the -f directories, else downloaded from the indexes (checked by hash)."""
            found = local(filename, sha256)
            if found is not None or filename is None or sources.offline:
                return found
            from ..fetch.download import find_wheel, remove_download
            from ..fetch.http import Http

            http = cleanup.enter_context(closing(Http()))
            path = find_wheel(store, filename, sha256, sources, http)
            if path is not None:
                cleanup.callback(remove_download, store, path)
            return path

        report = repair.verify_and_repair(store, full=args.full, finder=find) if args.repair \
            else verify.verify_store(store, full=args.full)
    if args.json:
        _json(report.to_json())
        return 0 if report.ok else 1
    last = None
    for d in report.damaged:
        if d.key != last:
            unit = " (bytecode)" if d.unit == "bytecode" else ""
            print(printable(f"damaged: {d.name} {d.version}{unit}, tree {d.key}"))
            last = d.key
        print(f"  {d.describe()}")
    for r in report.repaired:
        source = f"from {r.wheel}" if r.wheel else "(compiled again on the next install)"
        _out(args, printable(f"repaired: {r.name} {r.version}{' bytecode' if r.unit == 'bytecode' else ''} {source}; "
                             f"the damaged copy is in {', '.join(r.quarantined) or 'nowhere (it was gone)'}"))
    for name, version, key, why in report.unrepaired:
        print(printable(f"not repaired: {name} {version} ({key}): {why}"))
    for o in report.orphans:  # not damage (nobody uses them): said, but verify's status is the trees'
        print(f"no manifest: {o.describe()}")
    how = "re-hashed every file" if report.full else f"{report.rehashed} re-hashed, {report.relinked} only relinked"
    state = "all intact" if not report.damaged else (
        f"{len(report.still_damaged)} still damaged" if report.still_damaged else "all repaired")
    if report.orphans:
        state += f"; {len(report.orphans)} {'entry' if len(report.orphans) == 1 else 'entries'} of trees/ without a " \
                 "manifest (above)"
    _out(args, f"checked {report.trees} trees, {report.files} files ({how}): {state}")
    if report.still_damaged and not args.repair:
        _err(f"fix: wheelstore --store {store.root} verify --repair "
             "(their wheels come from the indexes, or from -f DIR)")
    return 0 if report.ok else 1


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
    p.set_defaults(func=cmd_venv)


def _install_arguments(p: argparse.ArgumentParser) -> None:
    """``install`` and ``sync`` take the same arguments."""
    p.add_argument("items", nargs="*", metavar="WHEEL_OR_REQ", help="wheels, pins, pylock.toml, project DIRs, sdists")
    p.add_argument("-e", "--editable", dest="editables", action="append", default=[], metavar="DIR")
    p.add_argument("--venv", help=f"the venv ({LOOKUP})")
    p.add_argument("-r", "--requirement", dest="requirements", action="append", default=[], metavar="FILE")
    _add_source_options(p)
    p.add_argument("--link-mode", choices=["auto", *(m.value for m in LinkMode)], default="auto")
    p.add_argument("--no-compile", action="store_true",
                   help="do not compile bytecode into the store (Python then compiles into the venv on import)")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=cmd_install)


def _lock_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("items", nargs="*", metavar="REQ", help="requirements, like 'requests' or 'pandas<3'")
    p.add_argument("-r", "--requirement", dest="requirements", action="append", default=[], metavar="FILE")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--venv", help=f"resolve for this venv's interpreter ({LOOKUP})")
    target.add_argument("--python", help="resolve for this interpreter")
    p.add_argument("-o", "--output", default="pylock.toml", metavar="FILE",
                   help="where to write (default: pylock.toml)")
    _add_source_options(p)
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


def _gc_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grace", metavar="DURATION", help="keep unused trees younger than this (default 1d; 0, 90s, 12h)")
    p.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=cmd_gc)


def _stats_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=cmd_stats)


def _verify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--full", action="store_true", help="re-hash every file, not only those whose ctime moved")
    p.add_argument("--repair", action="store_true", help="publish damaged trees again from their wheels")
    _add_source_options(p)  # where --repair finds wheels: -f directories first, then the indexes
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=cmd_verify)


#: every verb: its name, its line in the help, and what adds its arguments
_VERBS: list[tuple[str, str, Callable[[argparse.ArgumentParser], None]]] = [
    ("init", "create a store and record its sharing policy", _init_arguments),
    ("realize", "unpack local wheels into the store, without installing", _realize_arguments),
    ("info", "show which store is selected, why, and its policy", _info_arguments),
    ("venv", "create a virtual environment (without pip, like uv venv)", _venv_arguments),
    ("install", "install distributions into a venv from the store", _install_arguments),
    ("sync", "make a venv hold exactly the given distributions", _install_arguments),
    ("lock", "resolve requirements into a pylock.toml, installing nothing", _lock_arguments),
    ("uninstall", "remove distributions from a venv", _uninstall_arguments),
    ("list", "list the distributions in a venv", _list_arguments),
    ("edit", "give a venv private, writable copies of one distribution", _edit_arguments),
    ("doctor", "check whether sharing works for you here, and how to fix it", _doctor_arguments),
    ("gc", "remove trees no venv uses, and stale staging", _gc_arguments),
    ("stats", "report logical and physical space, per user and venv", _stats_arguments),
    ("verify", "check the store's trees against their manifests, and repair", _verify_arguments),
]


def _add_source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--find-links", action="append", default=[], metavar="DIR_OR_URL",
                   help="a directory of wheels (or a URL of a page linking them) to choose from")
    p.add_argument("-i", "--index-url", metavar="URL", help="the package index (default: from pip/uv config, or PyPI)")
    p.add_argument("--extra-index-url", action="append", default=[], metavar="URL", help="another index to use")
    p.add_argument("--no-index", action="store_true", help="use no index, only --find-links and the store")
    p.add_argument("--offline", action="store_true", help="use only the store and local files; never the network")


def _err(line: str) -> None:
    """A line on stderr, after what is already on stdout: when both go to one pipe (a CI log), a report's last
    line and the error or fix after it must come out in that order."""
    sys.stdout.flush()
    print(printable(line), file=sys.stderr)


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
    try:
        return int(args.func(args))
    except WheelstoreError as e:
        _err(f"error: {e.oneline()}")
        return e.exit_code
    except OSError as e:  # the environment, not a bug: a full disk, a read-only or vanished filesystem, ...
        where = f": {e.filename}" if e.filename else ""
        _err(f"error: {e.strerror or e}{where}")
        return 1
    except KeyboardInterrupt:
        _err("error: interrupted")
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
