"""The index client against a real HTTP index (JSON and HTML), a file:// tree, and find-links; and wheel choice."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from wheelstore.base.errors import FetchError
from wheelstore.base.interpreter import Interpreter
from wheelstore.fetch.http import Http, Page
from wheelstore.fetch.index import (
    IndexClient,
    RemoteFile,
    choose_wheel,
    parse_html,
    parse_json,
)
from wheelstore.fetch.sources import Sources

from .pyindex import PyIndex, self_signed_certificate
from .wheelmaker import make_wheel


def _interpreter(version: tuple[int, int, int] = (3, 11, 7)) -> Interpreter:
    return Interpreter(sys.executable, sys.prefix, sys.base_prefix, "cpython", version, "cpython-311", None, "", {})


INTERPRETER = _interpreter()
BEST_TAG = INTERPRETER.tags[0]  # e.g. cp311-cp311-manylinux_2_36_x86_64
PLATFORM_TAG = f"{BEST_TAG.interpreter}-{BEST_TAG.abi}-{BEST_TAG.platform}"


@pytest.fixture
def wheels(tmp_path: Path) -> dict[str, Path]:
    """A project with the situations a chooser must get right."""
    made = {
        "1.0-any": make_wheel(tmp_path, "demo_pkg", "1.0"),
        "1.0-platform": make_wheel(tmp_path, "demo_pkg", "1.0", tag=PLATFORM_TAG),
        "1.0-foreign": make_wheel(tmp_path, "demo_pkg", "1.0", tag="cp27-cp27m-win32"),
        "1.1-yanked": make_wheel(tmp_path, "demo_pkg", "1.1"),
        "1.2-py312": make_wheel(tmp_path, "demo_pkg", "1.2"),
        "2.0rc1": make_wheel(tmp_path, "demo_pkg", "2.0rc1"),
        "other": make_wheel(tmp_path, "other", "3.0"),
    }
    sdist = tmp_path / "demo_pkg-1.0.tar.gz"
    sdist.write_bytes(b"not really a tarball")
    made["sdist"] = sdist
    return made


def _serve(index: PyIndex, wheels: dict[str, Path]) -> None:
    for key, path in wheels.items():
        options: dict[str, object] = {}
        if key == "1.1-yanked":
            options["yanked"] = "broken build"
        if key == "1.2-py312":
            options["requires_python"] = ">=3.12"
        index.add(path, **options)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("json_api", [True, False], ids=["json", "html"])
def test_files_from_an_http_index(wheels: dict[str, Path], json_api: bool) -> None:
    with PyIndex(json_api=json_api) as index:
        _serve(index, wheels)
        client = IndexClient(Sources(index_urls=(index.simple_url,)), Http())
        files = {f.filename: f for f in client.files("Demo.Pkg")}  # normalized to /simple/demo-pkg/
        pages = [h.path for h in index.log]
    assert pages == ["/simple/demo-pkg/"]
    assert set(files) == {p.name for k, p in wheels.items() if k != "other"}
    yanked = files[wheels["1.1-yanked"].name]
    assert yanked.yanked == "broken build"
    assert files[wheels["1.0-any"].name].yanked is None
    assert files[wheels["1.2-py312"].name].requires_python == ">=3.12"
    for name, f in files.items():
        assert f.url == index.file_url(name)  # the relative link, made absolute against the page
        assert f.sha256 == _sha(wheels_by_name(wheels)[name])
        assert f.size == (wheels_by_name(wheels)[name].stat().st_size if json_api else None)
    assert files[wheels["1.0-any"].name].version == Version("1.0")
    assert files[wheels["1.0-any"].name].name == "demo-pkg"
    assert not files[wheels["sdist"].name].is_wheel


def wheels_by_name(wheels: dict[str, Path]) -> dict[str, Path]:
    return {p.name: p for p in wheels.values()}


def test_choice_of_wheel(wheels: dict[str, Path]) -> None:
    with PyIndex() as index:
        _serve(index, wheels)
        client = IndexClient(Sources(index_urls=(index.simple_url,)), Http())
        best = client.best_wheel("demo-pkg", "", INTERPRETER)
        # 2.0rc1 is a prerelease, 1.2 needs Python 3.12, 1.1 is yanked: 1.0, and of its wheels the best tag
        assert best is not None and best.filename == wheels["1.0-platform"].name
        pinned = client.best_wheel("demo-pkg", "==1.1", INTERPRETER)
        assert pinned is not None and pinned.filename == wheels["1.1-yanked"].name  # PEP 592: a pin may use it
        assert client.best_wheel("demo-pkg", ">1.0,<2", INTERPRETER) is None  # yanked and Python 3.12 only
        pre = client.best_wheel("demo-pkg", "", INTERPRETER, prereleases=True)
        assert pre is not None and pre.version == Version("2.0rc1")
        asked = client.best_wheel("demo-pkg", ">=2.0rc1", INTERPRETER)
        assert asked is not None and asked.version == Version("2.0rc1")
        only_pre = client.best_wheel("demo-pkg", ">=1.5", INTERPRETER)  # nothing else fits: a prerelease will do
        assert only_pre is not None and only_pre.version == Version("2.0rc1")
        new_python = client.best_wheel("demo-pkg", "<2", _interpreter((3, 12, 1)))
        assert new_python is not None and new_python.version == Version("1.2")
        sdist = client.best_sdist("demo-pkg", "", INTERPRETER)
        assert sdist is not None and sdist.filename == "demo_pkg-1.0.tar.gz"
        assert client.best_wheel("missing", "", INTERPRETER) is None
        assert len([h for h in index.log if h.path == "/simple/demo-pkg/"]) == 1  # one page per client


def test_tags_only_foreign_means_no_wheel(tmp_path: Path) -> None:
    foreign = make_wheel(tmp_path, "winonly", "1.0", tag="cp27-cp27m-win32")
    files = [RemoteFile(foreign.name, "https://example.invalid/" + foreign.name, {"sha256": "0" * 64})]
    assert choose_wheel(files, "winonly", SpecifierSet(), INTERPRETER) is None


def test_build_tag_breaks_ties() -> None:
    names = ["b-1.0-1-py3-none-any.whl", "b-1.0-2-py3-none-any.whl", "b-1.0-py3-none-any.whl"]
    files = [RemoteFile(n, f"https://example.invalid/{n}") for n in names]
    best = choose_wheel(files, "b", SpecifierSet(), INTERPRETER)
    assert best is not None and best.filename == "b-1.0-2-py3-none-any.whl"


def test_file_index_tree(wheels: dict[str, Path], tmp_path: Path) -> None:
    """A PEP 503 tree of index.html files on disk, as pip is configured with on this machine."""
    root = tmp_path / "mirror"
    files = root / "files"
    files.mkdir(parents=True)
    served = {}
    with PyIndex() as index:  # only to render the same pages the HTTP index serves
        for key in ("1.0-any", "1.0-platform", "other"):
            target = files / wheels[key].name
            target.write_bytes(wheels[key].read_bytes())
            served[key] = index.add(target)
        for project in ("demo-pkg", "other"):
            (root / "simple" / project).mkdir(parents=True)
            (root / "simple" / project / "index.html").write_bytes(index.project_html(project))
    client = IndexClient(Sources(index_urls=((root / "simple").as_uri(),)), Http(offline=True))
    best = client.best_wheel("Demo_Pkg", "", INTERPRETER)
    assert best is not None
    assert best.url == (files / wheels["1.0-platform"].name).as_uri()
    assert best.sha256 == served["1.0-platform"].sha256
    assert client.files("nothing-here") == []


@pytest.mark.skipif(not Path("/opt/pypi/simple/six/index.html").exists(), reason="no file:// mirror on this machine")
def test_this_machines_file_index() -> None:
    client = IndexClient(Sources(index_urls=("file:///opt/pypi/simple",)), Http(offline=True))
    best = client.best_wheel("six", "", INTERPRETER)
    assert best is not None and best.url.startswith("file:///opt/pypi/")
    assert best.sha256 is not None and Path(best.url.removeprefix("file://")).is_file()


def test_find_links_directory_and_flat_page(wheels: dict[str, Path], tmp_path: Path) -> None:
    with PyIndex() as index:
        _serve(index, wheels)
        local = tmp_path / "links"
        local.mkdir()
        (local / wheels["other"].name).write_bytes(wheels["other"].read_bytes())
        (local / "junk.txt").write_text("not a distribution")
        client = IndexClient(Sources(index_urls=(), no_index=True, find_links=(str(local), index.flat_url)), Http())
        others = client.files("other")
        demo = client.files("demo-pkg")
        assert [h.path for h in index.log] == ["/flat/"]  # the flat page is read once for every project
    assert [f.url for f in others] == [(local / wheels["other"].name).as_uri()]  # the local copy comes first
    assert others[0].size == wheels["other"].stat().st_size and others[0].sha256 is None
    assert {f.filename for f in demo} == {p.name for k, p in wheels.items() if k != "other"}
    assert all(f.url.startswith(index.url + "/files/") and f.sha256 for f in demo)


def test_offline_skips_network_locations(wheels: dict[str, Path], tmp_path: Path) -> None:
    with PyIndex() as index:
        _serve(index, wheels)
        client = IndexClient(Sources(index_urls=(index.simple_url,), find_links=(index.flat_url, str(tmp_path)),
                                     offline=True), Http(offline=True))
        assert {f.filename for f in client.files("other")} == {wheels["other"].name}  # from the local directory
        assert index.log == []


def test_unknown_project_is_empty_and_unreachable_index_is_an_error() -> None:
    with PyIndex() as index:
        client = IndexClient(Sources(index_urls=(index.simple_url,)), Http())
        assert client.files("nope") == []
        dead = index.url
    client = IndexClient(Sources(index_urls=(dead + "/simple",)), Http(retries=1, backoff=0))
    with pytest.raises(FetchError, match="cannot fetch"):
        client.files("nope")


def test_html_details() -> None:
    body = b"""<html><head><base href="https://files.example/pkgs/"></head><body>
    <a href="a-1.0-py3-none-any.whl#SHA256=ABCDEF" data-requires-python="&gt;=3.8" data-yanked="">a</a>
    <a href="sub/a-1.1.tar.gz">a</a>
    <a href="a-1.2.exe">installer</a>
    <a>no href</a>
    <a href="../evil/..%2F..%2Fa-1.3-py3-none-any.whl">sneaky</a>
    </body></html>"""
    files = parse_html(Page("https://index.example/simple/a/", "text/html", body))
    assert [(f.url, f.hashes, f.requires_python, f.yanked) for f in files] == [
        ("https://files.example/pkgs/a-1.0-py3-none-any.whl", {"sha256": "abcdef"}, ">=3.8", ""),
        ("https://files.example/pkgs/sub/a-1.1.tar.gz", {}, None, None),
    ]


def test_json_details() -> None:
    page = Page("https://index.example/simple/a/", "application/vnd.pypi.simple.v1+json", b"""{
      "meta": {"api-version": "1.0"}, "name": "a",
      "files": [
        {"filename": "a-1.0-py3-none-any.whl", "url": "https://cdn.example/a-1.0-py3-none-any.whl",
         "hashes": {"sha256": "ABC"}, "yanked": true},
        {"filename": "a-1.1-py3-none-any.whl", "url": "/f/a-1.1-py3-none-any.whl", "hashes": {},
         "yanked": "bad metadata", "requires-python": ">=3.9", "size": 12},
        {"filename": "../a-1.2-py3-none-any.whl", "url": "x", "hashes": {}}
      ]}""")
    files = parse_json(page)
    assert [(f.url, f.sha256, f.yanked, f.requires_python, f.size) for f in files] == [
        ("https://cdn.example/a-1.0-py3-none-any.whl", "abc", "", None, None),
        ("https://index.example/f/a-1.1-py3-none-any.whl", None, "bad metadata", ">=3.9", 12),
    ]
    future = Page(page.url, page.content_type, b'{"meta": {"api-version": "2.0"}, "files": []}')
    with pytest.raises(FetchError, match="version 2.0"):
        parse_json(future)
    with pytest.raises(FetchError, match="not a PEP 691"):
        parse_json(Page(page.url, page.content_type, b"<html>"))


def test_no_network_module_loaded_for_file_indexes(tmp_path: Path) -> None:
    """urllib3 is imported only when a network request is made (start-up time of warm installs)."""
    import subprocess

    code = ("import sys; from wheelstore.fetch.http import Http; from wheelstore.fetch.index import IndexClient;"
            "from wheelstore.fetch.sources import Sources;"
            f"IndexClient(Sources(index_urls=({tmp_path.as_uri()!r},)), Http()).files('x');"
            "print('urllib3' in sys.modules, 'rich' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}).stdout
    assert out.split() == ["False", "False"]


def test_tls_trusts_the_system_store_and_ssl_cert_file(wheels: dict[str, Path], tmp_path: Path) -> None:
    """A self-signed index is refused with a hint, and accepted once SSL_CERT_FILE names its certificate."""
    import subprocess

    code = ("import sys; from wheelstore.base.errors import WheelstoreError; from wheelstore.fetch.http import Http;"
            "from wheelstore.fetch.index import IndexClient; from wheelstore.fetch.sources import Sources\n"
            "try: print(len(IndexClient(Sources(index_urls=(sys.argv[1],)), Http(retries=0)).files('demo-pkg')))\n"
            "except WheelstoreError as e: print(e.oneline())")
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    env["PYTHONPATH"] = str(Path(__file__).parents[1] / "src")
    cert, key = self_signed_certificate(tmp_path)
    with PyIndex(tls=(cert, key)) as index:
        _serve(index, wheels)
        assert index.simple_url.startswith("https://")
        refused = subprocess.run([sys.executable, "-c", code, index.simple_url], env=env, capture_output=True,
                                 text=True, check=True).stdout
        trusted = subprocess.run([sys.executable, "-c", code, index.simple_url],
                                 env={**env, "SSL_CERT_FILE": str(cert)}, capture_output=True, text=True,
                                 check=True).stdout
    assert "CERTIFICATE_VERIFY_FAILED" in refused and "SSL_CERT_FILE" in refused
    assert trusted.strip() == str(len(wheels) - 1)


def test_http_proxy_and_no_proxy(wheels: dict[str, Path]) -> None:
    """HTTP_PROXY is honoured (the test index answers as the proxy, absolute request line and all), NO_PROXY too."""
    import subprocess

    code = ("import sys; from wheelstore.base.errors import WheelstoreError; from wheelstore.fetch.http import Http;"
            "from wheelstore.fetch.index import IndexClient; from wheelstore.fetch.sources import Sources\n"
            "try: print(len(IndexClient(Sources(index_urls=(sys.argv[1],)), Http(retries=0)).files('demo-pkg')))\n"
            "except WheelstoreError as e: print(e.oneline())")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONPATH"] = str(Path(__file__).parents[1] / "src")
    with PyIndex() as index:
        _serve(index, wheels)
        env["HTTP_PROXY"] = index.url
        via_proxy = subprocess.run([sys.executable, "-c", code, "http://index.invalid/simple"], env=env,
                                   capture_output=True, text=True, check=True).stdout
        bypassed = subprocess.run([sys.executable, "-c", code, "http://index.invalid/simple"],
                                  env={**env, "NO_PROXY": "index.invalid"}, capture_output=True, text=True,
                                  check=True).stdout
        paths = [h.path for h in index.log]
    assert via_proxy.strip() == str(len(wheels) - 1)
    assert paths == ["http://index.invalid/simple/demo-pkg/"]
    assert "cannot fetch http://index.invalid/simple/demo-pkg/" in bypassed


def test_redirects_are_followed_and_the_final_url_kept(wheels: dict[str, Path]) -> None:
    with PyIndex() as index:
        _serve(index, wheels)
        page = Http().get(index.url + "/simple/Demo_Pkg")  # two redirects: add the slash, then normalize
        assert [h.status for h in index.log] == [301, 301, 200]
    assert page is not None and page.url == index.url + "/simple/demo-pkg/"
    assert {f.url for f in parse_html(page)} == {index.file_url(p.name) for k, p in wheels.items() if k != "other"}
