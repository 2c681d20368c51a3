"""Build small, real wheels for tests, including deliberately broken ones."""

from __future__ import annotations

import base64
import hashlib
import stat
import zipfile
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
    record_overrides: dict[str, tuple[str, str] | None] | None = None,
    extra: list[tuple[zipfile.ZipInfo, bytes]] | None = None,
) -> Path:
    """Write ``{name}-{version}-{tag}.whl`` with a correct RECORD, unless told to break it.

    ``record_overrides`` maps a path to ``(hash, size)`` to write instead, or to None to leave the path out of RECORD.
    ``extra`` members are added to the archive but not to RECORD.
    """
    if files is None:
        files = {f"{name}/__init__.py": b"VALUE = 1\n"}
    dist_info = f"{name}-{version}.dist-info"
    contents = dict(files)
    contents[f"{dist_info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
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
