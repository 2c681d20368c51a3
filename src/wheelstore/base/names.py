"""Distribution names, wheel file names and wheel tags, read as packaging reads them, without importing its tags.

``packaging.utils`` imports ``packaging.tags``, which brings logging, platform, subprocess and sysconfig: about 11 ms,
a tenth of a warm install. The rules an install needs on every run are short and fixed by the specs: PEP 503's
normalized names, the wheel file name's fields, and PEP 425's compressed tag sets. A file name in a form these rules
do not take plainly is handed to packaging. Tags are strings here (``cp311-cp311-manylinux_2_17_x86_64``, lowercase,
as ``str(packaging.tags.Tag)``). ``tests/test_names.py`` checks that both read every name alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar, cast

from packaging.version import InvalidVersion, Version

if TYPE_CHECKING:
    from packaging.utils import BuildTag, NormalizedName

T = TypeVar("T")

_SEPARATORS = re.compile(r"[-_.]+")

#: a wheel file name whose every field is in its plain form: an ASCII name of letters and digits joined by single
#: dots or underscores, a version, a build tag starting with a digit, and three tag fields whose parts are ASCII
#: words (interpreters not starting with a digit, as identifiers)
_PLAIN_WHEEL = re.compile(
    r"(?P<name>[A-Za-z0-9]+(?:[._][A-Za-z0-9]+)*)"
    r"-(?P<version>[A-Za-z0-9.!+_]+)"
    r"(?:-(?P<number>[0-9]+)(?P<build>[A-Za-z0-9_.]*))?"
    r"-(?P<interpreters>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"
    r"-(?P<abis>[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*)"
    r"-(?P<platforms>[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*)\.whl",
    re.ASCII,
)


def canonical(name: str) -> NormalizedName:
    """PEP 503's normalized name: runs of ``-``, ``_`` and ``.`` become one ``-``, all lowercase (what packaging's
    ``canonicalize_name`` returns)."""
    return cast("NormalizedName", _SEPARATORS.sub("-", name).lower())


def parse_wheel_name(filename: str) -> tuple[NormalizedName, Version, BuildTag, frozenset[str]]:
    """A wheel file name's canonical name, version, build tag and tags, as packaging's ``parse_wheel_filename`` gives
    them (tags as strings). Raises ValueError (packaging's ``InvalidWheelFilename``) for a name that is not a wheel's.
    """
    plain = _PLAIN_WHEEL.fullmatch(filename)
    if plain is not None:
        try:
            version = Version(plain["version"])
        except InvalidVersion:
            pass  # packaging says why
        else:
            build = () if plain["number"] is None else (int(plain["number"]), plain["build"])
            tags = frozenset(f"{i}-{a}-{p}".lower() for i in plain["interpreters"].split(".")
                             for a in plain["abis"].split(".") for p in plain["platforms"].split("."))
            return canonical(plain["name"]), version, cast("BuildTag", build), tags
    from packaging.utils import parse_wheel_filename

    name, version, build, parsed = parse_wheel_filename(filename)
    return name, version, build, frozenset(map(str, parsed))


def wheel_tags(filename: str) -> frozenset[str]:
    """The tags of a wheel file name (ValueError if it is not one)."""
    return parse_wheel_name(filename)[3]


def ranks(tags: Iterable[str]) -> dict[str, int]:
    """Each supported tag's place in ``tags`` (most preferred first), the first place for a tag given twice."""
    ranked: dict[str, int] = {}
    for place, tag in enumerate(tags):
        ranked.setdefault(tag, place)
    return ranked


def rank(supported: dict[str, int], tags: Iterable[str]) -> int | None:
    """The place of the best of ``tags`` among the ``supported`` ones; None when none is supported."""
    return min((r for t in tags if (r := supported.get(t)) is not None), default=None)


def select(supported: dict[str, int], tagged: Iterable[tuple[T, Iterable[str]]]) -> Iterator[T]:
    """The things whose tags include a supported one, best first; equals keep their order (as packaging's
    ``create_compatible_tags_selector`` does)."""
    ranked = [(r, i, thing) for i, (thing, tags) in enumerate(tagged) if (r := rank(supported, tags)) is not None]
    return (thing for _r, _i, thing in sorted(ranked, key=lambda e: e[:2]))


def requirement_problem(text: str, error: Exception) -> str:
    """packaging's complaint about requirement ``text``, in one line: its first line, lower-cased as our lines are,
    and where in ``text`` it stops, in words. packaging draws a caret under the requirement over three lines; an
    error line squashed that into ``foo>=1,<<2 ~~~~^``, which points at nothing."""
    lines = str(error).splitlines()
    what = lines[0].strip() if lines else "not a requirement"
    what = what[:1].lower() + what[1:]
    for token, char in _TOKENS.items():
        what = what.replace(token, repr(char))
    caret = lines[-1] if len(lines) >= 3 else ""
    shown = lines[-2] if len(lines) >= 3 else ""
    at = caret.find("^") - (len(shown) - len(shown.lstrip()))
    if caret.find("^") < 0 or not 0 <= at <= len(text):
        return what
    if at == len(text):
        return f"{what}, at its end"
    return f"{what}, at character {at + 1} ({text[at:]!r})"


#: packaging's names for the tokens it expects, as the characters a user types
_TOKENS = {"RIGHT_BRACKET": "]", "LEFT_BRACKET": "[", "RIGHT_PARENTHESIS": ")", "LEFT_PARENTHESIS": "("}
