"""Progress through the real CLI: on a pseudo-terminal of 80 columns, one live display through resolving, a slow
download, an sdist build, a lock wait, unpacking and compiling, none of its lines wrapping; plain lines without a
terminal; nothing with ``-q``."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wheelstore.store.keylock import KeyLock
from wheelstore.store.store import Store

from .conftest import SYSTEM_PYTHON, flit_core_wheel
from .pyindex import PyIndex
from .wheelmaker import make_wheel, sdist_archive

SRC = str(Path(__file__).resolve().parents[1] / "src")
COLUMNS = 80
#: a backend that says what it does and takes a while, as a real build does
BACKEND = '''import sys, time
from flit_core import buildapi as _flit
from flit_core.buildapi import *  # noqa: F401,F403

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    print("compiling the frobnicator extension", file=sys.stderr, flush=True)
    time.sleep(1.5)
    return _flit.build_wheel(wheel_directory, config_settings, metadata_directory)
'''


def _sdist(directory: Path, name: str = "slowbuild") -> Path:
    files = {
        "pyproject.toml": f'[build-system]\nrequires = ["flit_core>=3.2"]\nbuild-backend = "slowbackend"\n'
                          f'backend-path = ["."]\n\n[project]\nname = "{name}"\nversion = "0.1"\n'
                          f'description = "an sdist whose build takes a while"\n',
        "slowbackend.py": BACKEND,
        f"{name}/__init__.py": "VALUE = 7\n",
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n",
    }
    return sdist_archive(directory, name, "0.1", files)


class Setup:
    """An index offering a slow download, a wheel of many modules, a wheel whose fetch lock the test holds, and an
    sdist that builds; a store and a venv to install them into."""

    def __init__(self, workdir: Path, index: PyIndex) -> None:
        files = workdir / "files"
        files.mkdir()
        self.index = index
        data = {"slowdownload/__init__.py": b"X = 1\n", "slowdownload/data.bin": os.urandom(300_000)}
        index.add(make_wheel(files, "slowdownload", "2.0", files=data), stall=1.5)
        modules = {f"manymodules/sub{i % 8}/m{i}.py": f"def f{i}(x):\n    return x * {i}\n".encode() * 40
                   for i in range(1500)}
        index.add(make_wheel(files, "manymodules", "1.0", files=modules))
        self.held = make_wheel(files, "heldpkg", "3.1")
        index.add(self.held)
        index.add(_sdist(files))
        index.add(flit_core_wheel())  # the build backend, from the same index
        self.store = workdir / "store"
        self.venv = workdir / "venv"
        self.env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        self.env.update(PYTHONPATH=SRC, PIP_CONFIG_FILE=os.devnull, UV_NO_CONFIG="1", TERM="xterm-256color",
                        XDG_CACHE_HOME=str(workdir / "cache"))
        for args in (["init", str(self.store)], ["venv", str(self.venv), "--python", SYSTEM_PYTHON]):
            done = subprocess.run(self.command(*args), env=self.env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "wheelstore", "--store", str(self.store), *args]

    def install(self, *options: str) -> list[str]:
        return self.command(*options, "install", "--venv", str(self.venv), "--index-url", self.index.simple_url,
                            "slowdownload", "manymodules", "heldpkg", "slowbuild")

    def hold(self) -> KeyLock:
        """Take ``heldpkg``'s fetch lock, as another install fetching it would hold it."""
        import hashlib

        sha = hashlib.sha256(self.held.read_bytes()).hexdigest()
        with Store.open(self.store) as store:
            lock = KeyLock(os.dup(store.area_fd("locks")), f"fetch-{sha}.lock", store.policy)
        lock.acquire()
        return lock


@pytest.fixture
def setup(workdir: Path) -> Iterator[Setup]:
    with PyIndex() as index:
        yield Setup(workdir, index)


def _on_a_terminal(cmd: list[str], env: dict[str, str], lock: KeyLock) -> tuple[int, bytes]:
    """Run ``cmd`` with a pseudo-terminal of 80x24 as its stdin, stdout and stderr; its exit status and everything
    it wrote. ``lock`` is let go 2 s after the display first says it waits for it."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, COLUMNS, 0, 0))
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    out = bytearray()
    released: threading.Timer | None = None
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer has closed the terminal
                    break
                if not data:
                    break
                out += data
            if released is None and b"waiting for heldpkg" in re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", out):
                released = threading.Timer(2.0, lock.release)
                released.start()
            if proc.poll() is not None and not ready:
                break
    finally:
        if released is None:
            lock.release()
        else:
            released.join()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(master)
    return proc.returncode, bytes(out)


_CONTROL = re.compile(rb"\x1b\[([0-9;?]*)([A-Za-z])|\x1b[()][0-9A-Za-z]|\x1b.|[\r\n\b\t\x07]")


def _lines_written(data: bytes) -> tuple[list[str], list[str]]:
    """Interpret the terminal output as an 80-column terminal would, tracking the cursor's column: every line as
    written (its text runs between one carriage return or newline and the next, style codes left out), and the text
    runs that went past the last column (the terminal wrapped them)."""
    from rich.cells import cell_len

    col = 0
    lines: list[str] = []
    line = ""
    wrapped: list[str] = []
    pos = 0
    for m in [*_CONTROL.finditer(data), None]:
        end = m.start() if m is not None else len(data)
        text = data[pos:end].decode("utf-8", "replace")
        if text:
            line += text
            col += cell_len(text)
            if col > COLUMNS:
                wrapped.append(text)
        if m is None:
            break
        pos = m.end()
        token = m.group(0)
        if token in (b"\r", b"\n"):  # the terminal turns \n into \r\n (onlcr)
            col = 0
            if line:
                lines.append(line)
            line = ""
        elif token == b"\b":
            col = max(0, col - 1)
        elif m.group(2) in (b"C", b"D", b"G"):
            n = int(m.group(1) or b"1")
            col = col + n if m.group(2) == b"C" else max(0, col - n) if m.group(2) == b"D" else n - 1
    return [*lines, line] if line else lines, wrapped


def test_one_live_display_through_every_phase_on_80_columns(setup: Setup) -> None:
    lock = setup.hold()
    status, data = _on_a_terminal(setup.install(), setup.env, lock)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", data.decode("utf-8", "replace"))
    assert status == 0, text
    lines, wrapped = _lines_written(data)
    assert wrapped == [], wrapped
    shown = "\n".join(dict.fromkeys(lines))  # each line once: the display redraws them ten times a second
    assert "resolving slowdownload, manymodules" in shown, shown
    # the name and version, never the file name, and bytes done of the total
    assert re.search(r"downloading slowdownload 2\.0 +━+ [0-9.]+ kB/30[0-9.]+ kB", shown), shown
    assert "building slowbuild 0.1" in shown and "compiling the frobnicator extension" in shown, shown
    assert re.search(r"waiting for heldpkg 3\.1 +held by root \(pid \d+\) since", shown), shown
    assert re.search(r"unpacking wheels .*\d+/4 trees", shown), shown
    assert re.search(r"compiling bytecode .*\d+/\d+ modules", shown), shown
    # the lines that stay: uv's count, each download and build, and each phase's summary
    for line in ("Resolved ", "downloaded slowdownload-2.0-py3-none-any.whl (", "built slowbuild 0.1 in ",
                 "unpacked 4 trees in ", "compiled 1502 modules in ", " + slowbuild==0.1"):
        assert line in text, (line, text)
    assert "warning: waiting for" not in text, text  # the row said it: not a warning as well


def test_plain_lines_without_a_terminal(setup: Setup) -> None:
    lock = setup.hold()
    threading.Timer(3.0, lock.release).start()  # the wait comes early: the other wheels are fetched meanwhile
    done = subprocess.run(setup.install(), env=setup.env, capture_output=True, text=True, timeout=240,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stderr and "\r" not in done.stderr, repr(done.stderr)
    lines = done.stderr.splitlines()
    wanted = [r"Resolved \d+ packages in ", r"downloaded slowdownload-2\.0-py3-none-any\.whl \(30\d\.\d kB\)$",
              r"downloaded manymodules-1\.0-py3-none-any\.whl \(", r"downloaded heldpkg-3\.1-py3-none-any\.whl \(",
              r"downloaded slowbuild-0\.1\.tar\.gz \(", r"built slowbuild 0\.1 in \d+(\.\d\d)?m?s$",
              r"unpacked 4 trees in \d+(\.\d\d)?m?s$", r"compiled 1502 modules in \d+(\.\d\d)?m?s$",
              r"warning: waiting for locks/fetch-[0-9a-f]{64}\.lock, held by root \(pid \d+\) since "]
    for pattern in wanted:
        assert [line for line in lines if re.match(pattern, line)], (pattern, lines)


def test_pycs_compiled_while_linking_are_counted_too(setup: Setup) -> None:
    """Outside fold, a tree's pycs are a unit of their own, compiled when the venv is linked, after the unpacking:
    that wait is a phase of the display too, with its count."""
    done = subprocess.run(setup.command("install", "--venv", str(setup.venv), "--index-url", setup.index.simple_url,
                                        "--link-mode", "symlink", "manymodules"),
                          env=setup.env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert [line for line in lines if re.match(r"unpacked 1 tree in ", line)], lines
    assert [line for line in lines if re.match(r"compiled 15\d\d modules in ", line)], lines


def test_quiet_prints_nothing(setup: Setup) -> None:
    done = subprocess.run(setup.install("-q"), env=setup.env, capture_output=True, text=True, timeout=240,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and done.stdout == ""


#: threads finishing downloads (each a summary line) on a live display whose refresh thread redraws meanwhile; with
#: thread switches as often as the interpreter allows, a lock-order inversion between the two deadlocks at once
_MANY_FINISHING = '''import os, sys, threading, time
sys.setswitchinterval(1e-6)
from wheelstore.cli.display import LiveReporter
from wheelstore.base.progress import Kind
master, slave = os.openpty()
def drain():
    while True:
        try:
            if not os.read(master, 65536):
                return
        except OSError:
            return
threading.Thread(target=drain, daemon=True).start()
reporter = LiveReporter(os.fdopen(slave, "w"))
phase = reporter.task(Kind.UNPACK, "wheels", 10)
stop = time.monotonic() + 3
def work():
    while time.monotonic() < stop:
        task = reporter.task(Kind.DOWNLOAD, "pkg 1.0", 100)
        task.advance(50)
        task.done("downloaded pkg-1.0-py3-none-any.whl (100 B)")
workers = [threading.Thread(target=work, daemon=True) for _ in range(4)]
for w in workers:
    w.start()
for w in workers:
    w.join(max(0.0, stop + 20 - time.monotonic()))
stuck = sum(w.is_alive() for w in workers)
print(f"stuck: {stuck}", flush=True)
if not stuck:
    phase.done()
    reporter.close()
os._exit(1 if stuck else 0)
'''


def test_rows_finishing_on_threads_while_the_display_redraws_never_deadlock() -> None:
    """Downloads end on worker threads (each row's summary printed above the rows, the row removed) while rich's
    refresh thread draws the rows: neither may wait for the other's lock while holding its own."""
    done = subprocess.run([sys.executable, "-c", _MANY_FINISHING], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": SRC})
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "stuck: 0"
