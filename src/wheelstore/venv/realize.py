"""The install's realize stage: a tree for every candidate the store does not hold yet, published here, or, in a
service store, by the store's service (:mod:`wheelstore.service.client`), which this user cannot write.

Through a service a wheel is named by its URL and the index's sha256 (``publish``: the service fetches and checks it),
or sent as bytes when only this user has it (a local wheel, a wheel built here from an sdist: ``upload``). Nothing is
downloaded or built into the store's staging area: sdists go to a private directory of this process's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..base import cancel, progress
from ..base.errors import ServiceError, TreeDamaged, WheelstoreError
from ..base.interpreter import Interpreter
from ..base.progress import Kind
from ..fetch.sources import Sources
from ..resolve.candidates import Candidate
from ..service.client import ServiceClient, service_socket, target_of
from ..store.bytecode import InTree
from ..store.store import Store, Tree

if TYPE_CHECKING:
    from packaging.utils import NormalizedName

    from ..base.distinfo import Distribution
    from ..fetch.index import RemoteFile

#: requests to the service at once: it fetches and unpacks in parallel, as installs of a plain store do
SERVICE_JOBS = 4


def realize(store: Store, interpreter: Interpreter, cands: Sequence[Candidate], sources: Sources | None, *,
            compile_into: bool = False, optimized: bool = False) -> list[Tree]:
    """The trees of ``cands`` (none of which the plan found in the store), in order: realized from a local wheel,
    or downloaded (once per store) and built from an sdist where needed. With ``compile_into`` (auto, fold), wheels
    published now get this interpreter's pycs inside the tree (see :mod:`wheelstore.store.bytecode`)."""
    if not cands:
        return []
    missing = [c for c in cands if c.wheel is None and c.remote is None]
    if missing or (sources is None and any(c.wheel is None for c in cands)):
        raise WheelstoreError(f"no file for {', '.join(c.where for c in missing or cands)}")
    if service_socket(store) is not None:
        return _via_service(store, interpreter, cands, sources or Sources.from_environment())
    local = [c for c in cands if c.wheel is not None]
    remote = [c for c in cands if c.wheel is None]
    compiler = InTree(store, interpreter, optimized=optimized) if compile_into and interpreter.cache_tag else None
    trees: dict[int, Tree] = {}
    # one count of trees and one of modules for the whole install, local wheels and downloads alike
    with progress.phase(Kind.UNPACK, "wheels", len(cands), progress.UNPACKED), \
            progress.phase(Kind.COMPILE, "bytecode", 0, progress.COMPILED) if compiler else contextlib.nullcontext():
        if local:
            trees.update(zip(map(id, local), _local(store, local, compiler), strict=True))
        if remote and sources is not None:
            from ..fetch.download import obtain

            got = obtain(store, [c.remote for c in remote if c.remote is not None], interpreter, sources,
                         compiler=compiler)
            trees.update(zip(map(id, remote), got, strict=True))
    return [trees[id(c)] for c in cands]


def _local(store: Store, local: Sequence[Candidate], compiler: InTree | None) -> list[Tree]:
    from ..store.publish import realize_many

    outcomes = realize_many(store, [(Path(c.wheel), c.sha256) for c in local if c.wheel],
                            compiler=compiler, absent=True)  # the plan looked each hash given up
    for outcome in outcomes:
        if isinstance(outcome, WheelstoreError):
            raise outcome
    return [o.tree for o in outcomes if not isinstance(o, WheelstoreError)]


def _via_service(store: Store, interpreter: Interpreter, cands: Sequence[Candidate], sources: Sources) -> list[Tree]:
    """Ask the service for each tree, a few at once; each answer names the key the service published."""
    client = ServiceClient.of(store)
    target = target_of(interpreter)
    with progress.phase(Kind.UNPACK, "wheels", len(cands), progress.UNPACKED) as unpacking:

        def one(cand: Candidate) -> Tree:
            key = _ask(client, cand, interpreter, sources, target)["key"]
            tree = store.lookup(key) if isinstance(key, str) else None
            if tree is None:
                raise ServiceError(f"the store service published {cand.where} as {key!r}, but {store.root} has no "
                                   "such tree", hint=f"see 'wheelstore doctor --store {store.root}'")
            unpacking.advance()
            return tree

        with cancel.threads(max(1, min(SERVICE_JOBS, len(cands))), "publish") as pool:
            return list(pool.map(one, cands))


def _ask(client: ServiceClient, cand: Candidate, interpreter: Interpreter, sources: Sources,
         target: dict[str, Any] | None) -> dict[str, Any]:
    """One candidate's request: ``upload`` for a file of ours, ``publish`` for an index's wheel with its sha256; an
    sdist (or a file whose hash the index does not give) is fetched and built privately, then uploaded."""
    if cand.wheel is not None:
        return client.upload(Path(cand.wheel), cand.sha256, target)
    remote = cand.remote
    assert remote is not None  # realize checked
    if remote.url.startswith("file:"):  # the service reads no path of ours: the bytes are sent
        from ..fetch.http import file_path

        local = file_path(remote.url)
        if remote.is_wheel:
            return client.upload(local, remote.sha256, target)
        return _build_and_upload(client, local, remote, interpreter, sources, target)
    if remote.is_wheel and remote.sha256 is not None:
        return client.publish(remote.url, remote.filename, remote.sha256, target, remote.size)
    return _build_and_upload(client, None, remote, interpreter, sources, target)


def _build_and_upload(client: ServiceClient, local: Path | None, remote: RemoteFile, interpreter: Interpreter,
                      sources: Sources, target: dict[str, Any] | None) -> dict[str, Any]:
    """Fetch (unless ``local``) into a private directory, build if an sdist, and upload the wheel."""
    import tempfile

    from ..base import fsio
    from ..fetch.build import build_private
    from ..fetch.download import download_private
    from ..fetch.http import Http

    with tempfile.TemporaryDirectory(prefix="wheelstore-service-") as tmp:
        where = Path(tmp)
        if local is None:
            with contextlib.closing(Http(offline=sources.offline)) as http:
                (where / "download").mkdir()
                local, sha = download_private(remote, http, where / "download")
        else:
            sha = remote.sha256 or fsio.sha256_file(local)
        if remote.is_wheel:
            return client.upload(local, sha, target)
        wheel = build_private(local, sha, interpreter, sources, where)
        return client.upload(wheel, None, target)


# -- the other requests of an install on a service store ------------------------------------------------------------


def service_pycs(store: Store, tree: Tree, interpreter: Interpreter) -> None:
    """On a service store, have the service publish the tree's pyc unit for ``interpreter`` when the store lacks it
    (then :func:`wheelstore.venv.checks.intact_pycs` finds it, and creates nothing); elsewhere nothing."""
    target = target_of(interpreter)
    if target is None or tree.manifest.bytecode == interpreter.cache_tag or service_socket(store) is None:
        return
    if not store.has(f"{tree.key}-{interpreter.cache_tag}"):
        ServiceClient.of(store).pycs(tree.key, target)


def service_repair(store: Store) -> Callable[[Tree], Tree] | None:
    """On a service store, how an install has a damaged tree repaired: by the service (from the wheel it fetches by
    the tree's sha256); None elsewhere (the install repairs it itself, where it may)."""
    if service_socket(store) is None:
        return None
    client = ServiceClient.of(store)

    def repair(tree: Tree) -> Tree:
        m = tree.manifest
        try:
            client.repair(tree.key)
        except ServiceError as e:
            raise TreeDamaged(f"the store's copy of {m.name} {m.version} is damaged; it was not linked, and the store "
                              f"service did not repair it: {e.message}", hint=e.hint) from None
        fresh = store.lookup(tree.key)
        if fresh is None:
            raise TreeDamaged(f"the store's copy of {m.name} {m.version} is damaged, and the store service left no "
                              "tree after repairing it", hint=f"wheelstore --store {store.root} verify")
        return fresh

    return repair


def service_root(store: Store, venv: Path, interpreter: Interpreter,
                 dists: Mapping[NormalizedName, Distribution] | None = None, linking: Collection[str] = ()) -> bool:
    """On a service store, have the service write the venv's gc root (True); elsewhere False: the caller writes it.

    With ``linking``, the root is also the pin of what an install is about to link: it takes no gc lock there (see
    :func:`wheelstore.store.storelock.install_lock`), so gc keeps the pinned keys until its final root, without
    ``linking``, replaces the pin (:mod:`wheelstore.service.rootdoc`). Once the answer comes, a gc that ran before the
    pin has unpublished all it will: the caller then checks the trees are still there (:func:`gone`).
    """
    if service_socket(store) is None:
        return False
    ServiceClient.of(store).register(store, venv, interpreter, dists, linking)
    return True


def gone(store: Store, trees: Sequence[Tree]) -> list[Tree]:
    """The trees whose manifests are gone from ``store``: a gc removed them before the install pinned them."""
    return [t for t in trees if not store.has(t.key)]
