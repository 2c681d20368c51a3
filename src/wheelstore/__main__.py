"""``python -m wheelstore`` and the ``wheelstore`` command."""

from __future__ import annotations

import gc
from typing import NoReturn


def main() -> NoReturn:
    """Run the command. A run allocates a few hundred thousand small containers (imports, parsed manifests) and frees
    almost none before it exits: at the default threshold the cyclic collector ran over them thousands of times for
    nothing, 7 ms of a 140 ms warm install. Cycles are still collected, a hundred times less often."""
    gc.set_threshold(100_000, 50, 1000)
    from .cli.main import entry

    entry()


if __name__ == "__main__":
    main()
