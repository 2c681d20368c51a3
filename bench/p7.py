"""``python -m bench.p7``: P7 (issue 18, acceptance 6), a warm install of the benchmark set from a store on GlusterFS
against the same from a store on the local disk, and uv's warm install from a cache on each, in the same run; then
``verify`` and ``stats`` on both stores.

GlusterFS as the tests run it (tests/cluster.py): glusterd with one brick on a local directory, the volume mounted
with FUSE over a loopback address, so every metadata operation is a round trip through the FUSE client and the brick
daemon, as on a cluster node (without the network's own latency). Every venv is on the local disk, as a node's
scratch or home would be: from the volume, wheelstore links by symlink (``auto`` picks fold) and uv copies (no hard
link across filesystems). wheelstore's store and uv's cache on the volume are made and warmed by this run, and so
are those on the local disk; everything runs as root, each store private, with a cache of its own
(``XDG_CACHE_HOME``). One more row shows a node's first install from the volume: without this node's records of
earlier checks (removed before each run), every tree is walked, as before issue 18's records.

The commands alternate (A B C ..., each run starting one command later) and every install gets a venv of its own,
removed only at the end; the report gives medians, spreads and the ratios. Needs root (it mounts) and /dev/fuse;
glusterd is started if none runs, and stopped at the end if this run started it and no one else uses it.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tests.cluster import GLUSTER_HOST, GLUSTERD_LOCK, _ensure_glusterd, _gluster, _run, _stop_our_glusterd, _unmount

from . import drop_image, fresh_image
from .__main__ import HERE, PYTHON, SET36, sh, tool_venv, uv_and_wheels

SCRATCH = Path("/var/tmp/wheelstore-bench-p7")
#: this run's own wheelstore, installed from this checkout (bench/__main__'s is shared with other checkouts' runs)
TOOL = SCRATCH / "tool"


@contextmanager
def gluster_volume(base: Path) -> Iterator[Path]:
    """A GlusterFS volume with its brick in ``base``, mounted at ``base/mnt``, as tests/cluster.py makes one; named
    after this process, so a test run cleans it up if this one is killed."""
    name = f"wsfix-{os.getpid()}"
    lock_fd = os.open(GLUSTERD_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    mnt = base / "mnt"
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)  # no test run stops glusterd while this one sets up
        try:
            _ensure_glusterd()
            (base / "brick").mkdir(parents=True)
            _gluster("volume", "create", name, f"{GLUSTER_HOST}:{base / 'brick'}", "force")
            _gluster("volume", "start", name)
        finally:
            fcntl.flock(lock_fd, fcntl.LOCK_SH)
        mnt.mkdir()
        _run("mount", "-t", "glusterfs", f"{GLUSTER_HOST}:/{name}", str(mnt))
        yield mnt
    finally:
        if os.path.ismount(mnt):
            _unmount(mnt)
        if name in _gluster("volume", "list").split():
            _gluster("volume", "stop", name, "force")
            _gluster("volume", "delete", name)
        _stop_our_glusterd(lock_fd)
        os.close(lock_fd)


def timed(argv: list[str], env: dict[str, str]) -> float:
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def alternate(commands: dict[str, Callable[[], float]], runs: int) -> dict[str, list[float]]:
    """Each command ``runs`` times, in turn, each run starting one command later."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    order = list(commands)
    for number in range(runs):
        shift = number % len(order)
        for name in order[shift:] + order[:shift]:
            times[name].append(commands[name]())
    return times


def row(name: str, values: list[float]) -> dict[str, Any]:
    return {"command": name, "median_s": round(statistics.median(values), 3), "min_s": round(min(values), 3),
            "max_s": round(max(values), 3), "runs": [round(v, 3) for v in values]}


@dataclass
class Found:
    """What one run measured: seconds per run of each command, and the link modes wheelstore used from GlusterFS."""

    installs: dict[str, list[float]]
    verbs: dict[str, list[float]]
    link_modes: list[str]


def measure(args: argparse.Namespace, scratch: Path, mnt: Path, uv: Path, wheels: Path, ws: str) -> Found:
    """Make and warm a store and a uv cache on each filesystem, then time everything."""
    stores = {"GlusterFS": mnt / "store", "local": scratch / "store"}
    caches = {"GlusterFS": mnt / "uv-cache", "local": scratch / "uv-cache"}
    env = {**os.environ, "XDG_CACHE_HOME": str(scratch / "cache"), "UV_NO_CONFIG": "1"}
    targets = scratch / "targets"
    made = iter(range(1 << 30))

    def venv(tool: str) -> Path:
        path = targets / str(next(made))
        if tool == "uv":
            sh(uv, "venv", "-q", "-p", PYTHON, path)
        else:
            sh(PYTHON, "-m", "venv", "--without-pip", path)
        return path

    def ws_argv(where: str) -> list[str]:
        return [ws, "--store", str(stores[where]), "install", "-q", "--venv", str(venv("ws")), "-r",
                str(args.requirements), "-f", str(wheels)]

    def ws_install(where: str, *, records: bool = True) -> Callable[[], float]:
        def go() -> float:
            if not records:
                shutil.rmtree(scratch / "cache" / "wheelstore" / "fastcheck", ignore_errors=True)
            return timed(ws_argv(where), env)
        return go

    def uv_sync(where: str) -> Callable[[], float]:
        return lambda: timed([str(uv), "pip", "sync", "-q", "--offline", "--no-index", "--find-links", str(wheels),
                              "--cache-dir", str(caches[where]), "-p", str(venv("uv") / "bin" / "python"),
                              str(args.requirements)], env)

    def ws_verb(where: str, *verb: str) -> Callable[[], float]:
        return lambda: timed([ws, "--store", str(stores[where]), *verb], env)

    for where, store in stores.items():  # warm: the trees with their bytecode (fold compiles it in), then records
        sh(ws, "init", "-q", store, env=env)
        ws_install(where)()
        uv_sync(where)()
    warm = json.loads(sh(*ws_argv("GlusterFS"), "--json", env=env).stdout)
    ws_install("local")()
    installs = alternate({
        "wheelstore, GlusterFS store": ws_install("GlusterFS"),
        "wheelstore, local store": ws_install("local"),
        "wheelstore, GlusterFS store, no records (a node's first install)": ws_install("GlusterFS", records=False),
        "uv, GlusterFS cache": uv_sync("GlusterFS"),
        "uv, local cache": uv_sync("local"),
    }, args.runs)
    verbs = alternate({f"{verb} {where}": ws_verb(where, verb) for verb in ("verify", "stats") for where in stores},
                      args.verb_runs)
    shutil.rmtree(targets, ignore_errors=True)
    return Found(installs, verbs, sorted({d["link_mode"] for d in warm["installed"]}))


def report(args: argparse.Namespace, found: Found, uv: Path, fs: str) -> None:
    installs, verbs, modes = found.installs, found.verbs, found.link_modes
    med = {name: statistics.median(v) for name, v in {**installs, **verbs}.items()}
    ratios = {
        "wheelstore warm install, GlusterFS / local (goal <= 2)":
            med["wheelstore, GlusterFS store"] / med["wheelstore, local store"],
        "uv warm install, GlusterFS / local": med["uv, GlusterFS cache"] / med["uv, local cache"],
        "wheelstore / uv, GlusterFS": med["wheelstore, GlusterFS store"] / med["uv, GlusterFS cache"],
        "wheelstore / uv, local": med["wheelstore, local store"] / med["uv, local cache"],
        "wheelstore first install on a node, GlusterFS / local":
            med["wheelstore, GlusterFS store, no records (a node's first install)"] / med["wheelstore, local store"],
        "verify, GlusterFS / local": med["verify GlusterFS"] / med["verify local"],
        "stats, GlusterFS / local": med["stats GlusterFS"] / med["stats local"],
    }
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cores": os.cpu_count(),
            "local_filesystem": fs, "glusterfs": sh("glusterfs", "--version").stdout.splitlines()[0],
            "uv": sh(uv, "--version").stdout.strip(), "python": PYTHON, "runs": args.runs,
            "verb_runs": args.verb_runs, "requirements": args.requirements.name, "machine": platform.platform(),
            "wheelstore_link_modes_from_glusterfs": modes}
    install_rows, verb_rows = [row(n, v) for n, v in installs.items()], [row(n, v) for n, v in verbs.items()]
    data = {"meta": meta, "installs": install_rows, "verbs": verb_rows,
            "ratios": {k: round(v, 2) for k, v in ratios.items()}}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"p7-{stamp}.json").write_text(json.dumps(data, indent=2) + "\n")
    lines = [f"P7: warm install of {args.requirements.name} into a new venv on the local disk ({fs}), from a store "
             f"or cache on GlusterFS ({meta['glusterfs']}, one brick, FUSE over loopback) and on the local disk; "
             f"{meta['cores']} cores, {meta['uv']}, {args.runs} alternating runs, {meta['date']}; wheelstore linked "
             f"{', '.join(modes)} from GlusterFS", "",
             "| command | median | spread |", "|---|---|---|"]
    lines += [f"| {r['command']} | {r['median_s']:.3f} s | {r['min_s']:.3f}-{r['max_s']:.3f} s |"
              for r in install_rows]
    lines += ["", f"verify (quick) and stats of each store, {args.verb_runs} alternating runs", "",
              "| command | median | spread |", "|---|---|---|"]
    lines += [f"| wheelstore {r['command']} | {r['median_s']:.3f} s | {r['min_s']:.3f}-{r['max_s']:.3f} s |"
              for r in verb_rows]
    lines += ["", "| ratio | |", "|---|---|"]
    lines += [f"| {k} | {v:.2f}x |" for k, v in ratios.items()]
    text = "\n".join(lines) + "\n"
    (args.out / f"p7-{stamp}.md").write_text(text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.p7")
    parser.add_argument("--runs", type=int, default=7, help="runs of each install")
    parser.add_argument("--verb-runs", type=int, default=3, help="runs of verify and stats on each store")
    parser.add_argument("--requirements", type=Path, default=SET36)
    parser.add_argument("--work", type=Path, default=HERE / ".work", help="where uv and the wheels are kept")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--fresh-fs", action="store_true",
                        help="put the brick, the local store and cache and every venv on a new ext4 image")
    args = parser.parse_args()
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        raise SystemExit("P7 runs as root with /dev/fuse: it mounts a GlusterFS volume")
    uv, wheels = uv_and_wheels(args.work.absolute(), args.requirements)
    ws = str(tool_venv(TOOL) / "wheelstore")
    shutil.rmtree(SCRATCH / "run", ignore_errors=True)
    scratch = SCRATCH / "run"
    image = SCRATCH / "p7.img"
    if args.fresh_fs:
        fresh_image(image, scratch, "20G")
    else:
        scratch.mkdir(parents=True)
    try:
        fs = " ".join(sh("findmnt", "-n", "-o", "FSTYPE,SOURCE", "--target", str(scratch)).stdout.split())
        with gluster_volume(scratch / "gluster") as mnt:
            found = measure(args, scratch, mnt, uv, wheels, ws)
    finally:
        if args.fresh_fs:
            drop_image(image, scratch)
        shutil.rmtree(scratch, ignore_errors=True)
    report(args, found, uv, fs)


if __name__ == "__main__":
    main()
