"""Running uv: the one binary wheelstore resolves and builds with, given the index settings wheelstore chose and nothing
from uv's own configuration, with its failures turned into one-line errors."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..base.errors import ResolutionError, WheelstoreError
from ..base.interpreter import Interpreter
from ..base.progress import Task, current
from .sources import Sources

#: uv settings that Sources already accounts for: uv must not read them again
_UV_SOURCE_VARS = frozenset({
    "UV_DEFAULT_INDEX", "UV_INDEX_URL", "UV_INDEX", "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS", "UV_NO_INDEX",
    "UV_OFFLINE", "UV_CONFIG_FILE", "UV_NO_CONFIG", "UV_PYTHON", "UV_WORKING_DIR", "UV_PROJECT", "UV_SYSTEM_PYTHON",
})


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


def user_uv_environ() -> dict[str, str]:
    """The environment for a uv run that must decide as the user's own ``uv sync`` would (a project's lock, its
    venv): their uv settings kept, colour off."""
    return {k: v for k, v in os.environ.items() if k != "FORCE_COLOR"} | {"NO_COLOR": "1"}


def uv_command(verb: Sequence[str], interpreter: Interpreter, sources: Sources) -> list[str]:
    """``uv VERB`` for ``interpreter`` with ``sources`` and nothing from uv's own configuration."""
    return [
        uv_binary(), *verb, "--no-config", "--system-certs", "--no-python-downloads", "--color", "never",
        "--python", interpreter.executable, *sources.uv_args(),
    ]


def run_uv(cmd: list[str], sources: Sources, *, task: Task | None = None, relay: bool = True,
           log: Path | None = None, env: Mapping[str, str] | None = None, cwd: Path | None = None
           ) -> tuple[int, list[str]]:
    """Run uv; return its exit status and stderr lines (with ``log``, its stdout's too).

    Its lines are read as they come, until its first ``error:`` line (the caller reports the failure in one line):
    with ``relay`` each is a line of the current reporter (uv's ``Resolved 3 packages in 20ms``), else each non-empty
    one becomes ``task``'s detail (a build's last output line, on its row of the display). With ``log``, stdout and
    stderr both go to that file as well, kept for a failed build, and nothing is relayed. ``env`` replaces the
    environment :func:`uv_environ` makes (a project's ``uv sync`` runs with the user's uv settings).
    """
    shown = current()
    lines: list[str] = []
    failing = False
    with contextlib.ExitStack() as closing:
        kept = closing.enter_context(open(log, "wb")) if log is not None else None
        proc = closing.enter_context(subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if kept else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if kept else subprocess.PIPE, env=uv_environ(sources) if env is None else env,
            cwd=cwd))
        output = proc.stdout if kept else proc.stderr
        assert output is not None
        try:
            for raw in output:
                if kept is not None:
                    kept.write(raw)
                    kept.flush()
                line = raw.decode(errors="replace").rstrip("\r\n")
                lines.append(line)
                failing = failing or line.startswith("error:")
                if failing:
                    continue
                if relay and kept is None:
                    shown.line(line)
                elif task is not None and line.strip():
                    task.update(detail=line.strip())
        except BaseException:  # Ctrl-C: uv is not waited for (Popen's exit would give it a quarter second)
            proc.kill()
            raise
    return proc.returncode, lines


def uv_failure(lines: Sequence[str], what: str, sources: Sources, *, cls: type[WheelstoreError] = ResolutionError,
               offline_cache: str | None = None) -> WheelstoreError:
    """uv's error, its first and last cause, in one line, with uv's hint or one of ours. What uv says of "the cache"
    when offline is said in our terms: which cache (``offline_cache``, else uv's own, named) and which index."""
    uncached = _uncached(lines)
    if sources.offline and uncached:
        index = ", ".join(sources.index_urls) or "no index"
        where = offline_cache or f"uv's cache of the index ({uv_cache_dir()}; index {index})"
        return cls(f"{what}: {', '.join(uncached)} {'is' if len(uncached) == 1 else 'are'} not in {where}, and "
                   "--offline forbids downloading",
                   hint="run once without --offline, or give the wheels with --find-links DIR")
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
    hint: str | None
    if hints:  # a hint that goes on below (uv's "add it ... under:", then a TOML table) ends at its last whole sentence
        hint = hints[0]
        if hint.endswith(":"):
            hint = hint.rsplit(". ", 1)[0] + "." if ". " in hint else None
    elif sources.offline:
        hint = "run once without --offline to fill uv's cache, or give the files with --find-links"
    elif "No solution found" in head:
        hint = f"check the requirement's name and version against the indexes in use ({where})"
    elif any(w in " ".join(parts) for w in ("Failed to fetch", "connect", "dns", "Request failed", "certificate")):
        hint = f"check the network and the index URLs ({where}); certificates: SSL_CERT_FILE or the system store"
    else:
        hint = None
    return cls(message, hint=hint)


def _uncached(lines: Sequence[str]) -> list[str]:
    """The packages uv's resolver says it did "not find in the cache" (offline, it reads an index only from there)."""
    import re

    found = re.findall(r"(\S+) was not found in the cache", " ".join(lines))
    return list(dict.fromkeys(found))


def uv_cache_dir() -> str:
    """Where uv keeps its cache for this user (``uv cache dir``); only asked to name it in an error."""
    try:
        done = subprocess.run([uv_binary(), "cache", "dir", "--no-config"], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=30)
    except (OSError, subprocess.SubprocessError, WheelstoreError):
        return "its default place"
    return done.stdout.strip() or "its default place"
