"""A root store service for the benchmarks (issue 20): ``wheelstore init STORE --service`` and ``wheelstore serve``
as root, so users' installs get hard links made by the service into their own venvs (auto picks them).

The socket goes under /tmp: a store on a loop-mounted image under /var/tmp, or bench/.work, may make the default
``STORE/service.sock`` long, and a Unix socket's path has at most 107 bytes.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: the service's log, outside every measured image
LOG = Path("/var/tmp/wheelstore-bench-service.log")
#: what the service's environment is: no pip or uv configuration of root's
ISOLATED = {"PIP_CONFIG_FILE": os.devnull, "UV_NO_CONFIG": "1", "LANG": "C.UTF-8", "PATH": "/usr/bin:/bin",
            "HOME": "/root"}


@contextmanager
def root_service(store: Path, socket: Path, bindir: Path) -> Iterator[None]:
    """A service store at ``store`` made by root, served by root on ``socket`` until the block ends."""
    socket.unlink(missing_ok=True)
    if not (store / "config.toml").exists():
        subprocess.run([str(bindir / "wheelstore"), "init", "-q", str(store), "--service", "--socket", str(socket)],
                       check=True, env=ISOLATED, capture_output=True, text=True)
    with LOG.open("a") as log:
        proc = subprocess.Popen([str(bindir / "wheelstore"), "serve", "--store", str(store)], env=ISOLATED,
                                stdout=log, stderr=log, cwd="/")
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"wheelstore serve --store {store} did not start (see {LOG})")
            time.sleep(0.05)
        yield
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, which removes the socket and closes the store (so its image can be unmounted)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def user_env(user: str) -> dict[str, str]:
    """A real user's environment for an install: their own HOME (so their own cache), nothing of root's."""
    return {**ISOLATED, "HOME": f"/home/{user}", "USER": user, "LOGNAME": user}
