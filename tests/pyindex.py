"""A real package index for tests: PEP 503 HTML and PEP 691 JSON over HTTP on 127.0.0.1, with an access log and
fault injection per file.

Routes::

    /simple/                 the project list
    /simple/<name>/          a project page: JSON when the Accept header asks for it, HTML otherwise; a name that is
                             not normalized is redirected (301) to its normalized form, as PyPI does
    /files/<filename>        the file itself
    /flat/                   every file on one flat page, for --find-links

Links are relative (``../../files/...``), so clients must resolve them against the page URL. Every request is logged
in memory and, if ``log_file`` is given, appended to it as ``METHOD PATH STATUS BYTES`` (so processes of other users
can be checked from outside). ``tls=self_signed_certificate(dir)`` serves HTTPS. The server runs in a thread of the
test process; clients running as other users reach it over TCP.
"""

from __future__ import annotations

import hashlib
import html
import json
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import quote, unquote, urlsplit

from packaging.utils import (
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)

JSON_TYPE = "application/vnd.pypi.simple.v1+json"


@dataclass
class Served:
    """One file the index offers, what the index says about it, and the faults to inject when it is downloaded."""

    path: Path
    sha256: str
    yanked: str | None = None  #: the reason ("" for none) when yanked
    requires_python: str | None = None
    listed_sha256: str | None = None  #: the hash to list instead of the real one
    wrong_bytes: bool = False  #: serve bytes that do not match the listed hash (same length)
    cut: int = 0  #: how many more downloads to cut off half-way (-1: every one)
    fail: int = 0  #: how many more downloads to answer with ``fail_status``
    fail_status: int = 503
    delay: float = 0.0  #: seconds to wait before sending the body (widens race windows, never asserted on)
    pace: float = 0.0  #: seconds to wait between the body's 64 KiB chunks: a slow download, to be caught mid-way
    stall: float = 0.0  #: seconds to wait half-way through the body (a download in progress, for a display)

    @property
    def filename(self) -> str:
        return self.path.name

    @property
    def metadata(self) -> bytes | None:
        """A wheel's METADATA, served beside it as ``<file>.metadata`` (PEP 658)."""
        if not self.filename.endswith(".whl"):
            return None
        import zipfile

        with zipfile.ZipFile(self.path) as zf:
            name = next((n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")), None)
            return zf.read(name) if name else None

    @property
    def project(self) -> str:
        if self.filename.endswith(".whl"):
            return parse_wheel_filename(self.filename)[0]
        return parse_sdist_filename(self.filename)[0]


@dataclass(frozen=True)
class Hit:
    """One request, as the access log records it."""

    method: str
    path: str
    status: int
    sent: int  #: body bytes sent


@dataclass
class PyIndex:
    """Start with ``with PyIndex(...) as index:``; add files with :meth:`add` at any time."""

    log_file: Path | None = None
    json_api: bool = True  #: answer JSON to clients that ask for it
    tls: tuple[Path, Path] | None = None  #: (certificate, key): serve HTTPS instead of HTTP
    files: dict[str, Served] = field(default_factory=dict)
    log: list[Hit] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- content ---------------------------------------------------------------------------------------------------

    def add(self, path: Path, **options: object) -> Served:
        """Offer ``path``; ``options`` are :class:`Served` fields (``yanked``, ``requires_python``, faults)."""
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        served = Served(path, digest, **options)  # type: ignore[arg-type]  # the options are Served's own fields
        with self._lock:
            self.files[path.name] = served
        return served

    # -- addresses -------------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "the index is not running"
        host, port = self._server.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host!s}:{port}"

    @property
    def simple_url(self) -> str:
        return f"{self.url}/simple"

    @property
    def flat_url(self) -> str:
        return f"{self.url}/flat/"

    def file_url(self, filename: str) -> str:
        return f"{self.url}/files/{quote(filename)}"

    # -- the log ---------------------------------------------------------------------------------------------------

    def downloads(self, filename: str | None = None, status: int | None = 200) -> list[Hit]:
        """The requests for files (one file's, if named), with the given status (None: any)."""
        def wanted(hit: Hit) -> bool:
            if hit.method != "GET" or (status is not None and hit.status != status):
                return False
            if filename:
                return hit.path == "/files/" + quote(filename)
            return hit.path.startswith("/files/") and not hit.path.endswith(".metadata")

        with self._lock:
            return [h for h in self.log if wanted(h)]

    def _record(self, hit: Hit) -> None:
        with self._lock:
            self.log.append(hit)
            if self.log_file is not None:
                with open(self.log_file, "a") as f:
                    f.write(f"{hit.method} {hit.path} {hit.status} {hit.sent}\n")

    # -- running ---------------------------------------------------------------------------------------------------

    def __enter__(self) -> PyIndex:
        handler = type("Handler", (_Handler,), {"index": self})
        server = _Server(("127.0.0.1", 0), handler)
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="pyindex", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    # -- pages -----------------------------------------------------------------------------------------------------

    def _project_files(self, project: str) -> list[Served]:
        with self._lock:
            return sorted((s for s in self.files.values() if s.project == project), key=lambda s: s.filename)

    def project_html(self, project: str, prefix: str = "../../files/") -> bytes:
        return _html(self._project_files(project), prefix)

    def project_json(self, project: str) -> bytes:
        entries = []
        for s in self._project_files(project):
            entry: dict[str, object] = {
                "filename": s.filename,
                "url": "../../files/" + quote(s.filename),
                "hashes": {"sha256": s.listed_sha256 or s.sha256},
                "size": s.path.stat().st_size,
                "yanked": (s.yanked or True) if s.yanked is not None else False,
            }
            if s.metadata is not None:  # PEP 658/714: resolvers read it instead of downloading the wheel
                entry["core-metadata"] = {"sha256": hashlib.sha256(s.metadata).hexdigest()}
            if s.requires_python is not None:
                entry["requires-python"] = s.requires_python
            entries.append(entry)
        return json.dumps({"meta": {"api-version": "1.1"}, "name": project, "files": entries}).encode()


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1 that nothing trusts unless told to (for ``PyIndex(tls=...)``)."""
    cert, key = directory / "index-cert.pem", directory / "index-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


def _html(files: list[Served], prefix: str) -> bytes:
    lines = ["<!DOCTYPE html>", "<html><body>"]
    for s in files:
        attrs = f'href="{prefix}{quote(s.filename)}#sha256={s.listed_sha256 or s.sha256}"'
        if s.requires_python is not None:
            attrs += f' data-requires-python="{html.escape(s.requires_python)}"'
        if s.yanked is not None:
            attrs += f' data-yanked="{html.escape(s.yanked)}"' if s.yanked else " data-yanked"
        if s.metadata is not None:
            attrs += f' data-core-metadata="sha256={hashlib.sha256(s.metadata).hexdigest()}"'
        lines.append(f"<a {attrs}>{html.escape(s.filename)}</a><br>")
    lines.append("</body></html>")
    return "\n".join(lines).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many client processes connect at once

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hung up is normal here (cut-off tests, pools closing); anything else is reported."""
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)  # type: ignore[arg-type]  # what the base class passed


class _Handler(BaseHTTPRequestHandler):
    index: PyIndex
    protocol_version = "HTTP/1.1"  # keep-alive, so a pooled client really reuses connections

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        pass

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        path = urlsplit(self.path).path
        parts = path.split("/")
        if path == "/simple/":
            with self.index._lock:
                projects = sorted({s.project for s in self.index.files.values()})
            body = "".join(f'<a href="{p}/">{p}</a>\n' for p in projects).encode()
            self._send(200, "text/html", body)
        elif len(parts) == 3 and parts[1] == "simple" and parts[2]:
            self._redirect(f"/simple/{parts[2]}/")
        elif len(parts) == 4 and parts[1] == "simple" and parts[3] == "":
            self._project(unquote(parts[2]))
        elif path == "/flat/":
            with self.index._lock:
                files = sorted(self.index.files.values(), key=lambda s: s.filename)
            self._send(200, "text/html", _html(files, "../files/"))
        elif len(parts) == 3 and parts[1] == "files" and parts[2].endswith(".whl.metadata"):
            with self.index._lock:
                served = self.index.files.get(unquote(parts[2]).removesuffix(".metadata"))
            meta = served.metadata if served is not None else None
            if meta is None:
                self._send(404, "text/plain", b"no such file\n")
            else:
                self._send(200, "text/plain", meta)
        elif len(parts) == 3 and parts[1] == "files":
            self._file(unquote(parts[2]))
        else:
            self._send(404, "text/plain", b"not found\n")

    def do_HEAD(self) -> None:  # noqa: N802 - the stdlib's name
        """Headers only, as a real index answers them (resolvers probe files before range requests)."""
        path = urlsplit(self.path).path
        with self.index._lock:
            served = self.index.files.get(unquote(path.rsplit("/", 1)[-1])) if path.startswith("/files/") else None
        self.send_response(200 if served else 404)
        self.send_header("Content-Length", str(served.path.stat().st_size if served else 0))
        self.end_headers()
        self.index._record(Hit("HEAD", self.path, 200 if served else 404, 0))

    def _project(self, name: str) -> None:
        project = canonicalize_name(name)
        if project != name:
            self._redirect(f"/simple/{project}/")
        elif not self.index._project_files(project):
            self._send(404, "text/plain", b"no such project\n")
        elif self.index.json_api and JSON_TYPE in self.headers.get("Accept", ""):
            self._send(200, JSON_TYPE, self.index.project_json(project))
        else:
            self._send(200, "text/html; charset=utf-8", self.index.project_html(project))

    def _file(self, filename: str) -> None:
        with self.index._lock:
            served = self.index.files.get(filename)
            if served is None:
                fault = "missing"
            elif served.fail:
                served.fail -= 1
                fault = "fail"
            elif served.cut:
                served.cut -= 1 if served.cut > 0 else 0
                fault = "cut"
            else:
                fault = "wrong" if served.wrong_bytes else ""
        if served is None:
            self._send(404, "text/plain", b"no such file\n")
            return
        if fault == "fail":
            self._send(served.fail_status, "text/plain", b"try again later\n")
            return
        data = served.path.read_bytes()
        if fault == "wrong":
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
        if served.delay:
            time.sleep(served.delay)
        if fault == "cut":
            self._send(200, "application/octet-stream", data, send=len(data) // 2)
            self.close_connection = True
        else:
            self._send(200, "application/octet-stream", data, pace=served.pace, stall=served.stall)

    def _redirect(self, location: str) -> None:
        self.send_response(301)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.index._record(Hit("GET", self.path, 301, 0))
        self.end_headers()

    def _send(self, status: int, content_type: str, body: bytes, *, send: int | None = None, pace: float = 0.0,
              stall: float = 0.0) -> None:
        """Answer with ``body`` announced in full; send only its first ``send`` bytes when cutting it off; with
        ``pace``, a 64 KiB chunk at a time, that many seconds apart; with ``stall``, wait that long half-way.

        The request is logged before the last byte goes out, so a client that has its answer finds it in the log.
        """
        chunk = body if send is None else body[:send]
        recorded = False
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            end = max(0, len(chunk) - 1)  # all but the last byte, which goes after the log entry
            step = 1 << 16 if pace else max(1, end)
            cuts = sorted({*range(step, end, step), *([len(chunk) // 2] if stall else []), end})
            start = 0
            for stop in cuts:
                self.wfile.write(chunk[start:stop])
                self.wfile.flush()
                if stall and stop == len(chunk) // 2:
                    time.sleep(stall)
                elif pace and stop < end:
                    time.sleep(pace)
                start = stop
            self.index._record(Hit("GET", self.path, status, len(chunk)))
            recorded = True
            self.wfile.write(chunk[-1:])
            self.wfile.flush()
        except OSError:  # the client went away
            self.close_connection = True
            if not recorded:
                self.index._record(Hit("GET", self.path, status, 0))
