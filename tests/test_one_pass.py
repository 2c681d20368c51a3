"""One pass through the plan (issue 16, point 8; acceptance 9): an install looks each tree up in the store once,
reads the venv's site-packages once, and checks a pinned set's dependencies from its trees without a resolver."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from wheelstore.cli.main import main
from wheelstore.store.store import Store, Tree

from .conftest import SYSTEM_PYTHON
from .test_fetching import _wheel


class _Counted:
    """Every Store.lookup by key, and every read of a site-packages directory's entries, while installing."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, sites: set[str]) -> None:
        self.lookups: Counter[str] = Counter()
        self.scans = 0
        real_lookup = Store.lookup
        real_listdir, real_scandir = os.listdir, os.scandir

        def lookup(store: Store, key: str, **kwargs: Any) -> Tree | None:
            self.lookups[key] += 1
            return real_lookup(store, key, **kwargs)

        def listing(real: Callable[..., Any]) -> Callable[..., Any]:
            def counted(path: Any = ".") -> Any:
                if isinstance(path, (str, os.PathLike)) and os.fspath(path) in sites:
                    self.scans += 1
                return real(path)

            return counted

        monkeypatch.setattr(Store, "lookup", lookup)
        monkeypatch.setattr(os, "listdir", listing(real_listdir))
        monkeypatch.setattr(os, "scandir", listing(real_scandir))

    def reset(self) -> None:
        self.lookups.clear()
        self.scans = 0


def _venv(path: Path) -> tuple[Path, str]:
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(path)], check=True)
    site = next(path.glob("lib/python3*/site-packages"))
    return path, str(site)


def test_each_tree_is_looked_up_once_and_site_packages_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_home: Path
) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    made = [_wheel(wheels, "top", "1.0", requires=("mid>=1",)), _wheel(wheels, "mid", "1.0", requires=("leaf",)),
            _wheel(wheels, "leaf", "1.0")]
    digests = {w.name.split("-")[0]: hashlib.sha256(w.read_bytes()).hexdigest() for w in made}
    keys = set(digests.values())
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("".join(f"{name}==1.0 --hash=sha256:{digest}\n" for name, digest in digests.items()))
    store = tmp_path / "store"
    Store.init(store).close()
    venvs = [_venv(tmp_path / f"venv{n}") for n in range(3)]
    counted = _Counted(monkeypatch, {site for _v, site in venvs})

    def install(venv: Path, *args: str) -> None:
        counted.reset()
        assert main(["-q", "--store", str(store), "install", "--venv", str(venv), *args]) == 0

    from wheelstore.fetch import http
    from wheelstore.resolve import resolver

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a hashed, complete set needs no resolver and no network")

    with monkeypatch.context() as m:  # not offline: a complete hashed set simply has no use for either
        m.setattr(resolver, "lock", forbidden)
        m.setattr(http.Http, "__init__", forbidden)
        install(venvs[0][0], "-r", str(requirements), "-f", str(wheels))  # cold: every wheel published now
    assert counted.scans == 1
    # the plan's look (none there), the look again under the key lock (another process may have published it
    # meanwhile), and the check of the manifest that stands once committed (another publisher's may): no more
    assert {k: counted.lookups[k] for k in keys} == dict.fromkeys(keys, 3), counted.lookups
    with monkeypatch.context() as m:
        m.setattr(resolver, "lock", forbidden)
        m.setattr(http.Http, "__init__", forbidden)
        install(venvs[1][0], "-r", str(requirements), "-f", str(wheels))  # warm: the trees are found, not published
    assert counted.scans == 1
    assert {k: counted.lookups[k] for k in keys} == dict.fromkeys(keys, 1), counted.lookups
    assert max(counted.lookups.values()) == 1, counted.lookups  # the pyc units too
    install(venvs[2][0], "--offline", "top==1.0")  # a pin whose dependencies the store's metadata names
    assert counted.scans == 1
    assert max(counted.lookups.values()) == 1, counted.lookups
    assert sorted(d.name for d in Path(venvs[2][1]).glob("*.dist-info")) == [
        "leaf-1.0.dist-info", "mid-1.0.dist-info", "top-1.0.dist-info"]
