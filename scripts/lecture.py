#!/usr/bin/env python3
"""Lecture mode: `make lecture` (or `python scripts/lecture.py`).

1. The classic worked example with exact fractions: a four-word vocabulary, the true word owns
   [0.4, 0.6), the shortest binary fraction inside is 0.1 = 0.5, sent as the single bit "1".
2. A sender twin and a receiver twin in this one process, on a short text (tiny preset, one
   stream): per token the model's top candidates, the exact coding interval narrowing and the
   bits it settles; per chunk the training step on both sides and their weight digests; at the
   end the ledger: the stream's bits beside the program both sides hold (core + coder, gzip -9)
   and the trained state that never had to cross (gzip -9), the report's numbers.

    python scripts/lecture.py                    # auto-advance every --delay seconds
    python scripts/lecture.py --step             # Enter between tokens
    python scripts/lecture.py --bytes 64 --delay 0 --only-example
"""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.app.files import drop_stdout, escape_what_cannot_be_shown, read_head  # noqa: E402
from shared.app.options import MAX_SECONDS, Parser, integer, number, path_name  # noqa: E402
from shared.core import numeric  # noqa: E402  (torch-free: the profile is pinned before torch loads)
from shared.core.config import INT_RANGES, preset  # noqa: E402
from shared.core.errors import MarslinkError, UsageError  # noqa: E402
from shared.texts import mission_log  # noqa: E402

MAX_BYTES = 10_000      # a lecture is a short text: its exact fractions grow with every byte (10,000 take minutes)
MAX_WIDTH = 1000
DELAY_S = 0.15          # seconds between tokens on a terminal: slow enough to read along


class LectureParser(Parser):
    """One-line option errors under the lecture's own name."""

    def error(self, message: str):
        self.exit(2, f"lecture: error: {message}; see 'python scripts/lecture.py --help'\n")


class LectureConsole(Console):
    """A console that reports a reader who left (`| head`) as BrokenPipeError, so the lecture can
    stop Mars's thread before Python exits; rich's default raises SystemExit mid-computation."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        drop_stdout()
        raise BrokenPipeError("standard output was closed by its reader")


def main(argv: list[str] | None = None) -> int:
    escape_what_cannot_be_shown()
    ap = LectureParser(prog="lecture.py",
                       description="marslink lecture mode: arithmetic coding and the twins, step by step")
    ap.add_argument("--input", type=path_name("a file name"), default=None,
                    help="text to code (default: the built-in mission log)")
    ap.add_argument("--bytes", type=integer(1, MAX_BYTES, "a byte count"), default=200,
                    help=f"how many bytes of it (default %(default)s, at most {MAX_BYTES:,})")
    ap.add_argument("--preset", default="tiny", help="model preset (default %(default)s)")
    ap.add_argument("--streams", type=integer(*INT_RANGES["streams"], "a stream count"), default=1,
                    help="sub-streams (default 1: the text reads as one)")
    ap.add_argument("--top", type=integer(1, 256, "a candidate count"), default=5,
                    help="candidates shown per token (1 to 256)")
    ap.add_argument("--delay", type=number(0, MAX_SECONDS, f"a number of seconds (0 to {MAX_SECONDS:,})"),
                    default=None, help=f"seconds between tokens when auto-advancing (default {DELAY_S:g} on a "
                                       f"terminal, 0 into a file or a pipe: nobody watches the pace there)")
    ap.add_argument("--step", action="store_true", help="wait for Enter between tokens")
    ap.add_argument("--show-every", type=integer(1, MAX_BYTES, "a token count"), default=1,
                    help="show every N-th token (all are coded)")
    ap.add_argument("--only-example", action="store_true", help="just the worked example (part 1)")
    ap.add_argument("--width", type=integer(40, MAX_WIDTH, "a console width"), default=None,
                    help="console width (default: the terminal's)")
    args = ap.parse_args(argv)
    try:
        if sys.stdout is None:
            raise UsageError("standard output is closed; run the lecture on a terminal, or into a file or a pipe")
        if args.step and sys.stdin is None:
            raise UsageError("--step waits for Enter, but standard input is closed; run it from a terminal, "
                             "or leave out --step")
        data = read_head(args.input, args.bytes) if args.input else mission_log(args.bytes)
        if not data:
            raise UsageError("nothing to code (empty input)")
        config = dataclasses.replace(preset(args.preset), streams=args.streams).validate()
    except MarslinkError as e:
        print(f"lecture: error: {e}", file=sys.stderr)
        return 2

    numeric.activate()
    from shared.show.lecture import Lecture, worked_example  # start-up: torch loads once the options are checked
    console = LectureConsole(width=args.width or (None if sys.stdout.isatty() else 110), highlight=False)
    try:
        worked_example(console)
        if args.only_example:
            return 0
        delay = args.delay if args.delay is not None else DELAY_S if sys.stdout.isatty() else 0.0
        result = Lecture(console, data, config, top=args.top, delay=delay, step_mode=args.step,
                         show_every=args.show_every).run()
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:            # the reader has seen enough (`| head`): stop quietly, as a pipe's writer does
        drop_stdout()
        return 141
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
