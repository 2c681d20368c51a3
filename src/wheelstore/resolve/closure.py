"""TEMPORARY scaffold (replaced by engineer C's module)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ..base.distinfo import Distribution
from ..base.errors import InputError
from ..store.store import Tree


class Requires(NamedTuple):
    name: Any
    version: Any
    requires: list[str]
    extras: frozenset[str]


class Unmet(NamedTuple):
    who: str
    requirement: str

    def describe(self) -> str:
        return f"{self.who} requires {self.requirement}"


def _meta_requires(text: str) -> list[str]:
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def requires_of_tree(tree: Tree) -> list[str]:
    di = next(tree.path.glob("*.dist-info"))
    return _meta_requires((di / "METADATA").read_text())


def requires_of_wheel(path: Path) -> list[str]:
    import zipfile

    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return _meta_requires(z.read(name).decode())


def requires_of_installed(dist: Distribution) -> list[str]:
    return _meta_requires((dist.dist_info / "METADATA").read_text())


def unmet(members: Sequence[Requires], env: dict[str, str]) -> list[Unmet]:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    have = {m.name: m.version for m in members}
    out = []
    for m in members:
        for text in m.requires:
            r = Requirement(text)
            ok = any(r.marker is None or r.marker.evaluate({**env, "extra": e}) for e in ("", *m.extras))
            if not ok:
                continue
            v = have.get(canonicalize_name(r.name))
            if v is None or not r.specifier.contains(v, prereleases=True):
                out.append(Unmet(f"{m.name} {m.version}", text))
    return out


def unmet_error(unmet: Sequence[Unmet], *, exact: bool) -> InputError:
    return InputError("; ".join(u.describe() for u in unmet), hint="add them")
