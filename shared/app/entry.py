"""The `alice` and `bob` commands' first lines: light on purpose, so they stand guard at once.

A CLI's modules load and its options are read in a few tenths of a second, before
cli.run_main stands guard; a Ctrl-C meanwhile is the same one line as a Ctrl-C later, not a
traceback from an import.
"""
from __future__ import annotations

import importlib
import sys


def run_command(prog: str, module: str, argv: list[str] | None = None) -> int:
    """`module`'s main(argv), with a Ctrl-C before its run_main as that one line and exit 130."""
    try:
        return importlib.import_module(module).main(argv)
    except KeyboardInterrupt:             # run_main turns every later one into its line and 130
        print(f"{prog}: interrupted; no output was written", file=sys.stderr)
        return 130
