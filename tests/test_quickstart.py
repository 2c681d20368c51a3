"""The README's quick start, run exactly as written: its two commands, with Debian's own (externally managed, PEP 668)
/usr/bin/python3 first on a stock PATH, a fresh empty HOME, and a fresh copy of the checkout's tracked files, so that
nothing lands in the developer's checkout or home and nothing installed by hand beforehand can make it pass.

Needs root (the first command runs apt-get, as the README says) and the package registry (it installs wheelstore,
then requests, from it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SYSTEM_PYTHON = "/usr/bin/python3"
STOCK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # a root login's PATH on Debian 12
DEMO_VENV = Path("/tmp/demo-venv")  # named in the README's first command
NESTED = "WHEELSTORE_QUICKSTART_NESTED"  # set for the second command, whose suite would run this test again
SMALL_TEST_FILE = "tests/test_names.py"  # what the second command's pytest runs here: small, fast, no network

pytestmark = pytest.mark.network


def quick_start_commands(readme: str) -> list[str]:
    """The fenced ``sh`` blocks of the README's ``## Quick start`` section, each one command."""
    section = re.search(r"^## Quick start\n(.*?)(?=^## |\Z)", readme, re.MULTILINE | re.DOTALL)
    assert section, "README.md has no '## Quick start' section"
    blocks = re.findall(r"^```sh\n(.*?)^```", section.group(1), re.MULTILINE | re.DOTALL)
    assert len(blocks) == 2, f"README.md's Quick start must have exactly two ```sh blocks, it has {len(blocks)}"
    return [b.strip() for b in blocks]


def test_quick_start_commands_are_read() -> None:
    first, second = quick_start_commands(README.read_text())
    assert "pip install ." in first and "wheelstore install" in first
    assert second.startswith("scripts/test")


def _clean_env(home: Path) -> dict[str, str]:
    """The machine's environment (its pip and uv configuration, proxies) without anything that points into this
    run's own home, venv, store or pytest, with a stock PATH and the fresh HOME."""
    drop = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "CONDA_PREFIX")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in drop and not k.startswith(("XDG_", "WHEELSTORE_", "PYTEST_", "PYENV_"))
    }
    env.update(HOME=str(home), PATH=STOCK_PATH, DEBIAN_FRONTEND="noninteractive")
    return env


def _copy_checkout(dest: Path) -> None:
    """The checkout's tracked files (as they are in the work tree), else the tree without .git and .venv."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-z"], check=True, capture_output=True
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(
            ROOT,
            dest,
            symlinks=True,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", "*.egg-info"),
        )
        return
    for name in filter(None, listed.split("\0")):
        src = ROOT / name
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the work tree, not yet committed
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / name, follow_symlinks=False)


def _run(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command],
        check=False, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=1800,
    )


def _said(command: str, done: subprocess.CompletedProcess[str]) -> str:
    out = (done.stdout + done.stderr)[-6000:]
    return f"{command}\nexited {done.returncode}; the end of what it printed:\n{out}"


@pytest.fixture
def scratch() -> Iterator[tuple[Path, Path]]:
    """A fresh empty HOME and a fresh copy of the checkout, both under /tmp, and no /tmp/demo-venv before or after."""
    shutil.rmtree(DEMO_VENV, ignore_errors=True)
    home = Path(tempfile.mkdtemp(prefix="wheelstore-quickstart-home-", dir="/tmp"))
    checkout = Path(tempfile.mkdtemp(prefix="wheelstore-quickstart-checkout-", dir="/tmp"))
    try:
        _copy_checkout(checkout)
        yield home, checkout
    finally:
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(checkout, ignore_errors=True)
        shutil.rmtree(DEMO_VENV, ignore_errors=True)


def test_quick_start_as_written(scratch: tuple[Path, Path]) -> None:
    if os.environ.get(NESTED):
        pytest.skip("run by the quick start's own second command")
    if os.geteuid() != 0:
        pytest.skip("the quick start runs as root (apt-get; the tests create real users)")
    home, checkout = scratch
    first, second = quick_start_commands((checkout / "README.md").read_text())

    # Debian's own interpreter, externally managed, is the python3 the commands find.
    stdlib = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    assert (Path(stdlib) / "EXTERNALLY-MANAGED").is_file(), f"{SYSTEM_PYTHON} is not externally managed ({stdlib})"
    found = shutil.which("python3", path=STOCK_PATH)
    assert found and os.path.realpath(found) == os.path.realpath(SYSTEM_PYTHON), f"python3 on {STOCK_PATH} is {found}"

    env = _clean_env(home)
    done = _run(first, checkout, env)
    assert done.returncode == 0, _said(first, done)
    imported = subprocess.run(
        [str(DEMO_VENV / "bin" / "python"), "-c", "import requests"],
        check=False, env=env, capture_output=True, text=True,
    )
    assert imported.returncode == 0, imported.stderr

    # The second command runs the whole suite, this test included; .ci/run runs that same command in full. Here it
    # runs exactly as written, with pytest told (PYTEST_ADDOPTS) to collect one small file only, and this test told
    # to skip itself should it ever be collected inside.
    done = _run(second, checkout, {**env, "PYTEST_ADDOPTS": SMALL_TEST_FILE, NESTED: "1"})
    assert done.returncode == 0, _said(second, done)
    assert re.search(r"\b[1-9][0-9]* passed\b", done.stdout), _said(second, done)
    assert (checkout / ".venv" / "bin" / "python").exists()
