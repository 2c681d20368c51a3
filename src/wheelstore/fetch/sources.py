"""Where distributions come from: indexes, find-links locations, and whether the network may be used.

One value, built once per command from the CLI options and the configuration users already have for pip and uv, is
handed to every stage that reaches beyond the store (resolution through uv, the index client, downloads).

How the settings combine (:meth:`Sources.from_environment`):

1. Command-line options win. ``--index-url`` replaces the primary index; ``--extra-index-url`` and ``--find-links``
   are added after the configured ones (pip and uv both extend configured lists with command-line ones);
   ``--no-index`` and ``--offline`` switch on.
2. The index settings (primary index, extra indexes, find-links, no-index) come from ONE tool, never a mix: uv's
   configuration when it sets any of them, else pip's, else PyPI. Mixing both tools' lists could send a private
   package's name to an index the user never meant for it (dependency confusion), so uv's, the resolver we run, wins.

   - uv, as uv reads it: ``UV_DEFAULT_INDEX`` / ``UV_INDEX_URL`` (primary), ``UV_INDEX`` and ``UV_EXTRA_INDEX_URL``
     (space-separated, ``name=url`` allowed), ``UV_FIND_LINKS`` (comma-separated), ``UV_NO_INDEX``; then
     ``UV_CONFIG_FILE`` alone if set (``UV_NO_CONFIG`` reads none), else the user file
     (``$XDG_CONFIG_HOME/uv/uv.toml``, default ``~/.config/uv/uv.toml``) over the first system file found
     (``$XDG_CONFIG_DIRS/uv/uv.toml``, default ``/etc/xdg/uv/uv.toml``, then ``/etc/uv/uv.toml``). Scalars: the
     environment, then the user file, then the system file. Lists: concatenated in that order. In a file, ``[pip]``
     keys override top-level ones; ``[[index]]`` tables count (``default = true`` is the primary, ``format = "flat"``
     is a find-links location, ``explicit = true`` ones are skipped: they serve only pinned sources).
   - pip, as pip 23-25 read it: the files in pip's order, each overriding the ones before: ``$XDG_CONFIG_DIRS/pip/
     pip.conf`` (default ``/etc/xdg``), ``/etc/pip.conf``, ``~/.pip/pip.conf``, ``$XDG_CONFIG_HOME/pip/pip.conf``,
     then ``PIP_CONFIG_FILE`` (whose existence skips the two user files; ``os.devnull`` skips every file). An
     ``[install]`` value in any file beats a ``[global]`` one in any file, and ``PIP_*`` variables beat every file
     (``PIP_EXTRA_INDEX_URL`` and ``PIP_FIND_LINKS`` are whitespace-separated). Empty values are ignored, as pip does.
     The per-venv ``pip.conf`` and uv's project files are not read: wheelstore is not run from inside the target.
3. ``offline``: the command line, else ``UV_OFFLINE``, else uv's files (pip has no such setting).
4. ``cert``: pip's ``cert`` setting (``PIP_CERT`` or a pip.conf). uv gets it as ``SSL_CERT_FILE`` unless that is set.
5. A requirements file's ``--index-url``, ``--extra-index-url`` and ``--no-index`` (poetry and pdm export their
   project's sources so) rank beneath all of these, as uv ranks them (:meth:`Sources.beneath`).

uv's index priority applies when uv resolves: the extra indexes are tried before the primary, and the first index that
has a package is the only one used for it (uv's ``first-index``), where pip would merge every index's versions.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from ..base.errors import SourcesError
from ..base.logs import log

PYPI = "https://pypi.org/simple"
_TRUE = frozenset({"y", "yes", "t", "true", "on", "1"})
_FALSE = frozenset({"n", "no", "f", "false", "off", "0"})


class Sources(NamedTuple):
    """Indexes and find-links, in the order they are consulted."""

    #: the primary index first, then the extra ones; empty when ``no_index``
    index_urls: tuple[str, ...] = (PYPI,)
    #: local directories or URLs of flat wheel/sdist listings (pip's --find-links)
    find_links: tuple[str, ...] = ()
    #: use no index at all, only find-links
    no_index: bool = False
    #: use nothing from the network: only the store and local files
    offline: bool = False
    #: a CA bundle from pip's ``cert`` setting, for tools that do not read pip's config
    cert: str | None = None
    #: ``(setting, value, where it came from)`` for every value, for ``doctor`` and error messages
    origins: tuple[tuple[str, str, str], ...] = ()

    @classmethod
    def from_environment(
        cls,
        *,
        index_url: str | None = None,
        extra_index_urls: Iterable[str] = (),
        find_links: Iterable[str] = (),
        no_index: bool = False,
        offline: bool = False,
        environ: Mapping[str, str] | None = None,
    ) -> Sources:
        """The command line's sources over the user's uv or pip configuration (the rule is in the module docstring)."""
        env = os.environ if environ is None else environ
        uv = _uv_settings(env)
        tool = uv if uv.defines_indexes() else _pip_settings(env)
        origins: list[tuple[str, str, str]] = []

        if index_url:
            primary = (index_url, "command line")
        else:
            primary = tool.primary or (PYPI, "default")
        extras = [*tool.extras, *((u, "command line") for u in extra_index_urls)]
        links = [*tool.find_links, *((f, "command line") for f in find_links)]
        if no_index:
            skip_indexes: tuple[bool, str] | None = (True, "command line")
        else:
            skip_indexes = tool.no_index if tool.no_index and tool.no_index[0] else None
        if offline:
            go_offline: tuple[bool, str] | None = (True, "command line")
        else:
            go_offline = uv.offline if uv.offline and uv.offline[0] else None

        indexes: list[str] = []
        if skip_indexes:
            origins.append(("no-index", "true", skip_indexes[1]))
        else:
            for url, origin in _unique([primary, *extras]):
                indexes.append(url)
                origins.append(("index-url" if not origins else "extra-index-url", url, origin))
        for location, origin in _unique(links):
            origins.append(("find-links", location, origin))
        if go_offline:
            origins.append(("offline", "true", go_offline[1]))
        cert = _pip_settings(env).cert if tool is uv else tool.cert
        if cert:
            origins.append(("cert", cert[0], cert[1]))
        return cls(
            index_urls=tuple(indexes),
            find_links=tuple(loc for loc, _ in _unique(links)),
            no_index=skip_indexes is not None,
            offline=go_offline is not None,
            cert=cert[0] if cert else None,
            origins=tuple(origins),
        )

    def beneath(self, index_url: Valued | None, extra_index_urls: Iterable[Valued], no_index: str | None) -> Sources:
        """These sources over a requirements file's index options, ranked as uv ranks them (pip would let the file
        win): the file's ``--index-url`` is the primary index only where nothing else set one, its
        ``--extra-index-url`` ones come after every other index, its ``--no-index`` turns the indexes off. Each
        value comes with the file and line that gave it. Poetry and pdm write their project's sources so."""
        extras = list(extra_index_urls)
        if self.no_index or not (index_url or extras or no_index):
            return self
        rows = [(r["setting"], r["value"], r["from"]) for r in self.describe()]
        others = tuple(r for r in rows if r[0] not in ("index-url", "extra-index-url"))
        if no_index:
            return self._replace(index_urls=(), no_index=True, origins=(("no-index", "true", no_index), *others))
        origin = {value: where for setting, value, where in rows if setting in ("index-url", "extra-index-url")}
        indexes = [(url, origin.get(url, "given")) for url in self.index_urls]
        if index_url and (not indexes or indexes[0][1] == "default"):
            indexes[:1] = [index_url]
        elif index_url:
            log.debug("%s: --index-url %s is not used: %s is the index (%s)", index_url[1], index_url[0], *indexes[0])
        indexes = _unique([*indexes, *extras])
        listed = [("extra-index-url" if i else "index-url", url, where) for i, (url, where) in enumerate(indexes)]
        return self._replace(index_urls=tuple(url for url, _ in indexes), origins=(*listed, *others))

    def describe(self) -> list[dict[str, str]]:
        """Each setting with its value and where it came from: ``[{"setting", "value", "from"}, ...]``."""
        if not self.origins:  # made directly, not from the environment
            rows = [("index-url" if i == 0 else "extra-index-url", u, "given") for i, u in enumerate(self.index_urls)]
            rows += [("find-links", f, "given") for f in self.find_links]
            rows += [(k, "true", "given") for k, v in (("no-index", self.no_index), ("offline", self.offline)) if v]
            return [{"setting": s, "value": v, "from": o} for s, v, o in rows]
        return [{"setting": s, "value": v, "from": o} for s, v, o in self.origins]

    def uv_args(self) -> list[str]:
        """These sources as explicit uv options (uv must then be run with ``--no-config``, so nothing counts twice)."""
        args: list[str] = []
        if self.no_index or not self.index_urls:
            args.append("--no-index")
        else:
            args += ["--index-url", self.index_urls[0]]
            for url in self.index_urls[1:]:
                args += ["--extra-index-url", url]
        for location in self.find_links:
            args += ["--find-links", location]
        if self.offline:
            args.append("--offline")
        return args


# -- the two tools' settings, each read the way that tool reads them -------------------------------------------------

Valued = tuple[str, str]  #: (value, origin)


class _ToolSettings:
    def __init__(self) -> None:
        self.primary: Valued | None = None
        self.extras: list[Valued] = []
        self.find_links: list[Valued] = []
        self.no_index: tuple[bool, str] | None = None
        self.offline: tuple[bool, str] | None = None
        self.cert: Valued | None = None

    def defines_indexes(self) -> bool:
        return bool(self.primary or self.extras or self.find_links or self.no_index is not None)


def _boolean(value: str, where: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise SourcesError(f"{where}={value!r} is not a boolean", hint=f"set {where} to true or false")


def _unique(items: Iterable[Valued]) -> list[Valued]:
    seen: set[str] = set()
    out = []
    for value, origin in items:
        key = value.rstrip("/")
        if key not in seen:
            seen.add(key)
            out.append((value, origin))
    return out


def _home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or os.path.expanduser("~"))


def _config_home(env: Mapping[str, str]) -> Path:
    value = env.get("XDG_CONFIG_HOME", "").strip()
    return Path(value) if value else _home(env) / ".config"


def _config_dirs(env: Mapping[str, str]) -> list[Path]:
    value = env.get("XDG_CONFIG_DIRS", "").strip() or "/etc/xdg"
    return [Path(os.path.expanduser(d)) for d in value.split(os.pathsep) if d]


# -- pip -------------------------------------------------------------------------------------------------------------


def _pip_files(env: Mapping[str, str]) -> list[Path]:
    env_file = env.get("PIP_CONFIG_FILE")
    if env_file == os.devnull:
        return []
    files = [d / "pip" / "pip.conf" for d in _config_dirs(env)] + [Path("/etc/pip.conf")]
    if not (env_file and os.path.exists(env_file)):
        files += [_home(env) / ".pip" / "pip.conf", _config_home(env) / "pip" / "pip.conf"]
    if env_file:
        files.append(Path(env_file))
    return files


def _pip_settings(env: Mapping[str, str]) -> _ToolSettings:
    sections: dict[str, dict[str, Valued]] = {"global": {}, "install": {}}
    for path in _pip_files(env):
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise SourcesError(f"{path} is not a valid pip config file: {first}",
                               hint=f"fix or remove {path}") from None
        except PermissionError:  # pip would fail too; here the file is simply not ours to read
            continue
        for section, values in sections.items():
            if parser.has_section(section):
                for name, value in parser.items(section):
                    if value:
                        values[_pip_key(name)] = (value, f"{path} [{section}]")
    merged = {**sections["global"], **sections["install"]}
    for name, value in env.items():
        if name.startswith("PIP_") and value:
            merged[_pip_key(name[4:])] = (value, name)

    settings = _ToolSettings()
    if "index-url" in merged:
        settings.primary = merged["index-url"]
    for key, target in (("extra-index-url", settings.extras), ("find-links", settings.find_links)):
        if key in merged:
            value, origin = merged[key]
            target += [(part, origin) for part in value.split()]
    if "no-index" in merged:
        value, origin = merged["no-index"]
        settings.no_index = (_boolean(value, _name_for(origin, "no-index")), origin)
    if "cert" in merged:
        settings.cert = merged["cert"]
    return settings


def _pip_key(name: str) -> str:
    name = name.lower().replace("_", "-")
    return name[2:] if name.startswith("--") else name


def _name_for(origin: str, key: str) -> str:
    return origin if origin.startswith("PIP_") else f"{key} in {origin}"


# -- uv --------------------------------------------------------------------------------------------------------------


def _uv_files(env: Mapping[str, str]) -> list[Path]:
    """The uv.toml files uv itself would read for a ``uv pip`` command outside any project, highest priority first."""
    if env.get("UV_NO_CONFIG") and _boolean(env["UV_NO_CONFIG"], "UV_NO_CONFIG"):
        return []
    if env.get("UV_CONFIG_FILE"):
        path = Path(env["UV_CONFIG_FILE"])
        if not path.is_file():
            raise SourcesError(f"UV_CONFIG_FILE names {path}, which does not exist", hint="unset it or create the file")
        return [path]
    files = []
    user = _config_home(env) / "uv" / "uv.toml"
    if user.is_file():
        files.append(user)
    for system in [d / "uv" / "uv.toml" for d in _config_dirs(env)] + [Path("/etc/uv/uv.toml")]:
        if system.is_file():
            files.append(system)
            break
    return files


def _split_named(value: str) -> str:
    """uv accepts ``name=url`` for an index; the name matters only to uv's project settings."""
    name, sep, url = value.partition("=")
    if sep and name and all(c.isalnum() or c in "-_." for c in name) and ("://" in url or url.startswith(("/", "."))):
        return url
    return value


def _uv_settings(env: Mapping[str, str]) -> _ToolSettings:
    settings = _ToolSettings()
    for var in ("UV_DEFAULT_INDEX", "UV_INDEX_URL"):
        if env.get(var, "").strip():
            settings.primary = (_split_named(env[var].strip()), var)
            break
    for var in ("UV_INDEX", "UV_EXTRA_INDEX_URL"):
        settings.extras += [(_split_named(u), var) for u in env.get(var, "").split()]
    settings.find_links += [(f.strip(), "UV_FIND_LINKS") for f in env.get("UV_FIND_LINKS", "").split(",") if f.strip()]
    for var, attr in (("UV_NO_INDEX", "no_index"), ("UV_OFFLINE", "offline")):
        if env.get(var, "").strip():
            setattr(settings, attr, (_boolean(env[var], var), var))
    for path in _uv_files(env):
        _add_uv_file(settings, path)
    return settings


def _read_uv_file(path: Path) -> dict[str, Any]:
    from ..base.toml import tomllib  # here: most users have no uv config file
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SourcesError(f"{path} is not valid TOML: {e}", hint=f"fix or remove {path}") from None
    except PermissionError:
        return {}


def _add_uv_file(settings: _ToolSettings, path: Path) -> None:
    data = _read_uv_file(path)
    pip_table = data.get("pip")
    layers = [pip_table if isinstance(pip_table, dict) else {}, data]  # [pip] first: it wins for `uv pip`
    where = str(path)

    def bad(key: str, want: str) -> SourcesError:
        return SourcesError(f"{path}: '{key}' must be {want}", hint=f"fix or remove {path}")

    for layer in layers:
        for key in ("extra-index-url", "find-links"):
            value = layer.get(key, [])
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise bad(key, "a list of strings")
            (settings.extras if key == "extra-index-url" else settings.find_links).extend((v, where) for v in value)
        indexes = layer.get("index", [])
        if not (isinstance(indexes, list) and all(isinstance(i, dict) and isinstance(i.get("url"), str)
                                                  for i in indexes)):
            raise bad("index", "a list of tables with a 'url'")
        for index in indexes:
            if index.get("explicit"):
                continue
            if index.get("format") == "flat":
                settings.find_links.append((index["url"], where))
            elif index.get("default"):
                if settings.primary is None:
                    settings.primary = (index["url"], where)
            else:
                settings.extras.append((index["url"], where))
        if "index-url" in layer:
            if not isinstance(layer["index-url"], str):
                raise bad("index-url", "a string")
            if settings.primary is None:
                settings.primary = (layer["index-url"], where)
        for key, attr in (("no-index", "no_index"), ("offline", "offline")):
            if key in layer:
                if not isinstance(layer[key], bool):
                    raise bad(key, "true or false")
                if getattr(settings, attr) is None:
                    setattr(settings, attr, (layer[key], where))
