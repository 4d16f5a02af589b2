"""alice: compress a file, or send it to a listening Bob. Thin: the work is in shared/."""
from __future__ import annotations

import argparse
import sys

from shared import numeric
from shared.cli import check_output, progress, read_input, run_main, write_atomic, write_stats
from shared.config import PRESETS, preset


def _common(p: argparse.ArgumentParser):
    p.add_argument("--preset", default="default", choices=sorted(PRESETS),
                   help="speed/ratio trade-off (default: %(default)s)")
    p.add_argument("--profile", default=None, choices=sorted(numeric.PROFILES),
                   help="numeric profile (default: portable: decodes on any x86-64 CPU)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads; the receiver must match")
    p.add_argument("--stats-json", metavar="PATH", help="write run statistics as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="alice", description="Marslink sender (Earth).")
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compress", help="compress INPUT into a marslink file OUTPUT ('-' = stdin/stdout)")
    c.add_argument("input")
    c.add_argument("output")
    c.add_argument("--verify", action="store_true", help="decode the result again before writing it")
    _common(c)
    return ap


def compress_command(args) -> int:
    data = read_input(args.input)
    check_output(args.output, args.input)
    if args.stats_json:
        check_output(args.stats_json)
    numeric.activate(args.profile, args.threads)
    from shared.codec import compress, decompress
    from shared.container import parse

    config = preset(args.preset)
    with progress("Earth: compressing", len(data), not args.quiet) as update:
        blob, stats = compress(data, config, lambda twin, r: update(r.tokens_done, twin.ideal_bits))
    if args.verify:
        with progress("Earth: verifying", len(data), not args.quiet) as update:
            decoded, _ = decompress(parse(blob), lambda twin, r: update(r.tokens_done))
        if decoded != data:  # decompress checks the SHA-256 already; this cannot differ silently
            raise AssertionError("verification failed")
        stats["verified"] = True
    write_atomic(args.output, blob)
    write_stats(args.stats_json, stats)
    if not args.quiet and args.output != "-":
        print(f"alice: {stats['input_bytes']:,} -> {stats['compressed_bytes']:,} bytes "
              f"({stats['bits_per_byte']:.3f} bits/byte, {stats['bytes_per_second']:,.0f} B/s), "
              f"final digest {stats['final_digest'][:16]}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    commands = {"compress": compress_command}
    return run_main("alice", lambda: commands[args.command](args))
