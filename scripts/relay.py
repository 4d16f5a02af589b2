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


def describe(settings: dict, light_minutes: float | None = None, time_scale: float | None = None) -> str:
    d = settings["delay_s"]
    light = f" ({light_minutes:g} light-min / {time_scale:g})" if light_minutes is not None else ""
    bw = settings["bandwidth_bps"]
    faults = ", ".join(f"{k} {settings[k]:.0%}" for k in ("loss", "dup", "reorder") if settings[k])
    where = "Earth->Mars" if settings["fault_direction"] == "up" else "both ways"
    return (f"one-way delay {d:.2f} s{light}, {f'{bw:,.0f} bit/s' if bw else 'unlimited bandwidth'}"
            + (f", faults ({where}): {faults}, seed {settings['seed']}" if faults else ", no faults"))


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
    ap = argparse.ArgumentParser(prog="python -m scripts.relay",
                                 description="Simulated deep-space link between Earth (Alice) and Mars (Bob).")
    ap.add_argument("--listen", required=True, metavar="ENDPOINT", help="where Alice connects, e.g. tcp://127.0.0.1:5601")
    ap.add_argument("--forward", required=True, metavar="ENDPOINT", help="Bob's bind address, e.g. tcp://127.0.0.1:5602")
    ap.add_argument("--delay-s", type=float, default=None, help="one-way delay in seconds (overrides --light-minutes)")
    ap.add_argument("--light-minutes", type=float, default=None,
                    help="one-way light time, Earth-Mars is 3 to 22 minutes (default 12 when --delay-s is not given)")
    ap.add_argument("--time-scale", type=float, default=600.0, help="divide the light time by this (default %(default)g)")
    ap.add_argument("--bandwidth-bps", type=float, default=0.0, help="bits per second each way (0 = unlimited)")
    ap.add_argument("--back-bandwidth-bps", type=float, default=None, help="Mars->Earth bandwidth (default: the same)")
    ap.add_argument("--loss", type=float, default=0.0, help="probability a message is lost")
    ap.add_argument("--dup", type=float, default=0.0, help="probability a message is delivered twice")
    ap.add_argument("--reorder", type=float, default=0.0, help="probability a message is held back and overtaken")
    ap.add_argument("--fault-direction", choices=("up", "both"), default="up",
                    help="up: faults on Earth->Mars only (default); both: also on ACKs, heartbeats and DONE")
    ap.add_argument("--seed", type=int, default=0, help="seed of the fault decisions")
    ap.add_argument("--idle-exit", type=float, default=None, metavar="S",
                    help="exit after S seconds without a message, once traffic has started")
    ap.add_argument("--max-seconds", type=float, default=None, help="exit after this long in any case")
    ap.add_argument("--stats-json", metavar="PATH", help="write the final counters and settings as JSON")
    ap.add_argument("--status-every", type=float, default=2.0, help="plain mode: seconds between status lines")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--plain", action="store_true", help="plain status lines even on a terminal")
    g.add_argument("-q", "--quiet", action="store_true", help="no status output")
    return ap


def delay_from(args) -> tuple[float, float | None]:
    if args.delay_s is not None:
        return args.delay_s, None
    minutes = 12.0 if args.light_minutes is None else args.light_minutes
    return minutes * 60.0 / args.time_scale, minutes


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    for name in ("loss", "dup", "reorder"):
        if not 0.0 <= getattr(args, name) < 1.0:
            print(f"relay: error: --{name} must be in [0, 1)", file=sys.stderr)
            return 2
    if args.time_scale <= 0:
        print("relay: error: --time-scale must be positive", file=sys.stderr)
        return 2
    delay, minutes = delay_from(args)
    try:
        relay = Relay(args.listen, args.forward, delay, args.bandwidth_bps, args.loss, args.dup, args.reorder,
                      args.seed, args.back_bandwidth_bps, args.fault_direction)
    except zmq.ZMQError as e:
        print(f"relay: error: cannot listen on {args.listen}: {e}", file=sys.stderr)
        return 2
    header = "relay: " + describe(relay.settings, minutes, args.time_scale if minutes else None)

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
