"""bob: decompress a marslink file, or listen for Alice. Thin: the work is in shared/."""
from __future__ import annotations

import argparse
import sys

from protocol import link
from shared.core import numeric
from shared.app.faults import kill_at
from shared.app.cli import (check_output, keygen_command, positive_seconds, progress, read_input, run_main, write_atomic,
                        write_stats)


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
    d.add_argument("--progress-every", type=positive_seconds, default=None, metavar="S",
                   help="when stderr is not a terminal (a log), print a plain progress line every S seconds")
    from shared.core.config import PRESETS
    ls = sub.add_parser("listen", help="receive one stream from a sender and write it to --out")
    ls.add_argument("--bind", required=True, metavar="ENDPOINT", help="e.g. tcp://127.0.0.1:5555")
    ls.add_argument("--out", required=True, metavar="FILE", help="where the verified result goes")
    ls.add_argument("--preset", default="default", choices=sorted(PRESETS), help="must match the sender's")
    ls.add_argument("--profile", default=None, choices=sorted(numeric.PROFILES),
                    help="numeric profile (default: portable); must match the sender's")
    ls.add_argument("--threads", type=int, default=None, help="intra-op threads; must match the sender's")
    ls.add_argument("--seed", type=int, default=None, help="model seed (default: the preset's); must match")
    ls.add_argument("--timeout", type=float, default=link.TIMEOUT_S,
                    help="seconds of peer silence before giving up (default %(default)g)")
    ls.add_argument("--handshake-timeout", type=float, default=link.RECEIVER_HANDSHAKE_S,
                    help="seconds to wait for a sender (default %(default)g)")
    ls.add_argument("--window", type=int, default=link.WINDOW, help="frames buffered (credit; default %(default)s)")
    ls.add_argument("--linger", type=positive_seconds, default=link.RECEIPT_LINGER_S, metavar="S",
                    help="after delivering, answer a returning sender with DONE for up to S seconds "
                         "(default %(default)g)")
    ls.add_argument("--insecure", action="store_true", help="allow plain text on a non-loopback address")
    ls.add_argument("--curve-secret", metavar="PATH", help="encrypt (CurveZMQ) with Mars's key, e.g. keys/mars.key_secret")
    ls.add_argument("--allow", metavar="DIR", help="with --curve-secret: admit only senders whose public key "
                    "(NAME.key) is in DIR")
    ls.add_argument("--stats-json", metavar="PATH", help="write run statistics as JSON")
    ls.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    ls.add_argument("--checkpoint-every", type=int, default=16, help="steps between checkpoints")
    ls.add_argument("--fault-perturb-step", type=int, default=None, help=argparse.SUPPRESS)
    ls.add_argument("--fault-kill-step", type=int, default=None, help=argparse.SUPPRESS)
    from shared.show.dashboard import add_display_options
    add_display_options(ls)
    k = sub.add_parser("keygen", help="make Mars's CurveZMQ key pair in DIR: NAME.key (public), NAME.key_secret")
    k.add_argument("dir")
    k.add_argument("--name", default="mars", help="file name stem (default: %(default)s)")
    return ap


def _chain(*callbacks):
    """One callback that calls each of `callbacks` in turn."""
    def call(*a):
        for cb in callbacks:
            cb(*a)
    return call


def listen_command(args) -> int:
    from shared.app.cli import check_endpoint, curve_keys
    from shared.core.config import preset
    curve = curve_keys("bind", args.curve_secret, args.allow)
    check_endpoint(args.bind, args.insecure, "bind", encrypted=curve is not None)
    check_output(args.out)
    if args.stats_json:
        check_output(args.stats_json)
    numeric.activate(args.profile, args.threads)
    from shared.core.fingerprint import fingerprint  # torch loads only once the options are valid
    fingerprint()                       # compute the canary before a sender is waiting
    from protocol.link import LinkSettings
    from receiver.stream import receive_stream

    settings = LinkSettings(window=args.window, timeout_s=args.timeout,
                            handshake_timeout_s=args.handshake_timeout, curve=curve)
    if not args.quiet:
        print(f"bob: listening on {args.bind}", file=sys.stderr, flush=True)
    bar = {}

    def on_hello(hello):
        bar["total"] = hello.total_length
        if not args.quiet:
            print(f"bob: receiving stream {hello.stream_id!r} ({hello.total_length:,} bytes)",
                  file=sys.stderr, flush=True)

    from shared.show.dashboard import dashboard_for
    dash = dashboard_for(args, "mars", args.bind, file=sys.stderr if args.out == "-" else None,
                         out_path=None if args.out == "-" else args.out)
    with dash:
        on_hello = _chain(on_hello, dash.on_hello)
        config = preset(args.preset)
        if args.seed is not None:
            import dataclasses
            config = dataclasses.replace(config, seed=args.seed)
        on_step = kill_at(args.fault_kill_step, dash.on_step)      # a test hook; None = no kill
        stats = receive_stream(args.bind, config, args.out, settings, on_hello=on_hello,
                               on_step=on_step, telemetry=dash.telemetry, log=_log,
                               perturb_step=args.fault_perturb_step, checkpoint_every=args.checkpoint_every,
                               linger_s=args.linger)
        dash.finish(stats)
    write_stats(args.stats_json, stats)
    if not args.quiet and dash.mode != "dashboard":
        print(f"bob: verified {stats['input_bytes']:,} bytes (SHA-256 ok, {stats['syncs_checked']} digests "
              f"matched), final digest {stats['final_digest'][:16]}", file=sys.stderr)
    return 0


def _log(message: str) -> None:
    """Link events worth an operator's eye (refused senders, rejected messages): one line each."""
    print(f"bob: {message}", file=sys.stderr, flush=True)


def decompress_command(args) -> int:
    from shared.coding.container import parse

    blob = read_input(args.input)
    check_output(args.output, args.input)
    if args.stats_json:
        check_output(args.stats_json)
    container = parse(blob, "input" if args.input == "-" else repr(args.input))
    recorded = container.header.get("fingerprint", {})
    profile = args.profile or recorded.get("profile")
    threads = args.threads if args.threads is not None else int(recorded.get("threads", 1))
    numeric.activate(profile, threads)
    from shared.coding.codec import decompress

    with progress("Mars: decompressing", container.header["length"], not args.quiet,
                  args.progress_every) as update:
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
    commands = {"decompress": decompress_command, "listen": listen_command,
                "keygen": lambda a: keygen_command("bob", a.dir, a.name)}
    return run_main("bob", lambda: commands[args.command](args))
