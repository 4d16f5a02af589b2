"""alice: compress a file, or send it to a listening Bob. Thin: the work is in shared/."""
from __future__ import annotations

import argparse
import sys

from protocol import link
from shared.core import numeric
from shared.app.faults import kill_at
from shared.app.cli import (check_output, keygen_command, positive_seconds, progress, read_input, run_main, write_atomic,
                        write_stats)
from shared.core.config import PRESETS, preset


def _common(p: argparse.ArgumentParser):
    p.add_argument("--preset", default="default", choices=sorted(PRESETS),
                   help="speed/ratio trade-off (default: %(default)s)")
    p.add_argument("--profile", default=None, choices=sorted(numeric.PROFILES),
                   help="numeric profile (default: portable: decodes on any x86-64 CPU)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads; the receiver must match")
    p.add_argument("--seed", type=int, default=None, help="model seed (default: the preset's); the receiver must match")
    p.add_argument("--stats-json", metavar="PATH", help="write run statistics as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="alice", description="Marslink sender (Earth).")
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compress", help="compress INPUT into a marslink file OUTPUT ('-' = stdin/stdout)")
    c.add_argument("input")
    c.add_argument("output")
    c.add_argument("--verify", action="store_true", help="decode the result again before writing it")
    c.add_argument("--progress-every", type=positive_seconds, default=None, metavar="S",
                   help="when stderr is not a terminal (a log), print a plain progress line every S seconds")
    _common(c)
    s = sub.add_parser("send", help="stream INPUT to a listening receiver")
    s.add_argument("input")
    s.add_argument("--connect", required=True, metavar="ENDPOINT", help="e.g. tcp://127.0.0.1:5555")
    s.add_argument("--stream-id", default=None, help="name of this stream (default: from the input's hash)")
    s.add_argument("--state-dir", default=None, help="where Earth keeps checkpoints for resume "
                   "(default: ~/.cache/marslink/earth)")
    s.add_argument("--checkpoint-every", type=int, default=16, help="steps between checkpoints")
    _link_options(s)
    s.add_argument("--retransmit", type=float, default=None, metavar="S",
                   help="seconds without ACK progress before resending (default 2; over a slow link "
                        "make it longer than the round trip)")
    from shared.show.dashboard import add_display_options
    add_display_options(s)
    _common(s)
    k = sub.add_parser("keygen", help="make Earth's CurveZMQ key pair in DIR: NAME.key (public), NAME.key_secret")
    k.add_argument("dir")
    k.add_argument("--name", default="earth", help="file name stem (default: %(default)s)")
    return ap


def _link_options(p: argparse.ArgumentParser):
    p.add_argument("--timeout", type=float, default=link.TIMEOUT_S,
                   help="seconds of peer silence before giving up (default %(default)g)")
    p.add_argument("--handshake-timeout", type=float, default=link.SENDER_HANDSHAKE_S,
                   help="seconds to wait for the receiver to appear (default %(default)g)")
    p.add_argument("--window", type=int, default=link.WINDOW, help="frames in flight (credit; default %(default)s)")
    p.add_argument("--insecure", action="store_true", help="allow plain text to a non-loopback address")
    p.add_argument("--curve-secret", metavar="PATH", help="encrypt (CurveZMQ) with Earth's key, e.g. keys/earth.key_secret")
    p.add_argument("--server-key", metavar="PATH", help="Mars's public key for encryption, e.g. keys/mars.key")
    for name in ("drop", "dup", "reorder"):   # fault injection on the sending path, for tests
        p.add_argument(f"--fault-{name}", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--fault-corrupt-nth", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--fault-seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--fault-kill-step", type=int, default=None, help=argparse.SUPPRESS)


def link_settings(args, curve=None):
    from protocol.link import FaultPlan, LinkSettings
    faults = FaultPlan(args.fault_drop, args.fault_dup, args.fault_reorder, args.fault_seed, args.fault_corrupt_nth)
    return LinkSettings(window=args.window, timeout_s=args.timeout, handshake_timeout_s=args.handshake_timeout,
                        fault=faults if faults != FaultPlan() else None, curve=curve)


def send_command(args) -> int:
    from shared.app.cli import check_endpoint, curve_keys
    data = read_input(args.input)
    curve = curve_keys("connect", args.curve_secret, args.server_key)
    check_endpoint(args.connect, args.insecure, "connect", encrypted=curve is not None)
    if args.stats_json:
        check_output(args.stats_json)
    numeric.activate(args.profile, args.threads)
    from sender.stream import send_stream
    from shared.show.dashboard import dashboard_for

    settings = link_settings(args, curve)
    if args.retransmit is not None:
        settings.retransmit_s = args.retransmit
    dash = dashboard_for(args, "earth", args.connect, total_bytes=len(data))   # dashboard / plain lines / quiet
    with dash:
        on_step = kill_at(args.fault_kill_step, dash.on_step)      # a test hook; None = no kill
        stats = send_stream(data, run_config(args), args.connect, settings, args.stream_id, on_step,
                            state_dir=args.state_dir, checkpoint_every=args.checkpoint_every,
                            telemetry=dash.telemetry)
        dash.finish(stats)
    write_stats(args.stats_json, stats)
    if stats.get("already_delivered"):
        print(f"alice: Mars already has stream {stats['stream_id']!r} ({stats['input_bytes']:,} bytes, "
              f"SHA-256 ok); nothing to send, checkpoints cleared", file=sys.stderr)
    elif not args.quiet and dash.mode != "dashboard":
        print(f"alice: sent {stats['input_bytes']:,} bytes as {stats['compressed_bytes']:,} "
              f"({stats['compressed_bytes'] * 8 / max(stats['input_bytes'], 1):.3f} bits/byte); "
              f"Mars verified it, final digest {stats['final_digest'][:16]}", file=sys.stderr)
    return 0


def run_config(args):
    import dataclasses
    config = preset(args.preset)
    return config if args.seed is None else dataclasses.replace(config, seed=args.seed)


def compress_command(args) -> int:
    data = read_input(args.input)
    check_output(args.output, args.input)
    if args.stats_json:
        check_output(args.stats_json)
    numeric.activate(args.profile, args.threads)
    from shared.coding.codec import compress, decompress
    from shared.coding.container import parse

    config = run_config(args)
    with progress("Earth: compressing", len(data), not args.quiet, args.progress_every) as update:
        blob, stats = compress(data, config, lambda twin, r: update(r.tokens_done, twin.ideal_bits))
    if args.verify:
        with progress("Earth: verifying", len(data), not args.quiet, args.progress_every) as update:
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
    commands = {"compress": compress_command, "send": send_command,
                "keygen": lambda a: keygen_command("alice", a.dir, a.name)}
    return run_main("alice", lambda: commands[args.command](args))
