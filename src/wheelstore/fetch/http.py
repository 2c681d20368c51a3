"""One pooled HTTP client for the process, and ``file://`` URLs read from disk the same way.

Index pages and downloads go through :class:`Http`: a urllib3 pool (connections reused across threads), retries with
exponential backoff on connection errors and on 429/500/502/503/504, timeouts, the system's TLS trust store (so
``SSL_CERT_FILE``/``SSL_CERT_DIR`` work as they do for OpenSSL), and ``HTTPS_PROXY``/``NO_PROXY``. urllib3 is imported
when the first network request is made, so a warm install that never leaves the store does not pay for it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urljoin, urlsplit

from ..base.errors import DownloadCutOff, FetchError

if TYPE_CHECKING:
    import urllib3

#: bytes per read of a response body (or a file:// one), as it is streamed to disk and hashed
BODY_CHUNK = 1 << 16
#: statuses worth retrying: rate limiting and the usual transient server and gateway failures
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_REDIRECTS = 10


@dataclass(frozen=True)
class Page:
    """A fetched index or find-links page."""

    url: str  #: the final URL, after redirects: relative links resolve against it
    content_type: str  #: without parameters, lowercased
    body: bytes


@dataclass
class Body:
    """A response body being streamed: its announced length, and its chunks."""

    url: str
    length: int | None
    chunks: Iterator[bytes]


def _user_agent() -> str:
    from .. import __version__

    return f"wheelstore/{__version__}"


def file_path(url: str) -> Path:
    """The local path a ``file://`` URL names."""
    return Path(unquote(urlsplit(url).path))


class Http:
    """A pooled, retrying HTTP(S) client; ``file://`` URLs are served from disk through the same calls.

    ``offline`` refuses every network URL with a one-line error, so a caller can prove it never needed the network.
    """

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        retries: int = 5,
        backoff: float = 0.25,
        maxsize: int = 10,
        cafile: str | None = None,
        offline: bool = False,
    ) -> None:
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.retries = retries
        self.backoff = backoff
        self.maxsize = maxsize
        self.cafile = cafile
        self.offline = offline
        self.user_agent = _user_agent()
        self._lock = threading.Lock()
        self._pools: dict[str, urllib3.PoolManager] = {}

    # -- pools -----------------------------------------------------------------------------------------------------

    def _pool(self, url: str) -> urllib3.PoolManager:
        """The pool for ``url``: direct, or through the proxy the environment names for its scheme and host."""
        import urllib.request  # here, not at the top: start-up time matters when the store has everything

        parts = urlsplit(url)
        proxies = urllib.request.getproxies_environment()
        proxy = proxies.get(parts.scheme)
        if proxy and urllib.request.proxy_bypass(parts.hostname or ""):
            proxy = None
        key = proxy or ""
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                import ssl

                import urllib3

                context = ssl.create_default_context(cafile=self.cafile)
                common: dict[str, Any] = {"maxsize": self.maxsize, "ssl_context": context, "num_pools": 20}
                pool = urllib3.ProxyManager(proxy, **common) if proxy else urllib3.PoolManager(**common)
                self._pools[key] = pool
            return pool

    def _retry(self) -> urllib3.Retry:
        import urllib3

        return urllib3.Retry(
            total=self.retries,
            connect=self.retries,
            read=self.retries,
            status=self.retries,
            redirect=0,
            backoff_factor=self.backoff,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET"}),
            raise_on_status=False,
            respect_retry_after_header=True,
        )

    def _timeout(self) -> urllib3.Timeout:
        import urllib3

        return urllib3.Timeout(connect=self.connect_timeout, read=self.timeout)

    def _request(self, url: str, headers: dict[str, str], *, decode: bool) -> tuple[str, urllib3.BaseHTTPResponse]:
        """The response for ``url`` after retries and redirects, and the URL that finally answered.

        Redirects are followed here rather than by urllib3, so the final URL (which relative links resolve against)
        is known exactly, and a redirect can never lead to a ``file:`` or other non-HTTP URL.
        """
        import urllib3

        if self.offline:
            raise FetchError(f"{url} would need the network, and this run is offline",
                             hint="run without --offline, or install what the store already has")
        headers = {"User-Agent": self.user_agent, **headers}
        for _hop in range(MAX_REDIRECTS + 1):
            if urlsplit(url).scheme not in ("http", "https"):
                raise FetchError(f"cannot fetch {url}: only http, https and file URLs are supported")
            try:
                response = self._pool(url).request(
                    "GET", url, headers=headers, preload_content=False, decode_content=decode,
                    retries=self._retry(), timeout=self._timeout(), redirect=False,
                )
            except urllib3.exceptions.MaxRetryError as e:
                hint = None
                if "CERTIFICATE_VERIFY_FAILED" in str(e.reason):
                    hint = "if the server is right, set SSL_CERT_FILE to a CA bundle that trusts its certificate"
                raise FetchError(f"cannot fetch {url}: {_reason(e.reason)}", hint=hint) from None
            except urllib3.exceptions.HTTPError as e:
                raise FetchError(f"cannot fetch {url}: {_reason(e)}") from None
            location = response.get_redirect_location()
            if not location:
                return url, response
            response.drain_conn()
            response.release_conn()
            url = urljoin(url, location)
        raise FetchError(f"cannot fetch {url}: more than {MAX_REDIRECTS} redirects")

    # -- the calls -------------------------------------------------------------------------------------------------

    def get(self, url: str, *, accept: str = "*/*") -> Page | None:
        """The whole page at ``url``, or None when there is none (404, 410, or a missing local file)."""
        if url.startswith("file:"):
            return _file_page(url)
        import urllib3

        url, response = self._request(url, {"Accept": accept}, decode=True)
        try:
            if response.status in (404, 410):
                return None
            if response.status != 200:
                raise FetchError(f"cannot fetch {url}: HTTP {response.status}{_retried(response)}")
            try:
                body = response.read()
            except urllib3.exceptions.HTTPError as e:
                raise FetchError(f"cannot fetch {url}: {_reason(e)}") from None
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            return Page(url, content_type, body)
        finally:
            response.release_conn()

    @contextmanager
    def stream(self, url: str) -> Iterator[Body]:
        """The body of ``url`` in chunks, as the bytes were sent (no content decoding)."""
        if url.startswith("file:"):
            path = file_path(url)
            try:
                f = open(path, "rb")  # noqa: SIM115 - closed below
            except OSError as e:
                raise FetchError(f"cannot read {path} ({url}): {e.strerror}") from None
            with f:
                yield Body(url, os.fstat(f.fileno()).st_size, iter(lambda: f.read(BODY_CHUNK), b""))
            return
        import urllib3

        url, response = self._request(url, {"Accept-Encoding": "identity"}, decode=False)
        done = False
        try:
            if response.status != 200:
                raise FetchError(f"cannot download {url}: HTTP {response.status}{_retried(response)}")
            length = response.headers.get("Content-Length")

            def chunks() -> Iterator[bytes]:
                nonlocal done
                try:
                    yield from response.stream(BODY_CHUNK, decode_content=False)
                except urllib3.exceptions.HTTPError as e:
                    raise DownloadCutOff(f"download of {url} was cut off: {_reason(e)}") from None
                done = True

            yield Body(url, int(length) if length and length.isdigit() else None, chunks())
        finally:
            if not done:  # an unread or broken body: the connection must not go back to the pool as it is
                response.close()
            response.release_conn()

    def close(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.clear()
            self._pools.clear()


def _reason(error: BaseException | None) -> str:
    """A urllib3 error as a short phrase, without the connection reprs and nested wrappers it carries."""
    if error is None:
        return "unknown error"
    text = str(error)
    if "): " in text and text.startswith(("HTTPConnection(", "HTTPSConnection(")):
        text = text.split("): ", 1)[1]
    text = text.replace("Failed to establish a new connection: ", "")
    while text.startswith("(") and text.endswith(")") and text.count("(") == text.count(")"):
        inner = text[1:-1]
        if inner.count("(") < inner.count(")"):
            break
        text = inner
    return " ".join(text.split())[:300]


def _retried(response: urllib3.BaseHTTPResponse) -> str:
    history = response.retries.history if response.retries is not None else ()
    if not history:
        return ""
    return f" (after {len(history)} {'retry' if len(history) == 1 else 'retries'})"


def _file_page(url: str) -> Page | None:
    """A local page: a file, or a directory's ``index.html`` (how a PEP 503 tree on disk is laid out)."""
    path = file_path(url)
    if path.is_dir():
        path = path / "index.html"
        if not url.endswith("/"):
            url += "/"
    try:
        body = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise FetchError(f"cannot read {path}: {e.strerror}") from None
    kind = "application/vnd.pypi.simple.v1+json" if path.suffix == ".json" else "text/html"
    return Page(url, kind, body)
