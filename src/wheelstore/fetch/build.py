"""sdists: built once per (sdist sha256, interpreter) with uv's build front end, then published like any wheel.

The built wheel is realized into the store (``trees/<sha256 of the wheel>``). What ties the sdist to it is a build
record, ``manifests/<sdist sha256>-<interpreter hash>.build``: a small JSON file published with the store's rules
(written in ``staging/``, sealed read-only, ``link()``-ed into place so it is never replaced), and trusted only when
it is read-only and owned by a trusted publisher, like a manifest. It lives in ``manifests/`` because every publisher
may add entries there, while a new top-level area could be created by the store's owner only.

The interpreter key holds the implementation, cache tag, SOABI and platform tag, so a build for another Python, ABI
or glibc never matches. A per-record lock makes concurrent builders of the same pair wait and reuse the first one's
result. A failed build publishes nothing and names its log, which is kept in the user's cache directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import platformdirs
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from ..base.errors import BuildError, HashMismatch, StoreError
from ..base.fsio import CHUNK
from ..base.interpreter import Interpreter, interpreter_key
from ..base.progress import Kind, current, elapsed
from ..store.commit import link_record
from ..store.policy import current_user, user_name
from ..store.publish import realize
from ..store.store import Store, Tree
from ..store.wheel import normalize_sha256
from .buildfail import build_failed
from .index import distribution
from .sources import Sources
from .uv import run_uv, uv_command, uv_failure

SUFFIX = ".build"
#: a record larger than this is not one we wrote
MAX_RECORD = 64 << 10


@dataclass(frozen=True)
class BuildRecord:
    """What ``manifests/<sdist sha256>-<interpreter hash>.build`` says (format 1)."""

    sdist: str
    sdist_sha256: str
    interpreter: str
    wheel: str
    tree: str
    publisher_uid: int
    publisher: str
    published_at: str
    format: int = 1
    kind: str = "sdist-build"

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=1, sort_keys=True) + "\n").encode()


def record_name(sdist_sha256: str, interpreter: Interpreter) -> str:
    digest = hashlib.sha256(interpreter_key(interpreter).encode()).hexdigest()[:16]
    return f"{normalize_sha256(sdist_sha256)}-{digest}{SUFFIX}"


def lookup_built(store: Store, sdist_sha256: str, interpreter: Interpreter) -> Tree | None:
    """The tree built before from this sdist for this interpreter, or None; builds nothing, needs no sdist file."""
    sha = normalize_sha256(sdist_sha256)
    return _lookup(store, record_name(sha, interpreter), sha, interpreter_key(interpreter))[0]


def ensure_built(
    store: Store, sdist: Path, sdist_sha256: str, interpreter: Interpreter, sources: Sources
) -> Tree:
    """The tree of ``sdist`` built for ``interpreter``: from the store if built before, else built now, once."""
    sha = normalize_sha256(sdist_sha256)
    ikey = interpreter_key(interpreter)
    name = record_name(sha, interpreter)
    found, _ = _lookup(store, name, sha, ikey)
    if found is not None:
        return found
    store.require_publish_access()
    with store.key_lock(name.removesuffix(SUFFIX) + "-build", f"the build of {sdist.name}"):
        found, stale = _lookup(store, name, sha, ikey)  # built while we waited for the lock
        if found is not None:
            return found
        with tempfile.TemporaryDirectory(prefix="wheelstore-build-") as tmp:
            copy = _private_copy(sdist, sha, Path(tmp))
            wheel = _build(copy, Path(tmp) / "out", interpreter, sources, ikey)
            tree = realize(store, wheel).tree
        record = BuildRecord(
            sdist=sdist.name, sdist_sha256=sha, interpreter=ikey, wheel=wheel.name, tree=tree.key,
            publisher_uid=os.geteuid(), publisher=current_user(),
            published_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        if stale:
            _remove_stale(store, name)
        if not _publish(store, name, record):  # someone published without the lock: theirs stands
            theirs, _ = _lookup(store, name, sha, ikey)
            return theirs or tree
        return tree


def build_private(sdist: Path, sdist_sha256: str, interpreter: Interpreter, sources: Sources, into: Path) -> Path:
    """A wheel of ``sdist`` built into ``into`` (a private directory of the caller's), no store involved: a client of
    a store service builds, then sends the wheel to the service, which trusts no build record of a client's."""
    copy = _private_copy(sdist, normalize_sha256(sdist_sha256), into)
    return _build(copy, into / "out", interpreter, sources, interpreter_key(interpreter))


def _private_copy(sdist: Path, sha: str, into: Path) -> Path:
    """Copy the sdist to a private directory while hashing it: uv then builds exactly the bytes that were checked."""
    target = into / sdist.name
    try:
        with open(sdist, "rb") as src, open(target, "xb") as dst:
            h = hashlib.sha256()
            while chunk := src.read(CHUNK):
                h.update(chunk)
                dst.write(chunk)
    except FileNotFoundError:
        raise BuildError(f"{sdist}: no such file") from None
    except OSError as e:
        raise BuildError(f"{sdist}: cannot be read ({e.strerror})") from None
    if h.hexdigest() != sha:
        raise HashMismatch(f"{sdist.name} has sha256 {h.hexdigest()}, expected {sha}; nothing was built")
    return target


def _log_path(sdist: Path, ikey: str) -> Path:
    logs = platformdirs.user_cache_path("wheelstore") / "build-logs"
    logs.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return logs / f"{sdist.name}-{ikey}-{stamp}-{os.getpid()}.log"


def build_wheel(source: Path, out: Path, interpreter: Interpreter, sources: Sources) -> Path:
    """One wheel of ``source`` (an sdist, or a project directory) for ``interpreter``, built by uv into ``out``."""
    return _build(source, out, interpreter, sources, interpreter_key(interpreter))


def _build(sdist: Path, out: Path, interpreter: Interpreter, sources: Sources, ikey: str) -> Path:
    """Build with uv, its output read as it comes: its last line is the detail of the build's row (a build may take
    minutes), and all of it goes to the log, kept when the build fails."""
    log = _log_path(sdist, ikey)
    cmd = [*uv_command(["build", "--wheel"], interpreter, sources), "--out-dir", str(out), str(sdist)]
    parsed = distribution(sdist.name)
    what = f"{parsed[0]} {parsed[1]}" if parsed else sdist.name
    with current().task(Kind.BUILD, what) as task:
        status, lines = run_uv(cmd, sources, task=task, log=log)
        if status == 0:
            task.done(f"built {what} in {elapsed(time.monotonic() - task.started)}")
    what = f"building {sdist.name} for {interpreter.implementation} {interpreter.python_version} failed"
    if status != 0:
        if not any(line.startswith("  cause:") for line in lines):  # uv's own failure (the network, a bad index)
            error = uv_failure(lines, what, sources, cls=BuildError)
            raise BuildError(f"{error.message}; full log: {log}", hint=error.hint or f"read {log}")
        raise build_failed(lines, sdist, interpreter, log)
    wheels = sorted(out.glob("*.whl")) if out.is_dir() else []
    if len(wheels) != 1:
        raise BuildError(f"{what}: uv reported success but left {len(wheels)} wheels; full log: {log}")
    try:
        _, _, _, tags = parse_wheel_filename(wheels[0].name)
    except InvalidWheelFilename as e:
        raise BuildError(f"{what}: the backend made {wheels[0].name}, not a valid wheel name ({e})") from None
    if not tags & set(interpreter.tags):
        raise BuildError(f"{what}: the backend made {wheels[0].name}, which this interpreter cannot install")
    log.unlink(missing_ok=True)
    return wheels[0]


# -- the record ------------------------------------------------------------------------------------------------------


def _lookup(store: Store, name: str, sha: str, ikey: str) -> tuple[Tree | None, bool]:
    """The tree a trustworthy record names, and whether a record exists whose tree is gone (stale)."""
    manifests_fd = store.area_fd("manifests")
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=manifests_fd)
    except FileNotFoundError:
        return None, False
    except OSError as e:
        raise _untrusted(store, name, e.strerror or "unreadable") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_RECORD:
            raise _untrusted(store, name, "not a regular file of sensible size", st.st_uid)
        if st.st_mode & 0o222 or not store.policy.trusted_writer(st.st_uid, store.owner_uid):
            raise _untrusted(store, name, "writable, or not written by a trusted publisher", st.st_uid)
        data = f.read(MAX_RECORD + 1)
    try:
        record = json.loads(data)
        ok = (isinstance(record, dict) and record.get("format") == 1 and record.get("kind") == "sdist-build"
              and record.get("sdist_sha256") == sha and record.get("interpreter") == ikey
              and isinstance(record.get("tree"), str) and len(record["tree"]) == 64)
    except ValueError:
        ok = False
    if not ok:
        raise _untrusted(store, name, "not a build record for this sdist and interpreter", st.st_uid)
    tree = store.lookup(record["tree"])
    return tree, tree is None


def _untrusted(store: Store, name: str, why: str, owner: int | None = None) -> StoreError:
    who = f", owned by {user_name(owner)}" if owner is not None else ""
    path = store.root / "manifests" / name
    return StoreError(f"{path} is not trustworthy ({why}{who}); it is not used",
                      hint=f"its owner or an admin should remove it: rm -f {path}")


def _remove_stale(store: Store, name: str) -> None:
    """Drop a record whose tree was removed (by gc), if it is ours to remove; otherwise it just stays unused."""
    try:
        os.unlink(name, dir_fd=store.area_fd("manifests"))
    except OSError:
        pass


def _publish(store: Store, name: str, record: BuildRecord) -> bool:
    """Write the record in staging, seal it, and link it into ``manifests/``; False if one was there already."""
    return link_record(store, "build", record.sdist_sha256, SUFFIX, name, record.to_json())
