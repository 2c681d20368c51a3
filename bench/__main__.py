"""``python -m bench``: P1, warm install of the benchmark set into a brand-new venv, wheelstore against uv.

Commands alternate (A B A B ...) so a noisy neighbour hits all of them alike; the report gives the median, the spread
(min-max) and each median as a ratio of uv's default. Everything it needs is installed into bench/.work (uv from
PyPI, the set's wheels downloaded once with their hashes checked).
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
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
SET36 = HERE.parent.parent / "shared" / "bench" / "set36.txt"
PYTHON = "/usr/bin/python3"


def sh(*cmd: str | Path, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], check=True, text=True, capture_output=True, **kw)  # type: ignore[call-overload]


def setup(work: Path, requirements: Path) -> tuple[Path, Path, Path]:
    """uv in its own venv, the wheels, a warm wheelstore store and a warm uv cache."""
    tools = work / "tools"
    if not (tools / "bin" / "uv").exists():
        sh(sys.executable, "-m", "venv", tools)
        sh(tools / "bin" / "pip", "install", "-q", "uv")
    wheels = work / "wheels"
    if not list(wheels.glob("*.whl")):
        sh(sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--require-hashes",
           "-r", requirements, "-d", wheels)
    store = work / "store"
    if not (store / "config.toml").exists():
        sh(sys.executable, "-m", "wheelstore", "init", store)
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
    parser.add_argument("--requirements", type=Path, default=SET36)
    parser.add_argument("--work", type=Path, default=HERE / ".work")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    work = args.work.absolute()
    work.mkdir(parents=True, exist_ok=True)
    uv, wheels, store = setup(work, args.requirements)
    ws = [sys.executable, "-m", "wheelstore", "--store", str(store)]

    def fresh_venv(tool: str) -> Path:
        venv = work / "target"
        shutil.rmtree(venv, ignore_errors=True)
        if tool == "uv":
            sh(uv, "venv", "-q", "-p", PYTHON, venv)
        else:
            sh(PYTHON, "-m", "venv", "--without-pip", venv)
        return venv

    commands = {
        "wheelstore auto": lambda v: [*ws, "install", "-q", "--venv", str(v), "-r", str(args.requirements), "-f",
                                      str(wheels)],
        "wheelstore symlink": lambda v: [*ws, "install", "-q", "--venv", str(v), "--link-mode", "symlink", "-r",
                                         str(args.requirements), "-f", str(wheels)],
        "wheelstore copy": lambda v: [*ws, "install", "-q", "--venv", str(v), "--link-mode", "copy", "-r",
                                      str(args.requirements), "-f", str(wheels)],
        "uv default": lambda v: [str(uv), "pip", "sync", "-q", "--offline", "--no-index", "--find-links", str(wheels),
                                 "--cache-dir", str(work / "uv-cache"), "-p", str(v / "bin" / "python"),
                                 str(args.requirements)],
        "uv copy": lambda v: [str(uv), "pip", "sync", "-q", "--offline", "--no-index", "--find-links", str(wheels),
                              "--cache-dir", str(work / "uv-cache"), "--link-mode", "copy", "-p",
                              str(v / "bin" / "python"), str(args.requirements)],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, command in commands.items():
            venv = fresh_venv(name.split()[0])
            subprocess.run(["sync"], check=True)
            start = time.perf_counter()
            subprocess.run(command(venv), check=True, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["uv default"])
    rows = []
    for name, values in times.items():
        med = statistics.median(values)
        rows.append({"command": name, "median_s": round(med, 3), "min_s": round(min(values), 3),
                     "max_s": round(max(values), 3), "ratio_to_uv_default": round(med / base, 2)})
    fs = sh("findmnt", "-n", "-o", "FSTYPE", "--target", str(work)).stdout.strip()
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cores": os.cpu_count(),
            "filesystem": fs, "python": PYTHON, "uv": sh(uv, "--version").stdout.strip(), "runs": args.runs,
            "machine": platform.platform()}
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    (args.out / f"p1-{stamp}.json").write_text(json.dumps({"meta": meta, "p1_warm_install": rows}, indent=2) + "\n")
    lines = [f"P1 warm install of {args.requirements.name} into a new venv ({meta['cores']} cores, {fs}, "
             f"{meta['uv']}, {args.runs} alternating runs, {meta['date']})", "",
             "| command | median | spread | vs uv default |", "|---|---|---|---|"]
    lines += [f"| {r['command']} | {r['median_s']:.2f} s | {r['min_s']:.2f}-{r['max_s']:.2f} s | "
              f"{r['ratio_to_uv_default']:.2f}x |" for r in rows]
    text = "\n".join(lines) + "\n"
    (args.out / f"p1-{stamp}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
