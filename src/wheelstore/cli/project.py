"""``wheelstore sync`` given nothing: the project's lock, in the project's venv, as ``uv sync`` would take them."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from ..base.errors import InputError, VenvError
from ..base.interpreter import Interpreter
from ..resolve.uvproject import Project, Selection, UvSync, export, find_project, project_environment
from ..venv.create import create, create_with_uv, finish_uv_venv, start_uv_venv, uv_would_replace
from .options import sources_from
from .output import err

#: the options that only select from a uv.lock, as they are spelled
_SELECTING = ("--project", "--extra", "--all-extras", "--group", "--only-group", "--no-dev", "--all-groups",
              "--no-default-groups", "--package", "--all-packages")


def selection(args: argparse.Namespace) -> Selection:
    return Selection(extras=args.extras, all_extras=args.all_extras, groups=args.groups,
                     only_groups=args.only_groups, no_dev=args.no_dev, all_groups=args.all_groups,
                     no_default_groups=args.no_default_groups, packages=args.packages, all_packages=args.all_packages)


def refuse_selection(args: argparse.Namespace) -> None:
    """A project option given with explicit inputs would be silently ignored: say so instead."""
    if args.verb == "sync" and (args.project or selection(args)):
        raise InputError("--project and the selection options (" + ", ".join(_SELECTING[1:]) + ") apply to a "
                         "project's lock, not to the packages, files and -r given here",
                         hint="drop them, or drop the inputs to sync the project's lock")


@contextlib.contextmanager
def project_inputs(args: argparse.Namespace) -> Iterator[tuple[Path, Path, UvSync | None]]:
    """The venv to sync, the PEP 751 lock to sync it to, and for a uv.lock how uv installs the project's own packages,
    for the project around ``--project`` or the current directory; a uv.lock's export lives until the sync is done."""
    from tempfile import TemporaryDirectory

    start = Path(args.project or ".").absolute()
    if not start.is_dir():
        raise InputError(f"--project {args.project}: not a directory")
    project = find_project(start)
    if project is None:
        raise InputError(f"nothing to sync: no PACKAGE, -r or -e given, and neither {start} nor any parent has a "
                         "uv.lock or a pylock.toml",
                         hint="give what the venv is to hold (wheelstore sync -r requirements.txt), or run it in a "
                              "uv project (uv lock makes its uv.lock)")
    chosen = selection(args)
    if chosen and not project.is_uv:
        raise InputError(f"the selection options ({' '.join(chosen.uv_args())}) select from a uv.lock; "
                         f"{project.lock} is a PEP 751 lock, whose selection was made when it was written")
    venv = Path(args.venv).absolute() if args.venv else project_environment(project)
    if not args.quiet:
        err(f"using {project.lock} and the venv at {venv}")
    with TemporaryDirectory(prefix="wheelstore-export-") as tmp:
        if not project.is_uv:
            _prepare_venv(args, project, venv)
            yield venv, project.lock, None
            return
        with _venv_meanwhile(args, project, venv):
            lock = export(project, start, chosen, sources_from(args), Path(tmp))
        yield venv, lock, UvSync(start, chosen)


@contextlib.contextmanager
def _venv_meanwhile(args: argparse.Namespace, project: Project, venv: Path) -> Iterator[None]:
    """The project's venv made (or checked) once the body, the lock's export, has succeeded. A venv that is not there
    at all is made by ``uv venv`` while the body runs, the two short uv runs of a warm sync side by side instead of
    one after the other, and removed again if the body fails: a refused lock still changes nothing."""
    if os.path.lexists(venv) or not venv.parent.is_dir():  # only what is ours alone to remove is made meanwhile
        yield
        _prepare_venv(args, project, venv)
        return
    making = start_uv_venv(venv, project.root)
    try:
        yield
    except BaseException:
        making.kill()
        making.wait()
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(venv)
        raise
    interpreter = finish_uv_venv(making, venv)
    _created(args, venv, interpreter)


def _created(args: argparse.Namespace, venv: Path, interpreter: Interpreter) -> None:
    if not args.quiet:
        err(f"created venv at {venv} (Python {'.'.join(map(str, interpreter.version))})")


def _prepare_venv(args: argparse.Namespace, project: Project, venv: Path) -> None:
    """Make the project's venv if it is missing, as uv would; refuse one that ``uv run`` would replace."""
    if not (venv / "pyvenv.cfg").is_file():
        _created(args, venv, create_with_uv(venv, project.root) if project.is_uv else create(venv))
        return
    if project.is_uv and not args.venv and (other := uv_would_replace(venv, project.root)) is not None:
        raise VenvError(f"uv picks {other} for the project at {project.root}, not {venv}'s Python, so 'uv run' "
                        f"would make {venv} again and its links to the store would be gone",
                        hint=f"remove {venv} and run wheelstore sync again: it makes the venv with uv's choice")
