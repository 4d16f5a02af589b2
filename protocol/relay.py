"""A simulated deep-space link: a relay between Earth (Alice) and Mars (Bob).

    python -m protocol.relay --listen tcp://127.0.0.1:5601 --forward tcp://127.0.0.1:5602 \\
        --light-minutes 12 --time-scale 600 --bandwidth-bps 16000 --loss 0.05 --seed 1

Alice connects to the relay's ROUTER (`--listen`); for each sender the relay connects a DEALER
to Bob's ROUTER (`--forward`) carrying the sender's routing id, so Bob sees the same peer he
would see directly. Messages are forwarded both ways as opaque bytes (the relay never decodes
a frame), after the simulated path has had its say:

  light delay   every message arrives `--delay-s` seconds after it has been transmitted
                (or `--light-minutes` / `--time-scale`: Earth-Mars is 3 to 22 light-minutes;
                12 minutes at time scale 600 is 1.2 s);
  bandwidth     each direction transmits one message at a time at `--bandwidth-bps`: a message
                of n bytes occupies the channel for 8n/bandwidth seconds, and waits in a queue
                while an earlier one is being transmitted (0 = unlimited);
  loss, dup,    with the given probabilities a message is dropped, delivered twice (the copy
  reorder       right after the original), or held back long enough for later ones to overtake
                it; decisions come from a seeded RNG per direction (`--seed`). By default these
                faults hit the Earth-to-Mars direction only: the receiver exits right after its
                final DONE, so a DONE lost on the way back would leave Earth unconfirmed.
                `--fault-direction both` damages ACKs, heartbeats and DONE too.

The link's own retransmission (by seq) and duplicate/reorder handling make the result exact;
give both sides a `--timeout` well above the round trip (e.g. 4 x delay + 10 s) and Alice a
`--retransmit` above the round trip. The relay cannot carry CurveZMQ sessions (encryption
is per TCP connection, and the relay is a separate hop): use it with plain loopback links.
"""
from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass

import zmq

HWM = 100_000


@dataclass
class DirectionStats:
    messages: int = 0          # arrived at the relay
    bytes: int = 0
    delivered: int = 0         # handed on (copies included)
    dropped: int = 0           # lost on purpose (--loss)
    duplicated: int = 0        # delivered twice on purpose (--dup)
    reordered: int = 0         # held back on purpose (--reorder)
    overflow: int = 0          # could not be handed on (peer queue full or gone)
    max_queue_s: float = 0.0   # longest wait for the transmitter (bandwidth)


class Channel:
    """One direction of the simulated path: a transmitter queue, then light delay, then faults."""

    def __init__(self, name: str, delay_s: float, bandwidth_bps: float, loss: float, dup: float,
                 reorder: float, seed: int, faults: bool):
        self.name, self.delay_s, self.bandwidth_bps = name, delay_s, bandwidth_bps
        self.loss, self.dup, self.reorder = (loss, dup, reorder) if faults else (0.0, 0.0, 0.0)
        self.rng = random.Random(seed)
        self.free_at = 0.0
        self.stats = DirectionStats()

    def admit(self, now: float, size: int) -> list[float]:
        """Arrival times at the far end for a message of `size` bytes sent at `now` (0, 1 or 2)."""
        s = self.stats
        s.messages += 1
        s.bytes += size
        r_loss, r_dup, r_reo, r_extra = (self.rng.random() for _ in range(4))
        start = max(now, self.free_at)
        s.max_queue_s = max(s.max_queue_s, start - now)
        done = start + (size * 8 / self.bandwidth_bps if self.bandwidth_bps > 0 else 0.0)
        self.free_at = done                     # a lost message still used the transmitter
        if r_loss < self.loss:
            s.dropped += 1
            return []
        at = done + self.delay_s
        if r_reo < self.reorder:               # held back: later messages overtake it
            s.reordered += 1
            at += 0.05 + 0.25 * r_extra + 0.25 * self.delay_s
        times = [at]
        if r_dup < self.dup:
            s.duplicated += 1
            times.append(at + 0.001 + 0.01 * r_extra)
        return times


class Relay:
    def __init__(self, listen: str, forward: str, delay_s: float = 0.0, bandwidth_bps: float = 0.0,
                 loss: float = 0.0, dup: float = 0.0, reorder: float = 0.0, seed: int = 0,
                 back_bandwidth_bps: float | None = None, fault_direction: str = "up"):
        self.listen, self.forward, self.delay_s = listen, forward, delay_s
        self.settings = {"delay_s": delay_s, "bandwidth_bps": bandwidth_bps,
                         "back_bandwidth_bps": bandwidth_bps if back_bandwidth_bps is None else back_bandwidth_bps,
                         "loss": loss, "dup": dup, "reorder": reorder, "seed": seed,
                         "fault_direction": fault_direction}
        self.up = Channel("Earth->Mars", delay_s, bandwidth_bps, loss, dup, reorder, seed, True)
        self.down = Channel("Mars->Earth", delay_s, self.settings["back_bandwidth_bps"], loss, dup, reorder,
                            seed + 1, fault_direction == "both")
        self.ctx = zmq.Context()
        self.router = self._socket(zmq.ROUTER)
        self.router.bind(listen)
        self.endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.dealers: dict[bytes, zmq.Socket] = {}
        self.owner: dict[zmq.Socket, bytes] = {}
        self.poller = zmq.Poller()
        self.poller.register(self.router, zmq.POLLIN)
        self.queue: list = []                  # (deliver_at, n, socket, frames)
        self._n = 0
        self.started = time.monotonic()
        self.last_message = None
        self.running = True

    def _socket(self, kind, identity: bytes | None = None) -> zmq.Socket:
        s = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, HWM)
        s.setsockopt(zmq.RCVHWM, HWM)
        if identity is not None:
            s.setsockopt(zmq.ROUTING_ID, identity)
        return s

    def _dealer(self, identity: bytes) -> zmq.Socket:
        d = self.dealers.get(identity)
        if d is None:
            d = self._socket(zmq.DEALER, identity)     # Bob sees the sender's own routing id
            d.connect(self.forward)
            self.dealers[identity] = d
            self.owner[d] = identity
            self.poller.register(d, zmq.POLLIN)
        return d

    def _schedule(self, channel: Channel, now: float, sock, frames: list) -> None:
        for at in channel.admit(now, len(frames[-1])):
            self._n += 1
            heapq.heappush(self.queue, (at, self._n, sock, frames, channel))

    def _receive(self, now: float) -> None:
        while True:                                          # Earth -> Mars
            try:
                identity, *body = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(body) != 1:
                continue                                     # not a marslink message shape: drop
            self.last_message = now
            self._schedule(self.up, now, self._dealer(identity), [body[0]])
        for d, identity in list(self.owner.items()):         # Mars -> Earth
            while True:
                try:
                    body = d.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if len(body) != 1:
                    continue
                self.last_message = now
                self._schedule(self.down, now, self.router, [identity, body[0]])

    def _deliver(self, now: float) -> None:
        while self.queue and self.queue[0][0] <= now:
            _, _, sock, frames, channel = heapq.heappop(self.queue)
            try:
                sock.send_multipart(frames, zmq.NOBLOCK)
                channel.stats.delivered += 1
            except zmq.ZMQError:
                channel.stats.overflow += 1

    def step(self, max_wait_s: float = 0.25) -> None:
        now = time.monotonic()
        self._deliver(now)
        wait = max_wait_s if not self.queue else min(max_wait_s, max(0.0, self.queue[0][0] - now))
        for _ in self.poller.poll(wait * 1000):
            pass
        now = time.monotonic()
        self._receive(now)
        self._deliver(now)

    def stats(self) -> dict:
        return {"settings": self.settings, "endpoint": self.endpoint, "forward": self.forward,
                "seconds": time.monotonic() - self.started, "senders": len(self.dealers),
                "earth_to_mars": asdict(self.up.stats), "mars_to_earth": asdict(self.down.stats),
                "queued": len(self.queue)}

    def close(self) -> None:
        for s in [self.router, *self.dealers.values()]:
            s.close(0)
        self.ctx.term()


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


class _Parser(argparse.ArgumentParser):
    """One-line errors, as alice and bob give them: `prog: error: what; see 'prog --help'`, exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def _number(low: float, high: float, what: str, above_low: bool = False):
    """argparse type: a finite number in low..high (above low, if `above_low`); NaN never passes."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not ((low < value) if above_low else (low <= value)) or not value <= high:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not {what}")
        return value
    return parse


def _endpoint(text: str) -> str:
    """argparse type: a ZeroMQ endpoint with its transport (zmq refuses anything else only later)."""
    transport, sep, rest = text.partition("://")
    if not sep or transport not in ("tcp", "ipc") or not rest or not text.isprintable():
        raise argparse.ArgumentTypeError(f"{text[:80]!r} is not an endpoint such as tcp://127.0.0.1:5602")
    return text


MAX_DELAY_S = 24 * 3600.0        # a one-way delay longer than a day is a typo
_SECONDS = _number(0.0, MAX_DELAY_S, f"a number of seconds from 0 to {MAX_DELAY_S:g}")
_POSITIVE_SECONDS = _number(0.0, 30 * 24 * 3600.0, "a positive number of seconds", above_low=True)
_BPS = _number(0.0, 1e12, "a bandwidth in bits per second (0 = unlimited, at most 1e12)")
_PROBABILITY = _number(0.0, 0.999999, "a probability from 0 to below 1")


def parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m protocol.relay",
                 description="Simulated deep-space link between Earth (Alice) and Mars (Bob).")
    ap.add_argument("--listen", required=True, type=_endpoint, metavar="ENDPOINT",
                    help="where Alice connects, e.g. tcp://127.0.0.1:5601")
    ap.add_argument("--forward", required=True, type=_endpoint, metavar="ENDPOINT",
                    help="Bob's bind address, e.g. tcp://127.0.0.1:5602")
    ap.add_argument("--delay-s", type=_SECONDS, default=None, help="one-way delay in seconds (overrides --light-minutes)")
    ap.add_argument("--light-minutes", type=_number(0.0, MAX_DELAY_S / 60, "a number of minutes from 0 to 1440"),
                    default=None,
                    help="one-way light time, Earth-Mars is 3 to 22 minutes (default 12 when --delay-s is not given)")
    ap.add_argument("--time-scale", type=_number(0.0, 1e9, "a positive number (at most 1e9)", above_low=True),
                    default=600.0, help="divide the light time by this (default %(default)g)")
    ap.add_argument("--bandwidth-bps", type=_BPS, default=0.0, help="bits per second each way (0 = unlimited)")
    ap.add_argument("--back-bandwidth-bps", type=_BPS, default=None, help="Mars->Earth bandwidth (default: the same)")
    ap.add_argument("--loss", type=_PROBABILITY, default=0.0, help="probability a message is lost")
    ap.add_argument("--dup", type=_PROBABILITY, default=0.0, help="probability a message is delivered twice")
    ap.add_argument("--reorder", type=_PROBABILITY, default=0.0, help="probability a message is held back and overtaken")
    ap.add_argument("--fault-direction", choices=("up", "both"), default="up",
                    help="up: faults on Earth->Mars only (default); both: also on ACKs, heartbeats and DONE")
    ap.add_argument("--seed", type=int, default=0, help="seed of the fault decisions")
    ap.add_argument("--idle-exit", type=_POSITIVE_SECONDS, default=None, metavar="S",
                    help="exit after S seconds without a message, once traffic has started")
    ap.add_argument("--max-seconds", type=_POSITIVE_SECONDS, default=None, help="exit after this long in any case")
    ap.add_argument("--stats-json", metavar="PATH", help="write the final counters and settings as JSON")
    ap.add_argument("--status-every", type=_POSITIVE_SECONDS, default=2.0, help="plain mode: seconds between status lines")
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
