"""``python -m bench``: P1, warm install of the benchmark set into a brand-new venv, and P4, the first import in it,
wheelstore against uv.

Commands alternate (A B A B ..., each run starting one command later) so a noisy neighbour, or the writeback of a
big install just before, hits all of them alike; the report gives the median, the spread (min-max) and each median
as a ratio of uv's default. Everything it needs is installed into bench/.work (uv from
PyPI, the set's wheels downloaded once with their hashes checked).

Run as root, it also times issue 20's service hard-link mode: a root service on a service store of the run's (its
socket under /tmp), and a real user (wsalice, not root) installing with auto, which takes the service's hard links.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import drop_image, fresh_image
from .service import root_service, user_env

HERE = Path(__file__).resolve().parent
SET36 = HERE.parent.parent / "shared" / "bench" / "set36.txt"
PYTHON = "/usr/bin/python3"
TOOL = Path("/var/tmp/wheelstore-bench/tool")
#: the root service's socket (short: a Unix socket's path has at most 107 bytes), and the user installing through it
SVC_SOCKET = Path("/tmp/wsbench-p1.sock")
SVC_USER = "wsalice"


def sh(*cmd: str | Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], check=True, text=True, capture_output=True, **kw)


def tool_venv(venv: Path = TOOL) -> Path:
    """wheelstore (and so uv) installed as users get it: pip install into a venv of its own (pycs compiled, no
    unrelated .pth files at startup), under /var/tmp so every user can run it (/root is private). Its bin directory."""
    if not (venv / "bin" / "wheelstore").exists():
        sh(PYTHON, "-m", "venv", venv)
    sh(venv / "bin" / "pip", "install", "-q", "--no-warn-script-location", "--force-reinstall", "--no-deps",
       HERE.parent)
    sh(venv / "bin" / "pip", "install", "-q", "--no-warn-script-location", HERE.parent)
    for p in [venv.parent, venv, *venv.rglob("*")]:
        if not p.is_symlink():
            mode = p.lstat().st_mode & 0o7777
            p.chmod(mode | 0o444 | (0o111 if p.is_dir() or mode & 0o100 else 0))
    return venv / "bin"


def uv_and_wheels(work: Path, requirements: Path) -> tuple[Path, Path]:
    """uv in its own venv, and the wheels (downloaded once, their hashes checked)."""
    tools = work / "tools"
    if not (tools / "bin" / "uv").exists():
        sh(sys.executable, "-m", "venv", tools)
        sh(tools / "bin" / "pip", "install", "-q", "uv")
    wheels = work / "wheels"
    if not list(wheels.glob("*.whl")):
        sh(sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--require-hashes",
           "-r", requirements, "-d", wheels)
    return tools / "bin" / "uv", wheels


def setup(work: Path, requirements: Path) -> tuple[Path, Path, Path]:
    """uv in its own venv, the wheels, a warm wheelstore store and a warm uv cache."""
    uv, wheels = uv_and_wheels(work, requirements)
    tools = uv.parent.parent
    store = work / "store"
    if not (store / "config.toml").exists():
        sh(sys.executable, "-m", "wheelstore", "init", store)
    # a warm store holds the bytecode too: a fold install compiles it into each tree it publishes (what fold needs;
    # the other modes link those pycs as well); trees published before get pyc units from the second install
    for mode in ("fold", "auto"):
        scratch = work / "ws-warm"
        shutil.rmtree(scratch, ignore_errors=True)
        sh(PYTHON, "-m", "venv", "--without-pip", scratch)
        sh(sys.executable, "-m", "wheelstore", "--store", store, "install", "-q", "--venv", scratch, "--link-mode",
           mode, "-r", requirements, "-f", wheels)
    sh(sys.executable, "-m", "wheelstore", "--store", store, "realize", "-q", *sorted(wheels.glob("*.whl")))
    uv_cache = work / "uv-cache"
    warm = work / "uv-warm"
    shutil.rmtree(warm, ignore_errors=True)
    sh(tools / "bin" / "uv", "venv", "-q", "-p", PYTHON, warm)
    sh(tools / "bin" / "uv", "pip", "sync", "-q", "--offline", "--no-index", "--find-links", wheels, "--cache-dir",
       uv_cache, "-p", warm / "bin" / "python", requirements)
    return tools / "bin" / "uv", wheels, store


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--p4-runs", type=int, default=3)
    parser.add_argument("--requirements", type=Path, default=SET36)
    parser.add_argument("--work", type=Path, default=HERE / ".work")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--imports", default="import pandas, sklearn, matplotlib.pyplot, scipy.stats",
                        help="P4's first import")
    parser.add_argument("--smoke", action="store_true",
                        help="CI's check that the runner works: a tiny set (bench/smoke.txt), one run of each")
    parser.add_argument("--fresh-fs", action="store_true",
                        help="work on a new ext4 image (root): the store, uv's cache and every venv, on a filesystem "
                             "where nothing was deleted before")
    args = parser.parse_args()
    if args.fresh_fs:
        image, mnt = args.work.absolute() / "p1.img", Path("/mnt/wheelstore-p1")
        args.work.mkdir(parents=True, exist_ok=True)
        fresh_image(image, mnt, "40G")  # sparse: every timed venv is kept to the end (pip and copy: ~0.5 GB each)
        try:
            wheels = args.work / "wheels"
            if list(wheels.glob("*.whl")):  # downloaded before: copied, not fetched again
                shutil.copytree(wheels, mnt / "work" / "wheels")
            args.work = mnt / "work"
            run(args)
        finally:
            drop_image(image, mnt)
        return
    run(args)


def run(args: argparse.Namespace) -> None:
    if args.smoke:
        args.requirements, args.runs, args.p4_runs = HERE / "smoke.txt", 1, 1
        args.imports = "import certifi, idna, six"
    work: Path = args.work.absolute()
    work.mkdir(parents=True, exist_ok=True)
    fs = sh("findmnt", "-n", "-o", "FSTYPE,SOURCE", "--target", str(work)).stdout.strip()
    uv, wheels, store = setup(work, args.requirements)
    bindir = tool_venv()
    ws = [str(bindir / "wheelstore"), "--store", str(store)]
    with ExitStack() as stack:
        if os.geteuid() == 0:  # the service must run as root to make hard links
            svc_store = work / "svc-store"
            stack.enter_context(root_service(svc_store, SVC_SOCKET, bindir))
            svc_warm(bindir, svc_store, work, wheels, args.requirements)
        else:
            svc_store = None
        timed(args, work, fs, uv, wheels, ws, svc_store)


def svc_warm(bindir: Path, svc_store: Path, work: Path, wheels: Path, requirements: Path) -> None:
    """The root service's store warm, and the user's cache: two installs by the user, which must take hard links."""
    from .p2 import ensure_users

    ensure_users()
    for i in range(2):
        scratch = work / f"svc-warm{i}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        shutil.chown(scratch, SVC_USER, SVC_USER)
        as_svc_user([PYTHON, "-m", "venv", "--without-pip", str(scratch)])
        out = as_svc_user([str(bindir / "wheelstore"), "--store", str(svc_store), "install", "-q", "--json", "--venv",
                           str(scratch), "-r", str(requirements), "-f", str(wheels)], capture=True)
        modes = {d["link_mode"] for d in json.loads(out)["installed"]}
        if modes != {"hardlink"}:
            raise SystemExit(f"auto through the root service took {sorted(modes)}, not hardlink")


def as_svc_user(argv: list[str], *, capture: bool = False) -> str:
    done = subprocess.run(argv, user=SVC_USER, group=SVC_USER, env=user_env(SVC_USER), cwd="/", text=True,
                          stdout=subprocess.PIPE if capture else subprocess.DEVNULL, stderr=subprocess.PIPE)
    if done.returncode:
        raise SystemExit(f"{' '.join(argv)} as {SVC_USER}: exit {done.returncode}\n{done.stderr}")
    return done.stdout or ""


def timed(args: argparse.Namespace, work: Path, fs: str, uv: Path, wheels: Path, ws: list[str],
          svc_store: Path | None) -> None:
    """The alternating runs, P4 after them, and the report."""

    # Every venv gets a directory of its own and all are removed only at the end: deleting the last command's
    # ~17,000 files just before the next one makes ext4 slow to allocate inodes for minutes (perf: __ext4_new_inode
    # -> find_inode_bit -> recently_deleted, see bench/results/p2-notes-20261126.md), which taxed whichever command
    # came after a big venv.
    targets = work / "targets"
    shutil.rmtree(targets, ignore_errors=True)
    made = iter(range(1 << 30))

    def fresh_venv(tool: str) -> Path:
        venv = targets / str(next(made))
        if tool == "svc":  # the user's own, made by them
            targets.mkdir(exist_ok=True)
            venv.mkdir()
            shutil.chown(venv, SVC_USER, SVC_USER)
            as_svc_user([PYTHON, "-m", "venv", "--without-pip", str(venv)])
        elif tool == "uv":
            sh(uv, "venv", "-q", "-p", PYTHON, venv)
        elif tool == "pip":
            sh(PYTHON, "-m", "venv", venv)  # with pip, which it runs
        else:
            sh(PYTHON, "-m", "venv", "--without-pip", venv)
        return venv

    def uv_sync(*options: str) -> Callable[[Path], list[str]]:
        return lambda v: [str(uv), "pip", "sync", "-q", "--offline", "--no-index", "--find-links", str(wheels),
                          "--cache-dir", str(work / "uv-cache"), *options, "-p", str(v / "bin" / "python"),
                          str(args.requirements)]

    def ws_install(*options: str) -> Callable[[Path], list[str]]:
        return lambda v: [*ws, "install", "-q", "--venv", str(v), *options, "-r", str(args.requirements), "-f",
                          str(wheels)]

    commands: dict[str, Callable[[Path], list[str]]] = {
        "wheelstore auto": ws_install(),
        "wheelstore fold": ws_install("--link-mode", "fold"),
        "wheelstore hardlink": ws_install("--link-mode", "hardlink"),
        "wheelstore symlink": ws_install("--link-mode", "symlink"),
        "wheelstore copy": ws_install("--link-mode", "copy"),
        "uv default": uv_sync(),
        "uv hardlink": uv_sync("--link-mode", "hardlink"),
        "uv copy": uv_sync("--link-mode", "copy"),
        # a real user (not root) installing with auto from root's service store: the service hard-links the files
        **({"wheelstore service hardlink (root service store)": lambda v: [
            str(ws[0]), "--store", str(svc_store), "install", "-q", "--venv", str(v), "-r", str(args.requirements),
            "-f", str(wheels)]} if svc_store else {}),
        "pip": lambda v: [str(v / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index", "--find-links",
                          str(wheels), "--disable-pip-version-check", "-r", str(args.requirements)],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    order = list(commands)
    for run_number in range(args.runs):
        # each run starts one command later: the command after pip or a copy install pays for their writeback,
        # so over as many runs as there are commands each one follows each other once
        shift = run_number % len(order)
        for name in order[shift:] + order[:shift]:
            command = commands[name]
            svc = name.startswith("wheelstore service")
            venv = fresh_venv("svc" if svc else name.split()[0])
            subprocess.run(["sync"], check=True)
            start = time.perf_counter()
            if svc:
                subprocess.run(command(venv), check=True, stdout=subprocess.DEVNULL, user=SVC_USER, group=SVC_USER,
                               env=user_env(SVC_USER), cwd="/")
            else:
                subprocess.run(command(venv), check=True, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - start)
    # P4: first import in a brand-new venv, bytecode writing on (PYTHONDONTWRITEBYTECODE unset)
    imports = args.imports
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["MPLBACKEND"] = "Agg"
    p4: dict[str, list[float]] = {"wheelstore auto": [], "uv default": [], "uv --compile-bytecode": []}
    p4_install: dict[str, list[float]] = {name: [] for name in p4}
    for _ in range(args.p4_runs):
        for name in p4:
            venv = fresh_venv(name.split()[0])
            argv = commands["wheelstore auto" if name.startswith("wheelstore") else "uv default"](venv)
            if name == "uv --compile-bytecode":
                argv = [*argv[:3], "--compile-bytecode", *argv[3:]]
            subprocess.run(["sync"], check=True)
            start = time.perf_counter()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
            p4_install[name].append(time.perf_counter() - start)
            start = time.perf_counter()
            subprocess.run([str(venv / "bin" / "python"), "-c", imports], check=True, env=env)
            p4[name].append(time.perf_counter() - start)

    shutil.rmtree(targets, ignore_errors=True)
    base = statistics.median(times["uv default"])
    rows = []
    for name, values in times.items():
        med = statistics.median(values)
        rows.append({"command": name, "median_s": round(med, 3), "min_s": round(min(values), 3),
                     "max_s": round(max(values), 3), "ratio_to_uv_default": round(med / base, 2)})
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cores": os.cpu_count(),
            "filesystem": fs, "python": PYTHON, "uv": sh(uv, "--version").stdout.strip(), "runs": args.runs,
            "machine": platform.platform()}
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    p4_base = statistics.median(p4["uv default"])
    p4_rows = [{"setup": name, "import_median_s": round(statistics.median(v), 3), "import_min_s": round(min(v), 3),
                "import_max_s": round(max(v), 3), "install_median_s": round(statistics.median(p4_install[name]), 3),
                "ratio_to_uv_default": round(statistics.median(v) / p4_base, 2)} for name, v in p4.items()]
    (args.out / f"p1-{stamp}.json").write_text(
        json.dumps({"meta": meta, "p1_warm_install": rows, "p4_first_import": p4_rows}, indent=2) + "\n")
    lines = [f"P1 warm install of {args.requirements.name} into a new venv ({meta['cores']} cores, {fs}, "
             f"{meta['uv']}, {args.runs} alternating runs, {meta['date']})", "",
             "| command | median | spread | vs uv default |", "|---|---|---|---|"]
    lines += [f"| {r['command']} | {r['median_s']:.2f} s | {r['min_s']:.2f}-{r['max_s']:.2f} s | "
              f"{r['ratio_to_uv_default']:.2f}x |" for r in rows]
    lines += ["", f"P4 first import ({imports}) in a brand-new venv, {args.p4_runs} alternating runs", "",
              "| setup | first import | spread | vs uv default | its install |", "|---|---|---|---|---|"]
    lines += [f"| {r['setup']} | {r['import_median_s']:.2f} s | {r['import_min_s']:.2f}-{r['import_max_s']:.2f} s | "
              f"{r['ratio_to_uv_default']:.2f}x | {r['install_median_s']:.2f} s |" for r in p4_rows]
    text = "\n".join(lines) + "\n"
    (args.out / f"p1-{stamp}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
