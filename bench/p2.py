"""``python -m bench.p2``: P2, cold and concurrent. Four installs of the benchmark set at once, by two real users into
four venvs, from one local HTTP index with an access log, into a cold shared store; against uv with one shared cache
under the umask 002 recipe it needs. Reports wall time and the number of wheel fetches the server saw.

Runs as root (it makes the users, as the tests do). The runs alternate (wheelstore, uv, uv --compile-bytecode,
wheelstore, ...), each from a cold store or cache. uv --compile-bytecode and wheelstore --no-compile are there for
context: wheelstore compiles every module once per store (the first import is then fast, P4), uv by default compiles
none.

Each round works in a directory of its own, and all of them are removed only after the last round. Removing a round's
100,000 files just before the next round creates as many makes ext4 slow to allocate inodes for a while (perf shows
``__ext4_new_inode`` -> ``find_inode_bit`` -> ``recently_deleted`` scanning the inode tables: up to half of a round's
CPU time, and uv's 19 s here instead of 3 s), which measures the previous round's cleanup, not the tool.
"""

from __future__ import annotations

import argparse
import grp
import json
import os
import resource
import shutil
import statistics
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tests.pyindex import PyIndex

from .__main__ import HERE, PYTHON, SET36, setup, sh, tool_venv

GROUP, USERS = "wstest", ("wsalice", "wsbob")
SCRATCH = Path("/var/tmp/wheelstore-bench-p2")


def ensure_users() -> None:
    try:
        grp.getgrnam(GROUP)
    except KeyError:
        sh("groupadd", GROUP)
    for user in USERS:
        if subprocess.run(["id", user], capture_output=True).returncode != 0:
            sh("useradd", "--create-home", "--shell", "/bin/sh", user)
        sh("usermod", "-aG", GROUP, user)


def as_user(user: str, umask: int, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    home = f"/home/{user}"
    full = {"HOME": home, "USER": user, "PATH": f"{Path(cmd[0]).parent}:/usr/bin:/bin", "LANG": "C.UTF-8", **env}
    return subprocess.Popen(cmd, user=user, group=user, extra_groups=[GROUP], umask=umask, env=full, cwd="/",
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


TOOLS = ("wheelstore", "uv", "uv --compile-bytecode", "wheelstore --no-compile")


def one_round(tool: str, bindir: Path, index: PyIndex, requirements: Path, work: Path) -> tuple[float, int, float]:
    """Four concurrent cold installs with ``tool`` in the new directory ``work``; (wall seconds, wheel fetches, CPU
    seconds of the installs and their children)."""
    work.mkdir(parents=True)
    work.chmod(0o1777)
    req = work / "set36.txt"
    shutil.copy(requirements, req)
    req.chmod(0o644)
    users = [USERS[i % 2] for i in range(4)]
    venvs = [work / f"venv{i}" for i in range(4)]
    for user, venv in zip(users, venvs, strict=True):
        subprocess.run([PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True, user=user, group=user)
    isolated = {"PIP_CONFIG_FILE": os.devnull, "UV_NO_CONFIG": "1"}
    if tool.startswith("wheelstore"):
        store = work / "store"
        subprocess.run([str(bindir / "wheelstore"), "init", "-q", str(store), "--group", GROUP], check=True,
                       user=users[0], group=users[0], extra_groups=[GROUP], env={"HOME": f"/home/{users[0]}"})
        extra = ["--no-compile"] if tool.endswith("--no-compile") else []
        commands = [([str(bindir / "wheelstore"), "--store", str(store), "install", "-q", *extra, "--venv", str(v),
                      "-r", str(req), "--index-url", index.simple_url], 0o022) for v in venvs]
    else:  # the recipe uv needs for a cache shared by a group: a setgid group dir and umask 002 for everyone
        cache = work / "uv-cache"
        cache.mkdir()
        shutil.chown(cache, group=GROUP)
        cache.chmod(0o2775)
        extra = ["--compile-bytecode"] if tool.endswith("--compile-bytecode") else []
        commands = [([str(bindir / "uv"), "pip", "install", "-q", *extra, "--cache-dir", str(cache), "--index-url",
                      index.simple_url, "-p", str(v / "bin" / "python"), "-r", str(req)], 0o002) for v in venvs]
    before = len(index.downloads())
    subprocess.run(["sync"], check=True)
    before_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    procs = [as_user(u, umask, cmd, isolated) for u, (cmd, umask) in zip(users, commands, strict=True)]
    errors = [p.stderr.read().decode() if p.stderr else "" for p in procs]
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - start
    after_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after_cpu.ru_utime + after_cpu.ru_stime - before_cpu.ru_utime - before_cpu.ru_stime
    if any(codes):
        raise SystemExit(f"{tool}: an install failed: {codes} {errors}")
    return wall, len(index.downloads()) - before, cpu


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.p2")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requirements", type=Path, default=SET36)
    parser.add_argument("--work", type=Path, default=HERE / ".work")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("P2 runs as root: it installs as two real users")
    ensure_users()
    SCRATCH.mkdir(parents=True, exist_ok=True)
    SCRATCH.chmod(0o755)
    scratch = SCRATCH / f"run-{os.getpid()}"  # an interrupted run's leftovers are removed at the end, not now
    scratch.mkdir(mode=0o755)
    fstype = sh("findmnt", "-n", "-o", "FSTYPE", "--target", str(SCRATCH)).stdout.strip()
    _uv, wheels, _store = setup(args.work.absolute(), args.requirements)
    bindir = tool_venv()
    results: dict[str, list[tuple[float, int, float]]] = {tool: [] for tool in TOOLS}
    try:
        with PyIndex(log_file=scratch / "access.log") as index:
            for wheel in sorted(wheels.glob("*.whl")):
                index.add(wheel)
            for run in range(args.runs):
                for n, tool in enumerate(results):
                    work = scratch / f"round{run}-{n}"
                    results[tool].append(one_round(tool, bindir, index, args.requirements, work))
    finally:
        shutil.rmtree(SCRATCH, ignore_errors=True)
    uv_version = sh(bindir / "uv", "--version").stdout.strip()
    rows: list[dict[str, Any]] = []
    uv_wall = statistics.median(w for w, _, _ in results["uv"])
    for tool, values in results.items():
        walls, fetches, cpus = [w for w, _, _ in values], [f for _, f, _ in values], [c for _, _, c in values]
        rows.append({"tool": tool, "wall_median_s": round(statistics.median(walls), 2),
                     "wall_min_s": round(min(walls), 2), "wall_max_s": round(max(walls), 2),
                     "cpu_median_s": round(statistics.median(cpus), 1),
                     "fetches": fetches, "ratio_to_uv": round(statistics.median(walls) / uv_wall, 2)})
    stamp = datetime.now(timezone.utc)
    meta = {"date": stamp.isoformat(timespec="seconds"), "cores": os.cpu_count(), "uv": uv_version,
            "runs": args.runs, "filesystem": fstype}
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"p2-{stamp.strftime('%Y%m%dT%H%M%S')}"
    (args.out / f"{name}.json").write_text(json.dumps({"meta": meta, "p2_cold_concurrent": rows}, indent=2) + "\n")
    lines = [f"P2: 4 concurrent cold installs of {args.requirements.name} by 2 users from a local HTTP index "
             f"({meta['cores']} cores, {meta['filesystem']}, {uv_version}, {args.runs} alternating runs, "
             f"{meta['date']})", "",
             "| tool | wall (median) | spread | vs uv | CPU user+sys (median) | wheel fetches per run |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['tool']} | {r['wall_median_s']:.2f} s | {r['wall_min_s']:.2f}-{r['wall_max_s']:.2f} s | "
              f"{r['ratio_to_uv']:.2f}x | {r['cpu_median_s']:.1f} s | {', '.join(map(str, r['fetches']))} |"
              for r in rows]
    text = "\n".join(lines) + "\n"
    (args.out / f"{name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
