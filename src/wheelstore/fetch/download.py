"""Fetch: remote wheels into published trees, each downloaded and unpacked once however many processes ask.

For each wheel, with its sha256 known from the index or the lock:

1. ``store.lookup(sha)``: a warm store never touches the network;
2. take the artifact's fetch lock (``locks/fetch-<sha>.lock``; not the realize lock, which ``realize`` takes itself)
   and look again, since another process may have published it while we waited. A wheel whose lock another process
   holds is put aside while there are others to fetch, so concurrent installs of one set split it between them;
3. stream the body into a new file in a private directory in ``staging/`` (``download-<sha>-<lease>-<rand>/``, left
   to gc if we die: nobody holds the lease), hashing as it is written. A short body, a wrong length or a wrong hash
   raises, the staging directory is removed, and nothing is published;
4. :func:`~wheelstore.store.publish.realize` publishes it (hashing it once more as it unpacks); the staging directory is
   removed.

A file whose link lists no sha256 but whose requirement gives hashes (``RemoteFile.accepted``, see
:mod:`wheelstore.fetch.pinned`) takes no fetch lock, since its key is known only once its bytes are: it is downloaded
the same way, checked against those hashes in step 3, and realized under the hash it has.

The file keeps its own name inside the staging directory because :mod:`wheelstore.store.wheel` reads name, version and
tags from it. ``file://`` wheels are realized from where they are, without a copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from pathlib import Path
from typing import BinaryIO

from ..base import cancel, fsio, sizes
from ..base.errors import DownloadCutOff, FetchError, HashMismatch, WheelstoreError
from ..base.interpreter import Interpreter
from ..base.logs import log
from ..base.names import requirement_problem
from ..base.progress import COMPILED, UNPACKED, Kind, Task, active, current, phase
from ..store.keylock import KeyLock, share_work
from ..store.policy import Role
from ..store.publish import Compiler, realize, try_realize
from ..store.store import Store, Tree
from .http import Http, file_path
from .index import IndexClient, RemoteFile, distribution
from .sources import Sources

__all__ = [
    "FetchError", "Http", "download", "fetch_tree", "fetch_trees", "obtain", "remove_download",
]

#: how many times a download cut off mid-body is tried in all (HTTP-level failures are retried by :class:`Http`)
ATTEMPTS = 3
#: seconds before the second attempt; doubled for each later one
RETRY_DELAY = 0.5




# -- the API --------------------------------------------------------------------------------------------------------


def fetch_trees(
    store: Store, files: list[RemoteFile], http: Http, *, jobs: int = 4, compiler: Compiler | None = None,
) -> list[Tree]:
    """The published tree of every wheel in ``files`` (same order), downloading and realizing the missing ones
    (with ``compiler``, their pycs compiled into the trees, as :func:`wheelstore.store.publish.realize` does).

    Downloads run ``jobs`` at a time, the largest first. Processes fetching the same wheels split them: a wheel another
    process is fetching is waited for only once nothing else is left (:func:`wheelstore.store.keylock.share_work`).
    The first failure stops the downloads not yet started and is raised; trees already published stay (they are
    complete and content-addressed). Downloads, trees unpacked and modules compiled are reported to
    :func:`wheelstore.base.progress.current`.
    """
    for file in files:
        if not file.is_wheel:
            raise FetchError(f"{file.filename} is not a wheel; only wheels become trees",
                             hint="build it into a wheel first")
    trees: dict[str, Tree] = {}
    todo: dict[str, RemoteFile] = {}
    for file in files:
        key = _key(file)
        if key in trees or key in todo:
            continue
        sha = _sha256(file)
        tree = store.lookup(sha) if sha else None
        if tree is not None:
            trees[key] = tree
        else:
            todo[key] = file
    if todo:
        # the largest first: their unpack and compile take longest, so they must not start last
        order = sorted(todo, key=lambda k: -(todo[k].size or 0))
        with phase(Kind.UNPACK, "wheels", len(order), UNPACKED) as unpacking, \
                phase(Kind.COMPILE, "bytecode", 0, COMPILED) if compiler is not None else contextlib.nullcontext():

            def one(file: RemoteFile, wait: bool) -> Tree | None:
                tree = _fetch_one(store, file, http, compiler, wait=wait)
                if tree is not None:
                    unpacking.advance()
                return tree

            got = share_work([todo[k] for k in order], one, jobs=jobs)
        trees.update(zip(order, got, strict=True))
    return [trees[_key(file)] for file in files]


def fetch_tree(store: Store, file: RemoteFile, http: Http, compiler: Compiler | None = None) -> Tree:
    """The published tree of one wheel: looked up, or downloaded and realized under its fetch lock."""
    tree = _fetch_one(store, file, http, compiler, wait=True)
    assert tree is not None  # only a call that does not wait gives way
    return tree


def _fetch_one(store: Store, file: RemoteFile, http: Http, compiler: Compiler | None, *, wait: bool) -> Tree | None:
    """:func:`fetch_tree`; without ``wait``, None at once when another process is fetching this wheel."""
    sha = _sha256(file)
    tree = store.lookup(sha) if sha else None
    if tree is not None:
        return tree
    if sha is None and file.accepted:
        return _fetch_unlisted(store, file, http, compiler)
    if sha is None or file.url.startswith("file:"):  # on this machine: realize hashes it as it reads, no copy
        done = (realize if wait else try_realize)(store, file_path(file.url), sha, compiler=compiler)
        return done.tree if done is not None else None
    store.require_publish_access()
    lock = KeyLock(store.area_fd("locks"), f"fetch-{sha}.lock", store.policy, what=_label(file))
    if not lock.take(wait=wait):
        return None
    try:
        tree = store.lookup(sha)  # published by another process while we waited
        if tree is not None:
            return tree
        path, _sha = _download(store, file, http)
        try:
            return realize(store, path, sha, compiler=compiler).tree
        finally:
            remove_download(store, path)
    finally:
        lock.release()


def _fetch_unlisted(store: Store, file: RemoteFile, http: Http, compiler: Compiler | None) -> Tree:
    """The tree of a file whose link lists no sha256 (``file.accepted`` holds the required ones): its sha256 is known
    only from its bytes, so it is downloaded (hashed, if local) and checked before anything is published, and published
    under that hash (:func:`realize` hashes it again as it reads, so a file changed meanwhile is refused)."""
    if file.url.startswith("file:"):
        path = file_path(file.url)
        try:
            sha = fsio.sha256_file(path)
        except OSError as e:
            raise FetchError(f"cannot read {path} ({file.url}): {e.strerror}") from None
        _check(file, sha)
        return realize(store, path, sha, compiler=compiler).tree
    store.require_publish_access()
    path, sha = _download(store, file, http)
    try:
        return realize(store, path, sha, compiler=compiler).tree
    finally:
        remove_download(store, path)


def obtain(
    store: Store, files: list[RemoteFile], interpreter: Interpreter, sources: Sources, *, http: Http | None = None,
    jobs: int = 4, compiler: Compiler | None = None,
) -> list[Tree]:
    """Trees for ``files`` (same order): wheels through :func:`fetch_trees`, sdists downloaded and built once per
    (sdist, interpreter) by :func:`wheelstore.fetch.build.ensure_built`."""
    client = http or Http(offline=sources.offline)
    try:
        wheels = [f for f in files if f.is_wheel]
        trees = dict(zip((_key(f) for f in wheels), fetch_trees(store, wheels, client, jobs=jobs,
                                                                       compiler=compiler), strict=True))
        for sdist in (f for f in files if not f.is_wheel):
            if _key(sdist) in trees:
                continue
            from .build import ensure_built

            path = download(store, sdist, client)
            try:
                sha = sdist.sha256 or fsio.sha256_file(path)  # a local sdist may come without a hash
                trees[_key(sdist)] = ensure_built(store, path, sha, interpreter, sources)
                active(Kind.UNPACK).advance()  # the install's count of trees (the build realized it)
            finally:
                remove_download(store, path)
        return [trees[_key(f)] for f in files]
    finally:
        if http is None:
            client.close()


def find_wheel(store: Store, filename: str, sha256: str, sources: Sources, http: Http) -> Path | None:
    """Download the wheel ``filename`` with exactly the bytes ``sha256`` names from the indexes (``verify --repair``
    re-deriving a damaged tree); the staging path, which the caller removes with :func:`remove_download`, or None
    when no index offers those bytes."""
    parsed = distribution(filename)
    if parsed is None:
        return None
    files = IndexClient(sources, http).files(parsed[0])
    match = next((f for f in files if f.filename == filename and f.sha256 == sha256), None)
    return download(store, match, http) if match is not None else None


def download(store: Store, file: RemoteFile, http: Http) -> Path:
    """Download one file (an sdist, for the build stage) into the store's staging area, checked like a wheel.

    The caller owns the returned file and removes it with :func:`remove_download` when done.
    """
    _sha256(file)
    store.require_publish_access()
    return _download(store, file, http)[0]


def download_private(file: RemoteFile, http: Http, into: Path) -> tuple[Path, str]:
    """Download one file into ``into`` (a private directory of the caller's, not the store's staging area), checked
    like any download; its path and sha256. For a client of a store service, which may create nothing in the store."""
    if distribution(file.filename) is None:
        raise FetchError(f"{file.filename!r} ({file.url}) is not a wheel or sdist file name")
    _sha256(file)
    path = into / file.filename
    try:
        with open(path, "xb") as out, _task(file) as task:
            return path, _stream(out, file, http, task)
    except OSError as e:
        raise FetchError(f"cannot download {file.filename} into {into}: {e.strerror}") from None


def remove_download(store: Store, path: Path) -> None:
    """Remove a file :func:`download` returned, with the private staging directory that holds it."""
    staging = store.root / "staging"
    if path.parent.parent != staging:
        raise ValueError(f"{path} is not a download in {staging}")
    fsio.remove_tree(path.parent.name, dir_fd=store.area_fd("staging"))


# -- downloading ----------------------------------------------------------------------------------------------------


def _key(file: RemoteFile) -> str:
    return file.sha256 or file.url


def _sha256(file: RemoteFile) -> str | None:
    """The file's sha256, checked to be one (it names store entries); required unless the file is local or its
    bytes are checked against the requirement's hashes (``accepted``) once downloaded."""
    sha = file.sha256
    if sha is None:
        if file.url.startswith("file:") or file.accepted:
            return None  # hashed as it is read, like any local wheel
        raise FetchError(f"{file.filename} ({file.url}) has no sha256 hash, and wheelstore checks every download",
                         hint="use an index that lists sha256 hashes, or pin it with --hash=sha256:... or a lock")
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise FetchError(f"{file.filename}: the index gives {sha!r} as its sha256, which is not a sha256 hex digest")
    return sha


def _download(store: Store, file: RemoteFile, http: Http) -> tuple[Path, str]:
    """Stream ``file`` into a new private staging directory; its path and sha256 (checked), or an error with nothing
    left behind."""
    if distribution(file.filename) is None:
        raise FetchError(f"{file.filename!r} ({file.url}) is not a wheel or sdist file name")
    log.debug("downloading %s", file.url)
    staging_fd = store.area_fd("staging")
    name = store.staging_name("download", file.sha256 or hashlib.sha256(file.url.encode()).hexdigest())
    try:
        dir_fd = store.policy.mkdir(name, Role.STAGING_DIR, dir_fd=staging_fd)
    except OSError as e:
        raise FetchError(f"cannot download {file.filename}: cannot create {store.root}/staging/{name}: "
                         f"{e.strerror}") from None
    try:
        try:
            fd = store.policy.create(file.filename, dir_fd=dir_fd)
            with os.fdopen(fd, "wb") as out, _task(file) as task:
                sha = _stream(out, file, http, task)
        except OSError as e:
            raise FetchError(f"cannot download {file.filename}: writing into {store.root}/staging failed: "
                             f"{e.strerror}") from None
    except BaseException:
        fsio.remove_tree(name, dir_fd=staging_fd)
        raise
    finally:
        os.close(dir_fd)
    return store.root / "staging" / name / file.filename, sha


def _label(file: RemoteFile) -> str:
    """How the display names a file: its distribution's name and version, which fit where file names did not
    (``pyarrow-26.0.1-cp311-…whl``)."""
    parsed = distribution(file.filename)
    return f"{parsed[0]} {parsed[1]}" if parsed else file.filename


def _task(file: RemoteFile) -> Task:
    """The display's row for one download."""
    return current().task(Kind.DOWNLOAD, _label(file), file.size)


def _stream(out: BinaryIO, file: RemoteFile, http: Http, task: Task) -> str:
    """Write the body into ``out``, retrying a cut-off body from the start, then check length and hash; the sha256."""
    for attempt in range(1, ATTEMPTS + 1):
        out.seek(0)
        out.truncate()
        digest = hashlib.sha256()
        written = 0
        try:
            with http.stream(file.url) as body:
                total = file.size if file.size is not None else body.length
                task.update(total=total, completed=0)
                for chunk in body.chunks:
                    cancel.check()  # Ctrl-C: the caller removes the staging directory
                    written += len(chunk)
                    if file.size is not None and written > file.size:
                        raise FetchError(f"{file.filename} from {file.url} is longer than the {file.size} bytes "
                                         "the index announced")
                    digest.update(chunk)
                    out.write(chunk)
                    task.advance(len(chunk))
                if body.length is not None and written != body.length:
                    raise DownloadCutOff(f"download of {file.filename} was cut off")
            break
        except DownloadCutOff:
            if attempt == ATTEMPTS:
                raise DownloadCutOff(
                    f"download of {file.filename} from {file.url} was cut off ({written} bytes received), "
                    f"{ATTEMPTS} times; nothing was published", hint="retry later, or check the network or proxy"
                ) from None
            cancel.sleep(RETRY_DELAY * 2 ** (attempt - 1))
    out.flush()
    if file.size is not None and written != file.size:
        raise FetchError(f"{file.filename} from {file.url} is {written} bytes; the index announced {file.size}")
    _check(file, digest.hexdigest())
    task.done(f"downloaded {file.filename} ({sizes.decimal(written)})")
    return digest.hexdigest()


#: required hashes a mismatch names before it says how many more there are
SHOWN_HASHES = 3


def _check(file: RemoteFile, actual: str) -> None:
    """Refuse bytes whose sha256 is not the one the link lists or, for a link that lists none, not one of the
    requirement's (``file.accepted``)."""
    expected = file.sha256
    if expected is not None and actual != expected:
        raise HashMismatch(
            f"{file.filename} from {file.url} has sha256 {actual}, not the expected {expected}; nothing was published",
            hint="the index, a mirror or a proxy served other bytes than it lists: retry, or report it to the index",
        )
    if expected is None and file.accepted and actual not in file.accepted:
        required = sorted(file.accepted)
        shown = " or ".join(required[:SHOWN_HASHES])
        shown += f" (or {len(required) - SHOWN_HASHES} more)" if len(required) > SHOWN_HASHES else ""
        raise HashMismatch(
            f"{file.filename} from {file.url} has sha256 {actual}, not the required {shown}; nothing was published",
            hint="its link lists no hash, so it was checked once downloaded: fix the --hash, or the file served there",
        )


# -- a small entry point, for tests and debugging -------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m wheelstore.fetch.download --store S --index-url U NAME[SPEC]...``: fetch the best wheels into the
    store."""
    import argparse
    import json

    from packaging.requirements import InvalidRequirement, Requirement

    from .index import IndexClient

    parser = argparse.ArgumentParser(prog="python -m wheelstore.fetch.download")
    parser.add_argument("--store")
    parser.add_argument("--index-url", action="append", default=[])
    parser.add_argument("--find-links", action="append", default=[])
    parser.add_argument("--no-index", action="store_true")
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--retries", type=int, default=5)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("requirements", nargs="+")
    args = parser.parse_args(argv)
    http = Http(retries=args.retries)
    try:
        sources = Sources(index_urls=() if args.no_index else tuple(args.index_url),
                          find_links=tuple(args.find_links), no_index=args.no_index)
        client = IndexClient(sources, http)
        interpreter = Interpreter.inspect(sys.executable)
        files = []
        for text in args.requirements:
            try:
                req = Requirement(text)
            except InvalidRequirement as e:
                raise FetchError(f"{text!r} is not a requirement: {requirement_problem(text, e)}") from None
            best = client.best_wheel(req.name, req.specifier, interpreter)
            if best is None:
                raise FetchError(f"no wheel of {text} for this interpreter in {', '.join(sources.index_urls)}")
            files.append(best)
        from ..base.progress import LineReporter, Reporter, reporting

        shown = Reporter() if args.quiet else LineReporter(sys.stderr)
        with Store.select(args.store) as store, reporting(shown):
            trees = fetch_trees(store, files, http, jobs=args.jobs)
    except WheelstoreError as e:
        print(f"error: {e.oneline()}", file=sys.stderr)
        return e.exit_code
    finally:
        http.close()
    print(json.dumps([{"filename": f.filename, "key": t.key, "tree": str(t.path)}
                      for f, t in zip(files, trees, strict=True)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
