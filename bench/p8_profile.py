"""P8's recorder: ``python p8_profile.py RECORD ARGS...`` runs ``wheelstore ARGS...`` as the ``wheelstore`` command
does, and writes to RECORD (JSON) when it started, when main() started and ended, each subprocess it ran (``uv VERB``
or the program's name, start, end) and the seconds spent linking. Clock: ``time.monotonic``, shared by every process
of the machine, so the caller can time Python's start and the exit from outside. Run by the tool venv's Python, with
nothing of the bench imported (its startup is part of what is measured).
"""

import time

START = time.monotonic()

import atexit  # noqa: E402 - after the clock: these are part of what is measured
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

gc.set_threshold(100_000, 50, 1000)  # as wheelstore.__main__ does
spans: list[tuple[str, float, float]] = []  #: every subprocess: ("uv VERB" or the program's name, start, end)
linking = [0.0]
_popen_init = subprocess.Popen.__init__
_handle_exitstatus = subprocess.Popen._handle_exitstatus  # type: ignore[attr-defined]


def _init(self, args, *rest, **kw):  # type: ignore[no-untyped-def]
    argv = [os.fspath(a) for a in args] if isinstance(args, (list, tuple)) else [str(args)]
    program = os.path.basename(argv[0])
    self._p8 = (f"{program} {argv[1]}" if program == "uv" and len(argv) > 1 else program, time.monotonic())
    _popen_init(self, args, *rest, **kw)


def _exited(self, *args, **kw):  # type: ignore[no-untyped-def]
    label, started = getattr(self, "_p8", ("", 0.0))
    if label:
        spans.append((label, started, time.monotonic()))
    return _handle_exitstatus(self, *args, **kw)


subprocess.Popen.__init__ = _init  # type: ignore[method-assign]
subprocess.Popen._handle_exitstatus = _exited  # type: ignore[attr-defined]

from wheelstore.cli.main import main  # noqa: E402
from wheelstore.venv.environment import Environment  # noqa: E402

_link_checked = Environment._link_checked


def _timed_link(*args, **kw):  # type: ignore[no-untyped-def]
    started = time.monotonic()
    try:
        return _link_checked(*args, **kw)
    finally:
        linking[0] += time.monotonic() - started


Environment._link_checked = _timed_link  # type: ignore[method-assign]

MAIN_START = time.monotonic()
code = main(sys.argv[2:])
MAIN_END = time.monotonic()
atexit._run_exitfuncs()  # as wheelstore's entry() does before its quick exit
with open(sys.argv[1], "w") as f:
    json.dump({"start": START, "main_start": MAIN_START, "main_end": MAIN_END, "subprocesses": spans,
               "linking": linking[0]}, f)
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
