"""CI's smoke run of the bench runner: a tiny set, one run of each command, to show the runner works (never how
fast anything is: the figures come from full runs on a quiet machine, see README "Benchmarks")."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.network
@pytest.mark.usefixtures("users")  # the service recipe installs as wsalice
def test_bench_runner_smoke(tmp_path: Path) -> None:
    out = tmp_path / "results"
    # the service recipe's user (wsalice) makes venvs in the work directory: it must be reachable by others, which
    # pytest's own temporary directories (0700) are not
    work = Path(tempfile.mkdtemp(prefix="wheelstore-bench-smoke-", dir="/var/tmp"))
    work.chmod(0o755)
    try:
        done = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--work", str(work / "work"), "--out",
                               str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert done.returncode == 0, done.stdout + done.stderr
    (report,) = out.glob("p1-*.json")
    data = json.loads(report.read_text())
    rows = {r["command"]: r for r in data["p1_warm_install"]}
    assert set(rows) == {"wheelstore auto", "wheelstore fold", "wheelstore hardlink", "wheelstore symlink",
                         "wheelstore copy", "uv default", "uv hardlink", "uv copy", "pip",
                         "wheelstore service hardlink (root service store)"}
    assert all(r["median_s"] > 0 and r["ratio_to_uv_default"] > 0 for r in rows.values())
    assert rows["uv default"]["ratio_to_uv_default"] == 1.0
    assert {r["setup"] for r in data["p4_first_import"]} == {"wheelstore auto", "uv default", "uv --compile-bytecode"}
    assert data["meta"]["cores"] and data["meta"]["uv"].startswith("uv ")
    table = next(out.glob("p1-*.md")).read_text()
    assert "| wheelstore auto |" in table and "| pip |" in table


@pytest.mark.network
def test_bench_p8_runner_smoke(tmp_path: Path) -> None:
    """P8's runner: a uv project locked against its local index, each sync timed once, and wheelstore sync's phases
    recorded (each uv step seen as a subprocess of its own, none fetching from the index once warm)."""
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "bench.p8", "--smoke", "--work", str(tmp_path / "work"),
                           "--scratch", str(tmp_path / "scratch"), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    (report,) = out.glob("p8-*.json")
    data = json.loads(report.read_text())
    rows = {r["command"]: r for r in data["syncs"]}
    assert set(rows) == {"wheelstore sync", "uv sync --frozen", "uv sync --frozen --link-mode symlink"}
    assert all(r["median_s"] > 0 and r["ratio_to_uv_sync"] > 0 for r in rows.values())
    assert rows["uv sync --frozen"]["ratio_to_uv_sync"] == 1.0
    phases = {p["phase"]: p["median_s"] for p in data["wheelstore_sync_phases"]}
    assert all(phases[p] > 0 for p in ("python start", "wheelstore imports", "uv export", "uv venv", "linking",
                                       "uv sync (editable)"))
    assert data["meta"]["index_requests_during_timed_runs"] == 0
    assert data["meta"]["wheelstore_link_modes"] and "editable" not in data["meta"]["wheelstore_link_modes"]
    table = next(out.glob("p8-*.md")).read_text()
    assert "| wheelstore sync |" in table and "| uv export |" in table
    assert not (tmp_path / "scratch" / "run").exists()  # the run's store, cache, project and venvs are gone
