"""bob: decompress a marslink file, or listen for Alice. Thin: the work is in shared/."""
from __future__ import annotations

import argparse
import sys

from shared import numeric
from shared.cli import check_output, progress, read_input, run_main, write_atomic, write_stats


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="bob", description="Marslink receiver (Mars).")
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("decompress", help="decompress a marslink file INPUT into OUTPUT ('-' = stdin/stdout)")
    d.add_argument("input")
    d.add_argument("output")
    d.add_argument("--profile", default=None, choices=sorted(numeric.PROFILES),
                   help="force a numeric profile (default: the one recorded in the file)")
    d.add_argument("--threads", type=int, default=None, help="force a thread count (default: the file's)")
    d.add_argument("--stats-json", metavar="PATH", help="write run statistics as JSON")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    return ap


def decompress_command(args) -> int:
    from shared.container import parse

    blob = read_input(args.input)
    check_output(args.output, args.input)
    if args.stats_json:
        check_output(args.stats_json)
    container = parse(blob, "input" if args.input == "-" else repr(args.input))
    recorded = container.header.get("fingerprint", {})
    profile = args.profile or recorded.get("profile")
    threads = args.threads if args.threads is not None else int(recorded.get("threads", 1))
    numeric.activate(profile, threads)
    from shared.codec import decompress

    with progress("Mars: decompressing", container.header["length"], not args.quiet) as update:
        data, stats = decompress(container, lambda twin, r: update(r.tokens_done, twin.ideal_bits))
    stats["compressed_bytes"] = len(blob)
    write_atomic(args.output, data)
    write_stats(args.stats_json, stats)
    if not args.quiet and args.output != "-":
        print(f"bob: verified {len(data):,} bytes (SHA-256 ok, {stats['steps']} steps in lockstep), "
              f"final digest {stats['final_digest'][:16]}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    commands = {"decompress": decompress_command}
    return run_main("bob", lambda: commands[args.command](args))
