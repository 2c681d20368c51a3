"""``python -m bench.p8``: P8 (issue 21, acceptance 5), a uv project's warm sync into a new ``.venv``: ``wheelstore
sync`` (project mode: ``uv export`` of the lock, ``uv venv``, the locked set linked from the store, the project's own
package installed editable by ``uv sync``) against ``uv sync --frozen``, in the same run.

The project is a real one: a small package of its own (built by flit_core, installed editable on both sides) whose
``dependencies`` are the benchmark set's 36 pins, locked by ``uv lock`` against a local index (tests/pyindex.py, on
127.0.0.1, serving the set's wheels with their hashes as PyPI would). Both tools read that same ``uv.lock``. The
store's trees and uv's cache are made and warmed by this run: one untimed sync of each first (and a fold sync before,
so that the store holds the bytecode, as in P1). Each timed sync gets a venv of its own that does not exist yet
(``UV_PROJECT_ENVIRONMENT``), removed only at the end; the commands alternate, each run starting one command later.
The index's log tells whether anything was fetched during the timed runs (it should not be).

Then a few more ``wheelstore sync`` runs under a recorder (bench/p8_profile.py) say where its time goes: Python's
start, wheelstore's imports, each uv subprocess, the linking, the rest of wheelstore's own work, and the exit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tests.pyindex import PyIndex

from . import drop_image, fresh_image
from .__main__ import HERE, PYTHON, SET36, sh, tool_venv, uv_and_wheels
from .p7 import alternate, row

SCRATCH = Path("/var/tmp/wheelstore-bench-p8")
#: the project's build backend, as PyPI serves it: uv builds the project's editable wheel with it on both sides
BACKEND = "flit_core"
RECORDER = HERE / "p8_profile.py"
#: the phases of a profiled wheelstore sync, in the order they happen
PHASES = ("python start", "wheelstore imports", "uv export", "uv venv", "uv export and uv venv side by side",
          "linking", "uv sync (editable)", "other subprocesses", "other wheelstore work", "exit")


def pins(requirements: Path) -> list[str]:
    """The ``name==version`` pins of a hashed requirements file (continuation lines and comments left out)."""
    return [m.group(1) for line in requirements.read_text().splitlines()
            if (m := re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*==[^\s;\\]+)", line))]


def backend_wheel(work: Path) -> Path:
    """The build backend's wheel, downloaded once."""
    where = work / "backend"
    if not list(where.glob("*.whl")):
        sh(sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", BACKEND, "-d", where)
    return sorted(where.glob("*.whl"))[-1]


def make_project(root: Path, requirements: Path, index_url: str) -> Path:
    """A uv project whose dependencies are the set's pins, with a package of its own and the local index."""
    (root / "src" / "benchproj").mkdir(parents=True)
    (root / "src" / "benchproj" / "__init__.py").write_text('"""P8\'s project."""\n')
    dependencies = "".join(f'    "{pin}",\n' for pin in pins(requirements))
    # the Python the run uses, and only it: the set's wheels are built for it (cp311), not for those after it
    version = sh(PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])").stdout.strip()
    (root / "pyproject.toml").write_text(f"""\
[build-system]
requires = ["flit_core>=3.2,<5"]
build-backend = "flit_core.buildapi"

[project]
name = "benchproj"
version = "0.1"
description = "P8: the benchmark set as a uv project's dependencies"
requires-python = "=={version}.*"
dependencies = [
{dependencies}]

[[tool.uv.index]]
name = "bench"
url = "{index_url}"
default = true
""")
    return root


@dataclass
class Setup:
    """What one run measures with: the tools, the project, its environment, and where each venv goes."""

    uv: Path
    ws: Path
    store: Path
    project: Path
    env: dict[str, str]
    targets: Path

    def __post_init__(self) -> None:
        self._made = iter(range(1 << 30))

    def new_venv(self) -> Path:
        return self.targets / str(next(self._made))

    def run(self, argv: list[str | Path], venv: Path, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(a) for a in argv], check=True, text=True, cwd=self.project,
                              env={**self.env, "UV_PROJECT_ENVIRONMENT": str(venv)}, **kw)

    def ws_sync(self, *options: str) -> list[str | Path]:
        return [self.ws, "--store", self.store, "sync", "-q", *options]

    def uv_sync(self, *options: str) -> list[str | Path]:
        return [self.uv, "sync", "-q", "--frozen", *options]


def prepare(scratch: Path, uv: Path, ws: Path, requirements: Path, index_url: str) -> Setup:
    """The project, locked; the store and uv's cache warm: a fold sync (the trees with their bytecode), then one
    untimed run of each timed command."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE") and not k.startswith("UV_")}
    # one Python for both (the set's wheels are for it), each tool's cache in the run, the user's uv settings none
    env |= {"UV_PYTHON": PYTHON, "UV_CACHE_DIR": str(scratch / "uv-cache"),
            "XDG_CACHE_HOME": str(scratch / "cache"), "XDG_CONFIG_HOME": str(scratch / "config")}
    project = make_project(scratch / "project", requirements, index_url)
    subprocess.run([str(uv), "lock", "-q"], check=True, cwd=project, env=env)
    setup = Setup(uv, ws, scratch / "store", project, env, scratch / "targets")
    sh(ws, "init", "-q", setup.store, env=env)
    setup.run(setup.ws_sync("--link-mode", "fold"), setup.new_venv())
    for argv in (setup.ws_sync(), setup.uv_sync(), setup.uv_sync("--link-mode", "symlink")):
        setup.run(argv, setup.new_venv())
    return setup


def timed(setup: Setup, argv: list[str | Path]) -> Callable[[], float]:
    def go() -> float:
        venv = setup.new_venv()
        subprocess.run(["sync"], check=True)
        start = time.perf_counter()
        setup.run(argv, venv, stdout=subprocess.DEVNULL)
        took = time.perf_counter() - start
        if not (venv / "pyvenv.cfg").is_file():
            raise SystemExit(f"{' '.join(map(str, argv))} made no venv at {venv}")
        return took
    return go


def profiled(setup: Setup, runs: int) -> dict[str, list[float]]:
    """``runs`` more wheelstore syncs under the recorder: seconds per phase of each."""
    phases: dict[str, list[float]] = {name: [] for name in PHASES}
    python = setup.ws.parent / "python"
    for _ in range(runs):
        venv, record = setup.new_venv(), setup.targets / "profile.json"
        subprocess.run(["sync"], check=True)
        spawned = time.monotonic()
        setup.run([python, RECORDER, record, *setup.ws_sync()[1:]], venv, stdout=subprocess.DEVNULL)
        ended = time.monotonic()
        for name, seconds in phases_of(json.loads(record.read_text()), spawned, ended).items():
            phases[name].append(seconds)
    return phases


def phases_of(record: dict[str, Any], spawned: float, ended: float) -> dict[str, float]:
    """One recorded run's phases (:data:`PHASES`), which add up to its time from spawn to exit: uv export and uv
    venv may run side by side, and the time they overlap is counted once (its row is negative)."""
    spans: list[tuple[str, float, float]] = [tuple(s) for s in record["subprocesses"]]
    own = {verb: [(s, e) for v, s, e in spans if v == f"uv {verb}"] for verb in ("export", "venv", "sync")}
    others = [(s, e) for v, s, e in spans if v not in {f"uv {verb}" for verb in own}]
    side_by_side = _covered(own["export"]) + _covered(own["venv"]) - _covered(own["export"] + own["venv"])
    waited = _covered([(s, e) for _, s, e in spans])
    return {"python start": record["start"] - spawned, "wheelstore imports": record["main_start"] - record["start"],
            "uv export": _covered(own["export"]), "uv venv": _covered(own["venv"]),
            "uv export and uv venv side by side": -side_by_side, "linking": record["linking"],
            "uv sync (editable)": _covered(own["sync"]), "other subprocesses": _covered(others),
            "other wheelstore work": record["main_end"] - record["main_start"] - waited - record["linking"],
            "exit": ended - record["main_end"]}


def _covered(intervals: list[tuple[float, float]]) -> float:
    """The time at least one of ``intervals`` runs."""
    total, reached = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reached:
            total += end - max(start, reached)
            reached = end
    return total


@dataclass
class Found:
    """What one run measured: seconds per timed run of each command, the profile's phases, and what the setup saw."""

    syncs: dict[str, list[float]]
    phases: dict[str, list[float]]
    link_modes: list[str]
    index_hits: int
    wheelstore_uv: str


def measure(args: argparse.Namespace, scratch: Path, uv: Path, wheels: Path, ws: Path) -> Found:
    with PyIndex(log_file=scratch / "index.log") as index:
        for wheel in [*sorted(wheels.glob("*.whl")), backend_wheel(args.work.absolute())]:
            index.add(wheel)
        setup = prepare(scratch, uv, ws, args.requirements, index.simple_url)
        report = json.loads(setup.run([*setup.ws_sync(), "--json"], setup.new_venv(), capture_output=True).stdout)
        modes = sorted({d["link_mode"] for d in report["installed"]} - {"editable"})
        before = len(index.log)
        syncs = alternate({
            "wheelstore sync": timed(setup, setup.ws_sync()),
            "uv sync --frozen": timed(setup, setup.uv_sync()),
            "uv sync --frozen --link-mode symlink": timed(setup, setup.uv_sync("--link-mode", "symlink")),
        }, args.runs)
        phases = profiled(setup, args.profile_runs)
        hits = len(index.log) - before
    wheelstore_uv = sh(ws.parent / "python", "-m", "uv", "--version").stdout.strip()
    shutil.rmtree(setup.targets, ignore_errors=True)
    return Found(syncs, phases, modes, hits, wheelstore_uv)


def report(args: argparse.Namespace, found: Found, uv: Path, fs: str) -> str:
    med = {name: statistics.median(v) for name, v in found.syncs.items()}
    base = med["uv sync --frozen"]
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cores": os.cpu_count(),
            "filesystem": fs, "uv": sh(uv, "--version").stdout.strip(), "wheelstore_uv": found.wheelstore_uv,
            "python": PYTHON, "runs": args.runs, "profile_runs": args.profile_runs,
            "requirements": args.requirements.name, "machine": platform.platform(),
            "wheelstore_link_modes": found.link_modes, "index_requests_during_timed_runs": found.index_hits}
    rows = [{**row(name, v), "ratio_to_uv_sync": round(med[name] / base, 2)} for name, v in found.syncs.items()]
    phase_rows: list[dict[str, Any]] = [
        {"phase": name, "median_s": round(statistics.median(v), 4), "min_s": round(min(v), 4),
         "max_s": round(max(v), 4)} for name, v in found.phases.items() if v]
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"p8-{stamp}.json").write_text(
        json.dumps({"meta": meta, "syncs": rows, "wheelstore_sync_phases": phase_rows}, indent=2) + "\n")
    lines = [f"P8: warm sync of a uv project whose uv.lock is {args.requirements.name} (and the project's own package, "
             f"editable) into a new .venv; {meta['cores']} cores, {fs}, {meta['uv']} (wheelstore's: "
             f"{found.wheelstore_uv}), {args.runs} alternating runs, {meta['date']}; wheelstore linked "
             f"{', '.join(found.link_modes)}; index requests during the timed runs: {found.index_hits}", "",
             "| command | median | spread | vs uv sync --frozen |", "|---|---|---|---|"]
    lines += [f"| {r['command']} | {r['median_s']:.3f} s | {r['min_s']:.3f}-{r['max_s']:.3f} s | "
              f"{r['ratio_to_uv_sync']:.2f}x |" for r in rows]
    total = sum(r["median_s"] for r in phase_rows)
    lines += ["", f"where wheelstore sync's time goes: {args.profile_runs} more runs under bench/p8_profile.py "
              f"(medians; their sum {total:.3f} s)", "", "| phase | median | spread |", "|---|---|---|"]
    lines += [f"| {r['phase']} | {r['median_s'] * 1000:.1f} ms | {r['min_s'] * 1000:.1f}-{r['max_s'] * 1000:.1f} ms |"
              for r in phase_rows]
    text = "\n".join(lines) + "\n"
    (args.out / f"p8-{stamp}.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.p8")
    parser.add_argument("--runs", type=int, default=11, help="timed runs of each sync")
    parser.add_argument("--profile-runs", type=int, default=9, help="runs of wheelstore sync under the recorder")
    parser.add_argument("--requirements", type=Path, default=SET36, help="the pins the project depends on")
    parser.add_argument("--work", type=Path, default=HERE / ".work", help="where uv and the wheels are kept")
    parser.add_argument("--scratch", type=Path, default=SCRATCH,
                        help="this benchmark's own wheelstore (tool/) and its run (run/, removed at the end)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--fresh-fs", action="store_true", help="the run on a new ext4 image (root)")
    parser.add_argument("--smoke", action="store_true",
                        help="CI's check that the runner works: a tiny set (bench/smoke.txt), one run of each")
    args = parser.parse_args()
    if args.smoke:
        args.requirements, args.runs, args.profile_runs = HERE / "smoke.txt", 1, 1
    uv, wheels = uv_and_wheels(args.work.absolute(), args.requirements)
    ws = tool_venv(args.scratch / "tool") / "wheelstore"
    scratch = args.scratch / "run"
    image = args.scratch / "p8.img"
    shutil.rmtree(scratch, ignore_errors=True)
    if args.fresh_fs:
        fresh_image(image, scratch, "10G")
    else:
        scratch.mkdir(parents=True)
    try:
        fs = " ".join(sh("findmnt", "-n", "-o", "FSTYPE,SOURCE", "--target", str(scratch)).stdout.split())
        found = measure(args, scratch, uv, wheels, ws)
    finally:
        if args.fresh_fs:
            drop_image(image, scratch)
        shutil.rmtree(scratch, ignore_errors=True)
    print(report(args, found, uv, fs))


if __name__ == "__main__":
    main()
