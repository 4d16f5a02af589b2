"""The `alice` and `bob` commands' first lines: light on purpose, so they stand guard at once.

A CLI's modules load and its options are read in a few tenths of a second, before
cli.run_main stands guard; a Ctrl-C meanwhile is the same one line as a Ctrl-C later, not a
traceback from an import. Where a stop would be raised and dropped (a callback whose exceptions
Python prints as "ignored"), it is sent again a moment later instead (`deferred`).
"""
from __future__ import annotations

import importlib
import os
import signal
import sys

DEFER_S = 0.02     # a stop that came where it cannot be raised is delivered again after this


def _unsafe_to_raise(frame) -> bool:
    """An exception raised in `frame` would be printed as ignored and dropped: inside llvmlite's
    ctypes callbacks (numba loading or compiling a loop), a __del__, or the weakref callback with
    which the import system drops a module's lock; or it would become another error: in a
    __set_name__ (a dataclass's fields, as its class is made), Python 3.11 wraps it in a
    RuntimeError; or inside torch.save, whose C++ zip writer calls back into Python to write
    and turns the exception into its own error ("enforce fail ... unexpected pos"), seen once a
    checkpoint took long enough to write (11 MB, format 24)."""
    while frame is not None:
        code = frame.f_code
        if (code.co_name in ("__del__", "__set_name__") or f"{os.sep}llvmlite{os.sep}" in code.co_filename
                or code.co_filename.endswith(f"{os.sep}torch{os.sep}serialization.py")
                or (code.co_name == "cb" and code.co_filename.startswith("<frozen importlib"))):
            return True
        frame = frame.f_back
    return False


def deferred(signum, frame) -> bool:
    """If the stop cannot be raised where it came, send it again a moment later and say so."""
    if not _unsafe_to_raise(frame):
        return False
    import threading        # here, not above: the guard stands up a millisecond sooner
    threading.Timer(DEFER_S, os.kill, (os.getpid(), signum)).start()
    return True


def on_interrupt(signum, frame):
    """Ctrl-C as Python's own handler raises it, but never where it would be dropped."""
    if not deferred(signum, frame):
        raise KeyboardInterrupt


def run_command(prog: str, module: str, argv: list[str] | None = None) -> int:
    """`module`'s main(argv), with a Ctrl-C before its run_main as that one line and exit 130."""
    guard = signal.getsignal(signal.SIGINT) is signal.default_int_handler   # not where it is ignored
    if guard:
        try:
            signal.signal(signal.SIGINT, on_interrupt)
        except ValueError:                  # not the main thread: only it may set a handler
            guard = False
    try:
        return importlib.import_module(module).main(argv)
    except KeyboardInterrupt:             # run_main turns every later one into its line and 130
        print(f"{prog}: interrupted; no output was written", file=sys.stderr)
        return 130
    finally:
        if guard:
            signal.signal(signal.SIGINT, signal.default_int_handler)
