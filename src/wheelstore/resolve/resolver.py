"""Resolution through uv: requirements in, a PEP 751 ``pylock.toml`` for one target interpreter out.

uv (a declared dependency, the binary of the ``uv`` package) does the resolving. It is always run with ``--no-config``
and without its source variables in the environment, and is handed the sources explicitly
(:meth:`Sources.uv_args`), so the pip and uv settings that :mod:`wheelstore.fetch.sources` already merged are neither
ignored nor counted twice. TLS: ``--system-certs`` (the system store), ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` passed
through, and pip's ``cert`` as ``SSL_CERT_FILE`` when that is unset. uv's cache is its default one for the calling
user: nothing is written where other users could interfere.

:func:`check_hashes` here validates the lock uv writes for ``wheelstore lock`` before it is kept; an install reads
the lock into pins like any lock the user gives, with the same reader (:mod:`wheelstore.resolve.pylock`).
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from packaging.pylock import PackageArchive, PackageSdist, PackageWheel, Pylock
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName

from ..base import fsio
from ..base.errors import InputError, ResolutionError
from ..base.interpreter import Interpreter
from ..base.logs import log
from ..base.names import requirement_problem
from ..base.progress import Kind, current
from ..fetch.sources import Sources
from ..fetch.uv import run_uv, uv_command, uv_failure
from .pylock import read_pylock


def lock(
    requirements: Sequence[str],
    requirement_files: Sequence[Path],
    interpreter: Interpreter,
    sources: Sources,
    out: Path,
    *,
    preferences: Mapping[NormalizedName, str] | None = None,
    upgrade: bool = False,
    upgrade_packages: Collection[str] = (),
    no_deps: bool = False,
    checked: bool = True,
    offline_cache: str | None = None,
) -> Path:
    """Resolve ``requirements`` (strings) and ``requirement_files`` for ``interpreter``; write a pylock to ``out``.

    ``out`` is replaced in one rename, only when uv succeeded and (``checked``) every file in the lock carries a
    sha256: a failure leaves it as it was. The versions uv should keep when they satisfy the request (a venv's, for
    an install) are ``preferences``; without them, an existing ``out`` seeds the resolution (uv prefers the versions
    it pins). ``upgrade`` and ``upgrade_packages`` drop preferences as uv's options do; ``no_deps`` resolves only
    what is named. An install reads the lock itself (:mod:`wheelstore.resolve.pylock`), so it passes
    ``checked=False``: the lock is parsed once. ``offline_cache`` names what uv's cache stands for offline in an
    error (an install's plan: the store), else uv's own cache.
    """
    _check_inputs(requirements, requirement_files)
    out = out.absolute()
    try:
        work = Path(tempfile.mkdtemp(prefix=".wheelstore-lock-", dir=out.parent))
    except FileNotFoundError:
        raise ResolutionError(f"cannot write {out}: {out.parent} does not exist") from None
    except PermissionError:
        raise ResolutionError(f"cannot write {out}: permission denied on {out.parent}") from None
    # next to ``out``: uv writes local paths (a project directory, an sdist) relative to the lock's directory
    staged = out.parent / f"pylock.{work.name.strip('.')}.toml"
    try:
        inputs = _inputs(work, requirements, requirement_files)
        if preferences and (seed := _seed(preferences)) is not None:
            staged.write_text(seed)
        elif out.is_file() and _is_pylock(out):
            shutil.copyfile(out, staged)
        file_args = (a for p in requirement_files for a in ("-r", str(p)))
        shown = shlex.join(["wheelstore", "lock", *requirements, *file_args])
        options = [*(["--upgrade"] if upgrade else []), *(a for p in sorted(upgrade_packages) for a in ("-P", p)),
                   *(["--no-deps"] if no_deps else [])]
        cmd = [*uv_command(["pip", "compile"], interpreter, sources), "--format", "pylock.toml", "--generate-hashes",
               "--custom-compile-command", shown, "-o", str(staged), *inputs, *options]
        log.debug("resolving with: %s", " ".join(cmd))
        with current().task(Kind.RESOLVE, ", ".join([*requirements, *(p.name for p in requirement_files)])) as task:
            status, lines = run_uv(cmd, sources, task=task)
        if status != 0:
            raise uv_failure(lines, f"cannot resolve {', '.join([*requirements, *map(str, requirement_files)])}",
                             sources, offline_cache=offline_cache)
        if checked:
            check_hashes(staged)
        staged.chmod(0o666 & ~fsio.umask())
        os.replace(staged, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        staged.unlink(missing_ok=True)
    return out


def _inputs(work: Path, requirements: Sequence[str], requirement_files: Sequence[Path]) -> list[str]:
    """The files uv reads: the command line's requirements written into ``work``, then the requirements files."""
    inputs = [str(p.absolute()) for p in requirement_files]
    if requirements:
        (work / "requirements.in").write_text("".join(f"{r}\n" for r in requirements))
        inputs.insert(0, str(work / "requirements.in"))
    return inputs


def _check_inputs(requirements: Sequence[str], requirement_files: Sequence[Path]) -> None:
    """Refuse, in uv's stead and in one line, what uv would fail on with a page of output."""
    if not requirements and not requirement_files:
        raise ResolutionError("nothing to resolve", hint="give requirements, or -r FILE")
    for text in requirements:
        if text.startswith("-e "):  # an editable project, as the plan gives it to uv
            continue
        try:
            Requirement(text)
        except InvalidRequirement as e:
            if text.endswith(".whl") and Path(text).is_file():
                continue  # a wheel file: uv takes its path
            raise ResolutionError(f"{text!r} is not a requirement: {requirement_problem(text, e)}",
                                  hint="write it like 'name', 'name>=1.2' or 'name[extra]==1.2'") from None
    for path in requirement_files:
        if not path.is_file():
            raise ResolutionError(f"requirements file {path} does not exist")


def _seed(preferences: Mapping[NormalizedName, str]) -> str | None:
    """A lock of names and versions only: uv takes an existing output file's versions as preferences (uv 0.13.9
    keeps them when they satisfy the request), which is how ``uv pip install`` treats a venv's. A version that is
    not PEP 440 (left by another tool) is no preference: uv would refuse the whole file ("TOML parse error")."""
    import json  # here: a TOML basic string is a JSON string for these characters

    from packaging.version import InvalidVersion, Version

    def normal(version: str) -> str | None:
        try:
            return str(Version(version))  # (as PEP 440 spells it: no spaces, no "v", nothing uv reads otherwise)
        except InvalidVersion:
            return None

    entries = "".join(f"\n[[packages]]\nname = {json.dumps(n)}\nversion = {json.dumps(v)}\n"
                      for n, v in sorted((n, normal(v)) for n, v in preferences.items()) if v is not None)
    if not entries:
        return None  # (uv refuses a lock without packages)
    return f'lock-version = "1.0"\ncreated-by = "wheelstore"\n{entries}'


def _is_pylock(path: Path) -> bool:
    """Whether an existing output file is a lock uv can start from (anything else is simply replaced)."""
    try:
        read_pylock(path)
    except InputError:
        return False
    return True


def check_hashes(path: Path) -> Pylock:
    """Refuse a lock with any file lacking a sha256: wheelstore verifies every byte it installs.

    uv writes one for every wheel and sdist it locks, from the index or by hashing the file itself (checked for
    ``file://`` and HTTP indexes with and without hashes, and for find-links). A local project directory has none
    and needs none (it is built from the user's own files); VCS requirements have none and are refused here.
    """
    try:
        pylock = read_pylock(path)
    except InputError as e:
        raise ResolutionError(e.message, hint=e.hint) from None
    for package in pylock.packages:
        files: list[PackageWheel | PackageSdist | PackageArchive] = [
            *(package.wheels or ()), *([package.sdist] if package.sdist else []),
            *([package.archive] if package.archive else []),
        ]
        if not files and package.directory is not None:  # the user's own project: built from it, as they asked
            continue
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
