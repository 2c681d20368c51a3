"""P5, scale: a store of N synthetic wheels (N = 200, then 2,000, a fresh store each), and how each operation grows.

The wheels are pure Python, made here: 5-20 modules each of a few KB of distinct, valid source (bytecode compiles),
distinct names, a correct RECORD (``tests/wheelmaker.py``). For each N: ``realize`` of all N at once; the first
install (which compiles the bytecode into the store); install-from-warm of all N pins into a new venv, wheelstore
default and fold against ``uv pip sync --offline`` with a warm uv cache, alternating; ``verify`` quick and
``--full``; ``gc`` while every venv is live (nothing to free), and ``gc`` after deleting the venvs, which must free
every tree.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.wheelmaker import make_wheel

from .__main__ import sh
from .p5_util import Stat, fresh_venv, timed, tree_usage

GENERATOR = "p5-synthetic-v1"  # change it when the wheels change, so cached ones are rebuilt
PREFIX = "p5syn"


def module_source(rng: random.Random, tag: str, size: int) -> bytes:
    """About ``size`` bytes of distinct, valid Python: functions with their own constants and docstrings."""
    parts = [f'"""Module {tag}: synthetic source for the wheelstore scale benchmark."""\n\nimport math\n\n']
    total = len(parts[0])
    n = 0
    while total < size:
        a, b, c = rng.randrange(1, 10**6), rng.randrange(1, 10**6), rng.getrandbits(64)
        text = (f"\ndef f_{n}(x, scale={a}):\n"
                f'    """Return a mix of x and the constants of {tag}, part {n} ({c:016x})."""\n'
                f"    y = x * scale + {b}\n"
                f"    if y % 7 == {a % 7}:\n"
                f"        return math.sqrt(abs(y)) + {rng.random():.12f}\n"
                f'    return [y, {c}, "{tag}-{n}-{c:x}"]\n')
        parts.append(text)
        total += len(text)
        n += 1
    return "".join(parts).encode()


def make_wheels(directory: Path, count: int) -> list[Path]:
    """``count`` synthetic wheels in ``directory``, built once (a marker names the generator and the count)."""
    marker = directory / ".complete"
    names = [f"{PREFIX}{i:05d}" for i in range(count)]
    if marker.exists() and marker.read_text() == f"{GENERATOR} {count}\n":
        return [directory / f"{name}-1.0-py3-none-any.whl" for name in names]
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    wheels = []
    for i, name in enumerate(names):
        rng = random.Random(f"{GENERATOR}-{i}")
        files = {f"{name}/__init__.py": f'"""{name}."""\n\nfrom .core import *  # noqa\n'.encode()}
        for j in range(rng.randrange(4, 20)):
            sub = f"sub{j % 3}/" if j > 3 else ""
            files[f"{name}/{sub}mod{j}.py"] = module_source(rng, f"{name}.mod{j}", rng.randrange(1000, 8000))
        files[f"{name}/core.py"] = module_source(rng, f"{name}.core", rng.randrange(2000, 6000))
        for sub in {path.split("/")[1] for path in files if path.count("/") == 2}:
            files[f"{name}/{sub}/__init__.py"] = b""
        wheels.append(make_wheel(directory, name, "1.0", files))
    marker.write_text(f"{GENERATOR} {count}\n")
    return wheels


@dataclass
class ScaleResult:
    """Every figure for one N."""

    n: int
    files_in_wheels: int
    bytes_in_wheels: int
    ops: dict[str, Stat] = field(default_factory=dict)
    link_modes: dict[str, list[str]] = field(default_factory=dict)
    verify_checked: dict[str, object] = field(default_factory=dict)
    gc_live: dict[str, object] = field(default_factory=dict)
    gc_after_delete: dict[str, object] = field(default_factory=dict)
    gc_freed_bytes: int = 0
    folded_after_realize: int = 0
    folded_dirs: dict[str, int] = field(default_factory=dict)
    store_before_gc: dict[str, int] = field(default_factory=dict)
    store_after_gc: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["ops"] = {name: asdict(stat) for name, stat in self.ops.items()}
        return data


def trees_left(store: Path) -> list[str]:
    """Published units still in the store (hidden staging entries aside)."""
    return sorted(name for name in os.listdir(store / "trees") if not name.startswith("."))


def run_size(all_wheels: list[Path], base: Path, ws: str, uv: Path, runs: int,
             say: Callable[[str], None]) -> ScaleResult:
    """All the measurements for these N wheels, in a fresh store and a fresh uv cache."""
    n = len(all_wheels)
    wheels_dir = base / f"wheels-{n}"  # only these N, so neither tool scans more than it installs
    if sorted(p.name for p in wheels_dir.glob("*.whl")) != sorted(p.name for p in all_wheels):
        shutil.rmtree(wheels_dir, ignore_errors=True)
        wheels_dir.mkdir(parents=True)
        for w in all_wheels:
            os.link(w, wheels_dir / w.name)
    req = base / f"requirements-{n}.txt"
    req.write_text("".join(f"{w.name.split('-')[0]}==1.0\n" for w in all_wheels))
    files = 0
    for w in all_wheels:
        with zipfile.ZipFile(w) as zf:
            files += len(zf.namelist())
    result = ScaleResult(n, files, sum(w.stat().st_size for w in all_wheels))
    store, cache, venvs = base / f"store-{n}", base / f"uv-cache-{n}", base / f"venvs-{n}"
    wsx = [ws, "--store", str(store)]
    found = ["-r", str(req), "-f", str(wheels_dir), "--offline"]
    realize = []
    for r in range(runs):  # each into a fresh store; the last one stays for the rest
        say(f"N={n}: realize ({r + 1}/{runs})")
        for path in (store, cache, venvs):
            shutil.rmtree(path, ignore_errors=True)
        sh(ws, "init", "-q", store)
        realize.append(timed([*wsx, "realize", "-q", *map(str, wheels_dir.glob("*.whl"))])[0])
    result.ops["realize (into an empty store)"] = Stat.of(realize)
    venvs.mkdir(parents=True)
    for mode in ("auto", "fold"):  # the first install of each mode compiles bytecode into the store
        say(f"N={n}: first install ({mode})")
        venv = fresh_venv(venvs / f"first-{mode}", "wheelstore", uv)
        took, out = timed([*wsx, "install", "-q", "--json", "--venv", str(venv), "--link-mode", mode, *found])
        result.ops[f"first install after realize ({mode})"] = Stat.of([took])
        result.link_modes[f"first {mode}"] = sorted({d["link_mode"] for d in json.loads(out)["installed"]})
    uv_cmd = [str(uv), "pip", "sync", "-q", "--offline", "--no-index", "--find-links", str(wheels_dir),
              "--cache-dir", str(cache)]
    say(f"N={n}: warming uv's cache")
    took, _ = timed([*uv_cmd, "-p", str(fresh_venv(venvs / "uv", "uv", uv) / "bin" / "python"), str(req)])
    result.ops["uv cold (fills its cache; not a ratio)"] = Stat.of([took])

    installs: dict[str, Callable[[Path], list[str]]] = {
        "install warm, wheelstore default": lambda v: [*wsx, "install", "-q", "--json", "--venv", str(v), *found],
        "install warm, wheelstore fold": lambda v: [*wsx, "install", "-q", "--json", "--venv", str(v),
                                                    "--link-mode", "fold", *found],
        "install warm, uv default": lambda v: [*uv_cmd, "-p", str(v / "bin" / "python"), str(req)],
    }
    times: dict[str, list[float]] = {name: [] for name in installs}
    for r in range(runs):
        for name, command in installs.items():
            say(f"N={n}: {name} ({r + 1}/{runs})")
            label = name.split(", ")[1]
            # a new directory per run: deleting the last venv just before would slow the next install
            # (bench/__main__.py)
            venv = fresh_venv(venvs / f"{label.replace(' ', '-')}-{r}", label.split()[0], uv)
            took, out = timed(command(venv))
            times[name].append(took)
            if out.lstrip().startswith("{"):
                result.link_modes[name] = sorted({d["link_mode"] for d in json.loads(out)["installed"]})
    result.ops.update({name: Stat.of(values) for name, values in times.items()})

    checks = {"verify": [*wsx, "verify", "--json"], "verify --full": [*wsx, "verify", "--full", "--json"]}
    vtimes: dict[str, list[float]] = {name: [] for name in checks}
    for r in range(runs):
        for name, check in checks.items():
            say(f"N={n}: {name} ({r + 1}/{runs})")
            took, out = timed(check)
            report = json.loads(out)
            if not report["ok"]:
                raise SystemExit(f"{name} found damage in the bench store: {out[:2000]}")
            vtimes[name].append(took)
            result.verify_checked[name] = report.get("checked")
    result.ops.update({name: Stat.of(values) for name, values in vtimes.items()})

    gtimes = []
    for r in range(runs):
        say(f"N={n}: gc, every venv live ({r + 1}/{runs})")
        took, out = timed([*wsx, "gc", "--grace", "0", "--json"])
        report = json.loads(out)
        if report["removed"]:
            raise SystemExit(f"gc removed units live venvs use: {[u['key'] for u in report['removed']][:5]}")
        gtimes.append(took)
        result.gc_live = {"roots_live": report["roots"]["live"], "live_units": report["live"]}
    result.ops["gc, all venvs live (frees nothing)"] = Stat.of(gtimes)

    result.folded_after_realize = top_symlinks(venvs / f"wheelstore-fold-{runs - 1}")
    bytes_, inodes = tree_usage(store)
    result.store_before_gc = {"bytes": bytes_, "inodes": inodes, "units": len(trees_left(store))}
    shutil.rmtree(venvs)
    venvs.mkdir()
    say(f"N={n}: gc after deleting the venvs")
    took, out = timed([*wsx, "gc", "--grace", "0", "--json"])
    result.ops["gc after deleting the venvs"] = Stat.of([took])
    report = json.loads(out)
    bytes_, inodes = tree_usage(store)
    left = trees_left(store)
    result.store_after_gc = {"bytes": bytes_, "inodes": inodes, "units": len(left)}
    result.gc_freed_bytes = int(report["freed_bytes"])
    result.gc_after_delete = {"removed": len(report["removed"]),
                              "removed_kinds": sorted({u["kind"] for u in report["removed"]}),
                              "freed_bytes": report["freed_bytes"], "roots_stale": len(report["roots"]["stale"]),
                              "not_removable": len(report["not_removable"]), "problems": report["problems"],
                              "units_left": left[:10]}
    shutil.rmtree(store)
    folded_store(result, store, venvs, wsx, found, uv_cmd, str(req), uv, runs, say)
    shutil.rmtree(cache, ignore_errors=True)
    return result


def top_symlinks(venv: Path) -> int:
    """Entries of site-packages that are symlinks: the directories fold made one link each."""
    site = next(venv.glob("lib/python3*/site-packages"))
    return sum(1 for entry in site.iterdir() if entry.is_symlink())


def folded_store(result: ScaleResult, store: Path, venvs: Path, wsx: list[str], found: list[str], uv_cmd: list[str],
                 req: str, uv: Path, runs: int, say: Callable[[str], None]) -> None:
    """The same N filled by a cold ``install --link-mode fold`` instead of ``realize``: trees realize publishes
    carry no bytecode of their own (it goes to separate pyc units), and fold folds only directories whose tree has
    it, so after ``realize`` every file becomes a symlink. This shows what fold does when it can fold."""
    n = result.n
    sh(wsx[0], "init", "-q", store)
    say(f"N={n}: cold fold install into an empty store (no realize)")
    venv = fresh_venv(venvs / "cold-fold", "wheelstore", uv)
    took, _ = timed([*wsx, "install", "-q", "--venv", str(venv), "--link-mode", "fold", *found])
    result.ops["cold install, fold, empty store (no realize)"] = Stat.of([took])
    installs: dict[str, tuple[str, Callable[[Path], list[str]]]] = {
        "install warm, wheelstore fold, store filled by fold install": (
            "wheelstore", lambda v: [*wsx, "install", "-q", "--venv", str(v), "--link-mode", "fold", *found]),
        "install warm, uv default (again, same window)": ("uv", lambda v: [*uv_cmd, "-p", str(v / "bin" / "python"),
                                                                          req]),
    }
    times: dict[str, list[float]] = {name: [] for name in installs}
    for r in range(runs):
        for name, (tool, command) in installs.items():
            say(f"N={n}: {name} ({r + 1}/{runs})")
            venv = fresh_venv(venvs / f"again-{tool}-{r}", tool, uv)
            times[name].append(timed(command(venv))[0])
            if tool == "wheelstore":
                result.folded_dirs[name] = top_symlinks(venv)
    result.ops.update({name: Stat.of(values) for name, values in times.items()})
    result.folded_dirs["install warm, wheelstore fold (after realize)"] = result.folded_after_realize
    shutil.rmtree(venvs)
    shutil.rmtree(store)
