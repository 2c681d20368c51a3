"""``python -m bench.foldproof``: evidence for (or against) letting ``auto`` choose ``--link-mode fold``.

Installs ~150 widely used distributions from the machine's local mirror, in batches, into two fresh venvs of
``/usr/bin/python3`` through one fresh store: one with ``--link-mode fold``, the control with ``--link-mode symlink``
(same store, same resolution, so the only difference is the link mode). Then, in each venv, imports every top-level
module each installed distribution provides (from its RECORD, descending into namespace packages) in a subprocess of
its own, and runs ``--version`` (else ``--help``) of one console script per distribution.

Runs as root, but every probe runs with CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER dropped from the
bounding set (``setpriv``) and in an empty network namespace (``unshare -n``): root then meets file modes like any
owner does, so a package that writes into its own (folded, read-only) directory shows EACCES/EROFS as an ordinary
user would, and nothing can hang on the network. The store is also snapshotted around the probes, so any write that
got through is reported too.

Reports: installs that failed under fold but not symlink, imports and scripts that failed under fold but not under
symlink (with the error's last line), and every probe whose output mentions a permission or read-only error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYTHON = "/usr/bin/python3"
WORK = Path("/var/tmp/wheelstore-foldproof")
INDEX = ["-i", "file:///opt/pypi/simple", "--extra-index-url", "file:///opt/pypi-more/simple", "-f", "/opt/wheels"]
MODES = ("fold", "symlink")
SANDBOX = ["unshare", "-n", "setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
WRITE_ERRORS = re.compile(r"EACCES|EROFS|PermissionError|Permission denied|Read-only file system")

#: widely used distributions present on the local mirror, by kind (their dependencies come along)
PACKAGES: dict[str, list[str]] = {
    "web": ["requests", "urllib3", "httpx", "aiohttp", "yarl", "multidict", "frozenlist", "flask", "werkzeug",
            "jinja2", "markupsafe", "itsdangerous", "django", "fastapi", "starlette", "uvicorn", "httptools",
            "uvloop", "websockets", "gunicorn", "tornado", "twisted", "sqlalchemy", "alembic", "celery", "redis",
            "pymongo", "psycopg2-binary", "asyncpg", "grpcio"],
    "data": ["numpy", "pandas", "scipy", "scikit-learn", "matplotlib", "seaborn", "statsmodels", "pyarrow",
             "polars", "h5py", "tables", "numba", "numexpr", "bottleneck", "xarray", "dask", "sympy", "networkx",
             "pillow", "scikit-image", "shapely", "pyproj", "opencv-python-headless", "lxml", "duckdb",
             "pywavelets", "tifffile", "imageio", "netcdf4", "astropy", "biopython", "plotly", "bokeh", "openpyxl",
             "xlsxwriter", "regex", "rapidfuzz", "zstandard", "lz4", "lightgbm", "onnxruntime", "tokenizers",
             "safetensors", "tiktoken", "pyogrio", "geopandas", "igraph", "rustworkx", "kiwisolver", "contourpy",
             "fonttools"],
    "system": ["cryptography", "bcrypt", "pynacl", "cffi", "psutil", "pyzmq", "pyyaml", "ruamel-yaml", "orjson",
               "ujson", "msgpack", "pydantic", "paramiko"],
    "cli/dev": ["click", "typer", "rich", "tqdm", "colorama", "black", "ruff", "isort", "flake8", "pylint", "mypy",
                "tox", "nox", "pre-commit", "virtualenv", "yt-dlp", "tabulate", "docutils", "sphinx", "pygments",
                "ipython", "jupyter-core", "nbconvert"],
    "testing": ["pytest", "pytest-cov", "pytest-xdist", "pytest-mock", "pytest-asyncio", "hypothesis", "coverage",
                "faker", "freezegun", "responses", "time-machine"],
    "parsing": ["beautifulsoup4", "html5lib", "lark", "pyparsing", "ply", "python-dateutil", "arrow", "pendulum",
                "tomlkit", "feedparser", "pdfminer-six", "pypdf", "python-docx", "dateparser", "babel", "markdown",
                "mistune"],
    "cloud/namespace": ["boto3", "google-api-core", "google-auth", "google-api-python-client", "google-genai",
                        "google-crc32c", "googleapis-common-protos", "protobuf", "opentelemetry-sdk",
                        "opentelemetry-exporter-otlp-proto-http", "jaraco-text", "jaraco-functools",
                        "backports-tarfile", "zope-interface", "sphinxcontrib-jquery", "nvidia-cuda-runtime",
                        "openai", "anthropic", "langchain-core", "huggingface-hub"],
    "ml/heavy": ["torch==2.13.0+cpu", "transformers", "jax", "spacy", "pygame", "shap"],
    # last, so they meet the nvidia/ that nvidia-cuda-runtime folded alone: the install must unfold it first
    "unfold": ["nvidia-cuda-nvcc", "nvidia-cuda-crt", "nvidia-cuda-cccl"],
}


@dataclass
class Probe:
    """One import or script run in one venv."""

    kind: str  # "import" or "script"
    dist: str
    target: str  # module name or script name
    rc: int = 0
    last: str = ""
    write_error: str = ""


@dataclass
class ModeResult:
    installs: dict[str, str] = field(default_factory=dict)  # requested name -> "" (ok) or last error line
    dists: dict[str, str] = field(default_factory=dict)  # installed dist -> version
    probes: dict[str, Probe] = field(default_factory=dict)  # "kind:dist:target" -> probe
    store_writes: list[str] = field(default_factory=list)
    install_seconds: float = 0.0


def sh(*cmd: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], check=check, text=True, capture_output=True)


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def install(store: Path, venv: Path, mode: str, names: list[str]) -> subprocess.CompletedProcess[str]:
    return sh(sys.executable, "-m", "wheelstore", "install", "--store", store, "--venv", venv, "--link-mode", mode,
              "-q", *INDEX, *names, check=False)


def install_all(store: Path, venv: Path, mode: str, batches: list[list[str]], result: ModeResult) -> None:
    """Each batch in one install; a failed batch again one name at a time, so one bad name costs only itself."""
    start = time.monotonic()
    for i, batch in enumerate(batches):
        done = install(store, venv, mode, batch)
        print(f"  [{mode}] batch {i + 1}/{len(batches)}: rc={done.returncode}", flush=True)
        if done.returncode == 0:
            result.installs.update({name: "" for name in batch})
            continue
        print(f"    {last_line(done.stderr)}", flush=True)
        for name in batch:
            one = install(store, venv, mode, [name])
            result.installs[name] = "" if one.returncode == 0 else last_line(one.stderr) or f"rc={one.returncode}"
            if one.returncode:
                print(f"    {name}: {result.installs[name]}", flush=True)
    result.install_seconds = time.monotonic() - start


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3.*/site-packages"))


def record_paths(dist_info: Path) -> list[str]:
    try:
        text = (dist_info / "RECORD").read_text()
    except OSError:
        return []
    return [line.rsplit(",", 2)[0] for line in text.splitlines() if line.strip()]


def _module_name(part: str) -> str | None:
    """The module a site-packages entry name stands for (``foo.py``, ``foo.cpython-311-x86_64-linux-gnu.so``,
    ``foo``), or None for what is no module."""
    if part.endswith(".py"):
        part = part[:-3]
    elif part.endswith(".so"):
        part = part.split(".", 1)[0]
    elif "." in part:
        return None
    return part if part.isidentifier() else None


def modules_of(paths: list[str]) -> list[str]:
    """Top-level modules from RECORD; a namespace package (a directory without ``__init__.py`` of this dist) is
    replaced by its own subpackages and modules, two levels deep (``google`` -> ``google.auth``)."""
    files = {p for p in paths if not p.startswith("..") and ".dist-info/" not in p and "__pycache__" not in p}

    def walk(prefix: str, depth: int) -> list[str]:
        children: dict[str, list[str]] = {}  # entry name -> paths below it ("" for the entry itself, a file)
        for path in files:
            if path.startswith(prefix):
                head, slash, tail = path[len(prefix):].partition("/")
                children.setdefault(head, []).append(tail if slash else "")
        found: set[str] = set()
        for head, tails in children.items():
            name = _module_name(head)
            if name is None:
                continue
            if head.endswith((".py", ".so")) and "" in tails:
                found.add(prefix.replace("/", ".") + name)
            elif head == name:  # a directory (a folded one is also listed alone, as "name,,")
                if any(t == "__init__.py" or (t.startswith("__init__.") and t.endswith(".so")) for t in tails):
                    found.add(prefix.replace("/", ".") + name)
                elif depth < 2:
                    found.update(walk(f"{prefix}{name}/", depth + 1))
        return sorted(found)

    return walk("", 0)


def console_scripts(dist_info: Path) -> list[str]:
    try:
        text = (dist_info / "entry_points.txt").read_text()
    except OSError:
        return []
    section, names = "", []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[console_scripts]" and "=" in line:
            names.append(line.split("=", 1)[0].strip())
    return names


def installed(venv: Path) -> dict[str, Path]:
    """Installed distribution name (normalised) -> its dist-info directory."""
    out = {}
    for info in site_packages(venv).glob("*.dist-info"):
        name = info.name[: -len(".dist-info")].rsplit("-", 1)[0]
        out[re.sub(r"[-_.]+", "-", name).lower()] = info
    return out


def probe_env(venv: Path, home: Path) -> dict[str, str]:
    return {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "TERM": "dumb",
            "VIRTUAL_ENV": str(venv), "XDG_CACHE_HOME": str(home / ".cache"), "MPLBACKEND": "Agg"}


def run_probe(probe: Probe, venv: Path, home: Path, cwd: Path, timeout: float) -> Probe:
    if probe.kind == "import":
        attempts = [[str(venv / "bin" / "python"), "-c", f"import {probe.target}"]]
    else:
        attempts = [[str(venv / "bin" / probe.target), "--version"], [str(venv / "bin" / probe.target), "--help"]]
    output = ""
    for cmd in attempts:
        try:
            done = subprocess.run([*SANDBOX, *cmd], env=probe_env(venv, home), cwd=cwd, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, errors="replace", timeout=timeout)
            probe.rc, output = done.returncode, done.stdout + done.stderr
        except subprocess.TimeoutExpired as e:
            probe.rc = -999
            got = [x.decode(errors="replace") if isinstance(x, bytes) else x or "" for x in (e.stdout, e.stderr)]
            output = f"{got[0]}{got[1]}\ntimeout after {timeout:.0f}s"
        if probe.rc == 0:
            break
    probe.last = last_line(output) if probe.rc else ""
    writes = [line.strip()[:300] for line in output.splitlines() if WRITE_ERRORS.search(line)]
    probe.write_error = writes[-1] if writes else ""
    return probe


def store_snapshot(store: Path) -> dict[str, tuple[int, int, int]]:
    snap = {}
    for root, dirs, files in os.walk(store / "trees"):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            snap[os.path.join(root, name)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return snap


def probes_for(venv: Path, scripts_per_dist: int) -> list[Probe]:
    probes = []
    for dist, info in sorted(installed(venv).items()):
        probes += [Probe("import", dist, module) for module in modules_of(record_paths(info))]
        scripts = [s for s in console_scripts(info) if (venv / "bin" / s).exists()]
        probes += [Probe("script", dist, s) for s in scripts[:scripts_per_dist]]
    return probes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="only the first N packages (0: all)")
    parser.add_argument("--batch", type=int, default=15, help="names per install")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per import or script")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="probes run at once")
    parser.add_argument("--scripts-per-dist", type=int, default=1)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run this as root (fold is allowed for root only from root's own private store)")

    names = [name for group in PACKAGES.values() for name in group]
    names = names[: args.limit] if args.limit else names
    batches = [names[i: i + args.batch] for i in range(0, len(names), args.batch)]
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    WORK.chmod(0o755)
    store = WORK / "store"
    sh(sys.executable, "-m", "wheelstore", "init", store)
    started = time.monotonic()

    results = {mode: ModeResult() for mode in MODES}
    for mode in MODES:  # fold first: it compiles the pycs into the trees, the control reuses them
        venv = WORK / mode
        sh(sys.executable, "-m", "wheelstore", "venv", "--store", store, "--python", PYTHON, venv)
        install_all(store, venv, mode, batches, results[mode])
        results[mode].dists = {d: i.name[: -len(".dist-info")].rsplit("-", 1)[1] for d, i in installed(venv).items()}

    before = store_snapshot(store)
    jobs = []
    for mode in MODES:
        venv, home, cwd = WORK / mode, WORK / f"home-{mode}", WORK / f"cwd-{mode}"
        home.mkdir()
        cwd.mkdir()
        for probe in probes_for(venv, args.scripts_per_dist):
            results[mode].probes[f"{probe.kind}:{probe.dist}:{probe.target}"] = probe
            jobs.append((probe, venv, home, cwd))
    print(f"probing: {len(jobs)} imports and scripts", flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda job: run_probe(job[0], job[1], job[2], job[3], args.timeout), jobs))
    after = store_snapshot(store)
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    results["fold"].store_writes = changed  # probes of both modes ran; either could be the writer

    report(names, results, args, time.monotonic() - started)


def report(names: list[str], results: dict[str, ModeResult], args: argparse.Namespace, seconds: float) -> None:
    fold, ctl = results["fold"], results["symlink"]
    install_diff = {n: e for n, e in fold.installs.items() if e and not ctl.installs.get(n)}
    both_failed = {n: e for n, e in fold.installs.items() if e and ctl.installs.get(n)}
    version_diff = {d: (v, ctl.dists.get(d)) for d, v in fold.dists.items() if ctl.dists.get(d) != v}
    probe_diff = [p for key, p in sorted(fold.probes.items())
                  if p.rc and key in ctl.probes and ctl.probes[key].rc == 0]
    fold_only_pass = [p for key, p in sorted(ctl.probes.items())
                      if p.rc and key in fold.probes and fold.probes[key].rc == 0]
    both_probe_fail = [p for key, p in sorted(fold.probes.items())
                       if p.rc and key in ctl.probes and ctl.probes[key].rc]
    writes = {mode: [p for _, p in sorted(r.probes.items()) if p.write_error] for mode, r in results.items()}

    lines = [
        f"# foldproof {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"command: `cd {HERE.parent} && {sys.executable} -m bench.foldproof"
        f"{f' --limit {args.limit}' if args.limit else ''}` (as root), {seconds / 60:.1f} min in all",
        f"requested: {len(names)} names in batches of {args.batch}; installed distributions: "
        f"fold {len(fold.dists)}, symlink {len(ctl.dists)}; install time fold {fold.install_seconds:.0f}s "
        f"(cold store, compiles pycs), symlink {ctl.install_seconds:.0f}s (warm)",
        f"probes: fold {len(fold.probes)} ({sum(p.kind == 'import' for p in fold.probes.values())} imports), "
        f"symlink {len(ctl.probes)}",
        "",
        f"## installs failed under fold but not symlink: {len(install_diff)}",
        *[f"- {n}: {e}" for n, e in install_diff.items()],
        f"## installs failed under both: {len(both_failed)}",
        *[f"- {n}: {e}" for n, e in both_failed.items()],
        f"## versions that differ between the venvs: {len(version_diff)}",
        *[f"- {d}: fold {v[0]}, symlink {v[1]}" for d, v in version_diff.items()],
        f"## imports/scripts failed under fold but not symlink: {len(probe_diff)}",
        *[f"- {p.kind} {p.dist}: {p.target}: rc={p.rc}: {p.last}" for p in probe_diff],
        f"## failed under symlink but not fold: {len(fold_only_pass)}",
        *[f"- {p.kind} {p.dist}: {p.target}: rc={p.rc}: {p.last}" for p in fold_only_pass],
        f"## failed under both (not fold's doing): {len(both_probe_fail)}",
        *[f"- {p.kind} {p.dist}: {p.target}: rc={p.rc}: {p.last}" for p in both_probe_fail],
    ]
    for mode in MODES:
        lines += [f"## permission/read-only errors in output, {mode}: {len(writes[mode])}",
                  *[f"- {p.kind} {p.dist}: {p.target}: rc={p.rc}: {p.write_error}" for p in writes[mode]]]
    lines += [f"## store entries changed while probing: {len(fold.store_writes)}",
              *[f"- {p}" for p in fold.store_writes[:50]],
              "", "## requested names", ", ".join(names)]
    text = "\n".join(lines) + "\n"
    print(text)
    out = WORK / "report"  # outside the work tree: the lead decides what goes into bench/results
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({m: asdict(r) for m, r in results.items()}, indent=1))
    print(f"written: {out}.md and .json")


if __name__ == "__main__":
    main()
