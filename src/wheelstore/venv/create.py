"""Making new venvs, as ``uv venv`` does: no pip inside, fast."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..base.errors import VenvError
from ..base.interpreter import Interpreter, find_python

if TYPE_CHECKING:
    pass


def create(venv: Path, python: str | None = None) -> Interpreter:
    """Make a venv without pip (like ``uv venv``): fast, and pip can be added with ``python -m ensurepip``."""
    import shutil
    import subprocess

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
