"""The live link: Alice and Bob as two real OS processes over TCP loopback."""
import time

import numpy as np
import pytest

from shared.core.config import PRESETS, diff, require_same
from shared.core.errors import ConfigMismatch
from shared.texts import mission_log
from tests.helpers import assert_verified, finish, free_endpoint, listen, run_pair, send, spawn





def test_text_bob_first(tmp_path):
    data = mission_log(8000)        # 32 steps on the tiny preset: more frames than the link's window (32)
    a, b = assert_verified(run_pair(tmp_path, data, bob_first=True), data)
    assert a["compressed_bytes"] == b["compressed_bytes"] < len(data) / 2


def test_binary_file_alice_first(tmp_path):
    data = np.random.default_rng(3).integers(0, 256, 8_000, dtype=np.uint8).tobytes() + bytes(range(256))
    assert_verified(run_pair(tmp_path, data, bob_first=False), data)


def test_lossy_duplicating_reordering_link_is_still_exact(tmp_path):
    data = mission_log(8000)        # 32 steps on the tiny preset: more frames than the link's window (32)
    r = run_pair(tmp_path, data, alice_args=["--fault-drop", "0.1", "--fault-dup", "0.1",
                                             "--fault-reorder", "0.1", "--fault-seed", "4"])
    a, b = assert_verified(r, data)
    assert a["frames_resent"] > 0 and b["duplicates"] > 0


def refused_then_served(tmp_path, bad_alice_args, code, why, prelude=None):
    """A sender Bob must refuse gets an ERROR naming why; Bob keeps listening and then serves
    the right sender (issue 19, finding 3)."""
    bob, ep, out = listen(tmp_path)
    try:
        rc, lines = send(tmp_path, ep, b"hello mars", *bad_alice_args, prelude=prelude)
        assert rc == 2 and lines[-1] == f"alice: error: Mars stopped the stream ({code}): {why}"
        data = mission_log(3000)
        rc, lines = send(tmp_path, ep, data)
        assert rc == 0, lines
        rc_bob, bob_lines = finish(bob)
    finally:
        if bob.poll() is None:
            bob.kill()
    assert rc_bob == 0, bob_lines
    assert any(line.startswith("bob: refused stream ") and line.endswith(why) for line in bob_lines), bob_lines
    assert out.read_bytes() == data


def test_mismatched_configuration_is_refused_and_bob_keeps_listening(tmp_path):
    why = ("configuration mismatch in 'seed': Earth has 7, Mars has 1; "
           "start both sides with the same preset and options")
    refused_then_served(tmp_path, ["--seed", "7"], "config-mismatch", why)


def test_another_preset_is_named_by_the_preset_not_its_first_field():
    """Bob on tiny, Earth on default: the refusal leads with what each side typed."""
    more = len(diff(PRESETS["tiny"], PRESETS["default"])) - 1
    with pytest.raises(ConfigMismatch) as e:
        require_same(PRESETS["tiny"], PRESETS["default"], "Earth", "Mars")
    assert str(e.value) == (f"configuration mismatch in 'preset': Earth has 'default', Mars has 'tiny' (and {more} "
                            f"more field(s)); start both sides with the same preset and options")


def test_other_arithmetic_is_refused_and_bob_keeps_listening(tmp_path):
    """An Earth whose twin computes differently (here: a build that declares arithmetic 0)."""
    why = ("numeric profile mismatch in 'arithmetic': Earth has '0', Mars has '1'; "
           "both sides need a marslink build with the same arithmetic")
    refused_then_served(tmp_path, [], "profile-mismatch", why,
                        prelude="import shared.core.portable as p; p.ARITHMETIC_VERSION = 0")


def test_wrong_protocol_version_is_refused(tmp_path):
    """A HELLO from a future build: Bob answers with an ERROR frame naming both versions."""
    import zmq
    from protocol.frames import PROTOCOL_VERSION, Error, Hello, decode, encode
    ep = free_endpoint()
    bob = spawn("receiver", "listen", "--bind", ep, "--out", str(tmp_path / "out"), "--preset", "tiny",
                "--handshake-timeout", "3")
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.connect(ep)
    wire = bytearray(encode(Hello("x", {}, {}, 1, bytes(32))))
    wire[2] = PROTOCOL_VERSION + 1                       # the version byte
    import zlib
    wire[-4:] = zlib.crc32(bytes(wire[:-4])).to_bytes(4, "little")
    deadline = time.time() + 30
    reply = None
    while reply is None and time.time() < deadline:
        s.send(bytes(wire))
        if s.poll(1000):
            frame = decode(s.recv())
            if isinstance(frame, Error):
                reply = frame
    s.close(0)
    ctx.term()
    assert reply is not None and reply.code == "bad-frame"
    why = f"peer speaks protocol version {PROTOCOL_VERSION + 1}; this build speaks {PROTOCOL_VERSION}"
    assert reply.message == why
    _, err = bob.communicate(timeout=60)
    assert bob.returncode == 2
    assert why in err.decode().strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


def test_corrupted_payload_frame_is_caught_by_crc(tmp_path):
    r = run_pair(tmp_path, mission_log(8000), alice_args=["--fault-corrupt-nth", "5"])
    assert r["bob_rc"] == 2 and r["alice_rc"] == 2
    assert "bob: error: corrupted frame from Earth: CRC mismatch in " in r["bob_err"]
    assert not r["out"].exists()                   # the good bytes stay in out.bin.partial, for resume
    assert sorted(p.name for p in r["dir"].iterdir()) == ["in.bin", "out.bin.partial"]


def test_weight_divergence_is_caught_at_the_next_sync(tmp_path):
    r = run_pair(tmp_path, mission_log(8000), bob_args=["--fault-perturb-step", "5"])
    assert r["bob_rc"] == 2 and r["alice_rc"] == 2
    last = r["bob_err"].strip().splitlines()[-1]
    assert last.startswith("bob: error: weights diverged at step 8: Earth digest ")
    assert "Mars stopped the stream (DivergenceError): weights diverged at step 8" in r["alice_err"]
    assert sorted(p.name for p in r["dir"].iterdir()) == ["in.bin"]
