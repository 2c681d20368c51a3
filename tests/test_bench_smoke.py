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
