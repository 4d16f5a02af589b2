"""Transport: handshake, ordered exactly-once delivery, credit, errors, liveness, lossy paths.

Both ends run in one process; Bob (or a fake peer) runs in a helper thread. Each link's
socket is only ever touched by the thread that uses it.
"""

import threading
import time
from unittest import mock

import pytest
import zmq

from protocol.frames import (MAX_MESSAGE_BYTES, PROTOCOL_VERSION, Done, End, Error, FrameError, Hello, Sync, Welcome,
                             decode, encode)
from protocol.link import AliceLink, BobLink, FaultPlan, HandshakeTimeout, LinkError, PeerError, PeerLost
from protocol.security import Refusals
from tests.helpers import FAST, SHA, Background, data, free_port, hello, settings




@pytest.fixture
def closing():
    """Register links/sockets to close at teardown, even if the test fails."""
    things = []
    yield lambda x: things.append(x) or x
    for x in reversed(things):
        x.close()


def bob_receiver(bob: BobLink, next_seq: int = 0, linger_s: float = 0.3):
    """The receiver loop Bob's CLI will run: accept, welcome, read to END, report DONE."""
    h = bob.accept()
    bob.welcome(Welcome(h.stream_id, next_seq))
    frames = []
    while True:
        frames.append(bob.next_frame())
        if isinstance(frames[-1], End):
            break
    bob.done(Done(frames[-1].sha256, "ab" * 32))
    bob.poll(linger_s)  # answer a resent END if DONE went missing
    return frames


def stream(alice: AliceLink, n: int, start: int = 0) -> list:
    sent = [data(start + i) if i % 10 else Sync(start + i, i, b"d" * 32) for i in range(n)]
    sent.append(End(start + n, 1234, SHA))
    for f in sent:
        alice.send(f)
    return sent


# ---------------------------------------------------------------- handshake


def test_handshake_bob_first(closing):
    bob = closing(BobLink("tcp://127.0.0.1:*", settings()))
    side = Background(lambda: (bob.accept(), bob.welcome(Welcome("s1", 0)), bob.poll(0.2))[0])
    alice = closing(AliceLink(bob.endpoint, settings()))
    assert alice.handshake(hello()) == Welcome("s1", 0)
    assert side.result() == hello()


def test_handshake_alice_first(closing):
    port = free_port()
    alice = closing(AliceLink(f"tcp://127.0.0.1:{port}", settings()))
    side = Background(lambda: alice.handshake(hello()))
    time.sleep(0.3)  # Alice is already knocking
    bob = closing(BobLink(f"tcp://127.0.0.1:{port}", settings()))
    assert bob.accept() == hello()
    bob.welcome(Welcome("s1", 0))
    assert side.result() == Welcome("s1", 0)


def test_handshake_timeout_alice_names_endpoint(closing):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    alice = closing(AliceLink(endpoint, settings(handshake_timeout_s=0.3)))
    with pytest.raises(HandshakeTimeout) as e:
        alice.handshake(hello())
    assert str(e.value) == (
        f"no answer from Mars ({endpoint}) within 0.3 s of HELLO; is the receiver running and bound there?"
    )


def test_handshake_timeout_bob_names_endpoint(closing):
    bob = closing(BobLink("tcp://127.0.0.1:*", settings(handshake_timeout_s=0.3)))
    with pytest.raises(HandshakeTimeout) as e:
        bob.accept()
    assert str(e.value) == (
        f"no HELLO from Earth on {bob.endpoint} within 0.3 s; is the sender running and pointed here?"
    )


def test_refuse_raises_peer_error_on_alice(closing):
    bob = closing(BobLink("tcp://127.0.0.1:*", settings()))
    side = Background(lambda: (bob.accept(), bob.refuse("config-mismatch", "Mars has n_layer=4\nEarth has 2")))
    alice = closing(AliceLink(bob.endpoint, settings()))
    with pytest.raises(PeerError) as e:
        alice.handshake(hello())
    side.result()
    assert (e.value.code, e.value.message) == ("config-mismatch", "Mars has n_layer=4 Earth has 2")
    assert str(e.value) == "Mars reported config-mismatch: Mars has n_layer=4 Earth has 2"


# ---------------------------------------------------------------- delivery


def test_200_frames_exactly_once_in_order(closing):
    bob = closing(BobLink("tcp://127.0.0.1:*", settings()))
    side = Background(lambda: bob_receiver(bob))
    alice = closing(AliceLink(bob.endpoint, settings()))
    alice.handshake(hello())
    sent = stream(alice, 200)
    done = alice.wait_done()
    assert side.result() == sent
    assert done == Done(SHA, "ab" * 32)
    assert (alice.stats.frames_sent, alice.stats.in_flight, alice.stats.acked_seq) == (201, 0, 201)
    assert (bob.stats.frames_received, bob.stats.duplicates, bob.stats.bad_frames) == (201, 0, 0)


def test_resume_starts_at_welcome_next_seq(closing):
    bob = closing(BobLink("tcp://127.0.0.1:*", settings()))
    side = Background(lambda: bob_receiver(bob, next_seq=50))
    alice = closing(AliceLink(bob.endpoint, settings()))
    assert alice.handshake(hello()).next_seq == 50 and alice.next_seq == 50
    with pytest.raises(ValueError, match="expected seq 50, got 0"):
        alice.send(data(0))
    sent = stream(alice, 20, start=50)
    alice.wait_done()
    assert side.result() == sent


def test_credit_blocks_sender_until_receiver_consumes(closing):
    s = settings(window=4)
    bob = closing(BobLink("tcp://127.0.0.1:*", s))
    alice = closing(AliceLink(bob.endpoint, s))
    shake = Background(lambda: alice.handshake(hello()))
    bob.welcome(Welcome(bob.accept().stream_id, 0))
    shake.result()

    sender = Background(lambda: [alice.send(data(i)) for i in range(6)])
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.5:  # Bob pumps (acks) but his caller consumes nothing
        bob.poll(0.05)
    assert sender.is_alive(), "sender ignored credit"
    assert bob.stats.frames_received == 4
    assert [bob.next_frame().seq for _ in range(6)] == list(range(6))
    sender.result()
    assert bob.stats.duplicates == 0


def test_lossy_duplicating_reordering_path_delivers_exactly_once_in_order(closing):
    # Faults on Alice's DATA/SYNC/END *and* on Bob's ACKs.
    s = settings(retransmit_s=0.05, fault=FaultPlan(drop=0.1, dup=0.1, reorder=0.1, seed=1))
    bob = closing(BobLink("tcp://127.0.0.1:*", s))
    side = Background(lambda: bob_receiver(bob))
    alice = closing(AliceLink(bob.endpoint, s))
    alice.handshake(hello())
    sent = stream(alice, 200)
    alice.wait_done()
    assert side.result() == sent
    assert alice.stats.frames_resent > 0
    assert bob.stats.duplicates > 0 and bob.stats.out_of_order > 0


# ---------------------------------------------------------------- errors


def test_alice_abort_raises_peer_error_on_bob(closing):
    bob = closing(BobLink("tcp://127.0.0.1:*", settings()))
    side = Background(lambda: bob_receiver(bob))
    alice = closing(AliceLink(bob.endpoint, settings()))
    alice.handshake(hello())
    alice.send(data(0))
    alice.abort("disk-full", "cannot read input")
    with pytest.raises(PeerError) as e:
        side.result()
    assert (e.value.code, e.value.message) == ("disk-full", "cannot read input")
    assert str(e.value) == "Earth reported disk-full: cannot read input"


def test_bob_abort_raises_peer_error_on_alice(closing):
    bob = closing(BobLink("tcp://127.0.0.1:*", settings()))

    def receiver():
        bob.welcome(Welcome(bob.accept().stream_id, 0))
        bob.next_frame()
        bob.abort("desync", "weights digest differs at step 3")

    side = Background(receiver)
    alice = closing(AliceLink(bob.endpoint, settings()))
    alice.handshake(hello())
    alice.send(data(0))
    with pytest.raises(PeerError) as e:
        alice.wait_done()
    side.result()
    assert str(e.value) == "Mars reported desync: weights digest differs at step 3"


def test_alice_raises_frame_error_when_mars_talks_nonsense(closing):
    # A fake Mars that answers HELLO with a message from a future protocol version.
    router = closing(zmq.Context.instance().socket(zmq.ROUTER))
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    alice = closing(AliceLink(f"tcp://127.0.0.1:{port}", settings()))

    def fake_mars():
        identity, _ = router.recv_multipart()
        future = bytearray(encode(Welcome("s1", 0)))
        future[2] = PROTOCOL_VERSION + 1
        router.send_multipart([identity, bytes(future)])
        return decode(router.recv_multipart()[1])  # Alice's complaint

    side = Background(fake_mars)
    why = f"peer speaks protocol version {PROTOCOL_VERSION + 1}; this build speaks {PROTOCOL_VERSION}"
    with pytest.raises(FrameError, match=f"^{why}$"):
        alice.handshake(hello())
    assert side.result() == Error("bad-frame", why)


# ---------------------------------------------------------------- liveness


def test_peer_lost_on_alice_when_bob_closes(closing):
    bob = closing(BobLink("tcp://127.0.0.1:*", settings()))

    def receiver():
        bob.welcome(Welcome(bob.accept().stream_id, 0))
        bob.next_frame()
        bob.close()  # vanish without a word

    side = Background(receiver)
    alice = closing(AliceLink(bob.endpoint, settings()))
    alice.handshake(hello())
    alice.send(data(0))
    side.result()
    t0 = time.monotonic()
    with pytest.raises(PeerLost) as e:
        alice.wait_done()
    assert time.monotonic() - t0 < FAST["timeout_s"] + 0.5
    assert str(e.value) == f"no word from Mars ({bob.endpoint}) for 1.0 s; is the receiver running?"


def test_peer_lost_on_bob_when_alice_closes(closing):
    bob = closing(BobLink("tcp://127.0.0.1:*", settings()))
    side = Background(lambda: bob_receiver(bob))
    alice = AliceLink(bob.endpoint, settings())
    alice.handshake(hello())
    alice.send(data(0))
    alice.close()
    t0 = time.monotonic()
    with pytest.raises(PeerLost) as e:
        side.result()
    assert time.monotonic() - t0 < FAST["timeout_s"] + 0.5
    assert str(e.value) == f"no word from Earth (sender of stream 's1' on {bob.endpoint}) for 1.0 s; is the sender running?"


def test_bob_delivers_backlog_before_reporting_peer_lost(closing):
    bob = closing(BobLink("tcp://127.0.0.1:*", settings()))
    alice = AliceLink(bob.endpoint, settings())
    shake = Background(lambda: alice.handshake(hello()))
    bob.welcome(Welcome(bob.accept().stream_id, 0))
    shake.result()
    for i in range(5):
        alice.send(data(i))
    while bob.stats.frames_received < 5:
        bob.poll(0.05)
    alice.close()
    time.sleep(FAST["timeout_s"] + 0.2)  # Earth is gone, Mars was busy
    assert [bob.next_frame() for _ in range(5)] == [data(i) for i in range(5)]
    with pytest.raises(PeerLost):
        bob.next_frame()


def test_heartbeats_keep_an_idle_link_alive(closing):
    bob = closing(BobLink("tcp://127.0.0.1:*", settings()))
    side = Background(lambda: bob_receiver(bob))
    alice = closing(AliceLink(bob.endpoint, settings()))
    alice.handshake(hello())
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.5 * FAST["timeout_s"]:  # idle, but pumping
        alice.poll(0.05)
    sent = stream(alice, 3)
    alice.wait_done()
    assert side.result() == sent


# ---------------------------------------------------------------- hostile input


def raw_dealer(closing, endpoint: str) -> zmq.Socket:
    s = closing(zmq.Context.instance().socket(zmq.DEALER))
    s.linger = 0
    s.connect(endpoint)
    return s


def recv(sock: zmq.Socket, timeout_s: float = 3.0):
    assert sock.poll(int(timeout_s * 1000)), "no reply"
    return decode(sock.recv())


def test_oversized_message_rejected_and_receiver_keeps_working(closing):
    bob = closing(BobLink("tcp://127.0.0.1:*", settings()))
    side = Background(lambda: bob_receiver(bob))
    alice = closing(AliceLink(bob.endpoint, settings()))
    alice.handshake(hello())
    alice.send(data(0))

    rogue = raw_dealer(closing, bob.endpoint)
    rogue.send(b"ML\x01\x03" + bytes(MAX_MESSAGE_BYTES + 96))
    expected = f"message of {MAX_MESSAGE_BYTES + 100} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit"
    assert recv(rogue) == Error("bad-frame", expected)
    rogue.send(b"GET / HTTP/1.1\r\n\r\n")
    assert recv(rogue) == Error("bad-frame", "not a marslink message")

    sent = [data(0)] + stream(alice, 10, start=1)
    alice.wait_done()
    assert side.result() == sent
    assert bob.stats.bad_frames == 2 and bob.last_bad_frame == "not a marslink message"


def test_a_flood_of_bad_messages_is_logged_once_not_per_message(closing):
    """Round nine: each rejected message was a line of Bob's log (45,000 lines in 10 s from one
    stranger, whatever their kinds). Now the first, then a count at most once per REPEAT_LOG_S;
    every one is still counted and answered."""
    lines = []
    bob = closing(BobLink("tcp://127.0.0.1:*", settings(handshake_timeout_s=0.5), log=lines.append))
    rogue = raw_dealer(closing, bob.endpoint)
    for i in range(300):
        rogue.send(b"junk" * (1 + i % 7))          # seven kinds of message, all rejected
    deadline = time.monotonic() + 8.0              # a loaded machine may need more than one wait, all
    while True:                                    # within REPEAT_LOG_S (10 s): no count line yet
        with pytest.raises(HandshakeTimeout):      # Bob reads while he waits for a HELLO
            bob.accept()
        if bob.stats.bad_frames >= 300 or time.monotonic() > deadline:
            break
    assert [recv(rogue).code for _ in range(300)] == ["bad-frame"] * 300
    assert bob.stats.bad_frames == 300
    assert [line for line in lines if "rejected message" in line] == [
        "rejected message: message of 4 bytes is too short to be a marslink message"]


def test_refusals_name_the_first_kinds_then_count_the_rest():
    """A stranger trying a new random key each time was a line per key, without end."""
    lines, clock = [], [100.0]
    refusals = Refusals(lines.append, 3, 10.0)
    with mock.patch("protocol.security.time.monotonic", lambda: clock[0]):
        for key in range(6):
            refusals.add(f"refused a sender with unknown key {key}", key)
        refusals.add("refused a sender with unknown key 0", 0)     # a kind already named: counted only
        clock[0] += 10.0
        refusals.add("refused a sender with unknown key 6", 6)
    assert refusals.count == 8 and refusals.last == "refused a sender with unknown key 6"
    assert lines == ["refused a sender with unknown key 0", "refused a sender with unknown key 1",
                     "refused a sender with unknown key 2",
                     "refused a sender with unknown key 3 (1 refusal(s) of new kinds since the first 3; said at most "
                     "every 10 s)",
                     "refused a sender with unknown key 6 (3 refusal(s) of new kinds since the first 3; said at most "
                     "every 10 s)"]


def test_strangers_are_refused_counted_and_never_fatal(closing):
    bob = closing(BobLink("tcp://127.0.0.1:*", settings()))
    side = Background(lambda: bob_receiver(bob))
    alice = closing(AliceLink(bob.endpoint, settings()))
    alice.handshake(hello())

    intruder = closing(AliceLink(bob.endpoint, settings(handshake_timeout_s=3.0)))
    with pytest.raises(PeerError) as e:                  # a prompt refusal, not silence
        intruder.handshake(hello("intruder"))
    assert str(e.value) == "Mars reported busy: Mars is busy with stream 's1'; try again once it is delivered"
    rogue = raw_dealer(closing, bob.endpoint)
    rogue.send(encode(Error("x", "stop")))              # a stranger's ERROR: dropped, never raised
    rogue.send(encode(data(0)))
    assert recv(rogue) == Error("not-your-peer", "Mars is serving another sender; this DATA is not part of its stream")

    sent = stream(alice, 10)
    alice.wait_done()
    assert side.result() == sent
    assert bob.stats.strangers >= 3 and bob.stats.refused >= 1


def test_a_second_sender_of_the_same_stream_id_with_another_input_is_told_what_to_do(closing):
    """Round seven: a second sender that reused the stream id of the one Bob serves, with another
    input (another sha256), was told "Mars is busy with stream 's1'; try again once it is
    delivered", which it can never act on: that stream is its own name. Now it is told to give
    another --stream-id; another id still hears that Mars is busy."""
    bob = closing(BobLink("tcp://127.0.0.1:*", settings()))
    side = Background(lambda: bob_receiver(bob))
    alice = closing(AliceLink(bob.endpoint, settings()))
    alice.handshake(hello())

    other_input = Hello("s1", {"n_layer": 2}, {"torch": "x"}, 1000, bytes(32))      # hello()'s name, not its bytes
    twin = closing(AliceLink(bob.endpoint, settings(handshake_timeout_s=3.0)))
    with pytest.raises(PeerError) as e:
        twin.handshake(other_input)
    assert str(e.value) == ("Mars reported busy: Mars is receiving a stream 's1' of another input, or coded another "
                            "way; give this one another --stream-id, or send that input as it was to finish it")
    intruder = closing(AliceLink(bob.endpoint, settings(handshake_timeout_s=3.0)))
    with pytest.raises(PeerError) as e:
        intruder.handshake(hello("s2"))
    assert str(e.value) == "Mars reported busy: Mars is busy with stream 's1'; try again once it is delivered"

    sent = stream(alice, 10)                             # the first sender's stream is untouched
    alice.wait_done()
    assert side.result() == sent
    assert bob.stats.refused >= 2


def test_a_strangers_error_before_any_hello_is_dropped(closing):
    bob = closing(BobLink("tcp://127.0.0.1:*", settings()))
    rogue = raw_dealer(closing, bob.endpoint)
    rogue.send(encode(Error("x", "stop")))
    side = Background(lambda: bob_receiver(bob))
    time.sleep(0.2)
    alice = closing(AliceLink(bob.endpoint, settings()))
    alice.handshake(hello())
    sent = stream(alice, 5)
    alice.wait_done()
    assert side.result() == sent
    assert bob.stats.strangers == 1


def test_refused_hello_leaves_bob_listening_for_the_right_sender(closing):
    bob = closing(BobLink("tcp://127.0.0.1:*", settings()))

    def receiver():
        while bob.accept().stream_id != "right":
            bob.refuse("config-mismatch", "configuration mismatch in 'seed'")
        bob.welcome(Welcome("right", 0))
        return bob.next_frame()

    side = Background(receiver)
    wrong = closing(AliceLink(bob.endpoint, settings()))
    with pytest.raises(PeerError, match="^Mars reported config-mismatch: configuration mismatch in 'seed'$"):
        wrong.handshake(hello("wrong"))
    right = closing(AliceLink(bob.endpoint, settings()))
    assert right.handshake(hello("right")) == Welcome("right", 0)
    right.send(data(0))
    assert side.result() == data(0)
    assert bob.stats.refused == 1


def test_done_is_acknowledged_and_a_returning_alice_gets_done_while_bob_lingers(closing):
    bob = closing(BobLink("tcp://127.0.0.1:*", settings()))
    result = Done(SHA, "ab" * 32)

    def receiver():
        bob.welcome(Welcome(bob.accept().stream_id, 0))
        while not isinstance(bob.next_frame(), End):
            pass
        bob.done(result)
        bob.linger(5.0)                                  # ends early: Alice acknowledges DONE
        acked = bob.done_acked
        bob.done_acked = False
        bob.linger(1.0)                                  # now answers a restarted Alice's HELLO
        return acked

    side = Background(receiver)
    alice = closing(AliceLink(bob.endpoint, settings()))
    alice.handshake(hello())
    stream(alice, 3)
    t0 = time.monotonic()
    assert alice.wait_done() == result
    again = closing(AliceLink(bob.endpoint, settings()))
    assert again.handshake(hello()) == result            # a receipt instead of WELCOME
    assert side.result() is True
    assert time.monotonic() - t0 < 3.0


def test_bind_conflict_is_a_clear_link_error(closing):
    bob = closing(BobLink("tcp://127.0.0.1:*", settings()))
    with pytest.raises(LinkError, match=f"^Mars cannot listen on {bob.endpoint}: Address already in use$"):
        BobLink(bob.endpoint, settings())
    with pytest.raises(LinkError, match="^Earth cannot connect to nonsense: Invalid argument$"):
        AliceLink("nonsense", settings())


def test_a_full_send_queue_is_logged_once_not_per_message(closing):
    """Round seven: with nobody listening, each resent HELLO that found the send queue full logged
    "send queue full; message dropped": hundreds of lines in the one second of this test.
    Now such a line comes once, then at most once per REPEAT_LOG_S with a count."""
    lines = []
    alice = closing(AliceLink(f"tcp://127.0.0.1:{free_port()}",
                              settings(retransmit_s=0.000001, handshake_timeout_s=1.0), log=lines.append))
    with pytest.raises(HandshakeTimeout):
        alice.handshake(hello())
    assert "send queue full; message dropped" in lines                  # the queue did fill...
    assert sum("send queue full" in line for line in lines) <= 2, lines[:5]      # ... and said so once


def test_close_is_idempotent_and_terminates_context():
    before = threading.active_count()
    bob = BobLink("tcp://127.0.0.1:*", settings())
    alice = AliceLink(bob.endpoint, settings())
    for link in (alice, bob):
        with link:
            pass
        link.close()
        assert link._ctx.closed
    assert threading.active_count() == before
