"""docs/sharing.md, run as written: every shell block is marked, and the runnable ones run in order, as the users
the guide creates, on this machine as if it were fresh; the output the guide quotes is the output they print."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .guide_scenario import (
    GUIDE,
    IN_PROGRESS,
    ROOT,
    Block,
    GuideFormatError,
    cleanup,
    leftovers,
    missing_lines,
    parse,
    run_block,
)


def test_every_shell_block_is_marked_and_quoted_output_follows_a_runnable_block() -> None:
    blocks = parse(GUIDE.read_text())
    runnable = [b for b in blocks if b.runnable]
    assert len(runnable) >= 30 and any(b.expect_fail for b in runnable)
    assert sum(b.output is not None for b in runnable) >= 15
    assert runnable[0].user == "root" and "pip install" in runnable[0].text, "the first block installs wheelstore"


def test_the_readme_links_the_guide() -> None:
    assert "(docs/sharing.md)" in (ROOT / "README.md").read_text()


def test_the_guides_group_store_sits_where_no_member_can_move_it() -> None:
    """The no-root recipe puts the store in the lab's project directory: it must be sticky, or any member could
    rename the store away and init their own (init refuses it, and the guide shows that refusal too)."""
    blocks = [b for b in parse(GUIDE.read_text()) if b.runnable]
    (made,) = [line for b in blocks for line in b.text.splitlines() if line.endswith(" /srv/projects/lab")]
    assert made.startswith("install -d -m ") and int(made.split()[3], 8) & 0o1000, made
    assert any("init /srv/projects/lab/wheelstore --group lab" in b.text and not b.expect_fail for b in blocks)
    refused = [b for b in blocks if b.expect_fail and "wheelstore init" in b.text]
    assert refused and "without the sticky bit" in str(refused[0].output) and "chmod +t" in str(refused[0].output)


def test_the_parser_refuses_unmarked_blocks_and_stray_output() -> None:
    with pytest.raises(GuideFormatError, match="line 2: a ```sh block without"):
        parse("text\n```sh\nls\n```\n")
    with pytest.raises(GuideFormatError, match="does not follow a runnable block"):
        parse("<!-- illustrative: x -->\n```sh\nls\n```\n<!-- output -->\n```text\nx\n```\n")
    (block,) = parse("<!-- runnable as=bob expect=fail -->\n```sh\nfalse\n```\n\n<!-- output -->\n```text\nno\n```\n")
    assert block == Block(2, "sh", "false\n", "bob", True, "no")


def test_quoted_output_must_appear_in_order() -> None:
    got = "Resolved 1 package\nerror: Failed to initialize cache at `/srv/x`\n  cause: denied (os error 13)\n"
    assert missing_lines("error: Failed to initialize cache at `/srv/x`\n...\ncause: ... (os error 13)", got) == []
    assert missing_lines("cause: denied (os error 13)\nResolved 1 package", got) == ["Resolved 1 package"]
    assert missing_lines("group:lab:rw-\t#effective:r--", "group:lab:rw-  #effective:r--") == []
    assert missing_lines("Permission denied", got) == ["Permission denied"]


@pytest.fixture
def fresh_machine() -> Iterator[None]:
    """Nothing the guide creates exists before it runs, and nothing is left after (so it can run twice)."""
    if os.geteuid() != 0:
        pytest.skip("the guide creates users and system paths: it needs root (CI runs as root)")
    if IN_PROGRESS.exists():
        cleanup()  # a run that was cut short: what it left is ours
    elif leftovers():
        pytest.skip(f"not a fresh machine for the guide, and not left by this test: {', '.join(leftovers())}")
    IN_PROGRESS.touch()
    try:
        yield
    finally:
        cleanup()
        IN_PROGRESS.unlink()
    assert leftovers() == []


def _report(block: Block, output: str) -> str:
    return f"docs/sharing.md line {block.line}, as {block.user}:\n{block.text}--- it printed:\n{output}"


@pytest.mark.network
def test_the_guide_runs_as_written(fresh_machine: None) -> None:
    """Each block in order; the first that fails (or succeeds when it must fail) stops the run, since the next ones
    build on it. Needs the registry: the guide installs wheelstore and uv and downloads a few wheels."""
    for block in parse(GUIDE.read_text()):
        if not block.runnable:
            continue
        done = run_block(block)
        if block.expect_fail:
            assert done.returncode != 0, "expected to fail, but succeeded: " + _report(block, done.stdout)
        else:
            assert done.returncode == 0, f"exit status {done.returncode}: " + _report(block, done.stdout)
        assert "Traceback" not in done.stdout, _report(block, done.stdout)
        if block.output is not None:
            missing = missing_lines(block.output, done.stdout)
            assert not missing, f"quoted lines not printed: {missing}\n" + _report(block, done.stdout)
