"""Benchmarks against uv and pip, measured in the same run and reported as ratios (see bench/README.md)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def fresh_image(image: Path, mnt: Path, size: str) -> None:
    """A new ext4 filesystem from a sparse ``image`` file, mounted at ``mnt`` (inode tables written now, so no lazy
    init runs meanwhile). Benchmarks that count blocks, or time inode creation, start from one: on a filesystem
    where many files were just deleted, ext4 is slow to hand out inodes for minutes (see bench/results/
    p2-notes-20261126.md), whoever asks."""
    drop_image(image, mnt)
    subprocess.run(["truncate", "-s", size, str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image)], check=True)
    mnt.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    mnt.chmod(0o1777)


def drop_image(image: Path, mnt: Path) -> None:
    if os.path.ismount(mnt):
        subprocess.run(["umount", str(mnt)], check=True)
    image.unlink(missing_ok=True)
