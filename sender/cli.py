"""alice: compress a file, or send it to a listening Bob. Thin: the work is in shared/."""
from __future__ import annotations

import argparse
import sys

from protocol import link
from shared.app.cli import check_endpoint, curve_keys, keygen_command, lan_keys, progress, run_main
from shared.app.faults import kill_at
from shared.app.files import check_output, check_stats, output_mode, read_input, write_stats, write_with_stats
from shared.app.options import (COUNT, Parser, add_force_option, add_keygen_command, add_link_options,
                                add_model_options, add_parallel_options, add_report_options, add_state_option,
                                add_version_option, fraction, link_settings, run_config, seconds, stream_id)
from shared.app.parallel import compress_file, decompress_file, plan_jobs
from shared.core import numeric
from shared.core.config import MAX_LENGTH
from shared.coding.container import parse
from shared.show.dashboard import add_display_options, dashboard_for
from shared.show.telemetry import bits_per_byte


def parser() -> argparse.ArgumentParser:
    ap = Parser(prog="alice", description="Marslink sender (Earth).")
    add_version_option(ap)
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compress", help="compress INPUT into a marslink file OUTPUT ('-' = stdin/stdout)")
    c.add_argument("input")
    c.add_argument("output")
    c.add_argument("--verify", action="store_true", help="decode the result again before writing it")
    add_force_option(c)
    add_model_options(c, None)
    add_parallel_options(c, compress=True)
    add_report_options(c)
    s = sub.add_parser("send", help="stream INPUT to a listening receiver")
    s.add_argument("input")
    s.add_argument("--connect", required=True, metavar="ENDPOINT", help="e.g. tcp://127.0.0.1:5555")
    s.add_argument("--stream-id", type=stream_id, default=None,
                   help="name of this stream (default: from the input's hash)")
    add_state_option(s, "earth", "checkpoints for resume")
    add_link_options(s, "connect")
    s.add_argument("--retransmit", type=seconds, default=link.RETRANSMIT_S, metavar="S",
                   help="seconds without ACK progress before resending (default %(default)g; over a slow link "
                        "make it longer than the round trip)")
    for name in ("drop", "dup", "reorder"):   # fault injection on the sending path, for tests
        s.add_argument(f"--fault-{name}", type=fraction, default=0.0, help=argparse.SUPPRESS)
    s.add_argument("--fault-corrupt-nth", type=COUNT, default=0, help=argparse.SUPPRESS)
    s.add_argument("--fault-seed", type=COUNT, default=0, help=argparse.SUPPRESS)
    add_display_options(s)
    add_model_options(s, "the receiver")
    add_report_options(s, progress_every=False)
    add_keygen_command(sub, "Earth", "earth")
    return ap


def send_command(args) -> int:
    data = read_input(args.input, MAX_LENGTH)
    curve = lan_keys(args.server_key_text, args.code, args.curve_secret, args.server_key) \
        or curve_keys("connect", args.curve_secret, args.server_key)
    check_endpoint(args.connect, args.insecure, "connect", encrypted=curve is not None)
    check_stats(args.stats_json, args.input)
    numeric.activate(args.profile, args.threads)
    from sender.stream import send_stream   # start-up: torch loads only once the options are valid
    faults = link.FaultPlan(args.fault_drop, args.fault_dup, args.fault_reorder, args.fault_seed,
                            args.fault_corrupt_nth)
    settings = link_settings(args, curve, retransmit_s=args.retransmit,
                             fault=faults if faults != link.FaultPlan() else None)
    dash = dashboard_for(args, "earth", args.connect, total_bytes=len(data))   # dashboard / plain lines / quiet
    with dash:
        on_step = kill_at(args.fault_kill_step, dash.on_step)      # a test hook; None = no kill
        stats = send_stream(data, run_config(args), args.connect, settings, args.stream_id, on_step,
                            log=_log, state_dir=args.state_dir,
                            checkpoint_every=args.checkpoint_every, telemetry=dash.telemetry)
        dash.finish(stats)
    write_stats(args.stats_json, stats)
    if stats.get("already_delivered"):
        print(f"alice: Mars already has stream {stats['stream_id']!r} ({stats['input_bytes']:,} bytes, "
              f"SHA-256 ok); nothing to send, checkpoints cleared", file=sys.stderr)
    elif not args.quiet and dash.mode != "dashboard":
        print(f"alice: sent {stats['input_bytes']:,} bytes as {stats['compressed_bytes']:,} "
              f"({bits_per_byte(stats['compressed_bytes'], stats['input_bytes'])}); "
              f"Mars verified it, final digest {stats['final_digest'][:16]}", file=sys.stderr)
    return 0


def compress_command(args) -> int:
    check_output(args.output, args.input, args.force, binary=True)    # before the input: a pipe is read once
    check_stats(args.stats_json, args.input, args.output)
    data = read_input(args.input, MAX_LENGTH)
    numeric.activate(args.profile, args.threads)
    config = run_config(args)
    with plan_jobs("alice", config, len(data), args.segment, args.jobs, args.cluster, args.quiet,
                   args.threads is not None) as runner:
        with progress("Earth: compressing", len(data), not args.quiet, args.progress_every) as update:
            blob, stats = compress_file(data, config, args.segment, runner, update)
        if args.verify:
            with progress("Earth: verifying", len(data), not args.quiet, args.progress_every) as update:
                decoded, _ = decompress_file(parse(blob), runner,
                                             lambda done, bits=None, note="": update(done, None, note))
            if decoded != data:  # decompress checks the SHA-256 already; this cannot differ silently
                raise AssertionError("verification failed")
            stats["verified"] = True
    write_with_stats(args.output, blob, args.force, args.stats_json, stats, output_mode(args.input))
    if not args.quiet and args.output != "-":
        print(f"alice: {stats['input_bytes']:,} -> {stats['compressed_bytes']:,} bytes "
              f"({bits_per_byte(stats['compressed_bytes'], stats['input_bytes'])}, {stats['bytes_per_second']:,.0f} B/s), "
              f"final digest {stats['final_digest'][:16]}", file=sys.stderr)
    return 0


def _log(message: str) -> None:
    """Link events worth an operator's eye (Mars interrupted, frames resent): one line each."""
    print(f"alice: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    commands = {"compress": compress_command, "send": send_command,
                "keygen": lambda a: keygen_command("alice", a.dir, a.name)}
    return run_main("alice", lambda: commands[args.command](args))
