"""Helpers the two P5 parts share: timing one command, a fresh venv for each tool, and median/spread rows."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .__main__ import PYTHON, sh

#: no user or site pip/uv config leaks into a measured command (uv would otherwise read uv.toml files)
ISOLATED = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "UV_NO_CONFIG": "1"}


def timed(cmd: list[str], *, sync: bool = True) -> tuple[float, str]:
    """Seconds ``cmd`` took (after a ``sync``, so no earlier write-back is billed to it) and its stdout."""
    if sync:
        subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=ISOLATED)
    took = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"failed (exit {done.returncode}): {' '.join(cmd)}\n{done.stderr[-4000:]}")
    return took, done.stdout


def fresh_venv(path: Path, tool: str, uv: Path) -> Path:
    """An empty venv at ``path`` made the way each tool's users make one (uv venv, or venv without pip)."""
    shutil.rmtree(path, ignore_errors=True)
    if tool == "uv":
        sh(uv, "venv", "-q", "-p", PYTHON, path)
    else:
        sh(PYTHON, "-m", "venv", "--without-pip", path)
    return path


@dataclass
class Stat:
    """Median, min, max and every run of one command, in seconds."""

    median_s: float
    min_s: float
    max_s: float
    runs_s: list[float]

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        return cls(round(statistics.median(values), 3), round(min(values), 3), round(max(values), 3),
                   [round(v, 3) for v in values])

    def cell(self) -> str:
        """``1.23 s (1.10-1.40)`` for a markdown table."""
        return f"{self.median_s:.2f} s ({self.min_s:.2f}-{self.max_s:.2f})"

    def over(self, other: Stat | None) -> float | None:
        """This median as a ratio of ``other``'s."""
        return round(self.median_s / other.median_s, 2) if other and other.median_s else None


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def tree_usage(root: Path) -> tuple[int, int]:
    """(bytes allocated, inodes) under ``root``, each inode counted once however many links it has."""
    seen: set[int] = set()
    blocks = 0
    for dirpath, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                blocks += st.st_blocks * 512
    return blocks, len(seen)
