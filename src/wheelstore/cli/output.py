"""What the command line prints: report lines, JSON, and lines on stderr after stdout."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..base.errors import printable
from ..base.progress import elapsed as elapsed_text
from ..base.sizes import binary as size_text

__all__ = ["count", "elapsed_text", "err", "out", "print_json", "size_text"]


def out(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def count(n: int, word: str, plural: str | None = None) -> str:
    """``1 venv``, ``2 venvs``: a number and its noun, agreeing (``plural`` where adding an s is wrong)."""
    return f"{n} {word if n == 1 else plural or word + 's'}"


def err(line: str) -> None:
    """A line on stderr, after what is already on stdout: when both go to one pipe (a CI log), a report's last
    line and the error or fix after it must come out in that order."""
    sys.stdout.flush()
    print(printable(line), file=sys.stderr)
