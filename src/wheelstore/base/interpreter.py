"""Target interpreters: what a venv's interpreter is, which wheel tags it accepts, and where its install schemes point.

Wheelstore never imports code from the target environment. It asks the target interpreter once, in a subprocess,
for its version, cache tag and install paths, and computes the wheel tags it accepts with :mod:`packaging.tags`.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import VenvError

if TYPE_CHECKING:
    from packaging.tags import Tag


_PROBE = r"""
import json, sys, sysconfig
paths = sysconfig.get_paths()
print(json.dumps({
    "executable": sys.executable,
    "prefix": sys.prefix,
    "base_prefix": getattr(sys, "base_prefix", sys.prefix),
    "implementation": sys.implementation.name,
    "version": list(sys.version_info[:3]),
    "cache_tag": sys.implementation.cache_tag,
    "soabi": sysconfig.get_config_var("SOABI"),
    "abiflags": getattr(sys, "abiflags", ""),
    "paths": {k: paths[k] for k in ("purelib", "platlib", "scripts", "data", "include")},
}))
"""


class Interpreter(NamedTuple):
    """The facts about a target interpreter that installing wheels into it depends on."""

    executable: str
    prefix: str
    base_prefix: str
    implementation: str
    version: tuple[int, int, int]
    cache_tag: str | None
    soabi: str | None
    abiflags: str
    paths: dict[str, str]

    @classmethod
    def inspect(cls, python: str | os.PathLike[str]) -> Interpreter:
        """Ask ``python`` about itself: one short subprocess, no imports beyond the stdlib, whose answer for a venv is
        remembered (as uv does) for every other venv of the same base interpreter and configuration, see
        :func:`_venv_signature`. That subprocess costs more than the rest of a warm install's bookkeeping."""
        signature = _venv_signature(python)
        if signature is not None:
            found = _cached(*signature)
            if found is not None:
                return found
        interpreter = cls._ask(python)
        if signature is not None:
            _remember(*signature, interpreter)
        return interpreter

    @classmethod
    def _ask(cls, python: str | os.PathLike[str]) -> Interpreter:
        import subprocess

        try:
            out = subprocess.run(
                [os.fspath(python), "-I", "-c", _PROBE],
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout
        except FileNotFoundError:
            raise VenvError(f"{python}: no such interpreter") from None
        except PermissionError:
            raise VenvError(f"{python}: permission denied") from None
        except subprocess.CalledProcessError as e:
            raise VenvError(f"{python} does not run: {e.stderr.strip().splitlines()[-1:]}") from None
        except subprocess.TimeoutExpired:
            raise VenvError(f"{python} did not answer within 60 s") from None
        except OSError as e:
            raise VenvError(f"{python} cannot be run: {e.strerror}") from None
        try:
            data = json.loads(out)
            return cls(
                executable=data["executable"],
                prefix=data["prefix"],
                base_prefix=data["base_prefix"],
                implementation=data["implementation"],
                version=tuple(data["version"]),
                cache_tag=data["cache_tag"],
                soabi=data["soabi"],
                abiflags=data["abiflags"],
                paths=data["paths"],
            )
        except (ValueError, TypeError, KeyError):  # a binary that runs but is not a Python (or not one we can ask)
            raise VenvError(f"{python} is not a Python interpreter wheelstore can use: it did not say what it is",
                            hint="recreate the venv with: wheelstore venv PATH") from None

    @property
    def is_venv(self) -> bool:
        return self.prefix != self.base_prefix

    @property
    def python_version(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"

    @property
    def tags(self) -> list[Tag]:
        """The wheel tags this interpreter accepts, most preferred first (as pip would order them)."""
        return _tags(self.implementation, (self.version[0], self.version[1]), self.abiflags)

    @property
    def supported(self) -> dict[str, int]:
        """The same tags as strings (``str(tag)``), each with its place in that order: what choosing among wheel file
        names needs (see :mod:`wheelstore.base.names`)."""
        return _supported(self.implementation, (self.version[0], self.version[1]), self.abiflags)


@functools.cache
def _tags(implementation: str, version: tuple[int, int], abiflags: str) -> list[Tag]:
    from packaging.tags import (
        compatible_tags,
        cpython_tags,
        generic_tags,
        platform_tags,
    )

    platforms = list(platform_tags())
    if implementation == "cpython":
        interpreter = f"cp{version[0]}{version[1]}"
        supported = list(cpython_tags(version, [interpreter + abiflags], platforms))
    else:  # packaging knows other interpreters only from inside them; PyPy targets are untested
        interpreter = None
        supported = list(generic_tags(platforms=platforms))
    # the target's own interpreter tag (cp312-none-any for a 3.12 venv), not the running one's
    supported += list(compatible_tags(version, interpreter=interpreter, platforms=platforms))
    return supported


_TAGS_NAME = "tags.json"
_TAGS_FORMAT = 1
_TAGS_MAX = 8


@functools.cache
def _supported(implementation: str, version: tuple[int, int], abiflags: str) -> dict[str, int]:
    """:func:`_tags` as ranked strings, remembered in the user's cache: packaging.tags is 11 ms of imports, and the
    platform tags it finds depend only on this machine (its kernel, architecture and glibc) and the running
    interpreter, which the key names, with packaging's version. Elsewhere (musl, whose version packaging learns by
    running its loader; macOS) packaging is asked every time."""
    import packaging

    from . import names, usercache

    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""  # musl has the name but fails it
    except (ValueError, OSError):
        libc = ""
    if not libc or os.environ.get("_PYTHON_HOST_PLATFORM"):  # not glibc, or a cross build: ask packaging each time
        return names.ranks(str(t) for t in _tags(implementation, version, abiflags))
    machine = os.uname()
    key = json.dumps([implementation, version, abiflags, packaging.__version__, sys.platform, machine.sysname,
                      machine.release, machine.machine, libc, sys.executable])
    data = usercache.read_json(_TAGS_NAME)
    kept = data.get("tags") if isinstance(data, dict) and data.get("format") == _TAGS_FORMAT else None
    kept = dict(kept) if isinstance(kept, dict) else {}
    found = kept.get(key)
    if isinstance(found, list) and found and all(isinstance(t, str) for t in found):
        return names.ranks(found)
    found = [str(t) for t in _tags(implementation, version, abiflags)]
    kept.pop(key, None)
    kept[key] = found
    usercache.write_json(_TAGS_NAME, {"format": _TAGS_FORMAT, "tags": dict(list(kept.items())[-_TAGS_MAX:])},
                         compact=True)
    return names.ranks(found)


# -- remembered answers -----------------------------------------------------------------------------------------

_CACHE_NAME = "interpreters.json"
_CACHE_FORMAT = 1
_CACHE_MAX = 32
#: pyvenv.cfg keys that differ between venvs of one configuration and do not change the answer
_PER_VENV_KEYS = ("command", "prompt")
_PREFIX = "{prefix}"


def _venv_signature(python: str | os.PathLike[str]) -> tuple[str, str] | None:
    """(the venv directory, a key for the answer) when ``python`` is a venv's ``bin/python*``; else None.

    A venv's answer is its prefix substituted into a template that depends only on the base interpreter (its real
    path and that file's identity and mtime, so an upgraded interpreter is asked again), the venv's pyvenv.cfg (but
    the lines naming the venv itself), and where the executable sits in the venv.
    """
    path = os.path.abspath(python)
    bindir = os.path.dirname(path)
    venv = os.path.dirname(bindir)
    try:
        with open(os.path.join(venv, "pyvenv.cfg"), encoding="utf-8") as f:
            lines = f.read().splitlines()
        real = os.path.realpath(path)
        st = os.stat(real)
    except (OSError, UnicodeDecodeError):
        return None
    cfg = sorted(line.strip() for line in lines if line.partition("=")[0].strip().lower() not in _PER_VENV_KEYS)
    key = json.dumps([os.path.relpath(path, venv), real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, cfg])
    return venv, key


def _cached(venv: str, key: str) -> Interpreter | None:
    from . import usercache

    data = usercache.read_json(_CACHE_NAME)
    if not isinstance(data, dict) or data.get("format") != _CACHE_FORMAT or not isinstance(data.get("venvs"), dict):
        return None
    found = data["venvs"].get(key)
    try:
        return Interpreter(**_relocate(found, _PREFIX, venv))
    except (TypeError, KeyError, ValueError, AttributeError):
        return None


def _remember(venv: str, key: str, interpreter: Interpreter) -> None:
    """Keep the answer as a template: the paths under the venv relative to it, the base interpreter's as they are.
    Only for a real venv whose base lies outside it, so no path of the base could be taken for one of the venv's."""
    from . import usercache

    answer = interpreter._asdict()
    if answer["prefix"] != venv or _under(answer["base_prefix"], venv) or not _under(answer["executable"], venv):
        return
    data = usercache.read_json(_CACHE_NAME)
    venvs = data.get("venvs") if isinstance(data, dict) and data.get("format") == _CACHE_FORMAT else None
    venvs = dict(venvs) if isinstance(venvs, dict) else {}
    venvs.pop(key, None)
    venvs[key] = _relocate(answer, venv, _PREFIX)
    usercache.write_json(_CACHE_NAME, {"format": _CACHE_FORMAT, "venvs": dict(list(venvs.items())[-_CACHE_MAX:])})


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory + os.sep)


def _relocate(answer: Any, old: str, new: str) -> dict[str, Any]:
    """``answer`` with the venv's own paths (executable, prefix, install paths under it) moved from ``old`` to
    ``new``; paths of the base interpreter (a venv's ``include``) stay."""

    def move(p: str) -> str:
        return new + p[len(old) :] if _under(p, old) else p

    return {**answer, "executable": move(answer["executable"]), "prefix": move(answer["prefix"]),
            "paths": {k: move(v) for k, v in answer["paths"].items()}, "version": tuple(answer["version"])}


def find_python(venv: Path) -> Path:
    """The interpreter of a venv made by wheelstore, ``python -m venv`` or ``uv venv``."""
    if not (venv / "pyvenv.cfg").is_file():
        if not venv.exists():
            raise VenvError(f"there is no venv at {venv}", hint=f"create one with: wheelstore venv {venv}")
        raise VenvError(f"{venv} is not a virtual environment (it has no pyvenv.cfg)")
    for name in ("python", "python3"):
        candidate = venv / "bin" / name
        if candidate.exists():
            return candidate
    raise VenvError(f"{venv} has no bin/python")


def interpreter_key(interpreter: Interpreter) -> str:
    """What a built wheel depends on: implementation, bytecode/ABI, and the platform (arch and libc version).

    The same for every process on a host, whatever Python runs wheelstore (``packaging.tags.platform_tags()`` is not:
    it depends on the running interpreter), and different on a host with another glibc sharing the store.
    """
    try:
        libc = (os.confstr("CS_GNU_LIBC_VERSION") or "libc").replace(" ", "")
    except (ValueError, OSError):
        libc = "libc"
    return (f"{interpreter.implementation}-{interpreter.cache_tag or interpreter.python_version}-"
            f"{interpreter.soabi or 'none'}{interpreter.abiflags}-{os.uname().machine}-{libc}")
