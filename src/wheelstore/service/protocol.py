"""What client and service say to each other over the service's Unix socket, and the checks both apply to it.

Every message is a frame: a 4-byte big-endian length, then that many bytes. A request or an answer is one JSON
object; an ``upload`` request is followed by exactly ``size`` raw bytes (the wheel), nothing else. Nothing a client
sends is a path the service reads or writes: a wheel is named by its URL and sha256, or sent as bytes, and the
service derives every store path from digests it computed itself.

Requests (``op``), each answered by one object, ``{"ok": true, ...}`` or ``{"ok": false, "error": ..., "hint": ...}``:

- ``hello`` ``{version}``: the protocol's ``version`` and ``wheelstore``'s, the store's root and id, who it takes
  the peer for (``uid``, ``user``), the cache tags it compiles bytecode for (``bytecode``), and whether it can
  ``link``;
- ``publish`` ``{url, filename, sha256, target[, size]}``: fetch that file (from an index the service allows), check
  its sha256, publish its tree (pycs for ``target`` compiled in) -> ``{key, unpacked}``; ``size``, as the index gives
  it, lets a budget refuse a wheel before it is fetched (the unpacked tree is checked in any case);
- ``upload`` ``{filename, size, sha256?, target}`` + bytes: the same for a wheel the client has (its own build);
- ``pycs`` ``{key, target}``: the tree's pyc unit for ``target`` -> ``{unit}`` (None: no trusted interpreter there);
- ``root`` ``{venv, node, host, fs, fs_type, anchor, dists, linking?}``: record the peer's venv as a gc root, written
  by the service for the peer's uid (the fields and their checks, and the pin ``linking``: :mod:`.rootdoc`) ->
  ``{root}``;
- ``repair`` ``{key, url?}``: ``verify --repair`` of one tree, by the service, if it is damaged; its wheel from
  ``url`` (an allowed index's, checked against ``key``) or the service's own index -> ``{repaired: [keys]}``;
- ``link`` ``{key, fds, entries: [[fd index, name, path in the tree], ...]}``, followed by one byte carrying ``fds``
  descriptors of the peer's own venv directories (``SCM_RIGHTS``): hard-link those files of the published tree
  ``key`` as ``name`` in those directories (a service running as root only: ``hello`` says ``link``; the checks:
  :mod:`.links`) -> ``{results: [None | {error, errno}, ...]}``, one per entry.

Answers may carry a ``note`` (a warning for the user: published without pycs, say). A refused ``upload`` or ``link``
closes the connection (its bytes or descriptors may be unread); any other answer leaves it open for the next request.

``target`` is what the service needs to compile for an interpreter, never a path to one:
``{"cache_tag": "cpython-311", "version": [3, 11]}``. The service compiles only with an interpreter of its own.
"""

from __future__ import annotations

import json
import re
import struct
import time
from typing import TYPE_CHECKING, Any

from ..base.errors import ServiceError

if TYPE_CHECKING:
    import socket

__all__ = [
    "FD_MARK", "MAX_MESSAGE", "VERSION", "check_filename", "check_sha256", "check_target", "check_url", "recv_exact",
    "recv_message", "send_message",
]

#: the protocol's version, in ``hello``
VERSION = 1
#: the largest JSON frame either side accepts: requests are coordinates, never data (a large venv's ``root``, a few
#: thousand distributions, is the largest)
MAX_MESSAGE = 1 << 20
#: the one byte a ``link`` request's descriptors ride on, sent right after its frame
FD_MARK = b"F"
_LENGTH = struct.Struct(">I")
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: a wheel's or sdist's file name: one path component of plain characters
_FILENAME = re.compile(r"[A-Za-z0-9_.+!-]{1,200}\.(whl|tar\.gz|zip)")
_CACHE_TAG = re.compile(r"[a-z]+-[0-9]{2,4}")


def send_message(sock: socket.socket, message: dict[str, Any]) -> None:
    data = json.dumps(message, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise ServiceError(f"a message of {len(data)} bytes is over the protocol's {MAX_MESSAGE}")
    sock.sendall(_LENGTH.pack(len(data)) + data)


def recv_message(sock: socket.socket, limit: int = MAX_MESSAGE, deadline: float | None = None) -> dict[str, Any]:
    """One JSON object; ServiceError for anything else (too long, not JSON, not an object, nested deeper than the
    parser goes, a closed connection, or not all there by ``deadline``, a :func:`time.monotonic` time)."""
    (length,) = _LENGTH.unpack(recv_exact(sock, _LENGTH.size, deadline))
    if length > limit:
        raise ServiceError(f"a message of {length} bytes is over the limit of {limit}")
    try:
        message = json.loads(recv_exact(sock, length, deadline), parse_constant=_not_json)
    except RecursionError:  # "[[[[...": the parser recurses per level, and the limit is reached long before 1 MiB
        raise ServiceError("a message nested deeper than the protocol's parser goes") from None
    except ValueError:  # not UTF-8, not JSON, NaN, or an integer of more digits than Python converts
        raise ServiceError("a message that is not JSON") from None
    if not isinstance(message, dict):
        raise ServiceError("a message that is not a JSON object")
    return message


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def recv_exact(sock: socket.socket, n: int, deadline: float | None = None) -> bytes:
    """Exactly ``n`` bytes (the socket's timeout bounds each wait, and ``deadline`` all of them, so that a peer
    trickling a byte at a time cannot hold the connection for ever); ServiceError if the peer closes first."""
    parts, left, timeout = [], n, sock.gettimeout()
    try:
        while left:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ServiceError(f"a message was not all there in time ({left} of its bytes still to come)")
                sock.settimeout(remaining if timeout is None else min(remaining, timeout))
            try:
                chunk = sock.recv(min(left, 1 << 20))
            except TimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise ServiceError(f"a message was not all there in time ({left} of its bytes still to "
                                       "come)") from None
                raise
            if not chunk:
                raise ServiceError(f"the connection closed {left} bytes before the end of a message")
            parts.append(chunk)
            left -= len(chunk)
    finally:
        if deadline is not None:
            sock.settimeout(timeout)
    return b"".join(parts)


def check_sha256(value: object) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise ServiceError("a sha256 must be 64 lowercase hex digits")
    return value


def check_filename(value: object) -> str:
    if not isinstance(value, str) or not _FILENAME.fullmatch(value) or value.startswith("."):
        raise ServiceError("not a wheel's or sdist's file name")
    return value


def check_url(value: object) -> str:
    """An http(s) URL without credentials or fragment; which hosts are allowed is the service's config."""
    if not isinstance(value, str) or len(value) > 2048 or not value.startswith(("https://", "http://")):
        raise ServiceError("a URL must be http(s)")
    if any(c in value for c in "#\\\0\r\n ") or "@" in value.split("/", 3)[2]:
        raise ServiceError("a URL must have no credentials, fragment, spaces or control characters")
    path = value.split("/", 3)[3] if value.count("/") >= 3 else ""
    if any(seg in (".", "..") for seg in path.split("?")[0].split("/")) or re.search(r"%(2e|2f|5c)", path, re.I):
        raise ServiceError("a URL's path must have no '.' or '..' segments, nor encoded dots or slashes: an allowed "
                           "index's prefix must mean what it says")
    return value


def check_target(value: object) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != {"cache_tag", "version"}:
        raise ServiceError("a target is {cache_tag, version}")
    tag, version = value["cache_tag"], value["version"]
    if not isinstance(tag, str) or not _CACHE_TAG.fullmatch(tag):
        raise ServiceError("a target's cache_tag is like cpython-311")
    if not (isinstance(version, list) and len(version) == 2 and all(type(v) is int and 0 <= v < 1000 for v in version)):
        raise ServiceError("a target's version is [major, minor]")
    return {"cache_tag": tag, "version": version}

