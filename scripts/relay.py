"""The simulated deep-space link as a program: options, status display, stats file.

    python -m scripts.relay --listen tcp://127.0.0.1:5601 --forward tcp://127.0.0.1:5602 \\
        --light-minutes 12 --time-scale 600 --bandwidth-bps 16000 --loss 0.05 --seed 1

The relay itself (what the path does to each message) is protocol/relay.py.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from protocol.link import LinkError, ipc_problem  # noqa: E402
from protocol.relay import Relay  # noqa: E402
from shared.app.files import check_stats, drop_stdout, escape_what_cannot_be_shown, write_stats  # noqa: E402
from shared.app.options import (Parser, add_relay_display_options, add_simulated_link_options,  # noqa: E402
                                endpoint, path_name, seconds, simulated_link)
from shared.core.errors import MarslinkError  # noqa: E402

LOOPBACK = {"*", "0.0.0.0", "127.0.0.1", "localhost", "[::]", "[::1]"}    # hosts that all reach this machine


def status_line(st: dict) -> str:
    u, d = st["earth_to_mars"], st["mars_to_earth"]
    return (f"[relay] {st['seconds']:6.1f} s | Earth->Mars {u['messages']:,} msgs {u['bytes']:,} B, "
            f"lost {u['dropped']}, dup {u['duplicated']}, reordered {u['reordered']}, "
            f"max queue {u['max_queue_s']:.2f} s | Mars->Earth {d['messages']:,} msgs {d['bytes']:,} B, "
            f"lost {d['dropped']} | in transit {st['queued']}")


def status_table(st: dict, header: str):
    # start-up: rich loads only for a live table on a terminal
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, expand=False, show_edge=False)
    for col in ("direction", "messages", "bytes", "lost", "duplicated", "reordered", "max queue", "delivered"):
        t.add_column(col, justify="left" if col == "direction" else "right")
    for name, key in (("Earth -> Mars", "earth_to_mars"), ("Mars -> Earth", "mars_to_earth")):
        s = st[key]
        t.add_row(name, f"{s['messages']:,}", f"{s['bytes']:,}", f"{s['dropped']:,}", f"{s['duplicated']:,}",
                  f"{s['reordered']:,}", f"{s['max_queue_s']:.2f} s", f"{s['delivered']:,}")
    return Group(Text(header, style="bold", no_wrap=True, overflow="ellipsis"), t,
                 Text(f"{st['seconds']:.1f} s | in transit now: {st['queued']}", style="grey62"))


def relay_endpoint(bind: bool):
    """argparse type: an endpoint (options.endpoint) whose tcp port zmq will really use. zmq takes
    tcp://127.0.0.1:99999 modulo 65536 and binds port 34463 without a word, and a --forward
    without a port or to host * fails only when the first message arrives."""
    def parse(text: str) -> str:
        text = endpoint(text)
        problem = ipc_problem(text, "bind" if bind else "connect") if text.startswith("ipc://") else None
        if problem:
            raise argparse.ArgumentTypeError(f"{text[:80]!r}: {problem}")
        if text.startswith("tcp://"):
            host, _, port = text[len("tcp://"):].rpartition(":")
            good_port = (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535) or (bind and port == "*")
            if not host or not good_port or (not bind and host == "*") or any(c.isspace() for c in host):
                raise argparse.ArgumentTypeError(
                    f"{text[:80]!r} is not an endpoint such as tcp://127.0.0.1:5602: it needs a host and a port "
                    f"from 1 to 65535" + (" (or * for any free one)" if bind else ""))
        return text
    parse.__name__ = "an endpoint"
    return parse


def same_endpoint(listen: str, forward: str) -> bool:
    """--forward names the relay's own --listen: it would send every message back to itself."""
    if listen.startswith("tcp://") and forward.startswith("tcp://"):
        (lhost, _, lport), (fhost, _, fport) = (e[len("tcp://"):].rpartition(":") for e in (listen, forward))
        return lport == fport and (lhost == fhost or (lhost in LOOPBACK and fhost in LOOPBACK))
    return listen == forward


def parser() -> argparse.ArgumentParser:
    ap = Parser(prog="python -m scripts.relay",
                description="Simulated deep-space link between Earth (Alice) and Mars (Bob).")
    ap.add_argument("--listen", required=True, type=relay_endpoint(bind=True), metavar="ENDPOINT",
                    help="where Alice connects, e.g. tcp://127.0.0.1:5601")
    ap.add_argument("--forward", required=True, type=relay_endpoint(bind=False), metavar="ENDPOINT",
                    help="Bob's bind address, e.g. tcp://127.0.0.1:5602")
    add_simulated_link_options(ap)
    ap.add_argument("--idle-exit", type=seconds, default=None, metavar="S",
                    help="exit after S seconds without a message, once traffic has started")
    ap.add_argument("--max-seconds", type=seconds, default=None, help="exit after this long in any case")
    ap.add_argument("--stats-json", metavar="PATH", type=path_name("a statistics file"),
                    help="write the final counters and settings as JSON")
    add_relay_display_options(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    escape_what_cannot_be_shown()
    ap = parser()
    args = ap.parse_args(argv)
    if same_endpoint(args.listen, args.forward):
        ap.error(f"--listen and --forward are the same endpoint ({args.forward}): the relay would send every "
                 f"message back to itself; give Bob's address to --forward")
    try:
        check_stats(args.stats_json)          # before the run, not after hours of it
    except MarslinkError as e:
        print(f"relay: error: {e}", file=sys.stderr)
        return 2
    path = simulated_link(args)
    try:
        relay = Relay(args.listen, args.forward, path)
    except zmq.ZMQError as e:
        print(f"relay: error: cannot listen on {args.listen}: {e}", file=sys.stderr)
        return 2
    except LinkError as e:
        print(f"relay: error: {e}", file=sys.stderr)
        return 2
    header = f"relay: {path.describe()}" + (f", seed {path.seed}" if path.loss or path.dup or path.reorder else "")

    def stop(*_):
        relay.running = False
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    quiet = args.quiet or sys.stdout is None     # `>&-`: nowhere to show the status; the link runs all the same

    def show(line: str) -> None:
        """Print a status line; once the reader has gone (`| head`), go on quietly: Alice and Bob
        still need the link, and the stats are still written."""
        nonlocal quiet
        try:
            print(line, flush=True)
        except BrokenPipeError:
            drop_stdout()
            quiet = True

    live = None
    if not quiet and not args.plain and sys.stdout.isatty():
        from rich.live import Live   # start-up: only on a terminal
        live = Live(status_table(relay.stats(), header), auto_refresh=False, transient=False)
        live.start(refresh=True)
    elif not quiet:
        show(f"{header} ({relay.endpoint} -> {args.forward})")
    last_status = time.monotonic()
    rc = 0
    try:
        while relay.running:
            relay.step()
            now = time.monotonic()
            if live is not None and now - last_status >= 0.25:
                live.update(status_table(relay.stats(), header), refresh=True)
                last_status = now
            elif live is None and not quiet and now - last_status >= args.status_every:
                show(status_line(relay.stats()))
                last_status = now
            if args.idle_exit is not None and relay.last_message is not None and not relay.queue \
                    and now - relay.last_message > args.idle_exit:
                break
            if args.max_seconds is not None and now - relay.started > args.max_seconds:
                break
    except zmq.ZMQError as e:                    # Bob's address, refused when the first message goes there
        print(f"relay: error: cannot forward to {args.forward}: {e.strerror}; give Bob's address to --forward",
              file=sys.stderr)
        rc = 1
    finally:
        st = relay.stats()
        if live is not None:
            live.update(status_table(st, header), refresh=True)
            live.stop()
        elif not quiet:
            show(status_line(st).replace("[relay]", "[relay] done:"))
        relay.close()
        try:
            write_stats(args.stats_json, st)
        except MarslinkError as e:
            print(f"relay: error: {e}", file=sys.stderr)
            rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
