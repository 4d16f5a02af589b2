"""The simulated deep-space link as a program: options, status display, stats file.

    python -m scripts.relay --listen tcp://127.0.0.1:5601 --forward tcp://127.0.0.1:5602 \\
        --light-minutes 12 --time-scale 600 --bandwidth-bps 16000 --loss 0.05 --seed 1

The relay itself (what the path does to each message) is protocol/relay.py.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from protocol.relay import Relay  # noqa: E402
from shared.app.options import (Parser, add_relay_display_options, add_simulated_link_options,  # noqa: E402
                                endpoint, seconds, simulated_link)


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


def parser() -> argparse.ArgumentParser:
    ap = Parser(prog="python -m scripts.relay",
                description="Simulated deep-space link between Earth (Alice) and Mars (Bob).")
    ap.add_argument("--listen", required=True, type=endpoint, metavar="ENDPOINT", help="where Alice connects, e.g. tcp://127.0.0.1:5601")
    ap.add_argument("--forward", required=True, type=endpoint, metavar="ENDPOINT", help="Bob's bind address, e.g. tcp://127.0.0.1:5602")
    add_simulated_link_options(ap)
    ap.add_argument("--idle-exit", type=seconds, default=None, metavar="S",
                    help="exit after S seconds without a message, once traffic has started")
    ap.add_argument("--max-seconds", type=seconds, default=None, help="exit after this long in any case")
    ap.add_argument("--stats-json", metavar="PATH", help="write the final counters and settings as JSON")
    add_relay_display_options(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    path = simulated_link(args)
    try:
        relay = Relay(args.listen, args.forward, path)
    except zmq.ZMQError as e:
        print(f"relay: error: cannot listen on {args.listen}: {e}", file=sys.stderr)
        return 2
    header = f"relay: {path.describe()}" + (f", seed {path.seed}" if path.loss or path.dup or path.reorder else "")

    def stop(*_):
        relay.running = False
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    live = None
    if not args.quiet and not args.plain and sys.stdout.isatty():
        from rich.live import Live   # start-up: only on a terminal
        live = Live(status_table(relay.stats(), header), auto_refresh=False, transient=False)
        live.start(refresh=True)
    elif not args.quiet:
        print(f"{header} ({relay.endpoint} -> {args.forward})", flush=True)
    last_status = time.monotonic()
    try:
        while relay.running:
            relay.step()
            now = time.monotonic()
            if live is not None and now - last_status >= 0.25:
                live.update(status_table(relay.stats(), header), refresh=True)
                last_status = now
            elif live is None and not args.quiet and now - last_status >= args.status_every:
                print(status_line(relay.stats()), flush=True)
                last_status = now
            if args.idle_exit is not None and relay.last_message is not None and not relay.queue \
                    and now - relay.last_message > args.idle_exit:
                break
            if args.max_seconds is not None and now - relay.started > args.max_seconds:
                break
    finally:
        st = relay.stats()
        if live is not None:
            live.update(status_table(st, header), refresh=True)
            live.stop()
        elif not args.quiet:
            print(status_line(st).replace("[relay]", "[relay] done:"), flush=True)
        if args.stats_json:
            with open(args.stats_json, "w") as f:
                json.dump(st, f, indent=2, sort_keys=True)
        relay.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
