"""Which store a command uses.

The order is the usual one for tools of this kind: the command line, then the environment, then the user's config
file, then the system config, then a private default store under the user's XDG data directory.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple
from typing import BinaryIO

from .errors import StoreError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

ENV_STORE = "WHEELSTORE_STORE"
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
    try:
        return tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise StoreError(f"{where} is not valid TOML: {e}") from None


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
