"""P5, the big real case: torch 2.14.1 (CUDA build) with its nvidia-* wheels, from this machine's local mirror.

Resolved once (``wheelstore lock``, which hands the pip config's indexes to uv) into ``pylock.toml``, pinned with
hashes into ``requirements.txt``, downloaded once (``pip download --no-deps --require-hashes``). Then a warm install
into a new venv, wheelstore default and fold against ``uv pip sync --offline`` (default, hardlink from its cache),
alternating; ``import torch`` in each; and the disk two venvs cost, each recipe from empty on a fresh ext4 image.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import tomllib

from .__main__ import PYTHON, sh
from .p5_util import ISOLATED, Stat, fmt_ratio, fresh_venv, timed

TORCH = "torch==2.14.1"
IMPORT = "import torch; print(torch.__version__, torch.version.cuda)"
SCRATCH = Path("/var/tmp/wheelstore-bench-p5")
MNT = SCRATCH / "mnt"
IMAGE = SCRATCH / "p5-torch.img"
Meta = Callable[[Path, Path, int], dict[str, object]]
Write = Callable[[Path, str, dict[str, object], list[str]], None]


def prepare(work: Path) -> tuple[Path, Path]:
    """The pinned requirements (with hashes) and the directory of their wheels, each made once."""
    work.mkdir(parents=True, exist_ok=True)
    lock = work / "pylock.toml"
    if not lock.exists():
        sh(sys.executable, "-m", "wheelstore", "lock", "-q", "--python", PYTHON, "-o", lock, TORCH)
    packages = tomllib.loads(lock.read_text())["packages"]
    req = work / "requirements.txt"
    lines = [f"{p['name']}=={p['version']} --hash=sha256:{p['wheels'][0]['hashes']['sha256']}" for p in packages
             if len(p.get("wheels", [])) == 1]
    if len(lines) != len(packages):
        raise SystemExit(f"{lock}: expected one wheel per package for {PYTHON}")
    req.write_text("\n".join(lines) + "\n")
    wheels = work / "wheels"
    if len(list(wheels.glob("*.whl"))) < len(lines):  # the pip config names the local mirror's indexes
        sh(sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--require-hashes",
           "--python-version", "3.11", "-r", req, "-d", wheels)
    return req, wheels


def logical_size(wheels: Path) -> tuple[int, int]:
    """(bytes, files) the wheels hold unpacked: what one plain copy of the set weighs before bytecode."""
    total = files = 0
    for wheel in wheels.glob("*.whl"):
        with zipfile.ZipFile(wheel) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    total += info.file_size
                    files += 1
    return total, files


def check_import(venv: Path) -> str:
    """``import torch`` in ``venv`` (no GPU here: the CUDA build must still import); its version line."""
    done = subprocess.run([str(venv / "bin" / "python"), "-c", IMPORT], capture_output=True, text=True,
                          env=ISOLATED, cwd="/")
    if done.returncode:
        raise SystemExit(f"import torch failed in {venv}:\n{done.stderr[-3000:]}")
    return done.stdout.strip()


def usage() -> tuple[int, int]:
    """(bytes, inodes) in use on the image, as ``df`` and ``df -i`` count them, after ``sync``."""
    subprocess.run(["sync"], check=True)
    st = os.statvfs(MNT)
    return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_files - st.f_ffree


def fresh_image(size: str) -> None:
    """A new ext4 filesystem at MNT (inode tables written now, so no lazy init moves the counts later)."""
    drop_image()
    SCRATCH.mkdir(parents=True, exist_ok=True)
    sh("truncate", "-s", size, IMAGE)
    sh("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", IMAGE)
    MNT.mkdir(parents=True, exist_ok=True)
    sh("mount", "-o", "loop", IMAGE, MNT)


def drop_image() -> None:
    if os.path.ismount(MNT):
        sh("umount", MNT)
    IMAGE.unlink(missing_ok=True)


@dataclass
class Disk:
    """What one recipe used on its own image: in all, after its store or cache and after each venv."""

    recipe: str
    bytes: int
    inodes: int
    steps: list[dict[str, int | str]]
    cold_install_s: float
    link_modes: list[str]


def disk_recipe(name: str, tool: str, mode: str, req: Path, wheels: Path, ws: str, uv: Path, size: str,
                say: Callable[[str], None]) -> Disk:
    """Store (or cache) and two venvs from empty on a fresh image; the df delta after each step."""
    fresh_image(size)
    try:
        start = usage()
        store, cache = MNT / "store", MNT / "uv-cache"
        if tool == "wheelstore":
            sh(ws, "init", "-q", store)
        steps: list[dict[str, int | str]] = []
        last = usage()
        cold = 0.0
        modes: set[str] = set()
        for i in (1, 2):
            say(f"torch disk: {name}, venv {i}")
            venv = fresh_venv(MNT / f"venv{i}", tool, uv)
            if tool == "wheelstore":
                cmd = [ws, "--store", str(store), "install", "-q", "--json", "--venv", str(venv), "--link-mode",
                       mode, "-r", str(req), "-f", str(wheels), "--offline"]
            else:
                cmd = [str(uv), "pip", "sync", "-q", "--offline", "--no-index", "--find-links", str(wheels),
                       "--cache-dir", str(cache), "-p", str(venv / "bin" / "python"), str(req)]
            took, out = timed(cmd)
            if i == 1:
                cold = took
            if out.lstrip().startswith("{"):
                modes |= {d["link_mode"] for d in json.loads(out)["installed"]}
            now = usage()
            steps.append({"step": f"venv{i}", "bytes": now[0] - last[0], "inodes": now[1] - last[1]})
            last = now
        check_import(MNT / "venv2")
        return Disk(name, last[0] - start[0], last[1] - start[1], steps, round(cold, 2), sorted(modes))
    finally:
        drop_image()


def part_torch(args: argparse.Namespace, bindir: Path, say: Callable[[str], None], meta: Meta, write: Write) -> None:
    """Warm install times against uv, the import check, then the disk for two venvs."""
    work = args.work / "torch"
    say("torch: resolving and downloading (once)")
    req, wheels = prepare(work)
    ws, uv = str(bindir / "wheelstore"), bindir / "uv"
    store, cache, venvs = work / "store", work / "uv-cache", work / "venvs"
    if not (store / "config.toml").exists():
        sh(ws, "init", "-q", store)
    wsx = [ws, "--store", str(store)]
    found = ["-r", str(req), "-f", str(wheels), "--offline"]
    uv_cmd = [str(uv), "pip", "sync", "-q", "--offline", "--no-index", "--find-links", str(wheels), "--cache-dir",
              str(cache)]
    warmup: dict[str, float] = {}
    for mode in ("auto", "fold"):  # the store warm, bytecode included (the first install compiles it)
        say(f"torch: warming the store ({mode})")
        venv = fresh_venv(venvs / "warm", "wheelstore", uv)
        warmup[f"wheelstore {mode}"] = round(timed([*wsx, "install", "-q", "--venv", str(venv), "--link-mode",
                                                    mode, *found])[0], 2)
    say("torch: warming uv's cache")
    venv = fresh_venv(venvs / "warm", "uv", uv)
    warmup["uv"] = round(timed([*uv_cmd, "-p", str(venv / "bin" / "python"), str(req)])[0], 2)
    shutil.rmtree(venvs / "warm")

    installs: dict[str, Callable[[Path], list[str]]] = {
        "wheelstore default": lambda v: [*wsx, "install", "-q", "--json", "--venv", str(v), *found],
        "wheelstore fold": lambda v: [*wsx, "install", "-q", "--json", "--venv", str(v), "--link-mode", "fold",
                                      *found],
        "uv default": lambda v: [*uv_cmd, "-p", str(v / "bin" / "python"), str(req)],
    }
    times: dict[str, list[float]] = {name: [] for name in installs}
    imports: dict[str, str] = {}
    modes: dict[str, list[str]] = {}
    for r in range(args.runs):
        for name, command in installs.items():
            say(f"torch: warm install, {name} ({r + 1}/{args.runs})")
            venv = fresh_venv(venvs / f"{name.replace(' ', '-')}-{r}", name.split()[0], uv)  # none deleted meanwhile
            took, out = timed(command(venv))
            times[name].append(took)
            if out.lstrip().startswith("{"):
                modes[name] = sorted({d["link_mode"] for d in json.loads(out)["installed"]})
            if name not in imports:
                imports[name] = check_import(venv)
    shutil.rmtree(venvs)
    stats = {name: Stat.of(values) for name, values in times.items()}

    disks = [disk_recipe(name, tool, mode, req, wheels, ws, uv, args.image_size, say) for name, tool, mode in (
        ("wheelstore default: store + 2 venvs", "wheelstore", "auto"),
        ("wheelstore fold: store + 2 venvs", "wheelstore", "fold"),
        ("uv default: cache + 2 venvs", "uv", ""),
    )]
    logical, files = logical_size(wheels)
    info = meta(work, uv, args.runs)
    info.update({"wheels": len(list(wheels.glob("*.whl"))), "files_in_wheels": files, "logical_bytes": logical,
                 "image_size": args.image_size})
    uv_stat = stats["uv default"]
    lines = [f"P5 torch: {TORCH} (CUDA build) and its {info['wheels']} wheels ({files:,} files, "
             f"{logical / 2**30:.2f} GiB unpacked), warm install into a new venv ({info['cores']} cores, "
             f"{info['filesystem']}, {info['uv']}, {args.runs} alternating runs, {info['date']}); median (min-max)",
             "", "| command | warm install | vs uv default | link modes | import torch |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {s.cell()} | {fmt_ratio(s.over(uv_stat))} | {', '.join(modes.get(name, ['-']))} "
              f"| {imports[name]} |" for name, s in stats.items()]
    uv_disk = disks[-1]
    lines += ["", f"Disk for two venvs, each recipe from empty on a fresh ext4 image ({args.image_size} sparse), "
              "df/df -i delta after sync; its first (cold) install time for reference", "",
              "| recipe | used | inodes | vs uv (blocks) | vs uv (inodes) | 2nd venv adds | cold install |",
              "|---|---|---|---|---|---|---|"]
    for d in disks:
        second = d.steps[-1]
        lines.append(f"| {d.recipe} | {d.bytes / 2**30:.2f} GiB | {d.inodes:,} | {d.bytes / uv_disk.bytes:.3f}x "
                     f"| {d.inodes / uv_disk.inodes:.3f}x | {int(second['bytes']) / 2**20:,.0f} MiB, "
                     f"{int(second['inodes']):,} inodes | {d.cold_install_s:.1f} s |")
    write(args.out, "p5-torch", {"meta": info, "warmup_s": warmup, "warm_install": {n: asdict(s) for n, s in
                                 stats.items()}, "link_modes": modes, "import": imports,
                                 "disk": [asdict(d) for d in disks]}, lines)
