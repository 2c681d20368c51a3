"""TOML parsing on every supported Python: :mod:`tomllib` from 3.11, its ``tomli`` backport before.

The fallback is written here once; import ``tomllib`` from this module where a file is parsed (lazily, where most
runs parse none)."""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = ["tomllib"]
