"""The ``wheelstore`` command: argument parsing and printing over the :mod:`wheelstore` API, nothing more."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .config import select_store
from .errors import NotImplementedYet, WheelstoreError
from .policy import SHARED_MODES
from .environment import Environment, Report
from .inputs import Candidate, collect
from .link import LinkMode
from .store import Store
from .venv import create as create_venv

#: verbs that later stages of the pipeline will add; listed now so --help shows the whole tool
PLANNED = {
    "verify": "check the store's trees against their manifests",
    "gc": "remove trees no venv uses",
    "stats": "report logical and physical space",
    "doctor": "check whether sharing works for you here",
}


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
    with Store.select(args.store) as store:
        for outcome in store.realize_many([(w, args.sha256) for w in args.wheels]):
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
        print(f"error: {failure.oneline()}", file=sys.stderr)
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


def _environment(args: argparse.Namespace) -> Environment:
    return Environment(args.venv)


def _link_mode(args: argparse.Namespace) -> LinkMode | None:
    return None if args.link_mode == "auto" else LinkMode(args.link_mode)


def _print_report(args: argparse.Namespace, report: Report, started: float) -> None:
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
    interpreter = create_venv(Path(args.path).absolute(), args.python)
    _out(args, f"created venv at {Path(args.path).absolute()} (Python {'.'.join(map(str, interpreter.version))})")
    return 0


def _collect(args: argparse.Namespace, env: Environment) -> list[Candidate]:
    return collect(
        args.items,
        [Path(r) for r in args.requirements],
        [Path(f) for f in args.find_links],
        env.interpreter,
        no_index=True,
    )


def cmd_install(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if not args.items and not args.requirements:
        raise WheelstoreError("nothing to install", hint="give wheels, requirements, a pylock.toml, or -r FILE")
    env = _environment(args)
    candidates = _collect(args, env)
    with Store.select(args.store) as store:
        report = env.install(store, candidates, link_mode=_link_mode(args), exact=args.verb == "sync",
                             compile_bytecode=not args.no_compile)
    _print_report(args, report, started)
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    report = _environment(args).uninstall(args.names)
    _print_report(args, report, started)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    dists = sorted(_environment(args).distributions().values(), key=lambda d: d.name)
    if args.json:
        _json([d.to_json() for d in dists])
        return 0
    width = max((len(d.display_name) for d in dists), default=7)
    _out(args, f"{'Package':{width}}  Version")
    for d in dists:
        _out(args, f"{d.display_name:{width}}  {d.version}")
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    env = _environment(args)
    with Store.select(args.store) as store:
        dist, count = env.edit(store, args.name, undo=args.undo)
    if args.undo:
        _out(args, f"{dist.display_name}: {count} files linked from the store again; local edits discarded")
    else:
        _out(args, f"{dist.display_name}: {count} files are now private, writable copies in {env.path}")
    return 0


def _not_yet(verb: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        raise NotImplementedYet(f"'wheelstore {verb}' is not implemented yet")

    return run


class _Parser(argparse.ArgumentParser):
    """argparse, with usage mistakes reported in one line like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--store", default=argparse.SUPPRESS, help="the store to use (default: see 'wheelstore info')")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="print only errors")

    parser = _Parser(
        prog="wheelstore",
        description="One shared, safe store of unpacked wheels, and venvs filled from it.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"wheelstore {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True, parser_class=_Parser)

    p = verbs.add_parser("init", parents=[common], help="create a store and record its sharing policy")
    p.add_argument("path", nargs="?", metavar="STORE", help="where to create it (default: the selected store)")
    p.add_argument("--group", help="share with this group; you must be a member")
    p.add_argument("--shared", choices=SHARED_MODES, help="who may read: private, group (default with --group), all")
    p.set_defaults(func=cmd_init)

    p = verbs.add_parser("realize", parents=[common], help="unpack local wheels into the store, without installing")
    p.add_argument("wheels", nargs="+", metavar="WHEEL")
    p.add_argument("--sha256", help="the sha256 the wheel must have")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=cmd_realize)

    p = verbs.add_parser("info", parents=[common], help="show which store is selected, why, and its policy")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=cmd_info)

    p = verbs.add_parser("venv", parents=[common], help="create a virtual environment (without pip, like uv venv)")
    p.add_argument("path", metavar="VENV")
    p.add_argument("--python", help="the interpreter to base it on (default: python3 on PATH)")
    p.set_defaults(func=cmd_venv)

    for verb, text in (("install", "install distributions into a venv from the store"),
                       ("sync", "make a venv hold exactly the given distributions")):
        p = verbs.add_parser(verb, parents=[common], help=text)
        p.add_argument("items", nargs="*", metavar="WHEEL_OR_REQ", help="wheel files, name==version pins, pylock.toml")
        p.add_argument("--venv", required=True, help="the target venv")
        p.add_argument("-r", "--requirement", dest="requirements", action="append", default=[], metavar="FILE")
        p.add_argument("-f", "--find-links", action="append", default=[], metavar="DIR",
                       help="a directory of wheels to choose from")
        p.add_argument("--no-index", action="store_true", help="use only local wheels (the only source so far)")
        p.add_argument("--offline", action="store_true", help="use only what is local (the only source so far)")
        p.add_argument("--link-mode", choices=["auto", *(m.value for m in LinkMode)], default="auto")
        p.add_argument("--no-compile", action="store_true",
                       help="do not compile bytecode into the store (Python then compiles into the venv on import)")
        p.add_argument("--json", action="store_true", help="print a JSON report")
        p.set_defaults(func=cmd_install)

    p = verbs.add_parser("uninstall", parents=[common], help="remove distributions from a venv")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--venv", required=True)
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=cmd_uninstall)

    p = verbs.add_parser("list", parents=[common], help="list the distributions in a venv")
    p.add_argument("--venv", required=True)
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=cmd_list)

    p = verbs.add_parser("edit", parents=[common], help="give a venv private, writable copies of one distribution")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--venv", required=True)
    p.add_argument("--undo", action="store_true", help="link the distribution from the store again")
    p.set_defaults(func=cmd_edit)

    for verb, text in PLANNED.items():
        p = verbs.add_parser(verb, parents=[common], help=f"{text} (not implemented yet)")
        p.set_defaults(func=_not_yet(verb), planned=True)
    return parser


def _log_to_stderr(*, quiet: bool) -> None:
    """Warnings from the API (a lock that could not be taken, ...) as ``warning: ...`` lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    log = logging.getLogger("wheelstore")
    log.handlers[:] = [handler]
    log.setLevel(logging.ERROR if quiet else logging.WARNING)
    log.propagate = False
    logging.addLevelName(logging.WARNING, "warning")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "planned", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.store = getattr(args, "store", None)
    args.quiet = getattr(args, "quiet", False)
    _log_to_stderr(quiet=args.quiet)
    try:
        return int(args.func(args))
    except WheelstoreError as e:
        print(f"error: {e.oneline()}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # the environment, not a bug: a full disk, a read-only or vanished filesystem, ...
        where = f": {e.filename}" if e.filename else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
