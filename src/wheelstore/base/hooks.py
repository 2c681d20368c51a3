"""Test checkpoints: named points in the publish protocol where a test can pause or slow a real process.

Set ``WHEELSTORE_TEST_HOOK="point=action[,point=action]"`` with action ``pause`` (write a marker file into
``WHEELSTORE_TEST_HOOK_DIR`` and sleep until killed), ``wait`` (write the marker and go on once it is deleted) or
``sleep:SECONDS``. Tests use this to ``kill -9`` a publisher
at an exact step and to hold a lock long enough to prove that others wait. Without the variable every checkpoint is a
no-op.
"""

from __future__ import annotations

import os
import time

from . import cancel

_SPEC = os.environ.get("WHEELSTORE_TEST_HOOK", "")
_ACTIONS = dict(item.split("=", 1) for item in _SPEC.split(",") if "=" in item)


def checkpoint(point: str) -> None:
    action = _ACTIONS.get(point)
    if action is None:
        return
    if action.startswith("sleep:"):
        time.sleep(float(action.removeprefix("sleep:")))
    elif action in ("pause", "wait"):
        marker = os.path.join(os.environ.get("WHEELSTORE_TEST_HOOK_DIR", "."), f"{point}.{os.getpid()}")
        with open(marker, "w"):
            pass
        while action == "pause" or os.path.exists(marker):
            cancel.sleep(0.01)  # a worker thread paused here stops on Ctrl-C, as it would at work
