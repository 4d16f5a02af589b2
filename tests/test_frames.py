"""Wire format: exact round trips, exact error messages, and a fuzzer that may only ever see FrameError."""

import random
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.frames import (
    MAGIC,
    MAX_MESSAGE_BYTES,
    MAX_PAYLOAD_BYTES,
    PROTOCOL_VERSION,
    Ack,
    Data,
    Done,
    End,
    Error,
    FrameError,
    Heartbeat,
    Hello,
    Kind,
    Sync,
    Welcome,
    decode,
    encode,
    one_line,
)

SHA = bytes(range(32))

SAMPLES = [
    Hello("stream-1", {"d_model": 64, "lr": 3e-4, "layers": [1, 2], "name": "tiny"}, {"torch": "2.3"}, 12345, SHA),
    Hello("ünïcødé ✓", {}, {"nested": {"a": [None, True, -0.5]}}, 0, bytes(32)),
    Welcome("stream-1", 0),
    Welcome("stream-1", 2**64 - 1),
    Data(7, 100, 164, 4096, b"\x00coded\xff" * 10),
    Data(0, 0, 0, 0, b""),
    Sync(8, 3, b"\xaa" * 32),
    Sync(9, 0, b""),
    End(10, 5000, SHA),
    Ack(11, 16),
    Ack(0, 2**32 - 1),
    Done(SHA, "0123456789abcdef" * 4),
    Done(SHA, ""),
    Heartbeat(1234.5625),
    Heartbeat(-0.0),
    Error("config-mismatch", "Mars has n_layer=4 but Earth sent n_layer=6"),
    Error("x", ""),
]


def flip_last(msg: bytes) -> bytes:
    """The message with one bit of its CRC flipped (overwriting it with a constant could match)."""
    return msg[:-1] + bytes([msg[-1] ^ 1])


def seal(kind: int, body: bytes, version: int = PROTOCOL_VERSION, magic: bytes = MAGIC) -> bytes:
    """A message with a correct CRC around an arbitrary body: reaches the body parser."""
    msg = struct.pack("<2sBB", magic, version, kind) + body
    return msg + struct.pack("<I", zlib.crc32(msg))


def reseal(message: bytes) -> bytes:
    """Recompute the CRC of a (mutated) message."""
    return message[:-4] + struct.pack("<I", zlib.crc32(message[:-4]))


def json_blob(text: bytes) -> bytes:
    return struct.pack("<I", len(text)) + text


def hello_body(stream_id: bytes = b"s", config: bytes = b"{}", fingerprint: bytes = b"{}") -> bytes:
    return struct.pack("<H", len(stream_id)) + stream_id + struct.pack("<Q32s", 1, SHA) + json_blob(config) + json_blob(fingerprint)


@pytest.mark.parametrize("frame", SAMPLES, ids=lambda f: f.KIND.name)
def test_round_trip(frame):
    wire = encode(frame)
    assert wire[:4] == MAGIC + bytes([PROTOCOL_VERSION, frame.KIND])
    back = decode(wire)
    assert back == frame and type(back) is type(frame)
    assert encode(back) == wire
    assert decode(bytearray(wire)) == frame and decode(memoryview(wire)) == frame


def test_every_kind_has_a_sample():
    assert {f.KIND for f in SAMPLES} == set(Kind)


def test_hello_carries_protocol_version():
    assert decode(encode(SAMPLES[0])).protocol_version == PROTOCOL_VERSION


def test_largest_payload_fits_exactly():
    wire = encode(Data(1, 0, 1, 0, b"x" * MAX_PAYLOAD_BYTES))
    assert len(wire) == MAX_MESSAGE_BYTES
    assert decode(wire).payload == b"x" * MAX_PAYLOAD_BYTES


GOOD_DATA = encode(Data(7, 1, 2, 3, b"payload"))
GOOD_HELLO = encode(SAMPLES[0])

OLDER = {   # earlier wire protocols, each refused by its number: what its bump brought
    26: "before the line before's indentation", 25: "before the open elements", 24: "before the shape context", 23: "before the reach set", 22: "before order 5", 21: "before order 3's smaller table", 20: "before tiny's new shape", 19: "before default's hashed contexts", 18: "before the mixer's late steps", 17: "before say-hello", 16: "before the word pair between words", 15: "before the fuller count rows",
    14: "before the indirect context", 13: "before neural's hashed contexts", 12: "before the shape weight set",
    11: "before the word rows", 10: "before the tree mixer's early steps", 9: "before the mixers' new start",
    8: "bytes coded whole", 7: "before the near contexts", 4: "before the tree mixer"}
MALFORMED = {
    "not bytes": ("hello", "expected bytes, got str"),
    "empty": (b"", "message of 0 bytes is too short to be a marslink message"),
    "too short": (b"ML\x01\x03\x00\x00\x00", "message of 7 bytes is too short to be a marslink message"),
    "oversized (checked before magic)": (b"X" * (MAX_MESSAGE_BYTES + 1), f"message of {MAX_MESSAGE_BYTES + 1} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit"),
    "wrong magic": (b"GET / HTTP/1.1\r\n\r\n", "not a marslink message"),
    "newer version": (b"ML\x1c" + GOOD_DATA[3:], "peer speaks protocol version 28; this build speaks 27"),
    **{f"version {v} ({why})": (b"ML" + bytes([v]) + GOOD_DATA[3:], f"peer speaks protocol version {v}; this build speaks 27")
       for v, why in OLDER.items()},
    "unknown kind": (seal(99, b""), "unknown frame kind 99"),
    "crc, DATA": (GOOD_DATA[:-5] + b"?" + GOOD_DATA[-4:], "CRC mismatch in DATA frame seq 7"),
    "crc, HELLO": (GOOD_HELLO[:-1] + bytes([GOOD_HELLO[-1] ^ 1]), "CRC mismatch in HELLO frame"),
    "crc, short DATA": (flip_last(seal(Kind.DATA, b"\x07")), "CRC mismatch in DATA frame"),
    "crc, unknown kind": (flip_last(seal(99, b"")), "CRC mismatch in message"),
    "truncated fixed fields": (seal(Kind.DATA, b"\x07\x00\x00"), "truncated DATA frame: seq+tokens+offset needs 32 bytes, 3 left"),
    "truncated payload": (seal(Kind.DATA, struct.pack("<QQQQI", 1, 0, 0, 0, 100) + b"abc"), "truncated DATA frame: payload needs 100 bytes, 3 left"),
    "huge length prefix": (seal(Kind.DATA, struct.pack("<QQQQI", 1, 0, 0, 0, 2**32 - 1)), f"truncated DATA frame: payload needs {2**32 - 1} bytes, 0 left"),
    "truncated length prefix": (seal(Kind.WELCOME, b"\x05"), "truncated WELCOME frame: stream_id length needs 2 bytes, 1 left"),
    "trailing garbage": (seal(Kind.ACK, struct.pack("<QI", 1, 1) + b"\x00"), "ACK frame has 1 bytes of trailing garbage"),
    "empty body": (seal(Kind.END, b""), "truncated END frame: seq+total_payload_bytes+sha256 needs 48 bytes, 0 left"),
    "bad UTF-8 stream_id": (seal(Kind.HELLO, hello_body(stream_id=b"\xff\xfe")), "HELLO stream_id is not valid UTF-8"),
    "bad UTF-8 JSON": (seal(Kind.HELLO, hello_body(config=b'{"a":"\xff"}')), "HELLO config is not valid UTF-8"),
    "bad JSON": (seal(Kind.HELLO, hello_body(config=b"{nope")), "HELLO config is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
    "JSON not an object": (seal(Kind.HELLO, hello_body(fingerprint=b"[1,2]")), "HELLO fingerprint must be a JSON object"),
    "JSON NaN": (seal(Kind.HELLO, hello_body(config=b'{"a":NaN}')), "HELLO config is not valid JSON: NaN is not allowed"),
    "JSON overflow to inf": (seal(Kind.HELLO, hello_body(config=b'{"a":1e999}')), "HELLO config is not canonical JSON"),
    "JSON not canonical": (seal(Kind.HELLO, hello_body(config=b'{"b": 1, "a": 2}')), "HELLO config is not canonical JSON"),
    "JSON duplicate keys": (seal(Kind.HELLO, hello_body(config=b'{"a":1,"a":2}')), "HELLO config is not canonical JSON"),
    "JSON deeply nested": (seal(Kind.HELLO, hello_body(config=b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}")), "HELLO config is not valid JSON: maximum recursion depth exceeded while decoding a JSON array from a unicode string"),
    "empty stream_id": (seal(Kind.HELLO, hello_body(stream_id=b"")), "HELLO stream_id '' must be 1 or more printable characters"),
    "stream_id with a line separator": (seal(Kind.HELLO, hello_body(stream_id="a\u2028b".encode())),
                                        "HELLO stream_id 'a\\u2028b' must be 1 or more printable characters"),
    "stream_id with a right-to-left override": (seal(Kind.HELLO, hello_body(stream_id="a\u202eb".encode())),
                                                "HELLO stream_id 'a\\u202eb' must be 1 or more printable characters"),
    "token range backwards": (seal(Kind.DATA, struct.pack("<QQQQI", 3, 9, 5, 0, 0)), "DATA frame seq 3 has token_end 5 < token_start 9"),
    "digest too long": (seal(Kind.SYNC, struct.pack("<QQB", 1, 1, 33) + b"d" * 33), "SYNC digest must be at most 32 bytes"),
    "heartbeat NaN": (seal(Kind.HEARTBEAT, struct.pack("<d", float("nan"))), "HEARTBEAT sent_at must be a finite number"),
    "error code with space": (seal(Kind.ERROR, b"\x03\x00a b\x00\x00"), "ERROR code 'a b' does not match [A-Za-z0-9._-]+"),
    "error message two lines": (seal(Kind.ERROR, b"\x01\x00x\x03\x00a\nb"), "ERROR message 'a\\nb' does not match [^\\r\\n\\x0b\\x0c\\x1c-\\x1e\\x85\\u2028\\u2029]*"),
    "uppercase hex digest": (seal(Kind.DONE, SHA + b"\x02\x00AB"), "DONE final_digest 'AB' does not match [0-9a-f]*"),
}


@pytest.mark.parametrize("data,message", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed(data, message):
    with pytest.raises(FrameError) as e:
        decode(data)
    assert str(e.value) == message
    assert "\n" not in message


def test_frame_error_is_a_value_error():
    assert issubclass(FrameError, ValueError)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: encode(Data(1, 0, 1, 0, b"x" * (MAX_PAYLOAD_BYTES + 1))), f"DATA frame of {MAX_MESSAGE_BYTES + 1} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit"),
        (lambda: encode(Hello("s", {"t": (1, 2)}, {}, 0, SHA)), "HELLO config does not survive a JSON round trip (tuples? non-str keys?)"),
        (lambda: encode(Hello("s", {}, {"x": float("inf")}, 0, SHA)), "HELLO fingerprint is not JSON-serializable: Out of range float values are not JSON compliant"),
        (lambda: Hello("s" * 65, {}, {}, 0, SHA), "HELLO stream_id must be a str of at most 64 chars"),
        (lambda: End(-1, 0, SHA), "END seq must be an integer in [0, 2**64), got -1"),
        (lambda: Ack(0, 2**32), "ACK credit must be an integer in [0, 2**32), got 4294967296"),
        (lambda: End(1, 0, b"short"), "END sha256 must be 32 bytes"),
        (lambda: Error("e", "\ud800"), "ERROR message is not encodable as UTF-8"),
        (lambda: encode("not a frame"), "cannot encode str; not a marslink frame"),
    ],
)
def test_invalid_frames_refused_at_construction_or_encode(make, message):
    with pytest.raises(FrameError) as e:
        make()
    assert str(e.value) == message


def test_one_line_makes_any_text_a_valid_error_message():
    text = "Traceback:\n  line 1\r\n\u2028" + "x" * 5000
    msg = one_line(text)
    assert len(msg) == 1000 and msg.endswith("...")
    assert decode(encode(Error("crash", msg))).message == msg


# ---------------------------------------------------------------- fuzzing

json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=4)
json_objects = st.dictionaries(st.text(max_size=6), json_values, max_size=4)
u64, u32 = st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1)
sha = st.binary(min_size=32, max_size=32)
names = st.text(st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"),   # printable
                              include_characters=" "), min_size=1, max_size=64)


@st.composite
def data_frames(draw):
    a, b = sorted([draw(u64), draw(u64)])
    return Data(draw(u64), a, b, draw(u64), draw(st.binary(max_size=64)))


frames = st.one_of(
    st.builds(Hello, names, json_objects, json_objects, u64, sha),
    st.builds(Welcome, names, u64),
    data_frames(),
    st.builds(Sync, u64, u64, st.binary(max_size=32)),
    st.builds(End, u64, u64, sha),
    st.builds(Ack, u64, u32),
    st.builds(Done, sha, st.text("0123456789abcdef", max_size=64)),
    st.builds(Heartbeat, st.floats(allow_nan=False, allow_infinity=False)),
    st.builds(Error, st.text("abcXYZ019.-_", min_size=1, max_size=32), st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=40)),
)


def random_json(rng: random.Random, depth: int = 0):
    r = rng.randrange(7 if depth < 3 else 5)
    if r == 5:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(3))]
    if r == 6:
        return {f"k{i}": random_json(rng, depth + 1) for i in range(rng.randrange(3))}
    return [None, rng.random() < 0.5, rng.randint(-(2**40), 2**40), rng.uniform(-1e6, 1e6), "ß" * rng.randrange(5)][r]


def random_frame(rng: random.Random):
    """Plain-random valid frames: a varied, cheap pool of bases for the mutation fuzzer."""
    u64, b = lambda: rng.getrandbits(rng.choice([3, 16, 64])), rng.randbytes
    kind = rng.choice(list(Kind))
    if kind == Kind.HELLO:
        return Hello("s" * rng.randint(1, 64), {"cfg": random_json(rng)}, {"fp": random_json(rng)}, u64(), b(32))
    a, z = sorted([u64(), u64()])
    return {
        Kind.WELCOME: lambda: Welcome("ü" * rng.randint(1, 64), u64()),
        Kind.DATA: lambda: Data(u64(), a, z, u64(), b(rng.randrange(100))),
        Kind.SYNC: lambda: Sync(u64(), u64(), b(rng.randrange(33))),
        Kind.END: lambda: End(u64(), u64(), b(32)),
        Kind.ACK: lambda: Ack(u64(), rng.getrandbits(32)),
        Kind.DONE: lambda: Done(b(32), b(rng.randrange(33)).hex()),
        Kind.HEARTBEAT: lambda: Heartbeat(rng.uniform(-1e9, 1e9)),
        Kind.ERROR: lambda: Error("e-" * rng.randrange(1, 16), "msg " * rng.randrange(50)),
    }[kind]()


_rng = random.Random(0)
SAMPLE_WIRES = [encode(f) for f in SAMPLES] + [encode(random_frame(_rng)) for _ in range(500)]


@st.composite
def messages(draw):
    """Random bytes, or valid messages bit-flipped / truncated / extended, with or without a
    fixed-up CRC (so mutations reach the body parser). Mutations come from a drawn seed: few
    hypothesis draws per example keeps 10,000 examples fast."""
    how = draw(st.sampled_from(["random", "random-sealed", "flip", "truncate", "extend", "valid"]))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    if how == "random":
        return rng.randbytes(rng.randrange(129))
    if how == "random-sealed":
        return seal(rng.randrange(13), rng.randbytes(rng.randrange(129)))
    wire = bytearray(rng.choice(SAMPLE_WIRES))
    if how == "flip":
        for _ in range(rng.randint(1, 3)):
            bit = rng.randrange(len(wire) * 8)
            wire[bit // 8] ^= 1 << (bit % 8)
    elif how == "truncate":
        del wire[rng.randrange(len(wire)) :]
    elif how == "extend":
        wire += rng.randbytes(rng.randint(1, 16))
    if how != "valid" and len(wire) >= 8 and rng.random() < 0.5:
        wire = reseal(wire)
    return bytes(wire)


@settings(max_examples=1000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(frames)
def test_generated_frames_round_trip(frame):
    wire = encode(frame)
    assert decode(wire) == frame and encode(decode(wire)) == wire


@settings(max_examples=10_000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(messages())
def test_decode_fuzz_only_frame_error_or_exact_round_trip(data):
    try:
        frame = decode(data)
    except FrameError as e:
        assert "\n" not in str(e)
        return
    assert encode(frame) == data  # accepted means canonical
    assert decode(encode(frame)) == frame


def test_same_stream_means_same_id_content_length_and_config():
    """Bob lets a returning sender resume only for the very stream he holds (Hello.same_stream)."""
    base = Hello("s1", {"seed": 1}, {"arithmetic": "1"}, 100, bytes(32))
    assert base.same_stream(Hello("s1", {"seed": 1}, {"arithmetic": "other"}, 100, bytes(32)))
    for other in (Hello("s2", {"seed": 1}, {}, 100, bytes(32)), Hello("s1", {"seed": 2}, {}, 100, bytes(32)),
                  Hello("s1", {"seed": 1}, {}, 101, bytes(32)), Hello("s1", {"seed": 1}, {}, 100, bytes(31) + b"\1")):
        assert not base.same_stream(other)
