"""A failed build said so that it helps: what the build itself printed last, where its full log is, and what to try.

uv's own words for it ("Failed to build `/tmp/<private dir>/x.tar.gz`", "Build failures usually indicate a problem
with the package or the build environment") name a directory that is gone and suggest nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from ..base.errors import BuildError
from ..base.interpreter import Interpreter

#: what builds print when the machine lacks something the build needs: a C header, a program, a pkg-config module
_MISSING = (
    re.compile(r"fatal error: ([\w./+-]+): No such file or directory"),
    re.compile(r"command '([^']+)' failed: No such file or directory"),
    re.compile(r"(?:^|\s)([\w.+-]+): (?:command )?not found"),
    re.compile(r"Package '?([\w.+-]+)'?,? (?:was )?not found in the pkg-config search path"),
    re.compile(r"Did not find CMake '?(cmake)'?", re.IGNORECASE),
)
#: uv's own lines in a build log, around what the backend printed
_UV_LINES = ("error:", "  cause:", "hint:", "Building ", "[stderr]", "[stdout]")


def build_failed(lines: Sequence[str], sdist: Path, interpreter: Interpreter, log: Path) -> BuildError:
    """The error for a build uv ran and that failed, from the lines of its log."""
    what = f"building {sdist.name} for {interpreter.implementation} {interpreter.python_version} failed"
    causes = [line.split(":", 1)[1].strip() for line in lines if line.startswith("  cause:")]
    why = causes[-1] if causes else "the build failed"
    why = why[:1].lower() + why[1:]
    output = [line.strip() for line in lines if line.strip() and not line.startswith(_UV_LINES)]
    said = next((line for line in reversed(output) if "error" in line.lower()), output[-1] if output else "")
    told = f"; the build said: {said}" if said else "; the build printed nothing"
    message = f"{what}: {why}{told}; full log: {log}"
    missing = next((m.group(1) for line in output for pattern in _MISSING if (m := pattern.search(line))), None)
    target = f"{interpreter.implementation} {interpreter.python_version}"
    name, version = _name_version(sdist)
    other = (f"install a version of {name} that has a wheel for {target} (say '{name}!={version}'), or give its "
             "wheel with --find-links DIR") if name else f"give a wheel for {target} with --find-links DIR"
    if missing is not None:
        hint = (f"the build needs {missing}, which this machine lacks: install the system package that provides "
                f"it and run this again; or {other}")
    else:
        hint = f"the package's own build failed, not wheelstore: read the end of that log (tail -n 30); or {other}"
    return BuildError(message, hint=hint)


def _name_version(sdist: Path) -> tuple[str, str]:
    """The project and version an sdist's file name gives, or empty strings (a project directory)."""
    from packaging.utils import InvalidSdistFilename, parse_sdist_filename

    try:
        name, version = parse_sdist_filename(sdist.name)
    except InvalidSdistFilename:
        return "", ""
    return str(name), str(version)
