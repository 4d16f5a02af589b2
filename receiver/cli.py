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
    from shared.config import PRESETS
    ls = sub.add_parser("listen", help="receive one stream from a sender and write it to --out")
    ls.add_argument("--bind", required=True, metavar="ENDPOINT", help="e.g. tcp://127.0.0.1:5555")
    ls.add_argument("--out", required=True, metavar="FILE", help="where the verified result goes")
    ls.add_argument("--preset", default="default", choices=sorted(PRESETS), help="must match the sender's")
    ls.add_argument("--profile", default=None, choices=sorted(numeric.PROFILES),
                    help="numeric profile (default: portable); must match the sender's")
    ls.add_argument("--threads", type=int, default=None, help="intra-op threads; must match the sender's")
    ls.add_argument("--seed", type=int, default=None, help="model seed (default: the preset's); must match")
    ls.add_argument("--timeout", type=float, default=30.0, help="seconds of peer silence before giving up")
    ls.add_argument("--handshake-timeout", type=float, default=600.0, help="seconds to wait for a sender")
    ls.add_argument("--window", type=int, default=32, help="frames buffered (credit)")
    ls.add_argument("--insecure", action="store_true", help="allow plain text on a non-loopback address")
    ls.add_argument("--stats-json", metavar="PATH", help="write run statistics as JSON")
    ls.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    ls.add_argument("--fault-perturb-step", type=int, default=None, help=argparse.SUPPRESS)
    return ap


def listen_command(args) -> int:
    from shared.cli import check_endpoint
    from shared.config import preset
    check_endpoint(args.bind, args.insecure, "bind")
    check_output(args.out)
    if args.stats_json:
        check_output(args.stats_json)
    numeric.activate(args.profile, args.threads)
    numeric.fingerprint()                       # compute the canary before a sender is waiting
    from protocol.link import LinkSettings
    from receiver.stream import receive_stream

    settings = LinkSettings(window=args.window, timeout_s=args.timeout,
                            handshake_timeout_s=args.handshake_timeout)
    if not args.quiet:
        print(f"bob: listening on {args.bind}", file=sys.stderr, flush=True)
    bar = {}

    def on_hello(hello):
        bar["total"] = hello.total_length

    with progress("Mars: receiving", 1, False) as _:
        config = preset(args.preset)
        if args.seed is not None:
            import dataclasses
            config = dataclasses.replace(config, seed=args.seed)
        stats = receive_stream(args.bind, config, args.out, settings, on_hello=on_hello,
                               perturb_step=args.fault_perturb_step)
    write_stats(args.stats_json, stats)
    if not args.quiet:
        print(f"bob: verified {stats['input_bytes']:,} bytes (SHA-256 ok, {stats['syncs_checked']} digests "
              f"matched), final digest {stats['final_digest'][:16]}", file=sys.stderr)
    return 0


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
    commands = {"decompress": decompress_command, "listen": listen_command}
    return run_main("bob", lambda: commands[args.command](args))
