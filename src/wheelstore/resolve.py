"""Resolution through uv: requirements in, a PEP 751 ``pylock.toml`` for one target interpreter out.

uv (a declared dependency, the binary of the ``uv`` package) does the resolving. It is always run with ``--no-config``
and without its source variables in the environment, and is handed the sources explicitly
(:meth:`Sources.uv_args`), so the pip and uv settings that :mod:`wheelstore.sources` already merged are neither
ignored nor counted twice. TLS: ``--system-certs`` (the system store), ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` passed
through, and pip's ``cert`` as ``SSL_CERT_FILE`` when that is unset. uv's cache is its default one for the calling
user: nothing is written where other users could interfere.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from packaging.pylock import (
    PackageArchive, PackageSdist, PackageWheel, Pylock, PylockUnsupportedVersionError, PylockValidationError,
)
from packaging.requirements import InvalidRequirement, Requirement

from .errors import WheelstoreError
from .logs import log
from .sources import Sources
from .venv import Interpreter

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

#: uv settings that Sources already accounts for: uv must not read them again
_UV_SOURCE_VARS = frozenset({
    "UV_DEFAULT_INDEX", "UV_INDEX_URL", "UV_INDEX", "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS", "UV_NO_INDEX",
    "UV_OFFLINE", "UV_CONFIG_FILE", "UV_NO_CONFIG", "UV_PYTHON", "UV_WORKING_DIR", "UV_PROJECT", "UV_SYSTEM_PYTHON",
})




class ResolutionError(WheelstoreError):
    """uv could not turn the requirements into a lock: no solution, an unknown package, the network."""


def uv_binary() -> str:
    """The uv executable of the installed ``uv`` package."""
    try:
        import uv

        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found:
            return found
        raise ResolutionError("uv is not installed, and wheelstore resolves with it", hint="pip install uv") from None


def uv_environ(sources: Sources, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a uv subprocess: the caller's, minus what ``sources`` already says, plus certificates."""
    env = {k: v for k, v in (os.environ if environ is None else environ).items() if k not in _UV_SOURCE_VARS}
    if sources.cert and not env.get("SSL_CERT_FILE"):
        env["SSL_CERT_FILE"] = sources.cert
    env["NO_COLOR"] = "1"
    env.pop("FORCE_COLOR", None)
    return env


def uv_command(verb: Sequence[str], interpreter: Interpreter, sources: Sources) -> list[str]:
    """``uv VERB`` for ``interpreter`` with ``sources`` and nothing from uv's own configuration."""
    return [
        uv_binary(), *verb, "--no-config", "--system-certs", "--no-python-downloads", "--color", "never",
        "--python", interpreter.executable, *sources.uv_args(),
    ]


def run_uv(cmd: list[str], sources: Sources, *, quiet: bool, log: Path | None = None) -> tuple[int, list[str]]:
    """Run uv; return its exit status and stderr lines.

    Its progress lines are relayed to our stderr as they come unless ``quiet``; from its first ``error:`` line on,
    nothing more is relayed (the caller reports the failure in one line). With ``log``, stdout and stderr both go to
    that file instead, for build logs.
    """
    env = uv_environ(sources)
    if log is not None:
        with open(log, "wb") as f:
            done = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, env=env)
        return done.returncode, log.read_text(errors="replace").splitlines()
    lines: list[str] = []
    failing = False
    with subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          env=env, text=True, errors="replace") as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            line = line.rstrip("\n")
            lines.append(line)
            failing = failing or line.startswith("error:")
            if not quiet and not failing:
                print(line, file=sys.stderr, flush=True)
    return proc.returncode, lines


def uv_failure(lines: Sequence[str], what: str, sources: Sources, *, cls: type[WheelstoreError] = ResolutionError
               ) -> WheelstoreError:
    """uv's error, its first and last cause, in one line, with uv's hint or one of ours."""
    head = ""
    causes: list[str] = []
    hints: list[str] = []
    for raw in lines:
        line = raw.strip()
        if line.startswith("error:") and not head:
            head = line.removeprefix("error:").strip()
        elif line.startswith(("cause:", "Caused by:")):
            causes.append(line.split(":", 1)[1].strip())
        elif line.startswith("hint:"):
            hints.append(line.removeprefix("hint:").strip())
    if not head:
        head = next((line.strip() for line in reversed(lines) if line.strip()), "uv failed without a message")
    parts = [head, *causes[:1], *causes[1:][-1:]]
    message = f"{what}: {': '.join(parts)}"
    where = ", ".join([*sources.index_urls, *sources.find_links]) or "no index and no find-links"
    if hints:
        hint = hints[0]
    elif sources.offline:
        hint = "run once without --offline to fill uv's cache, or give the files with --find-links"
    elif "No solution found" in head:
        hint = f"check the requirement's name and version against the indexes in use ({where})"
    elif any(w in " ".join(parts) for w in ("Failed to fetch", "connect", "dns", "Request failed", "certificate")):
        hint = f"check the network and the index URLs ({where}); certificates: SSL_CERT_FILE or the system store"
    else:
        hint = None
    return cls(message, hint=hint)


def lock(
    requirements: Sequence[str],
    requirement_files: Sequence[Path],
    interpreter: Interpreter,
    sources: Sources,
    out: Path,
    *,
    quiet: bool = False,
) -> Path:
    """Resolve ``requirements`` (strings) and ``requirement_files`` for ``interpreter``; write a pylock to ``out``.

    ``out`` is replaced in one rename, only when uv succeeded and every file in the lock carries a sha256: a failure
    leaves it as it was. An existing ``out`` seeds the resolution (uv prefers the versions it pins).
    """
    if not requirements and not requirement_files:
        raise ResolutionError("nothing to resolve", hint="give requirements, or -r FILE")
    for text in requirements:
        try:
            Requirement(text)
        except InvalidRequirement as e:
            raise ResolutionError(f"{text!r} is not a valid requirement: {e}",
                                  hint="write it like 'name', 'name>=1.2' or 'name[extra]==1.2'") from None
    for path in requirement_files:
        if not path.is_file():
            raise ResolutionError(f"requirements file {path} does not exist")
    out = out.absolute()
    try:
        work = Path(tempfile.mkdtemp(prefix=".wheelstore-lock-", dir=out.parent))
    except FileNotFoundError:
        raise ResolutionError(f"cannot write {out}: {out.parent} does not exist") from None
    except PermissionError:
        raise ResolutionError(f"cannot write {out}: permission denied on {out.parent}") from None
    try:
        inputs = [str(p.absolute()) for p in requirement_files]
        if requirements:
            (work / "requirements.in").write_text("".join(f"{r}\n" for r in requirements))
            inputs.insert(0, str(work / "requirements.in"))
        staged = work / "pylock.toml"
        if out.is_file() and _is_pylock(out):
            shutil.copyfile(out, staged)
        shown = shlex.join(["wheelstore", "lock", *requirements, *(a for p in requirement_files for a in ("-r", str(p)))])
        cmd = [*uv_command(["pip", "compile"], interpreter, sources), "--format", "pylock.toml", "--generate-hashes",
               "--custom-compile-command", shown, "-o", str(staged), *inputs]
        log.debug("resolving with: %s", " ".join(cmd))
        status, lines = run_uv(cmd, sources, quiet=quiet)
        if status != 0:
            raise uv_failure(lines, f"cannot resolve {', '.join([*requirements, *map(str, requirement_files)])}",
                             sources)
        check_hashes(staged)
        staged.chmod(0o666 & ~_umask())
        os.replace(staged, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _is_pylock(path: Path) -> bool:
    """Whether an existing output file is a lock uv can start from (anything else is simply replaced)."""
    try:
        read_pylock(path)
    except (ResolutionError, OSError):
        return False
    return True


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_pylock(path: Path) -> Pylock:
    """Parse and validate a pylock file; any problem is a one-line error."""
    try:
        with open(path, "rb") as f:
            return Pylock.from_dict(tomllib.load(f))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ResolutionError(f"{path} is not valid TOML: {e}") from None
    except (PylockValidationError, PylockUnsupportedVersionError) as e:
        raise ResolutionError(f"{path} is not a valid PEP 751 lock: {e}") from None


def check_hashes(path: Path) -> Pylock:
    """Refuse a lock with any file lacking a sha256: wheelstore verifies every byte it installs.

    uv writes one for every wheel and sdist it locks, from the index or by hashing the file itself (checked for
    ``file://`` and HTTP indexes with and without hashes, and for find-links); local directories and VCS
    requirements have none and are refused here.
    """
    pylock = read_pylock(path)
    for package in pylock.packages:
        files: list[PackageWheel | PackageSdist | PackageArchive] = [
            *(package.wheels or ()), *([package.sdist] if package.sdist else []),
            *([package.archive] if package.archive else []),
        ]
        if not files:
            raise ResolutionError(
                f"{package.name} is locked as a local directory or VCS checkout, which has no sha256",
                hint="build a wheel of it and give that file instead",
            )
        for item in files:
            if "sha256" not in item.hashes:
                raise ResolutionError(
                    f"the lock gives no sha256 for {package.name} ({item.url or item.path})",
                    hint="use an index that publishes sha256 hashes",
                )
    return pylock
