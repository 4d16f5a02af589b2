"""Marslink transport: reliable, flow-controlled, in-order frames over ZeroMQ.

Bob (Mars, receiver) binds a ROUTER; Alice (Earth, sender) connects a DEALER.
Either may start first: ZeroMQ connects/reconnects in the background. Each
side is a single-threaded zmq.Poller loop that only runs inside its own calls,
built from small named pieces of the ZeroMQ Guide's reliability patterns:

  credit flow     Alice has at most min(window, credit) sequenced frames
                  (DATA/SYNC/END) past Bob's acked_seq; Bob's ACK carries
                  next-expected seq + credit (window minus frames his caller
                  has not consumed yet), so a slow decoder throttles Alice.
  heartbeats      Each side sends HEARTBEAT after heartbeat_s without sending;
                  silence from the peer for timeout_s raises PeerLost.
  retransmission  Alice keeps unacked frames and resends them all when ACKs
                  make no progress for retransmit_s. Bob drops duplicates,
                  buffers out-of-order frames (up to window), delivers in order.
  error frames    abort(code, message) sends ERROR then closes; receiving
                  ERROR from one's own peer raises PeerError(code, message).
  one server      Bob serves one sender and keeps his watch: anyone else's frames
                  are counted and answered with ERROR (a HELLO for another stream:
                  "busy"), never raised; refuse() turns a sender away and listens on.
  receipts        DONE is acknowledged by an ACK from Alice; until then Bob lingers
                  (linger()), repeating DONE and answering a returning Alice's
                  HELLO or END for the delivered stream with DONE.

API (the whole of it):

    settings = LinkSettings(window=WINDOW, heartbeat_s=HEARTBEAT_S, timeout_s=TIMEOUT_S,
                            retransmit_s=RETRANSMIT_S, handshake_timeout_s=SENDER_HANDSHAKE_S,
                            linger_ms=LINGER_MS, fault=None,
                            curve=None)         # CurveKeys: encryption + allow-list (security.py)

    alice = AliceLink("tcp://mars:5555", settings, log=None)
    welcome = alice.handshake(hello)    # -> Welcome, or Done if Mars already has it; PeerError if refused
    alice.send(frame)                   # Data/Sync/End with frame.seq == alice.next_seq; blocks on credit
    done = alice.wait_done()            # -> Done after END
    alice.poll(timeout_s=0)             # pump: acks, heartbeats, resends
    alice.abort(code, message); alice.close();  alice.stats: AliceStats

    bob = BobLink("tcp://*:5555", settings, log=None);  bob.endpoint  # actual bound address
    hello = bob.accept(deadline=None)   # -> Hello; HandshakeTimeout
    bob.welcome(Welcome(hello.stream_id, next_seq=0))   or   bob.refuse(code, message)  (listens on)
    frame = bob.next_frame()            # next in-order Data/Sync/End; blocks
    bob.poll(timeout_s=0)               # pump without taking a frame
    bob.done(done); bob.linger(seconds)  # DONE until Alice acknowledges it, bounded
    bob.abort(code, message); bob.close();  bob.stats: BobStats

Every blocking call may raise PeerLost (peer silent for timeout_s), PeerError
(peer sent ERROR) or, on Alice, FrameError (Mars sent an undecodable message) or
AuthFailed (Mars's CURVE handshake turned us away: final, don't retry).

Liveness caveat: a side only talks (ACKs, heartbeats) while one of its methods
runs. Bob's decoder must call next_frame() or poll() at least every
heartbeat_s or so; if one decoding step can take longer than Alice's
timeout_s, raise timeout_s on Alice. Messages that arrive meanwhile queue up
and are drained (and counted as signs of life) before any timeout is judged,
so a busy side never declares its peer lost just because it was busy itself.
Bob judges silence only once he has handed out every frame he holds, so a
sender that dies after its last frame still gets its stream decoded.

Both sides own their zmq.Context; close() closes the socket with bounded
linger and terminates the context, so no background threads survive it.
Links are context managers. No threads are created by this module.
"""

from __future__ import annotations

import errno
import math
import os
import random
import socket
import stat
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

import zmq

from .frames import (
    MAX_MESSAGE_BYTES,
    SEQUENCED,
    Ack,
    Done,
    End,
    Error,
    Frame,
    FrameError,
    Heartbeat,
    Hello,
    Welcome,
    decode,
    encode,
    one_line,
)
from .security import CurveKeys, HandshakeWatch, Refusals, ZapHandler

WIRE_SLACK = 64 * 1024  # socket-level cap is a bit above ours, so oversize gets a clear FrameError
LogFn = Optional[Callable[[str], None]]


@dataclass
class FaultPlan:
    """Test hook: corrupt the sending path (Alice: DATA/SYNC/END; Bob: ACK) on purpose."""

    drop: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    seed: int = 0
    corrupt_nth: int = 0  # flip one payload bit in the n-th message sent (1-based; 0 = never)


# The link's tunables, one place: both CLIs, the demo and the docs take their defaults from here.
WINDOW = 32                  # sequenced frames in flight (Alice) / buffered (Bob)
HEARTBEAT_S = 1.0            # send HEARTBEAT after this long without sending
SAY_HELLO = "say-hello"      # ERROR code: Bob has no session with this sender; she handshakes again at once
INTERRUPTED = "interrupted"  # ERROR code: stopped by its operator (Ctrl-C, SIGTERM), it keeps its part
TIMEOUT_S = 30.0             # peer silent this long -> PeerLost
RETRANSMIT_S = 2.0           # no ACK progress this long -> resend unacked (and HELLO)
SENDER_HANDSHAKE_S = 60.0    # Alice waits this long for a WELCOME
REPEAT_LOG_S = 10.0          # a log line that may repeat thousands of times a second: once per this, counted
REFUSAL_KINDS = 16           # kinds of refused connection (keys, reasons) Bob names one by one; then counted
RECEIVER_HANDSHAKE_S = 600.0  # Bob waits this long for a HELLO: he is usually started first
LINGER_MS = 500              # how long close() may spend flushing
DONE_REPEATS = 3             # Bob says DONE this often, retransmit_s/2 apart, unless acknowledged sooner
RECEIPT_LINGER_S = 30.0      # after DONE, Bob answers a returning Alice this long (bob listen --linger)


@dataclass
class LinkSettings:
    window: int = WINDOW
    heartbeat_s: float = HEARTBEAT_S
    timeout_s: float = TIMEOUT_S
    retransmit_s: float = RETRANSMIT_S
    handshake_timeout_s: float = SENDER_HANDSHAKE_S  # waiting for WELCOME (Alice) / HELLO (Bob)
    linger_ms: int = LINGER_MS
    fault: Optional[FaultPlan] = None
    curve: Optional[CurveKeys] = None  # CurveZMQ encryption + allow-list (protocol/security.py); None = plain


class LinkError(Exception):
    """Base class for transport failures."""


class PeerLost(LinkError):
    """The peer went silent for longer than the timeout, or (Mars) said he has lost the session."""


class HandshakeTimeout(PeerLost):
    """No HELLO (Bob) / WELCOME (Alice) within handshake_timeout_s."""


class AuthFailed(LinkError):
    """Alice: Mars turned us away in the ZeroMQ security handshake (key not allowed, or
    one side encrypts and the other does not). Final: reconnecting would not help."""


class Reconnected(LinkError):
    """Our sender came back as a new connection (a restarted process) for the same stream."""

    def __init__(self, identity: bytes, hello: "Hello"):
        super().__init__(f"Earth reconnected for stream {hello.stream_id!r}")
        self.identity, self.hello = identity, hello


class PeerError(LinkError):
    """The peer sent an ERROR frame: it gave up, and says why."""

    def __init__(self, code: str, message: str, who: str = "peer"):
        super().__init__(f"{who} reported {code}: {message}")
        self.code, self.message = code, message


class PeerStopped(PeerLost):
    """The peer was stopped by its operator (ERROR `interrupted`) and kept its part: it will be
    started again, so it is waited for as a lost peer is, not given up on."""

    def __init__(self, message: str, who: str = "peer"):
        super().__init__(f"{who} was stopped: {message}")
        self.message = message


def _peer_error(frame: Error, who: str) -> LinkError:
    """What the peer's ERROR frame raises: the end of the stream, unless it was only stopped."""
    return PeerStopped(frame.message, who) if frame.code == INTERRUPTED else PeerError(frame.code, frame.message, who)


@dataclass
class AliceStats:
    frames_sent: int = 0  # sequenced frames, first transmissions
    frames_resent: int = 0  # sequenced frames, retransmissions
    bytes_sent: int = 0  # every byte written to the socket, all kinds
    in_flight: int = 0  # sequenced frames sent but not yet acked
    acked_seq: int = 0  # Bob's next expected seq
    unexpected: int = 0  # well-formed frames that make no sense here (ignored)


@dataclass
class BobStats:
    frames_received: int = 0  # distinct sequenced frames accepted
    duplicates: int = 0  # sequenced frames seen before (dropped)
    out_of_order: int = 0  # arrived ahead of a gap (buffered)
    beyond_window: int = 0  # arrived too far ahead (dropped; Alice resends)
    strangers: int = 0  # messages from anyone but the accepted peer (dropped; answered with ERROR)
    refused: int = 0  # HELLOs turned away (refuse(), or busy with another stream)
    bad_frames: int = 0  # undecodable messages (answered with ERROR bad-frame)
    unexpected: int = 0  # well-formed frames that make no sense here (ignored)


class _FaultyPath:
    """Drops, duplicates or delays (past the next message) outgoing messages, seeded."""

    def __init__(self, plan: FaultPlan, send: Callable[[bytes], None], hold_s: float):
        self.plan, self.send, self.hold_s = plan, send, hold_s
        self.rng = random.Random(plan.seed)
        self.held: Optional[bytes] = None
        self.held_since = 0.0
        self.count = 0

    def __call__(self, wire: bytes) -> None:
        self.count += 1
        if self.count == self.plan.corrupt_nth:   # damage in transit, after the CRC was computed
            wire = wire[:-8] + bytes([wire[-8] ^ 0x04]) + wire[-7:]
        r, p = self.rng.random(), self.plan
        if r < p.drop:
            return
        r -= p.drop
        if r < p.reorder:
            if self.held is None:
                self.held, self.held_since = wire, time.monotonic()
                return
        elif r < p.reorder + p.dup:
            self.send(wire)
        self.send(wire)
        self.flush(force=True)

    def flush(self, force: bool = False) -> None:
        if self.held is not None and (force or time.monotonic() - self.held_since >= self.hold_s):
            held, self.held = self.held, None
            self.send(held)


class _Link:
    """What both ends share: socket setup, the poll loop, liveness, close."""

    def __init__(self, socket_type: int, settings: LinkSettings, log: LogFn):
        if settings.window < 1:
            raise ValueError("window must be >= 1")
        self.settings, self._log_fn = settings, log
        self._repeats: dict[str, tuple[int, Optional[float]]] = {}   # _log_repeating's counts
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(socket_type)
        hwm = 4 * settings.window + 64
        for opt, value in (
            (zmq.LINGER, settings.linger_ms),
            (zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES + WIRE_SLACK),
            (zmq.SNDHWM, hwm),
            (zmq.RCVHWM, hwm),
        ):
            self._sock.setsockopt(opt, value)
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)
        self._guards: list = []  # security sockets (ZAP handler, handshake monitor), served in _pump
        # connections turned away in the security handshake (Bob)
        self.refusals = Refusals(log, REFUSAL_KINDS, REPEAT_LOG_S)
        self._slice = max(0.001, min(settings.heartbeat_s, settings.retransmit_s, settings.timeout_s) / 4)
        self._last_heard = self._last_sent = time.monotonic()
        self._live = False  # liveness is judged only once the handshake is done
        self._closed = False
        self._faults: Optional[_FaultyPath] = None
        if settings.fault is not None:
            self._faults = _FaultyPath(settings.fault, self._send_raw, settings.retransmit_s / 2)

    # subclasses provide: _send_raw(wire), _handle(parts), _tick(now), _lost_message()

    def _has_backlog(self) -> bool:
        """True while we still hold frames to deliver: silence is not judged until they are out."""
        return False

    def _secure(self, role: str) -> None:
        """CURVE options, Bob's allow-list and the handshake monitor: before bind/connect."""
        keys = self.settings.curve
        try:
            if keys is not None:
                keys.apply(self._sock, server=role == "bob")
                if role == "bob":  # without a ZAP handler, CURVE would admit any client
                    self._guards.append(ZapHandler(self._ctx, keys, self.refusals))
            self._guards.append(HandshakeWatch(self._sock, role, keys, self.refusals))
        except BaseException:
            self.close()
            raise
        for guard in self._guards:
            self._poller.register(guard.socket, zmq.POLLIN)

    def _attach(self, how: Callable[[str], None], endpoint: str, what: str) -> None:
        """bind/connect, turning a ZMQError into a clear LinkError without leaking the context."""
        if "[" in endpoint:  # an IPv6 literal such as tcp://[::1]:5555 needs IPv6 on the socket
            self._sock.setsockopt(zmq.IPV6, 1)
        problem = ipc_bind_problem(endpoint) if how == self._sock.bind else None
        if problem:
            self.close()
            raise LinkError(f"{what} {endpoint}: {problem}")
        try:
            how(endpoint)
        except zmq.ZMQError as e:
            self.close()
            if e.errno == errno.ENODEV and how == self._sock.bind:   # a host name zmq takes for an interface
                raise LinkError(f"{what} {endpoint}: no address or interface of this machine has that name; "
                                f"bind to one of its addresses, e.g. tcp://127.0.0.1:PORT, or tcp://*:PORT for "
                                f"all") from None
            raise LinkError(f"{what} {endpoint}: {zmq.strerror(e.errno)}") from None

    def _log(self, msg: str) -> None:
        if self._log_fn is not None:
            self._log_fn(msg)

    def _log_repeating(self, msg: str, kind: Optional[str] = None) -> None:
        """Quiet repeats: `msg` once, then at most once per REPEAT_LOG_S with how often its `kind`
        (by default the message itself) came since: a full send queue drops a message per
        retransmit, hundreds a second, and a stranger can send bad messages faster still."""
        now = time.monotonic()
        kind = msg if kind is None else kind
        count, since = self._repeats.get(kind, (0, None))
        count += 1
        if since is None or now - since >= REPEAT_LOG_S:
            what = "times" if kind == msg else f"{kind}s"
            self._log(msg if since is None else f"{msg} ({count} {what} in the last {now - since:.0f} s)")
            count, since = 0, now
        self._repeats[kind] = (count, since)

    def _pump(self, timeout_s: float) -> None:
        """Wait up to timeout_s for traffic, handle everything queued, then run timers."""
        if self._closed:
            raise LinkError("link is closed")
        ready = dict(self._poller.poll(math.ceil(max(0.0, timeout_s) * 1000)))
        for guard in self._guards:
            if guard.socket in ready:
                failure = guard.service()
                if failure:
                    raise AuthFailed(failure)
        if ready:
            for _ in range(10_000):  # bounded, so a flood cannot starve the timers forever
                try:
                    parts = self._sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._handle(parts)
        now = time.monotonic()
        if self._live and not self._has_backlog() and now - self._last_heard > self.settings.timeout_s:
            raise PeerLost(self._lost_message())
        if self._faults is not None:
            self._faults.flush()
        self._tick(now)

    def _wait(self, ready: Callable[[], bool], deadline: Optional[float] = None, on_timeout=None) -> None:
        """Pump until ready() (or raise on_timeout() at deadline)."""
        self._pump(0)
        while not ready():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise on_timeout()
            self._pump(self._slice if deadline is None else min(self._slice, deadline - now))

    def poll(self, timeout_s: float = 0.0) -> None:
        """Process incoming traffic and timers for up to timeout_s. Call this often while busy."""
        self._pump(timeout_s)

    def close(self) -> None:
        """Close the socket (flushing for at most linger_ms) and terminate the context. Idempotent."""
        if not self._closed:
            self._closed = True
            for guard in self._guards:
                guard.close()
            self._sock.close(linger=self.settings.linger_ms)
            self._ctx.term()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AliceLink(_Link):
    """Sender side (Earth): a DEALER that connects to Bob's ROUTER."""

    def __init__(self, endpoint: str, settings: Optional[LinkSettings] = None, log: LogFn = None):
        super().__init__(zmq.DEALER, settings or LinkSettings(), log)
        self.endpoint = endpoint
        # A fixed identity survives reconnects, so Bob still recognises us afterwards.
        self._sock.setsockopt(zmq.ROUTING_ID, b"alice-" + os.urandom(8).hex().encode())
        self._secure("alice")
        self._attach(self._sock.connect, endpoint, "Earth cannot connect to")
        self.stats = AliceStats()
        self._hello: Optional[Hello] = None
        self._hello_wire = b""
        self._welcome: Optional[Welcome] = None
        self._done: Optional[Done] = None
        self._unacked: dict[int, bytes] = {}  # seq -> wire, in send order
        self._next_seq = self._acked = 0
        self._credit = self.settings.window
        self._dup_acks = 0  # quick identical repeats of the last ACK (fast retransmit)
        self._last_ack: Optional[tuple] = None
        self._last_progress = time.monotonic()  # last ACK progress (or HELLO send, before WELCOME)

    @property
    def next_seq(self) -> int:
        """The seq the next send() must carry."""
        return self._next_seq

    # -- public API

    def handshake(self, hello: Hello) -> Welcome | Done:
        """Send HELLO (again every retransmit_s) until Bob answers WELCOME, or DONE: a receipt,
        Mars already has this stream (Alice's earlier run delivered it)."""
        self._hello, self._hello_wire = hello, encode(hello)
        self._send_raw(self._hello_wire)
        self._last_progress = time.monotonic()
        t = self.settings.handshake_timeout_s
        self._wait(
            lambda: self._welcome is not None or self._done is not None,
            time.monotonic() + t,
            lambda: HandshakeTimeout(
                f"no answer from Mars ({self.endpoint}) within {t:.1f} s of HELLO; "
                "is the receiver running and bound there?"
            ),
        )
        return self._welcome or self._done

    def send(self, frame: Frame) -> None:
        """Queue one DATA/SYNC/END (frame.seq must be next_seq); blocks while out of credit."""
        if not isinstance(frame, SEQUENCED):
            raise TypeError(f"send() takes Data, Sync or End, not {type(frame).__name__}")
        if self._welcome is None:
            raise LinkError("send() before handshake()")
        if frame.seq != self._next_seq:
            raise ValueError(f"expected seq {self._next_seq}, got {frame.seq}")
        wire = encode(frame)
        self._wait(lambda: self._next_seq < self._acked + min(self.settings.window, self._credit))
        if not self._unacked:
            self._last_progress = time.monotonic()  # the retransmit clock starts with the first frame out
        self._unacked[frame.seq] = wire
        self._next_seq += 1
        self.stats.frames_sent += 1
        self.stats.in_flight = len(self._unacked)
        self._send_seq(wire)

    def wait_done(self) -> Done:
        """After END: pump (resending as needed) until Bob's DONE arrives."""
        self._wait(lambda: self._done is not None)
        return self._done

    def abort(self, code: str, message: str) -> None:
        """Tell Mars we give up (ERROR), then close."""
        if not self._closed:
            try:
                self._send_raw(encode(Error(code, one_line(message))))
            finally:
                self.close()

    # -- plumbing

    def _send_raw(self, wire: bytes) -> None:
        try:
            self._sock.send(wire, zmq.NOBLOCK)
        except zmq.Again:  # queue full: the message is lost like any other; resends recover
            self._log_repeating("send queue full; message dropped")
        else:
            self.stats.bytes_sent += len(wire)
        self._last_sent = time.monotonic()

    def _send_seq(self, wire: bytes) -> None:
        (self._faults or self._send_raw)(wire)

    def _lost_message(self) -> str:
        return f"no word from Mars ({self.endpoint}) for {self.settings.timeout_s:.1f} s; is the receiver running?"

    def _handle(self, parts: list) -> None:
        try:
            if len(parts) != 1:
                raise FrameError(f"expected a 1-part message, got {len(parts)} parts")
            frame = decode(parts[0])
        except FrameError as e:
            # Our DEALER only ever talks to Mars, so this is fatal: say so both ways.
            self._send_raw(encode(Error("bad-frame", one_line(e))))
            raise
        self._last_heard = time.monotonic()
        if isinstance(frame, Ack):
            self._on_ack(frame)
        elif isinstance(frame, Welcome):
            if self._welcome is None and self._hello is not None:
                if frame.stream_id != self._hello.stream_id:
                    raise LinkError(f"Mars welcomed stream {frame.stream_id!r}, not ours ({self._hello.stream_id!r})")
                self._welcome, self._live = frame, True
                self._next_seq = self._acked = self.stats.acked_seq = frame.next_seq
                self._last_progress = time.monotonic()
        elif isinstance(frame, Done):
            self._done = frame  # Bob verified everything: all is acked
            self._unacked.clear()
            self._acked = self.stats.acked_seq = self._next_seq
            self.stats.in_flight = 0
            self._send_raw(encode(Ack(self._next_seq, 0)))  # acknowledges DONE: Bob may stop lingering
        elif isinstance(frame, Error):
            if frame.code == SAY_HELLO:  # a Mars who lost our session: knock again (the caller's PeerLost path)
                raise PeerLost(f"Mars lost this stream's session: {frame.message}")
            raise _peer_error(frame, "Mars")
        elif not isinstance(frame, Heartbeat):
            self.stats.unexpected += 1
            self._log(f"ignoring unexpected {frame.KIND.name} from Mars")

    def _on_ack(self, ack: Ack) -> None:
        if self._welcome is None or ack.acked_seq < self._acked or ack.acked_seq > self._next_seq:
            return  # stale (reordered) or nonsensical
        if ack.acked_seq > self._acked:
            for seq in range(self._acked, ack.acked_seq):
                self._unacked.pop(seq, None)
            self._acked = self.stats.acked_seq = ack.acked_seq
            self.stats.in_flight = len(self._unacked)
            self._last_progress = time.monotonic()
            self._dup_acks, self._last_ack = 0, (ack.acked_seq, ack.credit, self._last_progress)
        elif ack.acked_seq in self._unacked:
            self._fast_retransmit(ack)
        self._credit = ack.credit

    def _fast_retransmit(self, ack: Ack) -> None:
        """Fast retransmit: Bob repeats his ACK at once when frames arrive past a gap. Two quick
        identical repeats mean frame `acked_seq` was lost: resend it now instead of stalling for
        retransmit_s. (Credit updates differ, and heartbeat repeats are not quick: neither counts.)"""
        now = time.monotonic()
        previous, self._last_ack = self._last_ack, (ack.acked_seq, ack.credit, now)
        if previous is None or previous[:2] != (ack.acked_seq, ack.credit) or \
                now - previous[2] > self.settings.heartbeat_s / 2:
            self._dup_acks = 0
            return
        self._dup_acks += 1
        if self._dup_acks == 2:
            self._send_seq(self._unacked[ack.acked_seq])
            self.stats.frames_resent += 1

    def _tick(self, now: float) -> None:
        if now - self._last_progress >= self.settings.retransmit_s:
            if self._welcome is None and self._hello is not None:
                self._send_raw(self._hello_wire)
                self._last_progress = now
            elif self._unacked:
                self._log(f"no ACK progress for {self.settings.retransmit_s} s; resending {len(self._unacked)} frames")
                for wire in self._unacked.values():
                    self._send_seq(wire)
                self.stats.frames_resent += len(self._unacked)
                self._last_progress = now
        if self._live and now - self._last_sent >= self.settings.heartbeat_s:
            self._send_raw(encode(Heartbeat(now)))


def ipc_problem(endpoint: str, role: str) -> Optional[str]:
    """What is wrong with an ipc:// endpoint before zmq says it in its own words, or None."""
    path = endpoint[len("ipc://"):]
    if not path:
        return "it needs a path after ipc://, e.g. ipc:///tmp/marslink.ipc"
    size = len(os.fsencode(path))
    if size > zmq.IPC_PATH_MAX_LEN:
        return (f"its path is {size} bytes, more than the {zmq.IPC_PATH_MAX_LEN} this system allows a socket's "
                f"name; choose a shorter path")
    folder = os.path.dirname(os.path.abspath(path))
    if role == "bind" and not os.path.isdir(folder):
        return f"folder {folder!r} does not exist; create it first"
    return None


def ipc_bind_problem(endpoint: str) -> Optional[str]:
    """Why binding `endpoint` would harm something, or None. libzmq removes whatever is at an
    ipc:// path before it binds: a user's file would be deleted, and a live listener's socket
    silently taken over. A socket nobody answers on (left by a process that died) is reused."""
    if not endpoint.startswith("ipc://"):
        return None
    path = endpoint[len("ipc://"):]
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"cannot check {path!r} ({e.strerror}); choose another path"
    if not stat.S_ISSOCK(mode):
        return f"{path!r} exists and is not a socket (binding would delete it); choose another path"
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(path)
    except OSError:
        return None
    finally:
        probe.close()
    return "another process is listening there; stop it, or choose another path"


class BobLink(_Link):
    """Receiver side (Mars): a ROUTER that binds and serves one sender at a time. Nobody else
    can stop him: a stranger's frames are counted and answered with ERROR, never raised."""

    def __init__(self, bind: str, settings: Optional[LinkSettings] = None, log: LogFn = None):
        super().__init__(zmq.ROUTER, settings or LinkSettings(), log)
        self._sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a reconnecting Alice takes over her identity
        self._secure("bob")
        self._attach(self._sock.bind, bind, "Mars cannot listen on")
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.stats = BobStats()
        self.last_bad_frame: Optional[str] = None  # FrameError text of the latest undecodable message
        self._reset()

    def _reset(self) -> None:
        self._peer: Optional[bytes] = None
        self._hello: Optional[Hello] = None
        self._welcome: Optional[Welcome] = None
        self._done: Optional[Done] = None
        self._expected = 0
        self._ready: deque = deque()  # in-order frames not yet handed to the caller
        self._ahead: dict[int, Frame] = {}  # out-of-order frames waiting for a gap to fill
        self._advertised: Optional[tuple] = None
        self._ack_due = False
        self.done_acked = False  # Alice acknowledged our DONE (an ACK from Earth)
        self._live = False
        if self._faults is not None:
            self._faults.held = None

    # -- public API

    def accept(self, deadline: Optional[float] = None) -> Hello:
        """Wait for a sender's HELLO; its identity becomes our one peer. Call welcome() or refuse() next.
        deadline (time.monotonic()) defaults to handshake_timeout_s from now."""
        self._reset()
        t = self.settings.handshake_timeout_s
        if deadline is None:
            deadline = time.monotonic() + t

        def timeout():
            why = f" (last rejected message: {self.last_bad_frame})" if self.last_bad_frame else ""
            why += self.refusals.summary()
            return HandshakeTimeout(
                f"no HELLO from Earth on {self.endpoint} within {t:.1f} s; is the sender running and pointed here?{why}"
            )

        self._wait(lambda: self._hello is not None, deadline, timeout)
        return self._hello

    def readmit(self, reconnected: "Reconnected") -> Hello:
        """Take a restarted sender as our peer (after Reconnected); call welcome() next."""
        self._reset()
        self._peer, self._hello = reconnected.identity, reconnected.hello
        return self._hello

    def welcome(self, welcome: Welcome) -> None:
        """Accept the stream; in-order delivery starts at welcome.next_seq."""
        if self._hello is None:
            raise LinkError("welcome() before accept()")
        self._welcome, self._expected = welcome, welcome.next_seq
        self._live, self._last_heard = True, time.monotonic()  # the silence clock starts now
        self._send(encode(welcome))
        self._send_ack()

    def refuse(self, code: str, message: str) -> None:
        """Turn the sender away (ERROR naming why) and forget it; the link stays open: accept() again."""
        if self._peer is not None:
            self._send(encode(Error(code, one_line(message))))
            self.stats.refused += 1
            self.refusals.add(f"refused stream {self._hello.stream_id!r}: {one_line(message)}", ("hello", code))
        self._reset()

    def next_frame(self) -> Frame:
        """The next in-order DATA/SYNC/END; blocks (pumping acks/heartbeats) until there is one."""
        if self._welcome is None:
            raise LinkError("next_frame() before welcome()")
        self._wait(lambda: bool(self._ready))
        frame = self._ready.popleft()
        self._maybe_ack()  # consuming frees credit: tell Alice right away
        return frame

    def turn_away(self, identity: bytes, code: str, message: str) -> None:
        """ERROR to a sender who is not (or no longer) our peer; our own stream goes on."""
        self.stats.refused += 1
        self.refusals.add(f"refused a sender ({code}): {one_line(message)}", ("turned-away", code))
        self._send_to(identity, encode(Error(code, one_line(message))))

    def done(self, done: Done) -> None:
        """Report the verified result; re-sent if a duplicate END shows Alice missed it."""
        self._done = done
        self._send(encode(done))

    def linger(self, seconds: float) -> None:
        """After done(): stay up to `seconds` until Alice acknowledges DONE, repeating it
        DONE_REPEATS times (nothing else would tell us it was lost) and answering a restarted
        Alice's HELLO, or a resent END, with DONE again. The stream is delivered: a peer who
        goes silent, aborts or sends garbage now only ends the wait."""
        self._live = False  # silence is no failure any more
        now = time.monotonic()
        deadline, step = now + max(0.0, seconds), self.settings.retransmit_s / 2
        repeats, next_at = DONE_REPEATS - 1, now + step
        while not self.done_acked and now < deadline:
            try:
                self._pump(min(self._slice, deadline - now))
            except (LinkError, FrameError):
                return
            now = time.monotonic()
            if repeats and now >= next_at and not self.done_acked:
                self._send(encode(self._done))
                repeats, next_at = repeats - 1, now + step

    def abort(self, code: str, message: str) -> None:
        """Tell Earth we give up (ERROR, if we have a peer), then close."""
        if not self._closed:
            try:
                if self._peer is not None:
                    self._send(encode(Error(code, one_line(message))))
            finally:
                self.close()

    # -- plumbing

    def _send_to(self, identity: bytes, wire: bytes) -> None:
        try:
            self._sock.send_multipart([identity, wire], zmq.NOBLOCK)
        except zmq.ZMQError as e:  # peer's queue full or gone: lost like any message
            self._log_repeating(f"send failed ({e}); message dropped")
        self._last_sent = time.monotonic()

    def _send(self, wire: bytes) -> None:
        self._send_to(self._peer, wire)

    def _send_raw(self, wire: bytes) -> None:  # the fault path's sink (ACKs only)
        self._send(wire)

    def _has_backlog(self) -> bool:
        return bool(self._ready)  # a dead sender's last frames still get decoded

    def _credit(self) -> int:
        return max(0, self.settings.window - len(self._ready))

    def _send_ack(self) -> None:
        self._advertised, self._ack_due = (self._expected, self._credit()), False
        wire = encode(Ack(*self._advertised))
        (self._faults or self._send_raw)(wire)

    def _maybe_ack(self) -> None:
        if self._welcome is not None and (self._ack_due or self._advertised != (self._expected, self._credit())):
            self._send_ack()

    def _lost_message(self) -> str:
        return (
            f"no word from Earth (sender of stream {self._hello.stream_id!r} on {self.endpoint}) "
            f"for {self.settings.timeout_s:.1f} s; is the sender running?"
        )

    def _handle(self, parts: list) -> None:
        identity, body = parts[0], parts[1:]
        try:
            if len(body) != 1:
                raise FrameError(f"expected a 1-part message, got {len(body)} parts")
            frame = decode(body[0])
        except FrameError as e:
            self.stats.bad_frames += 1
            self.last_bad_frame = str(e)
            self._log_repeating(f"rejected message: {e}", "rejected message")
            self._send_to(identity, encode(Error("bad-frame", one_line(e))))
            if self._live and identity == self._peer:
                raise  # our own sender's stream is damaged: stop now, loudly
            return
        if self._peer is None:  # still waiting for a HELLO
            if isinstance(frame, Hello):
                self._peer, self._hello = identity, frame
            else:  # a sender whose Mars was restarted (or gave her up): tell her to knock again now,
                self.stats.strangers += 1  # not after her silence timeout; an ERROR is never answered
                if not isinstance(frame, Error):
                    self._send_to(identity, encode(Error(SAY_HELLO, "Mars has no stream with this sender "
                                                                    "(he was restarted, or gave it up); say HELLO")))
            return
        if identity != self._peer:
            self._stranger(identity, frame)
            return
        self._last_heard = time.monotonic()
        if isinstance(frame, SEQUENCED) and self._welcome is not None:
            self._on_sequenced(frame)
        elif isinstance(frame, Hello):
            if self._welcome is not None:  # Alice missed our WELCOME: say it again
                self._send(encode(self._welcome))
                self._ack_due = True
        elif isinstance(frame, Error):
            raise _peer_error(frame, "Earth")
        elif isinstance(frame, Ack) and self._done is not None:
            self.done_acked = True  # Alice has our DONE
        elif not isinstance(frame, Heartbeat):
            self.stats.unexpected += 1
            self._log(f"ignoring unexpected {frame.KIND.name} from Earth")

    def _stranger(self, identity: bytes, frame: Frame) -> None:
        """Someone who is not our peer: never fatal. A restarted Alice is handed to the caller
        (Reconnected), or answered DONE once her stream is delivered; anyone else is refused."""
        self.stats.strangers += 1
        if isinstance(frame, Ack) and self._done is not None:
            self.done_acked = True  # a returning Alice acknowledging the DONE we answered her HELLO with
            return
        if isinstance(frame, Hello) and frame.same_stream(self._hello):
            if self._done is None:
                raise Reconnected(identity, frame)  # a restarted Alice: the caller decides (readmit)
            self._send_to(identity, encode(self._done))
            return
        if isinstance(frame, Error):  # never answer an ERROR with one: two ends could ping-pong
            self._log(f"dropped ERROR {frame.code} from a stranger")
            return
        if isinstance(frame, Hello) and frame.stream_id == self._hello.stream_id:   # the name, not the bytes
            self.turn_away(identity, "busy", f"Mars is receiving a stream {frame.stream_id!r} of another input, "
                                             f"or coded another way; give this one another --stream-id, or send "
                                             f"that input as it was to finish it")
        elif isinstance(frame, Hello):
            self.turn_away(identity, "busy", f"Mars is busy with stream {self._hello.stream_id!r}; "
                                             f"try again once it is delivered")
        else:
            self._send_to(identity, encode(Error("not-your-peer", f"Mars is serving another sender; this "
                                                 f"{frame.KIND.name} is not part of its stream")))

    def _on_sequenced(self, frame: Frame) -> None:
        seq = frame.seq
        if seq < self._expected or seq in self._ahead:
            self.stats.duplicates += 1
            self._ack_due = True  # Alice resent, so she may have missed an ACK
            if self._done is not None and isinstance(frame, End):
                self._send(encode(self._done))
        elif seq == self._expected:
            self._ready.append(frame)
            self._expected += 1
            self.stats.frames_received += 1
            while self._expected in self._ahead:
                self._ready.append(self._ahead.pop(self._expected))
                self._expected += 1
                self.stats.frames_received += 1
        elif seq < self._expected + self.settings.window:
            self._ahead[seq] = frame
            self.stats.out_of_order += 1
            self._ack_due = True  # a gap: the repeated ACK tells Alice where it is
        else:
            self.stats.beyond_window += 1

    def _tick(self, now: float) -> None:
        self._maybe_ack()
        if self._live and now - self._last_sent >= self.settings.heartbeat_s:
            self._send(encode(Heartbeat(now)))
            self._send_ack()  # repeated, so a lost credit update can never stall Alice
