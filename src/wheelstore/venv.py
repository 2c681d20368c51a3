"""Target environments: what a venv's interpreter is, where its install schemes point, and making new venvs.

Wheelstore never imports code from the target environment. It asks the target interpreter once, in a subprocess,
for its version, cache tag and install paths, and computes the wheel tags it accepts with :mod:`packaging.tags`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from packaging.tags import Tag, compatible_tags, cpython_tags, generic_tags, platform_tags

from .errors import WheelstoreError


class VenvError(WheelstoreError):
    """The target environment is missing, not a venv, or its interpreter does not run."""


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


@dataclass(frozen=True)
class Interpreter:
    """The facts about a target interpreter that installing wheels into it depends on."""

    executable: str
    prefix: str
    base_prefix: str
    implementation: str
    version: tuple[int, int, int]
    cache_tag: str | None
    soabi: str | None
    abiflags: str
    paths: dict[str, str] = field(default_factory=dict)

    @classmethod
    def inspect(cls, python: str | os.PathLike[str]) -> Interpreter:
        """Ask ``python`` about itself (one short subprocess, no imports beyond the stdlib)."""
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

    @property
    def is_venv(self) -> bool:
        return self.prefix != self.base_prefix

    @property
    def python_version(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"

    @cached_property
    def tags(self) -> list[Tag]:
        """The wheel tags this interpreter accepts, most preferred first (as pip would order them)."""
        version = (self.version[0], self.version[1])
        platforms = list(platform_tags())
        if self.implementation == "cpython":
            interpreter = f"cp{version[0]}{version[1]}"
            supported = list(cpython_tags(version, [interpreter + self.abiflags], platforms))
        else:  # packaging knows other interpreters only from inside them; PyPy targets are untested
            interpreter = None
            supported = list(generic_tags(platforms=platforms))
        # the target's own interpreter tag (cp312-none-any for a 3.12 venv), not the running one's
        supported += list(compatible_tags(version, interpreter=interpreter, platforms=platforms))
        return supported


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


def create(venv: Path, python: str | None = None) -> Interpreter:
    """Make a venv without pip (like ``uv venv``): fast, and pip can be added with ``python -m ensurepip``."""
    base = python or shutil.which("python3") or sys.executable
    if (venv / "pyvenv.cfg").exists():
        raise VenvError(f"{venv} already is a venv", hint=f"install into it: wheelstore install --venv {venv} ...")
    try:
        subprocess.run(
            [base, "-m", "venv", "--without-pip", os.fspath(venv)], capture_output=True, text=True, check=True
        )
    except FileNotFoundError:
        raise VenvError(f"{base}: no such interpreter") from None
    except subprocess.CalledProcessError as e:
        last = (e.stderr or e.stdout).strip().splitlines()[-1:] or ["failed"]
        raise VenvError(f"cannot create {venv}: {last[0]}") from None
    return Interpreter.inspect(find_python(venv))
