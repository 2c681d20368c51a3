"""``python -m bench.p6``: P6, verify throughput. ``wheelstore verify --full --json`` on the warm bench store against
``sha256sum`` of the same files (every regular file of every published tree and bytecode unit), as a physical
reference for how fast the disk and one core can hash them; and ``openssl dgst -sha256``, when there is one, since
Debian's sha256sum does not use the CPU's SHA instructions and hashlib (OpenSSL) does.

The commands alternate (A B A B ...); the report gives the median, the spread and MB/s (10^6 bytes per second of
the files' total size). Warm: the page cache holds the files (one untimed run of each first). Cold: the page cache is
dropped before every run, when this process may write /proc/sys/vm/drop_caches (root, outside most containers).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from .__main__ import HERE, SET36, setup, sh, tool_venv

DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def store_files(store: Path) -> list[tuple[Path, int]]:
    """Every regular file verify hashes: those of published trees and bytecode units (no hidden staging dirs)."""
    files = []
    for top in sorted((store / "trees").iterdir()):
        if top.name.startswith(".") or not top.is_dir() or top.is_symlink():
            continue
        for dirpath, _dirs, names in os.walk(top):
            for name in names:
                path = Path(dirpath, name)
                st = path.lstat()
                if path.is_file() and not path.is_symlink():
                    files.append((path, st.st_size))
    return files


@dataclass
class Row:
    """One command in one cache state: seconds and MB/s (10^6 bytes of the files' total size per second)."""

    cache: str
    command: str
    median_s: float
    min_s: float
    max_s: float
    mb_per_s: float
    mb_per_s_min: float
    mb_per_s_max: float
    throughput_vs_sha256sum: float

    @classmethod
    def of(cls, cache: str, command: str, values: list[float], reference: float, total: int) -> Row:
        med = statistics.median(values)
        return cls(cache, command, round(med, 3), round(min(values), 3), round(max(values), 3),
                   round(total / 1e6 / med, 1), round(total / 1e6 / max(values), 1),
                   round(total / 1e6 / min(values), 1), round(reference / med, 2))


def can_drop_caches() -> bool:
    try:
        DROP_CACHES.write_text("3\n")
    except OSError:
        return False
    return True


def timed(cmd: list[str], cold: bool) -> tuple[float, str]:
    subprocess.run(["sync"], check=True)
    if cold:
        DROP_CACHES.write_text("3\n")
    start = time.perf_counter()
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return time.perf_counter() - start, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.p6")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requirements", type=Path, default=SET36)
    parser.add_argument("--work", type=Path, default=HERE / ".work")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    _uv, _wheels, store = setup(args.work.absolute(), args.requirements)
    ws = str(tool_venv() / "wheelstore")
    files = store_files(store)
    total = sum(size for _, size in files)
    with tempfile.NamedTemporaryFile("wb", prefix="p6-files-", delete=False) as f:
        f.write(b"".join(os.fsencode(p) + b"\0" for p, _ in files))
        listing = f.name
    commands = {
        "wheelstore verify --full": [ws, "--store", str(store), "verify", "--full", "--json"],
        "sha256sum": ["xargs", "-0", "-a", listing, "sha256sum"],
    }
    if shutil.which("openssl"):  # Debian's sha256sum is plain C; OpenSSL, like Python's hashlib, uses SHA-NI/AVX2
        commands["openssl dgst -sha256"] = ["xargs", "-0", "-a", listing, "openssl", "dgst", "-sha256"]
    series = ["warm", *(["cold"] if can_drop_caches() else [])]
    times: dict[tuple[str, str], list[float]] = {(s, name): [] for s in series for name in commands}
    checked: object = None
    try:
        for name, cmd in commands.items():  # warm-up: the files in the page cache, and verify's report checked
            _, out = timed(cmd, cold=False)
            if name.startswith("wheelstore"):
                report = json.loads(out)
                if not report["ok"]:
                    raise SystemExit(f"the bench store is damaged: {report['damaged'][:3]}")
                checked = report["checked"]
        for s in series:
            for _ in range(args.runs):
                for name, cmd in commands.items():
                    times[(s, name)].append(timed(cmd, cold=s == "cold")[0])
    finally:
        os.unlink(listing)
    rows = [Row.of(s, name, values, statistics.median(times[(s, "sha256sum")]), total)
            for (s, name), values in times.items()]
    stamp = datetime.now(timezone.utc)
    meta = {"date": stamp.isoformat(timespec="seconds"), "cores": os.cpu_count(),
            "filesystem": sh("findmnt", "-n", "-o", "FSTYPE", "--target", str(store)).stdout.strip(),
            "store": str(store), "files": len(files), "bytes": total, "verify_checked": checked, "runs": args.runs,
            "cold_cache": "cold" in series}
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"p6-{stamp.strftime('%Y%m%dT%H%M%S')}"
    report = {"meta": meta, "p6_verify_throughput": [asdict(r) for r in rows]}
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    cold_note = "" if "cold" in series else "; page cache could not be dropped here, warm figures only"
    lines = [f"P6: verify --full throughput on the warm bench store ({len(files):,} files, {total / 1e6:,.0f} MB; "
             f"{meta['cores']} cores, {meta['filesystem']}, {args.runs} alternating runs, {meta['date']}{cold_note})",
             "", "| page cache | command | median | spread | MB/s (spread) | vs sha256sum |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r.cache} | {r.command} | {r.median_s:.2f} s | {r.min_s:.2f}-{r.max_s:.2f} s | "
              f"{r.mb_per_s:,.0f} ({r.mb_per_s_min:,.0f}-{r.mb_per_s_max:,.0f}) | {r.throughput_vs_sha256sum:.2f}x |"
              for r in rows]
    text = "\n".join(lines) + "\n"
    (args.out / f"{name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
