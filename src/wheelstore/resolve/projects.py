"""The local projects of one command (``DIR``, ``-e DIR``, ``name @ file:///DIR``): turned into wheel pins before
candidates are gathered, or set aside to be installed editable into the venv once the store's part is linked.

A built wheel lives in a private temporary directory until the command ends (:meth:`LocalProjects.close`); it is
then installed as any local wheel, with ``direct_url.json`` naming the directory, as pip writes it. A local sdist
needs nothing here: its pin is a ``file:`` remote file, built once per store by the fetch stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from ..base.errors import InputError
from ..base.interpreter import Interpreter
from ..fetch.sources import Sources
from .requirements import MarkerEnvironment, Pin, editable_pin, parse_requirement, wheel_pin

if TYPE_CHECKING:
    from tempfile import TemporaryDirectory


class LocalProjects:
    """Builds the project directories of one command and keeps their wheels; collects its editables."""

    def __init__(self, interpreter: Interpreter, sources: Sources, editables: Sequence[str] = (), *,
                 all_aside: bool = False) -> None:
        self.interpreter = interpreter
        self.sources = sources
        #: set every local project aside, editable or not: a uv project's, which ``uv sync`` installs
        self.all_aside = all_aside
        #: the ``-e`` projects, in the order given (the command line's first, then the inputs')
        self.editables: list[Pin] = [editable_pin(text, text) for text in editables]
        self._built: dict[Path, Pin] = {}
        self._tmp: TemporaryDirectory[str] | None = None

    def take(self, pin: Pin) -> Pin | None:
        """``pin`` itself, or for a project directory the pin of its freshly built wheel; None for an editable one
        (kept in :attr:`editables`), or for any one with :attr:`all_aside`."""
        if pin.project is None:
            return pin
        if pin.editable or self.all_aside:
            if all(e.project != pin.project for e in self.editables):
                self.editables.append(pin)
            return None
        if pin.project not in self._built:
            from ..fetch.project import build_directory

            if self._tmp is None:
                from tempfile import TemporaryDirectory  # here: most commands build no project

                self._tmp = TemporaryDirectory(prefix="wheelstore-project-")
            out = Path(self._tmp.name) / str(len(self._built))
            wheel = build_directory(pin.project, out, self.interpreter, self.sources)
            self._built[pin.project] = wheel_pin(wheel, pin.origin)._replace(project=pin.project)
        return self._built[pin.project]

    def for_uv(self, text: str, env: MarkerEnvironment) -> str:
        """A requirement as uv must get it: a local project or sdist path as ``name @ file:///ABS`` (absolute, so
        that uv reads it the same from its temporary requirements file); anything else as it is."""
        try:
            pin = parse_requirement(text, "command line", env)
        except InputError:
            return text
        if pin is not None and pin.project is not None:
            return f"{pin.name} @ {pin.project.as_uri()}"
        if pin is not None and pin.remote is not None and pin.remote.url.startswith("file:"):
            return f"{pin.name} @ {pin.remote.url}"
        return text

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LocalProjects:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
