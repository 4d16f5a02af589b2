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
import random
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
