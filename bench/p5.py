"""``python -m bench.p5``: P5, scale (``--part scale``) and the big real case, torch (``--part torch``).

Each part runs alone and writes its own markdown table and JSON under ``bench/results/``; the default runs both, one
after the other. Commands alternate (wheelstore, uv, wheelstore, uv ...); the report gives the median and the spread
(min-max). wheelstore runs from its own venv, as users install it (``tool_venv``), and so does uv.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from .__main__ import HERE, PYTHON, sh, tool_venv
from .p5_scale import ScaleResult, make_wheels, run_size
from .p5_util import fmt_ratio


def say(text: str) -> None:
    print(f"[p5 {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def meta(work: Path, uv: Path, runs: int) -> dict[str, object]:
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cores": os.cpu_count(),
            "filesystem": sh("findmnt", "-n", "-o", "FSTYPE", "--target", str(work)).stdout.strip(),
            "python": PYTHON, "uv": sh(uv, "--version").stdout.strip(), "runs": runs, "machine": platform.platform()}


def write(out: Path, name: str, data: dict[str, object], lines: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    (out / f"{name}-{stamp}.json").write_text(json.dumps(data, indent=2) + "\n")
    text = "\n".join(lines) + "\n"
    (out / f"{name}-{stamp}.md").write_text(text)
    print(text)
    say(f"wrote {out / f'{name}-{stamp}.json'} and .md")


def scale_table(results: list[ScaleResult], info: dict[str, object]) -> list[str]:
    first, last = results[0], results[-1]
    uv_name = "install warm, uv default"
    lines = [f"P5 scale: stores of {' and '.join(f'{r.n:,}' for r in results)} synthetic pure-Python wheels "
             f"({', '.join(f'{r.files_in_wheels:,} files' for r in results)}), a fresh store each "
             f"({info['cores']} cores, {info['filesystem']}, {info['uv']}, {info['runs']} alternating runs, "
             f"{info['date']}); median (min-max); growth {last.n:,}/{first.n:,} (linear is "
             f"{last.n / first.n:.0f}x)", "",
             "| operation | " + " | ".join(f"N={r.n:,}" for r in results) + " | growth | "
             + " | ".join(f"vs uv, N={r.n:,}" for r in results) + " |",
             "|---|" + "---|" * (2 * len(results) + 1)]
    for op, stat in first.ops.items():
        cells = [r.ops[op].cell() if op in r.ops else "-" for r in results]
        growth = last.ops[op].over(stat) if op in last.ops else None
        uv_of = "install warm, uv default (again, same window)" if "filled by fold" in op else uv_name
        vs_uv = [fmt_ratio(r.ops[op].over(r.ops.get(uv_of))) if op.startswith("install warm") and op in r.ops
                 else "-" for r in results]
        lines.append(f"| {op} | {' | '.join(cells)} | {fmt_ratio(growth)} | {' | '.join(vs_uv)} |")
    lines.append("")
    for r in results:
        before, after = r.store_before_gc, r.store_after_gc
        lines.append(f"N={r.n:,}: store before gc {before['bytes'] / 2**20:,.1f} MiB, {before['inodes']:,} inodes, "
                     f"{before['units']:,} units; gc after deleting the venvs removed "
                     f"{r.gc_after_delete['removed']:,} units ({r.gc_freed_bytes / 2**20:,.1f} MiB), "
                     f"left {after['units']} units, {after['bytes'] / 2**20:,.2f} MiB, {after['inodes']:,} inodes. "
                     f"Link modes: {r.link_modes}. Directories folded (symlinks in site-packages) per venv: "
                     f"{r.folded_dirs}.")
    return lines


def part_scale(args: argparse.Namespace, bindir: Path) -> None:
    base = args.work / "p5"
    sizes = sorted(args.sizes)
    say(f"making {sizes[-1]:,} synthetic wheels (once)")
    wheels = make_wheels(base / "wheels-all", sizes[-1])
    results = [run_size(wheels[:n], base, str(bindir / "wheelstore"), bindir / "uv", args.runs, say) for n in sizes]
    info = meta(base, bindir / "uv", args.runs)
    write(args.out, "p5-scale", {"meta": info, "p5_scale": [r.to_json() for r in results]},
          scale_table(results, info))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.p5")
    parser.add_argument("--part", choices=("scale", "torch", "all"), default="all")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[200, 2000],
                        help="store sizes for the scale part, comma-separated (default 200,2000)")
    parser.add_argument("--image-size", default="40G", help="the sparse ext4 image for torch's disk figures")
    parser.add_argument("--work", type=Path, default=HERE / ".work")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("P5 runs as root: torch's disk figures need a loop-mounted image")
    args.work = args.work.absolute()
    bindir = tool_venv()
    if args.part in ("scale", "all"):
        part_scale(args, bindir)
    if args.part in ("torch", "all"):
        from .p5_torch import part_torch
        part_torch(args, bindir, say, meta, write)


if __name__ == "__main__":
    main()
