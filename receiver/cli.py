"""bob: decompress a marslink file, or listen for Alice. Thin: the work is in shared/."""
from __future__ import annotations

import argparse
import os
import sys

from shared.app.checkpoint import default_state_dir
from shared.app.cli import check_endpoint, curve_keys, keygen_command, lan_listen, progress, run_main
from shared.app.faults import kill_at
from shared.app.files import (check_folder, check_output, check_stats, output_lock, output_mode, read_input,
                              spool_folder, write_stats, write_with_stats)
from shared.app.options import (COUNT, LAN_PORT, Parser, add_force_option, add_keygen_command, add_link_options,
                                add_model_options, add_numeric_options, add_parallel_options, add_report_options,
                                add_state_option, add_version_option, link_settings, output_file, run_config)
from shared.app.parallel import decompress_file, plan_jobs
from shared.core import numeric
from shared.core.errors import UsageError
from shared.coding.container import MAGIC, MAX_CONTAINER_BYTES, parse, size_stats
from shared.show.dashboard import add_display_options, dashboard_for


def parser() -> argparse.ArgumentParser:
    ap = Parser(prog="bob", description="Marslink receiver (Mars).")
    add_version_option(ap)
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("decompress", help="decompress a marslink file INPUT into OUTPUT ('-' = stdin/stdout)")
    d.add_argument("input")
    d.add_argument("output")
    add_force_option(d)
    add_numeric_options(d, "numeric profile (default: portable; speed only, any decodes any file)",
                        "intra-op threads (default: 1; speed only)")
    add_parallel_options(d, compress=False)
    add_report_options(d)
    ls = sub.add_parser("listen", help="receive one stream from a sender and write it to --out")
    ls.add_argument("--bind", metavar="ENDPOINT", help="e.g. tcp://127.0.0.1:5555 (or --lan)")
    ls.add_argument("--out", required=True, type=output_file, metavar="FILE", help="where the verified result goes")
    add_force_option(ls)
    add_state_option(ls, "mars", "delivery receipts")
    add_link_options(ls, "bind")
    ls.add_argument("--fault-perturb-step", type=COUNT, default=None, help=argparse.SUPPRESS)
    add_display_options(ls)
    add_model_options(ls, "the sender's")
    add_report_options(ls, progress_every=False)
    add_keygen_command(sub, "Mars", "mars")
    return ap


def _chain(*callbacks):
    """One callback that calls each of `callbacks` in turn."""
    def call(*a):
        for cb in callbacks:
            cb(*a)
    return call


def _endpoint_and_keys(args):
    """--bind with its keys, or --lan: (endpoint, CurveKeys or None, the line for Earth or None)."""
    if not args.lan:
        if args.bind is None:
            raise UsageError("say where to listen: --bind ENDPOINT, or --lan for one command on each laptop")
        if args.port != LAN_PORT:
            raise UsageError("--port goes with --lan; with --bind, the port is part of the endpoint")
        curve = curve_keys("bind", args.curve_secret, args.allow)
        return check_endpoint(args.bind, args.insecure, "bind", encrypted=curve is not None), curve, None
    if args.bind is not None or args.curve_secret is not None or args.allow is not None:
        raise UsageError("--lan chooses the endpoint and the keys itself; drop --bind, --curve-secret and --allow")
    earth = ["--preset", args.preset] if args.preset != "default" else []
    earth += ["--seed", str(args.seed)] if args.seed is not None else []
    return lan_listen(getattr(args, "state_dir", None) or default_state_dir("mars"), args.port, earth)


def listen_command(args) -> int:
    bind, curve, earth_line = _endpoint_and_keys(args)
    check_output(args.out, force=args.force, stream_ok=False)   # published by a link: a file only
    spool = spool_folder(args.out)
    if os.path.lexists(spool) and not os.path.isdir(spool):      # found only once a sender came, before
        raise UsageError(f"{spool!r} is in the way: Bob keeps the stream's partial state there while it "
                         f"arrives; move it, or choose another --out")
    check_stats(args.stats_json, output_path=args.out)
    with output_lock(args.out):
        return _listen(args, bind, curve, earth_line)


def _listen(args, bind, curve, earth_line) -> int:
    numeric.activate(args.profile, args.threads)
    from receiver.stream import delivered, receive_stream   # start-up: torch loads only once the options are valid
    from shared.core.fingerprint import fingerprint   # start-up: as above
    state_dir = args.state_dir or default_state_dir("mars")
    check_folder(state_dir, "Mars's state folder (--state-dir) ")   # receipts: before a stream, not after it
    fingerprint()                       # compute the canary before a sender is waiting
    dash = dashboard_for(args, "mars", bind, out_path=args.out)   # a display this terminal cannot show: refused now

    def on_listen(endpoint):            # once bound: a port in use is refused before any "listening"
        if earth_line is not None:      # even with -q: without it no Earth can reach us
            print(f"bob: listening on every interface, port {args.port}, encrypted; on Earth, type this line "
                  f"(FILE: the file to send):\n{earth_line}", file=sys.stderr, flush=True)
        elif not args.quiet:
            print(f"bob: listening on {endpoint}", file=sys.stderr, flush=True)

    def on_hello(hello):
        if not args.quiet:
            print(f"bob: receiving stream {hello.stream_id!r} ({hello.total_length:,} bytes)",
                  file=sys.stderr, flush=True)

    stats = None
    try:
        with dash:
            on_hello = _chain(on_hello, dash.on_hello)
            stats = receive_stream(bind, run_config(args), args.out, link_settings(args, curve), on_hello=on_hello,
                                   on_step=kill_at(args.fault_kill_step, dash.on_step), telemetry=dash.telemetry,
                                   log=_log, perturb_step=args.fault_perturb_step,
                                   checkpoint_every=args.checkpoint_every, linger_s=args.linger,
                                   state_dir=state_dir, force=args.force, on_listen=on_listen)
            dash.finish(stats)
        write_stats(args.stats_json, stats)
    except KeyboardInterrupt as e:
        if stats is not None:           # stopped after delivering: the output is there, verified
            e.written = delivered(args.out, "its statistics")
        raise
    if not args.quiet and dash.mode != "dashboard":
        print(f"bob: verified {stats['input_bytes']:,} bytes (SHA-256 ok, {stats['syncs_checked']} digests "
              f"matched), final digest {stats['final_digest'][:16]}", file=sys.stderr)
    return 0


def _log(message: str) -> None:
    """Link events worth an operator's eye (refused senders, rejected messages): one line each."""
    print(f"bob: {message}", file=sys.stderr, flush=True)


def decompress_command(args) -> int:
    check_output(args.output, args.input, args.force)        # before the input: a pipe is read once
    check_stats(args.stats_json, args.input, args.output)
    blob = read_input(args.input, MAX_CONTAINER_BYTES, MAGIC)
    container = parse(blob, "input" if args.input == "-" else repr(args.input))
    numeric.activate(args.profile, args.threads)     # no setting changes a bit: the file records none
    header = container.header
    with plan_jobs("bob", container.config, header["length"], header["segment_size"],
                   args.jobs, args.cluster, args.quiet, args.threads is not None) as runner:
        with progress("Mars: decompressing", header["length"], not args.quiet, args.progress_every) as update:
            data, stats = decompress_file(container, runner, update)
    stats.update(size_stats(len(blob), stats["payload_bytes"], stats["input_bytes"]))   # as alice compress writes them
    write_with_stats(args.output, data, args.force, args.stats_json, stats, output_mode(args.input))
    if not args.quiet and args.output != "-":
        print(f"bob: verified {len(data):,} bytes (SHA-256 ok, {stats['steps']} steps in lockstep), "
              f"final digest {stats['final_digest'][:16]}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    commands = {"decompress": decompress_command, "listen": listen_command,
                "keygen": lambda a: keygen_command("bob", a.dir, a.name)}
    return run_main("bob", lambda: commands[args.command](args))
