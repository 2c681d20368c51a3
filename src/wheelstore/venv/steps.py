"""What an install is made of: its input (:class:`Work`), and one :class:`Step` per distribution it links, carried
through every stage of :class:`~wheelstore.venv.environment.Environment`'s install."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from packaging.version import InvalidVersion, Version

from ..base.distinfo import Distribution, origin, read_regular
from ..base.interpreter import Interpreter
from ..resolve.candidates import Candidate
from ..resolve.plan import Plan, Request
from ..store.store import Tree
from .link import LinkMode

if TYPE_CHECKING:
    from packaging.utils import NormalizedName

    from ..resolve.requirements import Pin

__all__ = ["Step", "Work", "editable_of", "same"]


class Step:
    """One distribution to link, as the install learns it: the plan's candidate, then its tree (found by the plan or
    realized now), its link mode and its pyc unit. One record, carried through every stage."""

    def __init__(self, cand: Candidate) -> None:
        self.cand = cand
        self._tree = cand.tree
        self.mode: LinkMode | None = None
        self.pycs: Tree | None = None
        #: the dist-info it made in the venv, once linked
        self.dist_info: Path | None = None

    @property
    def tree(self) -> Tree:
        if self._tree is None:
            raise AssertionError(f"{self.cand.name} has no tree yet")  # a stage ran before realize
        return self._tree

    @tree.setter
    def tree(self, tree: Tree) -> None:
        self._tree = tree

    @property
    def key(self) -> str:
        return self.tree.key

    @property
    def link_mode(self) -> LinkMode:
        if self.mode is None:
            raise AssertionError(f"{self.cand.name} has no link mode yet")
        return self.mode


class Work(NamedTuple):
    """An install's input: the request, its plan, and the venv's distributions as read once before it."""

    request: Request
    plan: Plan
    present: dict[NormalizedName, Distribution]
    #: the ``-e`` projects, installed by uv once the store's part is linked (:mod:`.editable`); sync keeps them
    editables: tuple[Pin, ...] = ()

    def check_dependencies(self, steps: Sequence[Step], interpreter: Interpreter) -> None:
        """A set taken as complete must hold every dependency of its members: said before anything is linked."""
        from ..resolve.dependencies import unmet_after

        trees = {s.cand.name: s.tree for s in steps}
        unmet_after(self.plan.candidates, trees, self.present, interpreter, exact=self.request.exact)


def editable_of(dist: Distribution) -> Path | None:
    """The project directory an editable install names in its ``direct_url.json`` (PEP 610), if it is one: sync
    keeps it by that, since a project's name is not always known before its backend is asked (setup.py)."""
    import json
    from urllib.parse import urlparse

    from ..resolve.requirements import file_url_path

    text = read_regular(dist.dist_info / "direct_url.json")
    try:
        data = json.loads(text) if text is not None else None
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("dir_info"), dict) or \
            not data["dir_info"].get("editable") or not isinstance(data.get("url"), str):
        return None
    url = urlparse(data["url"])
    return file_url_path(url.path) if url.scheme == "file" else None


def same(dist: Distribution | None, cand: Candidate) -> bool:
    """Whether the venv already holds exactly this version (installed by anyone)."""
    if dist is None:
        return False
    if cand.direct_url is not None and "dir_info" in cand.direct_url:  # a project built now: same if the same wheel
        return (origin(dist) or {}).get("key") == cand.sha256
    try:
        return Version(dist.version) == cand.version
    except InvalidVersion:
        return False
