"""The index and find-links options that install, sync, lock and verify share, over the user's pip and uv settings."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..fetch.sources import Sources


def sources_from(args: argparse.Namespace) -> Sources:
    """The CLI's index options over the pip and uv configuration the user already has."""
    return Sources.from_environment(
        index_url=args.index_url,
        extra_index_urls=tuple(args.extra_index_url),
        find_links=tuple(f for f in args.find_links if "://" in f),
        no_index=args.no_index,
        offline=args.offline,
    )


def local_links(args: argparse.Namespace) -> list[Path]:
    return [Path(f) for f in args.find_links if "://" not in f]


def add_source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--find-links", action="append", default=[], metavar="DIR_OR_URL",
                   help="a directory of wheels (or a URL of a page linking them) to choose from")
    p.add_argument("-i", "--index-url", metavar="URL", help="the package index (default: from pip/uv config, or PyPI)")
    p.add_argument("--extra-index-url", action="append", default=[], metavar="URL", help="another index to use")
    p.add_argument("--no-index", action="store_true", help="use no index, only --find-links and the store")
    p.add_argument("--offline", action="store_true", help="use only the store and local files; never the network")
