"""A simulated deep-space link: a relay between Earth (Alice) and Mars (Bob). The program that
runs it is scripts/relay.py (`python -m scripts.relay --help`).

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

import heapq
import math
import random
import time
from dataclasses import asdict, dataclass, fields

import zmq

from .link import LinkError, ipc_bind_problem

HWM = 100_000
FAULTS = ("loss", "dup", "reorder")


@dataclass(frozen=True)
class SimulatedLink:
    """The simulated path's settings, in one object: the relay runs it, the demo starts the relay
    with it, and the dashboards show it (`--link-info` carries it as text, `to_text`/`from_text`).

    The light delay may be stated as `light_minutes` at `time_scale` (kept for display);
    `delay_s` is what the relay uses. Bandwidths are bits per second each way (0 = unlimited).
    """

    delay_s: float = 0.0
    bandwidth_bps: float = 0.0
    back_bandwidth_bps: float | None = None      # Mars->Earth; None: the same as bandwidth_bps
    loss: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    seed: int = 0
    fault_direction: str = "up"                  # "up": Earth->Mars only; "both": also ACKs and DONE
    light_minutes: float | None = None
    time_scale: float | None = None

    @classmethod
    def from_light(cls, minutes: float, scale: float, **kw) -> "SimulatedLink":
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"--time-scale must be a positive number, not {scale}")
        return cls(delay_s=minutes * 60.0 / scale, light_minutes=minutes, time_scale=scale, **kw)

    def __post_init__(self):
        for name in ("delay_s", "bandwidth_bps", "back_bandwidth_bps", "light_minutes"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v >= 0):
                raise ValueError(f"--{name.replace('_', '-')} must be a number >= 0, not {v}")
        if self.time_scale is not None and not (math.isfinite(self.time_scale) and self.time_scale > 0):
            raise ValueError(f"--time-scale must be a positive number, not {self.time_scale}")
        for name in FAULTS:
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"--{name} must be in [0, 1), not {getattr(self, name)}")
        if self.fault_direction not in ("up", "both"):
            raise ValueError(f"--fault-direction must be up or both, not {self.fault_direction!r}")

    @property
    def back_bps(self) -> float:
        return self.bandwidth_bps if self.back_bandwidth_bps is None else self.back_bandwidth_bps

    # -- as text (--link-info) and as JSON (stats files, dashboard states) ---------------------
    _KEYS = {"delay": "delay_s", "bw": "bandwidth_bps", "back_bw": "back_bandwidth_bps", "loss": "loss",
             "dup": "dup", "reorder": "reorder", "seed": "seed", "faults": "fault_direction",
             "light": "light_minutes", "scale": "time_scale"}

    def to_text(self) -> str:
        """'delay=1.2,bw=16000,loss=0.05,...': the settings that differ from a plain wire."""
        plain = SimulatedLink()
        return ",".join(f"{key}={getattr(self, name):g}" if not isinstance(getattr(self, name), str)
                        else f"{key}={getattr(self, name)}"
                        for key, name in self._KEYS.items()
                        if getattr(self, name) != getattr(plain, name) or key == "delay")

    @classmethod
    def from_text(cls, text: str) -> "SimulatedLink":
        """The inverse of to_text; units may be written: '1.2s', '16k', '12min'. ValueError, one line."""
        values: dict = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            if "=" not in part:
                raise ValueError(f"link info {part!r} is not key=value")
            key, value = (x.strip() for x in part.split("=", 1))
            if key not in cls._KEYS:
                raise ValueError(f"link info {part!r}: unknown key {key!r} (known: {', '.join(cls._KEYS)})")
            name = cls._KEYS[key]
            if name == "fault_direction":
                values[name] = value
                continue
            v, mult = value.lower().removesuffix("min") if key == "light" else value.lower(), 1.0
            if key == "delay":
                v = v.rstrip("s")
            if key in ("bw", "back_bw"):
                v = v.removesuffix("bps").removesuffix("bit/")
                mult, v = ({"k": 1e3, "m": 1e6}[v[-1]], v[:-1]) if v[-1:] in ("k", "m") else (1.0, v)
            try:
                values[name] = int(v) if name == "seed" else float(v) * mult
            except ValueError:
                raise ValueError(f"link info {part!r}: {value!r} is not a number") from None
            if key == "scale" and not (math.isfinite(values[name]) and values[name] > 0):
                raise ValueError(f"link info {part!r}: {value!r} is not a time scale (a positive number)")
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SimulatedLink":
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    def describe(self) -> str:
        """One line for people: 'light delay 1.20 s one-way (12 light-min / 600) | 16 kbit/s | loss 5%'."""
        scale = f" / {self.time_scale:g}" if self.time_scale is not None else ""    # --link-info may omit it
        light = f" ({self.light_minutes:g} light-min{scale})" if self.light_minutes is not None else ""
        parts = [f"light delay {self.delay_s:.2f} s one-way{light}"]
        if self.bandwidth_bps:
            parts.append(fmt_bps(self.bandwidth_bps))
        faults = [f"{k} {getattr(self, k):.0%}" for k in FAULTS if getattr(self, k)]
        if faults:
            parts.append(" ".join(faults) + (" both ways" if self.fault_direction == "both" else " Earth->Mars"))
        return " | ".join(parts)


def fmt_bps(bps: float) -> str:
    if bps >= 1e6:
        return f"{bps / 1e6:.3g} Mbit/s"
    if bps >= 1e3:
        return f"{bps / 1e3:.3g} kbit/s"
    return f"{bps:.3g} bit/s"


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
    def __init__(self, listen: str, forward: str, path: SimulatedLink = SimulatedLink()):
        self.listen, self.forward, self.path = listen, forward, path
        faults = (path.loss, path.dup, path.reorder)
        self.up = Channel("Earth->Mars", path.delay_s, path.bandwidth_bps, *faults, path.seed, True)
        self.down = Channel("Mars->Earth", path.delay_s, path.back_bps, *faults, path.seed + 1,
                            path.fault_direction == "both")
        problem = ipc_bind_problem(listen)
        if problem:
            raise LinkError(f"the relay cannot listen on {listen}: {problem}")
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
        return {"settings": self.path.to_dict(), "endpoint": self.endpoint, "forward": self.forward,
                "seconds": time.monotonic() - self.started, "senders": len(self.dealers),
                "earth_to_mars": asdict(self.up.stats), "mars_to_earth": asdict(self.down.stats),
                "queued": len(self.queue)}

    def close(self) -> None:
        for s in [self.router, *self.dealers.values()]:
            s.close(0)
        self.ctx.term()
