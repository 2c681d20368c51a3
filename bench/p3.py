"""``python -m bench.p3``: P3, footprint. Two real users with two venvs each of the benchmark set, on a fresh
loop-mounted ext4 image per recipe, so the df delta (blocks and inodes used, after ``sync``) is the recipe's alone:

- one plain copy: one venv, ``uv pip install --link-mode copy``, its cache outside the image (the baseline),
  and the same with ``--compile-bytecode``: not a baseline, but the store holds each tree's bytecode and a plain
  uv copy has none, so it shows what those pycs weigh;
- the uv copy-mode recipe: one cache shared by the group (setgid, umask 002), four venvs copied from it;
- uv hardlink with that shared cache under umask 002: small, but any member can then change everyone's files;
- wheelstore ``auto`` and ``--link-mode fold`` with a group store (each user's own umask 022);
- wheelstore ``auto`` with a service store made and served by root (issue 20): the users' installs ask the service,
  which publishes the trees and hard-links their files into each user's own venv directories;
- wheelstore ``auto`` into venvs made by Debian's ``python3 -m venv``, which hold its pip 23.0.1: beside that pip
  wheelstore links nothing into the store (it could not remove the links), so a group store's trees are copied. The
  venvs' own pip is counted too, as it is part of such a venv.

Each figure is a ratio of one copy. The cost of each venv is the delta it added, so the second user's first venv
(the third install) is what sharing across users costs. Runs as root (it makes the users and mounts the image).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from . import drop_image, fresh_image
from .__main__ import HERE, PYTHON, SET36, setup, sh, tool_venv
from .p2 import GROUP, USERS, ensure_users
from .service import root_service

SCRATCH = Path("/var/tmp/wheelstore-bench-p3")
MNT = SCRATCH / "mnt"
IMAGE = SCRATCH / "p3.img"
ORDER = (USERS[0], USERS[0], USERS[1], USERS[1])  # alice, alice, bob (the second user's first venv), bob
SVC_SOCKET = Path("/tmp/wsbench-p3.sock")  # short: a Unix socket's path has at most 107 bytes
ISOLATED = {"PIP_CONFIG_FILE": os.devnull, "UV_NO_CONFIG": "1", "LANG": "C.UTF-8"}


def usage() -> tuple[int, int]:
    """(bytes, inodes) in use on the image, as ``df`` and ``df -i`` count them, after ``sync``."""
    subprocess.run(["sync"], check=True)
    st = os.statvfs(MNT)
    return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_files - st.f_ffree


def as_user(user: str, umask: int, cmd: list[str], bindir: Path) -> str:
    env = {"HOME": f"/home/{user}", "USER": user, "PATH": f"{bindir}:/usr/bin:/bin", **ISOLATED}
    done = subprocess.run(cmd, user=user, group=user, extra_groups=[GROUP], umask=umask, env=env, cwd="/",
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} as {user}: exit {done.returncode}\n{done.stderr}")
    return done.stdout


Recipe = Callable[[str, Path], list[str]]


@dataclass
class Footprint:
    """What one recipe used on its image: in all, and what each venv added (in ORDER)."""

    recipe: str
    bytes: int
    inodes: int
    per_venv: list[dict[str, int | str]]
    link_modes: list[list[str]]
    ratios: dict[str, float | None] = field(default_factory=dict)

    def against(self, one_copy: Footprint) -> None:
        """Ratios to one plain copy; the third venv is the second user's first."""
        extra = self.per_venv[2] if len(self.per_venv) > 2 else None
        self.ratios = {
            "blocks": round(self.bytes / one_copy.bytes, 3),
            "inodes": round(self.inodes / one_copy.inodes, 3),
            "second_user_first_venv_blocks": round(int(extra["bytes"]) / one_copy.bytes, 3) if extra else None,
            "second_user_first_venv_inodes": round(int(extra["inodes"]) / one_copy.inodes, 3) if extra else None,
        }


def run_recipe(name: str, venvs: int, umask: int, prepare: Callable[[], None], install: Recipe, bindir: Path,
               size: str, *, with_pip: bool = False,
               serving: Callable[[], AbstractContextManager[None]] = nullcontext) -> Footprint:
    """Fresh image, ``prepare`` (cache or store), then the venvs in ORDER (``with_pip``: Debian's pip in each, as
    ``python3 -m venv`` makes them), measured after each one, while ``serving`` runs (a store service)."""
    fresh_image(IMAGE, MNT, size)
    try:
        start = usage()
        prepare()
        with serving():
            steps, modes = venv_steps(venvs, umask, install, bindir, with_pip)
        per: list[dict[str, int | str]] = [{"user": u, "bytes": s[0] - p[0], "inodes": s[1] - p[1]}
                                           for u, p, s in zip(ORDER[:venvs], steps[:-1], steps[1:], strict=True)]
        return Footprint(name, steps[-1][0] - start[0], steps[-1][1] - start[1], per, modes)
    finally:
        drop_image(IMAGE, MNT)


def venv_steps(venvs: int, umask: int, install: Recipe, bindir: Path, with_pip: bool
               ) -> tuple[list[tuple[int, int]], list[list[str]]]:
    """The venvs in ORDER: usage before the first and after each, and the link modes each took."""
    steps, modes = [usage()], []
    for i, user in enumerate(ORDER[:venvs]):
        venv = MNT / f"venv{i}-{user}"
        as_user(user, umask, [PYTHON, "-m", "venv", *(() if with_pip else ("--without-pip",)), str(venv)], bindir)
        out = as_user(user, umask, install(user, venv), bindir)
        if out.lstrip().startswith("{"):
            modes.append(sorted({d["link_mode"] for d in json.loads(out)["installed"]}))
        steps.append(usage())
    return steps, modes


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.p3")
    parser.add_argument("--requirements", type=Path, default=SET36)
    parser.add_argument("--work", type=Path, default=HERE / ".work")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--size", default="3G", help="size of the ext4 image for each recipe")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("P3 runs as root: it installs as two real users on a loop-mounted image")
    ensure_users()
    _uv, wheels, _store = setup(args.work.absolute(), args.requirements)
    bindir = tool_venv()
    uv, ws = str(bindir / "uv"), str(bindir / "wheelstore")
    # inputs every user can read, outside the image so they are not counted
    shutil.rmtree(SCRATCH, ignore_errors=True)
    (SCRATCH / "wheels").mkdir(parents=True)
    SCRATCH.chmod(0o755)
    for wheel in wheels.glob("*.whl"):
        shutil.copy(wheel, SCRATCH / "wheels" / wheel.name)
    req = SCRATCH / "requirements.txt"
    shutil.copy(args.requirements, req)
    outside = SCRATCH / "outside"  # the baseline's uv cache: not part of "one copy"
    outside.mkdir()
    outside.chmod(0o1777)
    found = ["--offline", "--no-index", "--find-links", str(SCRATCH / "wheels")]
    cache = MNT / "uv-cache"
    store = MNT / "store"

    def group_cache() -> None:  # the recipe uv needs for a cache shared by a group
        cache.mkdir()
        shutil.chown(cache, group=GROUP)
        cache.chmod(0o2775)

    def group_store() -> None:
        as_user(USERS[0], 0o022, [ws, "init", "-q", str(store), "--group", GROUP], bindir)

    def uv_install(cache_dir: Path, mode: str, *extra: str) -> Recipe:
        return lambda user, venv: [uv, "pip", "install", "-q", *found, "--cache-dir", str(cache_dir),
                                   "--link-mode", mode, *extra, "-p", str(venv / "bin" / "python"), "-r", str(req)]

    def ws_install(mode: str) -> Recipe:
        return lambda user, venv: [ws, "--store", str(store), "install", "-q", "--json", "--venv", str(venv),
                                   "--link-mode", mode, *found, "-r", str(req)]

    recipes = [
        ("one copy (uv copy, cache not counted)", 1, 0o022, lambda: None,
         uv_install(outside / "uv-cache", "copy")),
        # not a baseline: the store holds bytecode and uv's copy does not, so this shows what the pycs weigh
        ("one copy with bytecode (uv copy --compile-bytecode)", 1, 0o022, lambda: None,
         uv_install(outside / "uv-cache", "copy", "--compile-bytecode")),
        ("uv copy, shared cache (umask 002)", 4, 0o002, group_cache, uv_install(cache, "copy")),
        ("uv hardlink, shared cache (umask 002, unsafe)", 4, 0o002, group_cache, uv_install(cache, "hardlink")),
        ("wheelstore auto, group store", 4, 0o022, group_store, ws_install("auto")),
        ("wheelstore fold, group store", 4, 0o022, group_store, ws_install("fold")),
    ]
    rows = [run_recipe(name, n, umask, prepare, install, bindir, args.size)
            for name, n, umask, prepare, install in recipes]
    rows.append(run_recipe("wheelstore auto, group store, venvs with Debian's pip 23.0.1", 4, 0o022, group_store,
                           ws_install("auto"), bindir, args.size, with_pip=True))
    # root's service store on the image, its service started on it and stopped before the image is unmounted; the
    # users' auto installs take the service's hard links (their link modes are in the report)
    rows.append(run_recipe("wheelstore service hardlink (root service store)", 4, 0o022, lambda: None,
                           ws_install("auto"), bindir, args.size,
                           serving=lambda: root_service(store, SVC_SOCKET, bindir)))
    shutil.rmtree(outside, ignore_errors=True)
    for row in rows:
        row.against(rows[0])
    stamp = datetime.now(timezone.utc)
    meta = {"date": stamp.isoformat(timespec="seconds"), "cores": os.cpu_count(), "filesystem": "ext4 (loop image)",
            "image_size": args.size, "uv": sh(uv, "--version").stdout.strip(), "requirements": args.requirements.name,
            "users": list(USERS), "order": list(ORDER)}
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"p3-{stamp.strftime('%Y%m%dT%H%M%S')}"
    (args.out / f"{name}.json").write_text(
        json.dumps({"meta": meta, "p3_footprint": [asdict(r) for r in rows]}, indent=2) + "\n")
    lines = [f"P3: footprint of {args.requirements.name}, 2 users x 2 venvs (alice, alice, bob, bob) on a fresh ext4 "
             f"image per recipe, df/df -i delta after sync ({meta['cores']} cores, {meta['uv']}, {meta['date']})", "",
             "| recipe | venvs | used | inodes | blocks vs one copy | inodes vs one copy "
             "| 2nd user's 1st venv: inodes (vs one copy) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        extra = (f"{int(r.per_venv[2]['inodes']):,} ({r.ratios['second_user_first_venv_inodes']:.3f}x)"
                 if len(r.per_venv) > 2 else "-")
        lines.append(f"| {r.recipe} | {len(r.per_venv)} | {r.bytes / 2**20:,.0f} MiB | {r.inodes:,} "
                     f"| {r.ratios['blocks']:.3f}x | {r.ratios['inodes']:.3f}x | {extra} |")
    lines += ["", "Link modes wheelstore used, per venv: "
              + "; ".join(f"{r.recipe}: {r.link_modes}" for r in rows if r.link_modes)]
    text = "\n".join(lines) + "\n"
    (args.out / f"{name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
