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
from typing import TYPE_CHECKING, NoReturn

from ..base import cancel, logs, progress
from ..base.errors import ServiceUnreachable, WheelstoreError, printable
from ..base.interpreter import Interpreter
from ..base.names import canonical
from ..fetch.sources import Sources
from ..resolve.plan import Request
from ..store.config import select_store
from ..store.store import Store
from ..venv.create import create as create_venv
from ..venv.environment import Environment, Options
from ..venv.link import LinkMode
from ..venv.locate import find_venv
from ..venv.report import InstallReport
from .maintenance import cmd_gc, cmd_stats, cmd_verify
from .options import local_links, sources_from
from .output import count, elapsed_text, err, out, print_json
from .parser import build_parser as _build_parser
from .project import given_selection, others, project_inputs
from .service import cmd_serve, service_info, service_lines, service_settings

if TYPE_CHECKING:
    from ..resolve.uvproject import Selection, UvSync
    from ..store.publish import Realized


def cmd_init(args: argparse.Namespace) -> int:
    target = args.path or select_store(args.store).path
    with contextlib.ExitStack() as closing:
        site = closing.enter_context(Store.open(args.upstream)) if args.upstream else None
        service = service_settings(args, Path(target))
        store = closing.enter_context(Store.init(target, shared=args.shared, group=args.group, site=site,
                                                 service=service))
        group = f", group {store.policy.group}" if store.policy.group else ""
        over = f", an overlay of the site store {site.root}" if site is not None else ""
        served = f", written by its service only (start it: wheelstore serve --store {store.root})" if service else ""
        out(args, f"created {store.policy.shared} store at {store.root}{group}{over}{served}")
    return 0


def cmd_realize(args: argparse.Namespace) -> int:
    if args.sha256 and len(args.wheels) != 1:
        raise WheelstoreError("--sha256 applies to one wheel; give one wheel per call")
    results = []
    failures = []
    target = None if args.no_compile else Interpreter.inspect(args.python or sys.executable)
    from ..store.publish import realize_wheels

    with Store.select(args.store) as store:
        from ..service.client import service_socket

        realized = realize_wheels if service_socket(store) is None else _upload_wheels
        for outcome in realized(store, [(w, args.sha256) for w in args.wheels], compile_for=target):
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
                out(args, f"{verb} {m.name} {m.version} ({count(len(m.files), 'file')}) -> {outcome.tree.path}")
    if args.json:
        print_json(results)
    for failure in failures[:-1]:
        err(f"error: {failure.oneline()}")
    if failures:
        raise failures[-1]
    return 0


def _upload_wheels(store: Store, wheels: list[tuple[str, str | None]], compile_for: Interpreter | None
                   ) -> list[Realized | WheelstoreError]:
    """``realize`` into a service store: each wheel sent to the service, which hashes and publishes it."""
    from ..service.client import ServiceClient, target_of
    from ..store.publish import Realized

    client, target = ServiceClient.of(store), target_of(compile_for) if compile_for is not None else None
    outcomes: list[Realized | WheelstoreError] = []
    for wheel, sha256 in wheels:
        try:
            answer = client.upload(Path(wheel), sha256, target)
            tree = store.lookup(str(answer.get("key")))
            if tree is None:
                raise WheelstoreError(f"the store service published {wheel}, but {store.root} has no tree for it")
            outcomes.append(Realized(tree, bool(answer.get("unpacked"))))
        except ServiceUnreachable:
            raise
        except WheelstoreError as e:
            outcomes.append(e)
    return outcomes


def cmd_info(args: argparse.Namespace) -> int:
    selection = select_store(args.store)
    with Store.select(args.store) as store:
        info = store.describe()
        info["service"] = None if store.service is None else service_info(store.service)
    info["selected_by"] = selection.source
    if args.json:
        print_json(info)
    else:
        for k in ("store", "selected_by", "shared", "group", "owner", "trees", "id"):
            out(args, f"{k:12} {info[k] if info[k] is not None else '-'}")
        if isinstance(site := info.get("upstream"), dict):  # an overlay: the chain lookups follow
            out(args, f"{'upstream':12} {site['store']} (id {site['id']}): looked in first; publishes go to the store")
        if store.service is not None:
            for line in service_lines(store.service):
                out(args, line)
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
    out(args, f"{len(report.installed)} installed, {len(report.removed)} removed, "
               f"{len(report.unchanged)} already there, in {elapsed_text(time.perf_counter() - started)}")


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
    sync = args.verb == "sync"
    with contextlib.ExitStack() as closing:
        if args.items or args.requirements or args.editables:
            chosen = given_selection(args)
            venv, items, project = _venv(args), args.items, None
        elif sync:  # the store first: one that cannot be used must not leave a new, empty venv behind
            store = closing.enter_context(Store.select(args.store))
            venv, lock, project, chosen = closing.enter_context(project_inputs(args))
            _install(args, Environment(venv), [str(lock)], project, chosen, started, store)
            return 0
        else:
            raise WheelstoreError("nothing to install", hint="give wheels, requirements, a pylock.toml, or -r FILE")
        _install(args, Environment(venv), items, project, chosen, started)
    return 0


def _install(args: argparse.Namespace, env: Environment, items: list[str], project: UvSync | None,
             chosen: Selection | None, started: float, store: Store | None = None) -> None:
    sync = args.verb == "sync"
    request = Request(
        items=items, requirement_files=[Path(r) for r in args.requirements], find_links=local_links(args),
        exact=sync, upgrade=not sync and args.upgrade, no_deps=not sync and args.no_deps, editables=args.editables,
        upgrade_packages=frozenset() if sync else frozenset(map(canonical, args.upgrade_package)),
        reinstall=args.reinstall,
        reinstall_packages=frozenset(map(canonical, args.reinstall_package)) | (others(env) if project else set()),
        selection=chosen,
    )
    options = Options(link_mode=_link_mode(args), compile_bytecode=not args.no_compile,
                      compile_optimized=args.compile_optimized, sources=sources_from(args), project=project)
    with contextlib.nullcontext(store) if store is not None else Store.select(args.store) as opened:
        report = env.install(opened, request, options)
    _print_report(args, report, started)


def cmd_lock(args: argparse.Namespace) -> int:
    from ..base.interpreter import find_python
    from ..resolve.resolver import lock

    started = time.perf_counter()
    python = Path(args.python) if args.python else find_python(_venv(args))
    interpreter = Interpreter.inspect(python)
    sources = Sources.from_environment(index_url=args.index_url, extra_index_urls=tuple(args.extra_index_url),
                                       find_links=tuple(args.find_links), no_index=args.no_index, offline=args.offline)
    written = lock(args.items, [Path(r) for r in args.requirements], interpreter, sources, Path(args.output))
    took = elapsed_text(time.perf_counter() - started)
    out(args, f"wrote {written} for Python {interpreter.python_version} in {took}")
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
        dist, changed = env.edit(store, args.name, undo=args.undo)
    files = count(changed, "file")
    if args.undo:
        out(args, f"{dist.display_name}: {files} linked from the store again in {env.path}; local edits discarded")
    else:
        out(args, f"{dist.display_name}: {files} {'is' if changed == 1 else 'are'} now private, writable "
                   f"{'copy' if changed == 1 else 'copies'} in {env.path}")
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


#: every verb's command (:mod:`wheelstore.cli.parser` has their arguments and help)
_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "init": cmd_init, "realize": cmd_realize, "info": cmd_info, "venv": cmd_venv, "install": cmd_install,
    "sync": cmd_install, "lock": cmd_lock, "uninstall": cmd_uninstall, "list": cmd_list, "edit": cmd_edit,
    "doctor": cmd_doctor, "gc": cmd_gc, "stats": cmd_stats, "verify": cmd_verify, "serve": cmd_serve,
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command line's parser (:func:`wheelstore.cli.parser.build_parser`: for a command line that names a verb,
    that verb's alone), running this module's commands."""
    return _build_parser(argv, _COMMANDS)


def _log_to_stderr(*, quiet: bool, verbose: bool = False) -> None:
    """Warnings from the API (a lock that could not be taken, ...) as ``warning: ...`` lines, facts worth saying once
    (reflink does not work here) as ``note: ...`` lines; with ``verbose`` also
    what is being done, as ``debug: ...`` lines. The handler is made with the first such line
    (:mod:`wheelstore.base.logs`)."""
    level = logs.ERROR if quiet else logs.DEBUG if verbose else logs.INFO
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
            label = "note" if record.levelno == logging.INFO else record.levelname.lower()  # a fact, said once
            return printable(f"{label}: {record.getMessage()}")

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
        with cancel.interruptible(), progress.reporting(reporter_for(quiet=args.quiet)):
            return int(args.func(args))
    except KeyboardInterrupt:  # what was under way has been taken back (:mod:`wheelstore.base.cancel`)
        return _interrupted()
    except WheelstoreError as e:
        if cancel.cancelled():  # a failure of work cut short: the interrupt is what happened
            return _interrupted()
        err(f"error: {e.oneline()}")
        return e.exit_code
    except OSError as e:  # the environment, not a bug: a full disk, a read-only or vanished filesystem, ...
        if cancel.cancelled():
            return _interrupted()
        where = f": {e.filename}" if e.filename else ""
        err(f"error: {e.strerror or e}{where}")
        return 1


def _interrupted() -> int:
    """Ctrl-C's line and exit status, as uv's."""
    err("error: interrupted")
    cancel.said()
    return 130


def entry() -> NoReturn:
    """The ``wheelstore`` command: :func:`main`, then a quick exit.

    At interpreter shutdown a big install's parsed manifests were freed object by object and collected once more:
    15 ms of a 170 ms warm install. Once the exit handlers have run and the output is flushed, the operating system
    frees it all at once. Only when nothing else runs: another thread would be cut short.
    """
    code = main()
    threading = sys.modules.get("threading")  # never imported: no other thread ran
    # once interrupted, a worker still running is one stuck in a system call (a stalled read): not waited for
    if threading is not None and threading.active_count() > 1 and not cancel.cancelled():
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
