"""Sizes as people read them: one place, so that a store's size, a full disk and a download say it alike."""

from __future__ import annotations

__all__ = ["binary", "decimal"]


def binary(n: float) -> str:
    """Space on disk, in powers of 1024 as ``du -h`` and ``df -h``: ``860.0 KiB``, ``-376.0 KiB``, ``12 B``."""
    if abs(n) < 1024:
        return f"{int(n)} B"
    value, shown = float(n), "B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value, shown = value / 1024, unit
        if abs(value) < 1024:
            break
    return f"{value:.1f} {shown}"


def decimal(n: float) -> str:
    """A download, in powers of 1000 as pip and uv show transfers: ``301.2 kB``, ``871 B``."""
    value = float(n)
    for unit in ("B", "kB", "MB"):
        if abs(value) < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"
