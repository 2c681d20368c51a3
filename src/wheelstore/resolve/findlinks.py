"""The find-links directories: the local wheels a pin may be given by, each chosen by the target's tag preference."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.version import Version

from ..base import names
from ..base.errors import InputError
from ..base.interpreter import Interpreter

if TYPE_CHECKING:
    from packaging.specifiers import SpecifierSet
    from packaging.utils import BuildTag, NormalizedName


class FindLinks:
    """The wheels in the find-links directories, listed once and only if a pin needs them."""

    def __init__(self, directories: Sequence[Path], interpreter: Interpreter) -> None:
        self.directories = list(dict.fromkeys(Path(os.path.abspath(d)) for d in directories))
        self.interpreter = interpreter
        self.supported = interpreter.supported
        self.missing: set[Path] = set()

    @cached_property
    def wheels(self) -> dict[NormalizedName, list[tuple[Version, BuildTag, frozenset[str], Path]]]:
        found: dict[NormalizedName, list[tuple[Version, BuildTag, frozenset[str], Path]]] = {}
        for directory in self.directories:
            try:
                listed = sorted(os.listdir(directory))
            except OSError:
                self.missing.add(directory)
                continue
            for filename in listed:
                if not filename.endswith(".whl"):
                    continue
                try:
                    name, version, build, tags = names.parse_wheel_name(filename)
                except ValueError:
                    continue
                found.setdefault(name, []).append((version, build, tags, directory / filename))
        for entries in found.values():
            entries.sort(key=lambda e: e[1], reverse=True)  # the best tag wins; among equals, the highest build
        return found

    def find(self, name: NormalizedName, version: Version, *, required: bool = True) -> Path | None:
        same = [(path, tags) for v, _build, tags, path in self.wheels.get(name, []) if v == version]
        best = next(names.select(self.supported, same), None)
        if best is not None or not required:
            return best
        where = ", ".join(f"{d} (missing)" if d in self.missing else str(d) for d in self.directories)
        others = sorted({v for v, *_ in self.wheels.get(name, [])}, reverse=True)
        if same or not where:
            message = f"no wheel for {name}=={version} matches this interpreter ({describe(self.interpreter)}) in: "
            message += where or "no --find-links directory"
            message += "; found only " + ", ".join(sorted({tag_text(path.name) for path, _ in same})) if same else ""
        elif others:  # the version is not there: say which are, newest first (as the index's error does)
            shown = ", ".join(map(str, others[:5])) + (f" and {len(others) - 5} older" if len(others) > 5 else "")
            message = f"no version of {name} matches =={version} (available in {where}: {shown})"
        else:
            message = f"no distribution named {name} in {where}"
        raise InputError(message, hint=None if where else "pass --find-links DIR with its wheel")

    def newest(self, name: NormalizedName, specifier: SpecifierSet) -> Version | None:
        """The newest version of ``name`` here that the interpreter can use and ``specifier`` allows."""
        usable = names.select(self.supported, ((v, tags) for v, _b, tags, _p in self.wheels.get(name, [])))
        return max(specifier.filter(usable), default=None)

    def file(self, filename: str) -> Path | None:
        return next((d / filename for d in self.directories if (d / filename).is_file()), None)


def describe(interpreter: Interpreter) -> str:
    """The interpreter by its most preferred tag, as in "cp311, manylinux_2_36_x86_64"."""
    best = interpreter.tags[0]
    return f"{best.interpreter}, {best.platform}"


def tag_text(filename: str) -> str:
    return "-".join(filename.removesuffix(".whl").split("-")[-3:])
