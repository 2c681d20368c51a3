"""Build small, real wheels (and sdists) for tests, including deliberately broken ones."""

from __future__ import annotations

import base64
import hashlib
import io
import stat
import tarfile
import zipfile
from collections.abc import Mapping
from pathlib import Path


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(
    directory: Path,
    name: str = "demo",
    version: str = "1.0",
    files: dict[str, bytes] | None = None,
    *,
    tag: str = "py3-none-any",
    executable: tuple[str, ...] = (),
    record_overrides: Mapping[str, tuple[str, str] | None] | None = None,
    extra: list[tuple[zipfile.ZipInfo, bytes]] | None = None,
    requires: tuple[str, ...] = (),
) -> Path:
    """Write ``{name}-{version}-{tag}.whl`` with a correct RECORD, unless told to break it.

    ``record_overrides`` maps a path to ``(hash, size)`` to write instead, or to None to leave the path out of RECORD.
    ``extra`` members are added to the archive but not to RECORD. ``requires`` are its METADATA's Requires-Dist.
    """
    if files is None:
        files = {f"{name}/__init__.py": b"VALUE = 1\n"}
    dist_info = f"{name}-{version}.dist-info"
    contents = dict(files)
    contents[f"{dist_info}/METADATA"] = (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                         + "".join(f"Requires-Dist: {r}\n" for r in requires)).encode()
    contents[f"{dist_info}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: wheelmaker\nRoot-Is-Purelib: true\nTag: {tag}\n".encode()
    )
    overrides = record_overrides or {}
    rows = []
    for path, data in contents.items():
        if path in overrides:
            override = overrides[path]
            if override is None:
                continue
            rows.append(f"{path},{override[0]},{override[1]}")
        else:
            rows.append(f"{path},{record_hash(data)},{len(data)}")
    rows.append(f"{dist_info}/RECORD,,")
    contents[f"{dist_info}/RECORD"] = ("\n".join(rows) + "\n").encode()

    wheel = directory / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in contents.items():
            info = zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            mode = 0o755 if path in executable else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            zf.writestr(info, data)
        for info, data in extra or []:
            zf.writestr(info, data)
    return wheel


def member(name: str, mode: int) -> zipfile.ZipInfo:
    """A zip member header with the given unix mode (file type bits included)."""
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.external_attr = mode << 16
    return info


def big_files(count: int, size: int, prefix: str = "big") -> dict[str, bytes]:
    """Many distinct files, so unpacking takes long enough to be caught mid-way."""
    return {f"{prefix}/sub{i % 10}/mod{i}.py": (f"# {i}\n".encode() * (size // 5 + 1))[:size] for i in range(count)}


BACKEND = '''import os
from flit_core import buildapi as _flit
from flit_core.buildapi import *  # noqa: F401,F403

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    {fail}
    marker = os.path.join({markers!r}, "%d-%s" % (os.getpid(), os.urandom(4).hex()))
    open(marker, "w").close()
    return _flit.build_wheel(wheel_directory, config_settings, metadata_directory)
'''


def make_sdist(directory: Path, markers: Path, name: str = "tinypkg", *, fail: bool = False) -> Path:
    """A pure-Python sdist whose in-tree backend (a wrapper of flit_core) leaves a marker file per build."""
    files = {
        "pyproject.toml": (f'[build-system]\nrequires = ["flit_core>=3.2"]\nbuild-backend = "countingbackend"\n'
                           f'backend-path = ["."]\n\n[project]\nname = "{name}"\nversion = "0.1"\n'
                           f'description = "a tiny sdist for tests"\n'),
        "countingbackend.py": BACKEND.format(markers=str(markers),
                                             fail='raise RuntimeError("this backend always fails")' if fail else ""),
        f"{name}/__init__.py": "VALUE = 42\n",
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n",
    }
    return sdist_archive(directory, name, "0.1", files)


def sdist_archive(directory: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """``NAME-VERSION.tar.gz`` in ``directory`` holding ``files`` (relative path -> text) under its top directory,
    world-readable, with fixed modes and times."""
    path = directory / f"{name}-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for rel, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{name}-{version}/{rel}")
            info.size, info.mode, info.mtime = len(data), 0o644, 1577836800
            tar.addfile(info, io.BytesIO(data))
    path.chmod(0o644)
    return path
