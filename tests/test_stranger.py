"""Nobody from outside can stop Bob (issue 19, findings 1 and 3): while a real Alice streams, a
stranger's every kind of frame is refused with an ERROR or dropped, never raised, and a stranger
who gets a WELCOME and then vanishes leaves nothing that blocks the next run."""
import hashlib
import random
import signal
import time

import zmq

from protocol.frames import Ack, Error, Hello, decode, encode
from shared.core.config import preset
from shared.core.fingerprint import fingerprint
from shared.texts import mission_log
from tests.helpers import data, finish, kill_all, listen, send, spawn, wait_for_line, wait_for_spool


class Stranger:
    """A DEALER of its own, in this (third) process."""

    def __init__(self, endpoint: str):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(endpoint)

    def ask(self, message, wait_s: float = 10.0):
        """Send one message; the first reply that is not a HEARTBEAT/ACK, or None after wait_s."""
        self.sock.send(message if isinstance(message, bytes) else encode(message))
        deadline = time.monotonic() + wait_s
        while self.sock.poll(max(1, int((deadline - time.monotonic()) * 1000))):
            reply = decode(self.sock.recv())
            if reply.KIND.name not in ("HEARTBEAT", "ACK"):
                return reply
        return None

    def close(self):
        self.sock.close()
        self.ctx.term()


def hello(stream_id: str, **config) -> Hello:
    return Hello(stream_id, {**preset("tiny").to_dict(), **config}, fingerprint(), 5000, bytes(32))


def test_a_stranger_cannot_stop_a_live_stream_and_gets_refusals(tmp_path):
    data_in = mission_log(12_000)
    bob, ep, out = listen(tmp_path)
    eve = Stranger(ep)
    try:
        # an ERROR is never answered: an answer, however late, would be what the next ask reads
        assert eve.ask(Error("x", "stop"), wait_s=0.2) is None   # before any HELLO: dropped, Bob lives
        src = tmp_path / "in.bin"
        src.write_bytes(data_in)
        alice = spawn("sender", "send", str(src), "--connect", ep, "--preset", "tiny", "--timeout", "20",
                      "--state-dir", str(tmp_path / "earth"), "--stats-json", str(tmp_path / "alice.json"))
        wait_for_spool(bob, tmp_path, 1)                         # the stream has started
        busy = Error("busy", f"Mars is busy with stream {hashlib.sha256(data_in).hexdigest()[:16]!r}; "
                             f"try again once it is delivered")
        assert eve.ask(Error("x", "stop"), wait_s=0.2) is None   # a stranger's ERROR: dropped
        assert eve.ask(hello("eve")) == busy                     # the right config: busy
        assert eve.ask(hello("eve", seed=99)) == busy            # the wrong config: busy all the same
        for frame in (data(0), Ack(5, 32)):
            assert eve.ask(frame) == Error("not-your-peer", "Mars is serving another sender; "
                                           f"this {frame.KIND.name} is not part of its stream")
        rng = random.Random(19)
        for _ in range(5):                                       # noise: refused as bad frames
            assert eve.ask(rng.randbytes(rng.randrange(1, 200))).code == "bad-frame"
        assert alice.wait(240) == 0, finish(alice)[1]
        rc, lines = finish(bob)
    finally:
        eve.close()
        kill_all(bob, alice)
    assert rc == 0, lines
    assert out.read_bytes() == data_in


def test_a_stranger_who_vanishes_after_welcome_blocks_nothing(tmp_path):
    """Even across a killed Bob: the stranger's empty spool is replaced, then dropped when he is lost."""
    bob, ep, out = listen(tmp_path, "--timeout", "2")
    eve = Stranger(ep)
    try:
        wait_for_line(bob, "bob: listening on")                  # eve's ask waits 10 s; a loaded start-up, longer
        assert eve.ask(hello("eve")).KIND.name == "WELCOME"
        assert (tmp_path / "out.bin.partial").is_dir()
        bob.send_signal(signal.SIGKILL)                          # Bob dies holding eve's empty spool
        bob.wait(30)
        bob, ep, out = listen(tmp_path, "--timeout", "2")
        eve.close()
        eve = Stranger(ep)
        wait_for_line(bob, "bob: listening on")
        assert eve.ask(hello("eve-2")).KIND.name == "WELCOME"    # another stream: the empty spool is replaced
        deadline = time.monotonic() + 60                         # eve goes silent: Bob drops her spool
        while (tmp_path / "out.bin.partial").exists():
            assert time.monotonic() < deadline and bob.poll() is None, finish(bob)[1]
            time.sleep(0.2)
        data_in = mission_log(3000)
        rc, alice_lines = send(tmp_path, ep, data_in)
        assert rc == 0, alice_lines
        rc, lines = finish(bob)
    finally:
        eve.close()
        if bob.poll() is None:
            bob.kill()
    assert rc == 0, lines
    assert out.read_bytes() == data_in
