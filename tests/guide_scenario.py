"""Reading docs/sharing.md as a script: its shell blocks, their markers and quoted output, and the machine state the
guide creates (users, groups, paths), so that tests/test_guide.py can run it on a "fresh machine" and clean up after.

Markers, each on the line right before a fenced sh/bash/console/shell block:
``<!-- runnable as=USER -->``, ``<!-- runnable as=USER expect=fail -->``, ``<!-- illustrative: REASON -->``.
A runnable block may be followed by ``<!-- output -->`` and a ```text block: each of its non-blank lines must appear,
in order, among the lines the block printed (stdout and stderr together). Runs of whitespace compare equal, ``...``
inside a line matches anything, and a line that is only ``...`` stands for lines left out.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "sharing.md"
SHELL_LANGS = frozenset({"sh", "bash", "console", "shell"})

#: what the guide creates on the machine; the test removes exactly these, before and after
USERS = ("alice", "bob", "carol", "ci", "wheelsvc")
GROUPS = ("lab",)
PATHS = (
    Path("/opt/wheelstore"),
    Path("/opt/uv"),
    Path("/usr/local/bin/wheelstore"),
    Path("/usr/local/bin/uv"),
    Path("/etc/wheelstore"),
    Path("/srv/wheels"),
    Path("/srv/projects/lab"),
    Path("/srv/wheelstore"),
    Path("/srv/wheelsvc"),
    Path("/srv/uv-cache"),
    Path("/srv/open-cache"),
    Path("/srv/lab-cache"),
    Path("/srv/lab-cache-022"),
    Path("/srv/acl-cache"),
    Path("/srv/uv-lab"),
    Path("/dev/shm/bob-uv"),
    Path("/dev/shm/bob-ws"),
)
#: parents the guide may create, removed only when left empty
EMPTY_PARENTS = (Path("/srv/projects"),)
#: written before the guide runs and removed after its cleanup: a leftover one means a run was cut short, so what
#: exists is ours to remove; without it, an existing user or path belongs to someone else and the test will not run
IN_PROGRESS = Path("/var/tmp/wheelstore-guide.in-progress")

_FENCE = re.compile(r"^```\s*([\w-]*)\s*$")
_RUNNABLE = re.compile(r"^<!--\s*runnable\s+as=([a-z_][a-z0-9_-]*)(\s+expect=fail)?\s*-->$")
_ILLUSTRATIVE = re.compile(r"^<!--\s*illustrative:\s*\S.*-->$")
_OUTPUT = re.compile(r"^<!--\s*output\s*-->$")
#: passed through to every block, so a machine behind a proxy or with its own index still works
_PASS_ENV = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "SSL_CERT_FILE",
             "SSL_CERT_DIR", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "UV_INDEX_URL", "UV_DEFAULT_INDEX",
             "UV_EXTRA_INDEX_URL")


class GuideFormatError(Exception):
    """The guide breaks its own conventions (an unmarked shell block, an output block with nothing to check)."""


@dataclass(frozen=True)
class Block:
    line: int  #: 1-based line of the opening fence, for messages
    lang: str
    text: str
    user: str | None  #: None for an illustrative block
    expect_fail: bool = False
    output: str | None = None

    @property
    def runnable(self) -> bool:
        return self.user is not None


def _fences(lines: list[str]) -> Iterator[tuple[int, int, str]]:
    """(opening index, closing index, language) of every fenced block, in order."""
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m:
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
            if end is None:
                raise GuideFormatError(f"line {i + 1}: a fenced block that never closes")
            yield i, end, m.group(1)
            i = end + 1
        else:
            i += 1


def _before(lines: list[str], i: int) -> str:
    j = i - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    return lines[j].strip() if j >= 0 else ""


def parse(markdown: str) -> list[Block]:
    """Every shell block with its marker and quoted output; a convention broken anywhere is a GuideFormatError."""
    lines = markdown.splitlines()
    fences = list(_fences(lines))
    blocks: list[Block] = []
    problems: list[str] = []
    outputs: dict[int, str] = {}  # index of the output fence -> its text
    for start, end, lang in fences:
        if _OUTPUT.match(_before(lines, start)):
            if lang != "text":
                problems.append(f"line {start + 1}: <!-- output --> must be followed by a ```text block")
            outputs[start] = "\n".join(lines[start + 1:end])
    for n, (start, end, lang) in enumerate(fences):
        if lang not in SHELL_LANGS:
            continue
        marker = _before(lines, start)
        text = "\n".join(lines[start + 1:end]) + "\n"
        run = _RUNNABLE.match(marker)
        if run:
            output = None
            if n + 1 < len(fences) and fences[n + 1][0] in outputs:
                between = [s for s in lines[end + 1:fences[n + 1][0]] if s.strip()]
                if len(between) == 1:
                    output = outputs.pop(fences[n + 1][0])
            blocks.append(Block(start + 1, lang, text, run.group(1), bool(run.group(2)), output))
        elif _ILLUSTRATIVE.match(marker):
            blocks.append(Block(start + 1, lang, text, None))
        else:
            problems.append(f"line {start + 1}: a ```{lang} block without <!-- runnable as=USER --> or "
                            "<!-- illustrative: reason --> on the line before it")
    problems += [f"line {i + 1}: <!-- output --> does not follow a runnable block" for i in outputs]
    if problems:
        raise GuideFormatError("\n".join(problems))
    return blocks


def _norm(line: str) -> str:
    return " ".join(line.split())


def missing_lines(expected: str, captured: str) -> list[str]:
    """The lines of ``expected`` not found, in order, among the lines of ``captured`` (see the module docstring)."""
    seen = [_norm(s) for s in captured.splitlines()]
    pos = 0
    missing: list[str] = []
    for line in expected.splitlines():
        want = _norm(line)
        if not want or want == "...":
            continue
        rx = re.compile(".*".join(re.escape(part) for part in want.split("...")))
        hit = next((j for j in range(pos, len(seen)) if rx.fullmatch(seen[j])), None)
        if hit is None:
            missing.append(line)
        else:
            pos = hit + 1
    return missing


def environment(user: str) -> dict[str, str]:
    """What a login shell of ``user`` would have, plus the machine's proxy, certificate and index settings."""
    pw = pwd.getpwnam(user)
    env = {k: v for k, v in os.environ.items() if k in _PASS_ENV}
    sbin = "/usr/local/sbin:/usr/sbin:/sbin:" if pw.pw_uid == 0 else ""
    env.update(HOME=pw.pw_dir, USER=user, LOGNAME=user, SHELL="/bin/bash", LANG="C.UTF-8",
               PATH=f"/usr/local/bin:{sbin}/usr/bin:/bin")
    return env


def run_block(block: Block, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a runnable block with bash as its user: root in the project checkout, others in their home directory,
    with the groups the guide's own commands gave them (as at a fresh login) and the login umask 022."""
    assert block.user is not None
    pw = pwd.getpwnam(block.user)
    flags = "-uo" if block.expect_fail else "-euo"
    as_user = pw.pw_uid != 0
    groups = [g for g in os.getgrouplist(block.user, pw.pw_gid) if g != pw.pw_gid] if as_user else None
    return subprocess.run(
        ["/bin/bash", flags, "pipefail", "-c", block.text],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=environment(block.user),
        cwd=pw.pw_dir if as_user else str(ROOT),
        user=pw.pw_uid if as_user else None,
        group=pw.pw_gid if as_user else None,
        extra_groups=groups,
        umask=0o022,
        timeout=timeout,
    )


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def leftovers() -> list[str]:
    """What of the guide's users, groups and paths exists on this machine now."""
    found = [f"user {u}" for u in USERS if _known(pwd.getpwnam, u)]
    found += [f"group {g}" for g in GROUPS if _known(grp.getgrnam, g)]
    found += [str(p) for p in PATHS if _exists(p)]
    return found


def _known(lookup: Callable[[str], object], name: str) -> bool:
    try:
        lookup(name)
    except KeyError:
        return False
    return True


def cleanup() -> None:
    """Remove everything the guide creates: its users (with their homes), groups and paths."""
    for user in USERS:
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        subprocess.run(["userdel", "--remove", "--force", user], capture_output=True)
    for group in GROUPS:
        try:
            grp.getgrnam(group)
        except KeyError:
            continue
        subprocess.run(["groupdel", group], check=True, capture_output=True)
    for path in PATHS:
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)  # root may remove the store's read-only trees
    for parent in EMPTY_PARENTS:
        if parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()

