"""The index client: which files exist for a project, and which one suits a target interpreter.

Indexes are read as PEP 691 JSON when they offer it and as PEP 503 HTML otherwise (chosen by the ``Accept`` header;
``file://`` trees of ``index.html`` files work too). Find-links are local directories or flat HTML pages. Every URL is
made absolute against the page it came from, so a later download needs nothing but the :class:`RemoteFile`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import create_compatible_tags_selector
from packaging.utils import (
    BuildTag,
    InvalidSdistFilename,
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

from ..base.errors import FetchError
from ..base.interpreter import Interpreter
from ..base.logs import log
from .http import Http, Page, file_path
from .sources import Sources

#: JSON first; HTML (either spelling) as the fallback every index serves
ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
JSON_TYPES = frozenset({"application/vnd.pypi.simple.v1+json", "application/vnd.pypi.simple.latest+json"})
SDIST_SUFFIXES = (".tar.gz", ".zip")


@dataclass(frozen=True)
class RemoteFile:
    """One distribution file an index or find-links location offers."""

    filename: str
    url: str  #: absolute, without the hash fragment
    hashes: dict[str, str] = field(default_factory=dict, hash=False)  #: algorithm -> lowercase hex
    requires_python: str | None = None
    yanked: str | None = None  #: the reason; "" when yanked without one; None when not yanked
    size: int | None = None
    #: for a link that lists no sha256: the hashes the requirement accepts, checked once the file is downloaded
    accepted: frozenset[str] = field(default=frozenset(), hash=False)

    @property
    def sha256(self) -> str | None:
        return self.hashes.get("sha256")

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")

    @property
    def name(self) -> NormalizedName:
        if self.is_wheel:
            return parse_wheel_filename(self.filename)[0]
        return parse_sdist_filename(self.filename)[0]

    @property
    def version(self) -> Version:
        if self.is_wheel:
            return parse_wheel_filename(self.filename)[1]
        return parse_sdist_filename(self.filename)[1]


def distribution(filename: str) -> tuple[NormalizedName, Version] | None:
    """Name and version of a wheel or sdist file name; None for anything else (eggs, installers, junk)."""
    if not filename or "/" in filename or "\0" in filename or filename.startswith("."):
        return None  # never a path: the name becomes a file in the store's staging area
    try:
        if filename.endswith(".whl"):
            name, version, _build, _tags = parse_wheel_filename(filename)
            return name, version
        if filename.endswith(SDIST_SUFFIXES):
            return parse_sdist_filename(filename)
    except (InvalidWheelFilename, InvalidSdistFilename):
        pass
    return None


# -- parsing pages --------------------------------------------------------------------------------------------------


class _Anchors(HTMLParser):
    """The ``<a>`` elements of a PEP 503 page (attribute values come unescaped), and its ``<base href>``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[dict[str, str | None]] = []
        self.base: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.anchors.append(dict(attrs))
        elif tag == "base" and self.base is None:
            self.base = dict(attrs).get("href")


def _split_url(base: str, href: str) -> tuple[str, dict[str, str]]:
    """The absolute URL of ``href`` without its fragment, and the ``#<algorithm>=<hex>`` hash it carries."""
    url = urljoin(base, href)
    parts = urlsplit(url)
    hashes: dict[str, str] = {}
    algorithm, sep, digest = parts.fragment.partition("=")
    if sep and algorithm and digest:
        hashes[algorithm.lower()] = digest.lower()
    return urlunsplit(parts._replace(fragment="")), hashes


def _filename(url: str) -> str:
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


def parse_html(page: Page) -> list[RemoteFile]:
    """The files a PEP 503 page (or a flat find-links page) links to."""
    parser = _Anchors()
    try:
        parser.feed(page.body.decode("utf-8", errors="replace"))
        parser.close()
    except AssertionError:  # html.parser's way of rejecting some malformed markup
        raise FetchError(f"{page.url} is not a readable HTML page") from None
    base = urljoin(page.url, parser.base) if parser.base else page.url
    files = []
    for attrs in parser.anchors:
        href = attrs.get("href")
        if not href:
            continue
        url, hashes = _split_url(base, href)
        filename = _filename(url)
        if distribution(filename) is None:
            continue
        requires_python = attrs.get("data-requires-python") or None
        yanked = (attrs["data-yanked"] or "") if "data-yanked" in attrs else None
        files.append(RemoteFile(filename, url, hashes, requires_python, yanked))
    return files


def parse_json(page: Page) -> list[RemoteFile]:
    """The files of a PEP 691 project page."""
    try:
        data = json.loads(page.body)
        version = str(data["meta"]["api-version"])
        entries = data["files"]
    except (ValueError, KeyError, TypeError):
        raise FetchError(f"{page.url} is not a PEP 691 project page") from None
    if version.split(".")[0] != "1":
        raise FetchError(f"{page.url} speaks simple API version {version}; wheelstore reads version 1")
    files = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
            continue
        url, fragment_hashes = _split_url(page.url, entry["url"])
        filename = entry.get("filename")
        if not isinstance(filename, str) or distribution(filename) is None:
            continue
        raw = entry.get("hashes")
        hashes = {str(k).lower(): str(v).lower() for k, v in raw.items()} if isinstance(raw, dict) else {}
        hashes = {**fragment_hashes, **hashes}
        yanked_value = entry.get("yanked", False)
        yanked = yanked_value if isinstance(yanked_value, str) else ("" if yanked_value else None)
        requires_python = entry.get("requires-python")
        size = entry.get("size")
        files.append(RemoteFile(
            filename, url, hashes,
            requires_python if isinstance(requires_python, str) and requires_python else None,
            yanked,
            size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
        ))
    return files


def _parse_page(page: Page) -> list[RemoteFile]:
    return parse_json(page) if page.content_type in JSON_TYPES else parse_html(page)


# -- choosing -------------------------------------------------------------------------------------------------------


def _is_exact_pin(specifier: SpecifierSet) -> bool:
    """An ``==`` / ``===`` pin of one version: the only request PEP 592 lets select a yanked file."""
    specs = list(specifier)
    return len(specs) == 1 and specs[0].operator in ("==", "===") and not specs[0].version.endswith(".*")


def _python_ok(file: RemoteFile, python: str) -> bool:
    if file.requires_python is None:
        return True
    try:
        return SpecifierSet(file.requires_python).contains(python, prereleases=True)
    except InvalidSpecifier:  # as pip does: an unreadable constraint does not exclude the file
        return True


def _eligible(
    files: Iterable[RemoteFile], name: str, specifier: SpecifierSet, interpreter: Interpreter,
    prereleases: bool | None, wheels: bool,
) -> dict[Version, list[RemoteFile]]:
    """Files of ``name`` of the wanted kind that the target may use, grouped by version, allowed versions only."""
    canonical = canonicalize_name(name)
    python = ".".join(map(str, interpreter.version))
    pinned = _is_exact_pin(specifier)
    by_version: dict[Version, list[RemoteFile]] = {}
    for file in files:
        parsed = distribution(file.filename)
        if parsed is None or parsed[0] != canonical or file.is_wheel != wheels:
            continue
        if (file.yanked is not None and not pinned) or not _python_ok(file, python):
            continue
        by_version.setdefault(parsed[1], []).append(file)
    allowed = set(specifier.filter(by_version, prereleases=prereleases))
    return {v: fs for v, fs in by_version.items() if v in allowed}


def choose_wheel(
    files: Iterable[RemoteFile], name: str, specifier: SpecifierSet, interpreter: Interpreter,
    *, prereleases: bool | None = None,
) -> RemoteFile | None:
    """The wheel pip would pick: newest allowed version with a compatible wheel, then the best tag for the target.

    Yanked files count only for an exact ``==`` pin (PEP 592); prereleases only when asked or when nothing else fits.
    Among files with equally good tags the highest build number wins.
    """
    select = create_compatible_tags_selector(interpreter.tags)  # the ranking candidates.py uses for local wheels
    candidates = _eligible(files, name, specifier, interpreter, prereleases, wheels=True)
    for version in sorted(candidates, reverse=True):
        tagged = [(f, parse_wheel_filename(f.filename)[3]) for f in candidates[version]]
        tagged.sort(key=lambda item: _build(item[0]), reverse=True)
        best = next(select(tagged), None)
        if best is not None:
            return best
    return None


def choose_sdist(
    files: Iterable[RemoteFile], name: str, specifier: SpecifierSet, interpreter: Interpreter,
    *, prereleases: bool | None = None,
) -> RemoteFile | None:
    """The sdist of the newest allowed version (``.tar.gz`` preferred over ``.zip``), by the same rules."""
    candidates = _eligible(files, name, specifier, interpreter, prereleases, wheels=False)
    if not candidates:
        return None
    newest = candidates[max(candidates)]
    return sorted(newest, key=lambda f: not f.filename.endswith(".tar.gz"))[0]


def _build(file: RemoteFile) -> BuildTag:
    return parse_wheel_filename(file.filename)[2]


#: versions an error lists before it says how many more there are
SHOWN_VERSIONS = 5


def why_missing(
    files: Iterable[RemoteFile], name: str, version: Version, interpreter: Interpreter, hashes: frozenset[str],
    where: str,
) -> str:
    """Why ``files`` (everything the locations ``where`` offer) hold no file for the pin ``name==version``: the
    name is unknown, the version is not there (and which are), a hash decided it (only then are hashes named), or
    only files for other interpreters exist (and which tags they have). One clause, for a one-line error."""
    canonical = canonicalize_name(name)
    mine = [(f, parsed[1]) for f in files if (parsed := distribution(f.filename)) and parsed[0] == canonical]
    if not mine:
        return f"no distribution named {name} on {where}"
    same = [f for f, v in mine if v == version]
    if not same:
        return f"no version of {name} matches =={version} (available on {where}: {_versions({v for _, v in mine})})"
    pin = f"{name}=={version}"
    if hashes and not (same := [f for f in same if f.sha256 is None or f.sha256 in hashes]):
        # a link without a sha256 is no reason: it is downloaded and checked (see wheelstore.fetch.pinned)
        offered = "; ".join([f"{f.filename} has sha256 {f.sha256}" for f, v in mine if v == version][:2])
        return f"no file of {pin} on {where} has the required hash: {offered}"
    python = ".".join(map(str, interpreter.version))
    runnable = [f for f in same if _python_ok(f, python)]
    if not runnable:
        needs = ", ".join(sorted({f"requires-python {f.requires_python}" for f in same}))
        return f"no file of {pin} on {where} is for Python {python}: {needs}"
    best = interpreter.tags[0]
    found = sorted({"-".join(f.filename.removesuffix(".whl").split("-")[-3:]) for f in runnable if f.is_wheel})
    shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
    return (f"no file of {pin} on {where} suits this interpreter ({best.interpreter}, {best.platform}): "
            f"found only {shown} and no sdist")


def _versions(versions: set[Version]) -> str:
    """The newest few, newest first, and how many older ones there are."""
    ordered = sorted(versions, reverse=True)
    text = ", ".join(map(str, ordered[:SHOWN_VERSIONS]))
    return text + (f" and {len(ordered) - SHOWN_VERSIONS} older" if len(ordered) > SHOWN_VERSIONS else "")


# -- the client -----------------------------------------------------------------------------------------------------


class IndexClient:
    """Reads every index and find-links location in ``sources``, each page once per client.

    With ``sources.offline`` only ``file://`` indexes and local find-links are read; network locations are skipped.
    """

    def __init__(self, sources: Sources, http: Http) -> None:
        self.sources = sources
        self.http = http
        self._projects: dict[NormalizedName, list[RemoteFile]] = {}
        self._flat: dict[str, list[RemoteFile]] = {}

    def files(self, name: str) -> list[RemoteFile]:
        """Every wheel and sdist of ``name``: the indexes in order, then find-links; one entry per file name."""
        canonical = canonicalize_name(name)
        if canonical not in self._projects:
            found: list[RemoteFile] = []
            if not self.sources.no_index:
                for index in self.sources.index_urls:
                    found += self._index_files(index, canonical)
            for location in self.sources.find_links:
                found += [f for f in self._flat_files(location) if _name_of(f) == canonical]
            unique: dict[str, RemoteFile] = {}
            for f in found:  # the first location wins, unless it is remote and only a later one lists a sha256
                kept = unique.get(f.filename)
                if kept is None or (f.sha256 and not kept.sha256 and not kept.url.startswith("file:")):
                    unique[f.filename] = f
            self._projects[canonical] = list(unique.values())
        return list(self._projects[canonical])

    def best_wheel(
        self, name: str, specifier: SpecifierSet | str, interpreter: Interpreter, *, prereleases: bool | None = None
    ) -> RemoteFile | None:
        """See :func:`choose_wheel`."""
        return choose_wheel(self.files(name), name, SpecifierSet(str(specifier)), interpreter, prereleases=prereleases)

    def best_sdist(
        self, name: str, specifier: SpecifierSet | str, interpreter: Interpreter, *, prereleases: bool | None = None
    ) -> RemoteFile | None:
        """See :func:`choose_sdist`."""
        return choose_sdist(self.files(name), name, SpecifierSet(str(specifier)), interpreter, prereleases=prereleases)

    def _skipped_offline(self, url: str) -> bool:
        return self.sources.offline and not url.startswith("file:") and "://" in url

    def _index_files(self, index: str, name: NormalizedName) -> list[RemoteFile]:
        if self._skipped_offline(index):
            return []
        url = index.rstrip("/") + f"/{name}/"
        page = self.http.get(url, accept=ACCEPT)
        if page is None:
            return []
        return [f for f in _parse_page(page) if _name_of(f) == name]

    def _flat_files(self, location: str) -> list[RemoteFile]:
        if location not in self._flat:
            self._flat[location] = self._read_flat(location)
        return self._flat[location]

    def _read_flat(self, location: str) -> list[RemoteFile]:
        if "://" not in location:
            path = Path(os.path.abspath(os.path.expanduser(location)))
        elif location.startswith("file:"):
            path = file_path(location)
        elif self._skipped_offline(location):
            return []
        else:
            page = self.http.get(location, accept="text/html")
            if page is None:
                raise FetchError(f"find-links page {location} does not exist (HTTP 404)")
            return parse_html(page)
        if path.is_dir():
            return _directory_files(path)
        page = self.http.get(path.as_uri(), accept="text/html")
        if page is None:
            log.warning("find-links location %s does not exist; skipped", location)
            return []
        return parse_html(page)


def _name_of(file: RemoteFile) -> NormalizedName | None:
    parsed = distribution(file.filename)
    return parsed[0] if parsed else None


def _directory_files(directory: Path) -> list[RemoteFile]:
    """The wheels and sdists in a local directory; no hashes (a local file is hashed as it is read)."""
    files = []
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as e:
        raise FetchError(f"cannot list find-links directory {directory}: {e.strerror}") from None
    for entry in entries:
        if distribution(entry.name) is None:
            continue
        try:
            if not entry.is_file():
                continue
            size = entry.stat().st_size
        except OSError:
            continue
        files.append(RemoteFile(entry.name, Path(entry.path).as_uri(), {}, None, None, size))
    return files
