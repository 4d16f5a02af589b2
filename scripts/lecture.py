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

import argparse
import dataclasses
import sys
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.core import numeric  # noqa: E402  (torch-free: the profile is pinned before torch loads)
from shared.core.config import preset  # noqa: E402
from shared.core.errors import MarslinkError  # noqa: E402
from shared.texts import mission_log  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="marslink lecture mode: arithmetic coding and the twins, step by step")
    ap.add_argument("--input", default=None, help="text to code (default: the built-in mission log)")
    ap.add_argument("--bytes", type=int, default=200, help="how many bytes of it (default %(default)s)")
    ap.add_argument("--preset", default="tiny", help="model preset (default %(default)s)")
    ap.add_argument("--streams", type=int, default=1, help="sub-streams (default 1: the text reads as one)")
    ap.add_argument("--top", type=int, default=5, help="candidates shown per token")
    ap.add_argument("--delay", type=float, default=0.15, help="seconds between tokens when auto-advancing")
    ap.add_argument("--step", action="store_true", help="wait for Enter between tokens")
    ap.add_argument("--show-every", type=int, default=1, help="show every N-th token (all are coded)")
    ap.add_argument("--only-example", action="store_true", help="just the worked example (part 1)")
    ap.add_argument("--width", type=int, default=None, help="console width (default: the terminal's)")
    args = ap.parse_args(argv)
    try:
        data = Path(args.input).read_bytes()[:args.bytes] if args.input else mission_log(args.bytes)
    except OSError as e:
        print(f"lecture: error: cannot read {args.input!r}: {e.strerror}", file=sys.stderr)
        return 2
    if not data:
        print("lecture: error: nothing to code (empty input)", file=sys.stderr)
        return 2
    try:
        config = dataclasses.replace(preset(args.preset), streams=args.streams).validate()
    except MarslinkError as e:
        print(f"lecture: error: {e}", file=sys.stderr)
        return 2

    numeric.activate()
    from shared.show.lecture import Lecture, worked_example  # start-up: torch loads once the options are checked
    console = Console(width=args.width or (None if sys.stdout.isatty() else 110), highlight=False)
    worked_example(console)
    if args.only_example:
        return 0
    try:
        result = Lecture(console, data, config, top=args.top, delay=args.delay, step_mode=args.step,
                         show_every=max(1, args.show_every)).run()
    except KeyboardInterrupt:
        return 130
    return 0 if result["ok"] else 1

if __name__ == "__main__":
    sys.exit(main())
