"""Which store a command uses.

The order is the usual one for tools of this kind: the command line, then the environment, then the user's config
file, then the system config, then a private default store under the user's XDG data directory.
"""

from __future__ import annotations

import marshal
import os
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO, NamedTuple

from ..base import usercache
from ..base.errors import StoreError

ENV_STORE = "WHEELSTORE_STORE"
ENV_MAX_UNPACKED = "WHEELSTORE_MAX_UNPACKED"
#: the most a wheel may unpack to unless the user says otherwise: generous (the largest wheels on PyPI, CUDA builds
#: of torch and its NVIDIA libraries, unpack to a few GB), yet a zip bomb cannot fill a disk
DEFAULT_MAX_UNPACKED = 8 << 30
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
SYSTEM_CONFIG = Path("/etc/wheelstore/config.toml")


def user_config_path() -> Path:
    import platformdirs  # here: with --store or $WHEELSTORE_STORE no config file is read

    return platformdirs.user_config_path("wheelstore") / "config.toml"


def default_store_path() -> Path:
    import platformdirs

    return platformdirs.user_data_path("wheelstore") / "store"


class Selection(NamedTuple):
    """A chosen store path and where the choice came from, for messages and ``wheelstore info``."""

    path: Path
    source: str

    @property
    def is_default(self) -> bool:
        return self.source == "default"


def parse_toml(f: BinaryIO, where: Path) -> dict[str, object]:
    """The TOML document ``f`` (read from ``where``). What this user parsed before from the very same file (device,
    inode, size, mtime, ctime) comes from their cache: a store's config is read by every command, and the TOML
    parser's import was a few milliseconds of each."""
    st = os.fstat(f.fileno())
    stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    name = usercache.named_by("toml", os.path.abspath(where))
    try:
        kept_stamp, kept = marshal.loads(usercache.read_bytes(name) or b"")
        if kept_stamp == stamp and isinstance(kept, dict):
            return kept
    except (EOFError, ValueError, TypeError):
        pass
    from ..base.toml import tomllib  # here: only when the cached parse is stale
    try:
        data = tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise StoreError(f"{where} is not valid TOML: {e}") from None
    except RecursionError:  # the parser recurses per nesting level: a file nested thousands deep
        raise StoreError(f"{where} is not valid TOML: nested too deeply") from None
    try:
        usercache.write_bytes(name, marshal.dumps((stamp, data)))
    except ValueError:  # holds a date or time, which marshal cannot keep: parsed each time
        pass
    return data


def read_toml(path: Path) -> dict[str, object] | None:
    """Parse a TOML file, or return None if there is none; a broken file is a one-line error."""
    try:
        with open(path, "rb") as f:
            return parse_toml(f, path)
    except FileNotFoundError:
        return None
    except PermissionError:
        raise StoreError(f"cannot read {path}: permission denied") from None
    except IsADirectoryError:
        raise StoreError(f"{path} is a directory, not a config file") from None


def _store_from_config(path: Path) -> Path | None:
    data = read_toml(path)
    if data is None or "store" not in data:
        return None
    value = data["store"]
    if not isinstance(value, str) or not value:
        raise StoreError(f"{path}: 'store' must be a path string")
    return Path(os.path.expanduser(value))


def select_store(cli_store: str | os.PathLike[str] | None = None, environ: Mapping[str, str] = os.environ) -> Selection:
    """Pick the store: ``--store``, ``$WHEELSTORE_STORE``, user config, system config, then the default."""
    if cli_store:
        return Selection(Path(cli_store).absolute(), "--store")
    if environ.get(ENV_STORE):
        return Selection(Path(environ[ENV_STORE]).absolute(), ENV_STORE)
    for config, label in ((user_config_path(), "user config"), (SYSTEM_CONFIG, "system config")):
        found = _store_from_config(config)
        if found is not None:
            return Selection(found.absolute(), f"{label} {config}")
    return Selection(default_store_path(), "default")


def parse_size(text: str) -> int | None:
    """Bytes from ``123``, ``512K``, ``64M``, ``8G`` or ``1T`` (binary units, an optional ``iB`` or ``B``); None if
    it is not a size."""
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = value[-1:] if value[-1:] in _SIZE_UNITS else ""
    number = value[: len(value) - len(unit)].strip()
    if not number.isdecimal() or not number.isascii():
        return None
    return int(number) * _SIZE_UNITS[unit]


def max_unpacked(store_config: Mapping[str, object], environ: Mapping[str, str] = os.environ) -> tuple[int, str]:
    """The most bytes one wheel may unpack to, and where that limit came from: ``$WHEELSTORE_MAX_UNPACKED``, then
    ``max_unpacked`` in the ``[store]`` table of the store's own config (``store_config``: the owner's default for
    everyone, which members cannot edit but may override for their own publishes with the variable), then
    :data:`DEFAULT_MAX_UNPACKED`. The user's config file is not read: a
    command given ``--store`` reads no config file."""
    if environ.get(ENV_MAX_UNPACKED):
        return _size_setting(environ[ENV_MAX_UNPACKED], ENV_MAX_UNPACKED), ENV_MAX_UNPACKED
    table = store_config.get("store")
    if isinstance(table, dict) and "max_unpacked" in table:
        value = table["max_unpacked"]
        where = "max_unpacked in the store's config.toml"
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value, where
        return _size_setting(value if isinstance(value, str) else repr(value), where), where
    return DEFAULT_MAX_UNPACKED, "default"


def _size_setting(text: str, where: str) -> int:
    size = parse_size(text)
    if size is None:
        raise StoreError(f"{where} is {text!r}, not a size", hint="give bytes, or a number with K, M or G, as in 16G")
    return size
