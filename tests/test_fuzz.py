"""Every parser of untrusted input, fuzzed: 10,000 generated bad inputs each, and the only way
out is a clean MarslinkError (one line) or a result that satisfies the parser's promises.

  container   shared.coding.container.parse: random bytes, bit flips, truncations, extensions,
              forged CRCs around hostile headers (wrong types, huge sizes, zlib bombs, deep
              JSON), and a few forged containers decoded all the way (shared.coding.codec.decompress)
  endpoint    shared.app.cli.check_endpoint: plain text is only ever allowed to a loopback address
  handshake   receiver.stream.check_hello: mutated run configurations and fingerprints

(The wire-frame decoder is fuzzed in tests/test_frames.py.)
Mutations come from one drawn seed per example, so 10,000 examples stay fast.
"""
import copy
import hashlib
import ipaddress
import json
import random
import struct
import time
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.frames import Hello
from shared.app.cli import check_endpoint
from shared.coding.container import DIGEST_PREFIX, FORMAT_VERSION, MAGIC, parse
from shared.core.config import MAX_LENGTH, PRESETS, RunConfig
from shared.core.errors import FormatError, MarslinkError
from shared.core.layout import sync_steps
from shared.texts import mission_log

FUZZ = settings(max_examples=10_000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
TINY = PRESETS["tiny"]
HOSTILE = [-1, 0, 1, 7, 2**31, 2**63, 2**64, 10**30, -(10**30), 0.5, 1e308, float("nan"), float("inf"),
           "", "x", "0" * 64, "tiny", None, True, False, [], {}, [1, 2], {"a": 1}, {"model": {}},
           [[[[[[[[[[1]]]]]]]]]], "é" * 300]


def one_line(e: BaseException) -> bool:
    return "\n" not in str(e) and len(str(e)) < 2000


def mutate_json(value, rng: random.Random, depth: int = 0):
    """A copy of a JSON value with one hostile change somewhere: replace, delete or add a key."""
    if isinstance(value, dict) and value and depth < 4 and rng.random() < 0.7:
        value = dict(value)
        key = rng.choice(sorted(value))
        how = rng.random()
        if how < 0.6:
            value[key] = mutate_json(value[key], rng, depth + 1)
        elif how < 0.8:
            del value[key]
        else:
            value[rng.choice(["extra", "seed", "model", "train", "config", "length"])] = rng.choice(HOSTILE)
        return value
    if isinstance(value, int) and not isinstance(value, bool) and rng.random() < 0.5:
        return value + rng.choice([-1, 1, -value, value, 2**40, -(2**40)])
    return copy.deepcopy(rng.choice(HOSTILE))


# -- the container ------------------------------------------------------------------------


def seal(deflated: bytes, rest: bytes = b"", version: int = FORMAT_VERSION) -> bytes:
    """A container around an arbitrary deflated header, with a correct header CRC (forged)."""
    head = struct.pack("<4sBI", MAGIC, version, len(deflated)) + deflated
    return head + struct.pack("<I", zlib.crc32(head)) + rest


def seal_header(header, rng: random.Random, digests: bytes, payload: bytes) -> bytes:
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return seal(zlib.compress(text, rng.choice([0, 1, 9])), digests + payload)


@pytest.fixture(scope="module")
def real():
    """A real container (tiny preset, ~300 bytes), its original and its parts."""
    from shared.coding.codec import compress
    data = mission_log(300)
    blob, _ = compress(data, TINY)
    c = parse(blob)
    return {"blob": blob, "data": data, "header": c.header, "payload": c.payload,
            "digests": b"".join(bytes.fromhex(d) for d in c.digests)}


ZLIB_BOMB = zlib.compress(b" " * (8 << 20), 9)          # 8 MiB of spaces in ~8 KB
DEEP_JSON = zlib.compress(b"[" * 200_000 + b"]" * 200_000, 9)


def container_case(real: dict, how: str, rng: random.Random) -> bytes:
    blob, header, digests, payload = real["blob"], real["header"], real["digests"], real["payload"]
    if how == "random":
        return rng.randbytes(rng.randrange(200))
    if how == "random-signed":
        return MAGIC + bytes([rng.choice([FORMAT_VERSION, rng.randrange(256)])]) + rng.randbytes(rng.randrange(200))
    if how in ("flip", "truncate", "extend"):
        b = bytearray(blob)
        if how == "flip":
            for _ in range(rng.randint(1, 3)):
                bit = rng.randrange(len(b) * 8)
                b[bit // 8] ^= 1 << (bit % 8)
        elif how == "truncate":
            del b[rng.randrange(len(b)):]
        else:
            b += rng.randbytes(rng.randint(1, 64))
        if rng.random() < 0.5 and len(b) > 9:              # forge the header CRC over the damage
            hlen = min(struct.unpack_from("<I", b, 5)[0], max(len(b) - 13, 0))
            b = bytearray(seal(bytes(b[9:9 + hlen]), bytes(b[13 + hlen:]), b[4]))
        return bytes(b)
    if how == "header":                                     # hostile header, every CRC right
        h = mutate_json(header, rng)
        if isinstance(h, dict) and rng.random() < 0.5:
            h = dict(h, payload_crc32=zlib.crc32(payload), payload_bytes=len(payload))
        return seal_header(h, rng, digests, payload)
    if how == "header-bytes":
        inner = rng.choice([rng.randbytes(rng.randrange(100)), zlib.compress(rng.randbytes(rng.randrange(100))),
                            zlib.compress(json.dumps(rng.choice(HOSTILE)).encode()), ZLIB_BOMB, DEEP_JSON,
                            zlib.compress(b'{"length": NaN}'), zlib.compress(b"\xff\xfe{}")])
        return seal(inner, rng.randbytes(rng.randrange(64)))
    if how == "payload":                                    # damaged payload behind a forged payload CRC
        p = bytearray(payload)
        for _ in range(rng.randint(1, 4)):
            p[rng.randrange(len(p))] = rng.randrange(256)
        if rng.random() < 0.3:
            p = p[:rng.randrange(len(p))]
        return seal_header(dict(header, payload_crc32=zlib.crc32(bytes(p)), payload_bytes=len(p)), rng,
                           digests, bytes(p))
    raise AssertionError(how)


CONTAINER_CASES = ["random", "random-signed", "flip", "truncate", "extend", "header", "header-bytes", "payload"]


@FUZZ
@given(seed=st.integers(0, 2**32 - 1))
def test_container_parse_fuzz_only_clean_errors(real, seed):
    rng = random.Random(seed)
    blob = container_case(real, rng.choice(CONTAINER_CASES), rng)
    started = time.perf_counter()
    try:
        c = parse(blob, "input")
    except MarslinkError as e:
        assert one_line(e)
        return
    finally:
        assert time.perf_counter() - started < 5, "parse must never hang"
    # accepted: everything decompress relies on holds
    config = RunConfig.from_dict(c.header["config"])
    assert 0 <= c.header["length"] <= MAX_LENGTH
    assert zlib.crc32(c.payload) == c.header["payload_crc32"] and len(c.payload) == c.header["payload_bytes"]
    assert zlib.crc32(b"".join(bytes.fromhex(d) for d in c.digests)) == c.header["digests_crc32"]
    row = -(-c.header["length"] // config.streams)
    assert len(c.digests) == len(sync_steps(-(-row // config.model.chunk), c.header["sync_every"]))


def test_hostile_headers_are_refused_with_clear_messages(real):
    """The cases the fuzzer found or must never find again, each with its message."""
    h, d, p = real["header"], real["digests"], real["payload"]
    rng = random.Random(0)

    def refused(blob) -> str:
        with pytest.raises(MarslinkError) as e:
            parse(blob, "f.mrs")
        return str(e.value)

    huge = dict(h, length=2**40)
    assert refused(seal_header(huge, rng, d, p)) == (
        f"f.mrs declares {2**40:,} bytes of output; this build decodes at most {MAX_LENGTH:,}")
    wide = dict(h, config=dict(h["config"], model=dict(h["config"]["model"], n_embd=10**9)))
    assert refused(seal_header(wide, rng, d, p)) == (
        "run configuration refused: model.n_embd = 1000000000 is outside 1..4096")
    typed = dict(h, config=dict(h["config"], streams="16"))
    assert refused(seal_header(typed, rng, d, p)) == "run configuration refused: streams must be an integer, not '16'"
    assert refused(seal(ZLIB_BOMB)) == ("f.mrs has a header this build cannot read (header too large or "
                                        "incomplete); was it written by a newer marslink?")
    assert "RecursionError" in refused(seal(DEEP_JSON))
    assert "'length' is not an integer" in refused(seal_header(dict(h, length=1e3), rng, d, p))
    assert "no 'sync_every'" in refused(seal_header({k: v for k, v in h.items() if k != "sync_every"}, rng, d, p))
    # a length that makes sync_steps() enormous: answered from arithmetic, at once
    many = dict(h, length=MAX_LENGTH, segment_size=MAX_LENGTH, config=dict(h["config"], sync_every=1, streams=1,
                                                  model=dict(h["config"]["model"], chunk=1)), sync_every=1)
    started = time.perf_counter()
    assert "is truncated" in refused(seal_header(many, rng, d, p))
    assert time.perf_counter() - started < 1


def test_a_header_deflated_against_another_dictionary_is_one_clean_error(real):
    """A build whose presets differ writes the same version number with another dictionary:
    zlib's dictionary check turns that into a plain error, never a misread header."""
    text = json.dumps(real["header"], sort_keys=True, separators=(",", ":")).encode()
    deflater = zlib.compressobj(9, zdict=b'{"config":{"model":{"chunk":16}}}')
    forged = seal(deflater.compress(text) + deflater.flush(), real["digests"] + real["payload"])
    with pytest.raises(FormatError) as e:
        parse(forged, "f.mrs")
    assert str(e.value) == ("f.mrs has a header this build cannot read (damaged deflate stream); "
                            "was it written by a newer marslink?")


def test_digest_table_is_covered_by_a_checksum(real):
    """A flipped bit in the sync digests is a corrupted file at parse time (format 4), not a
    divergence after decoding; a file of format 3 (no such checksum) is refused by number."""
    h, d, p = real["header"], bytearray(real["digests"]), real["payload"]
    for bit in (0, 7, len(d) * 8 - 1):
        flipped = bytearray(d)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(MarslinkError) as e:
            parse(seal_header(h, random.Random(bit), bytes(flipped), p), "f.mrs")
        assert str(e.value) == "f.mrs is corrupted: sync digest table checksum mismatch (bit flip or damaged copy)"
    old = bytearray(real["blob"])
    old[4] = 3
    with pytest.raises(MarslinkError) as e:
        parse(bytes(old), "f.mrs")
    assert str(e.value) == (f"f.mrs is marslink format version 3; this build reads version {FORMAT_VERSION} "
                            "(use a matching marslink release)")


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1))
def test_forged_containers_decode_only_to_clean_errors(real, seed):
    """Forged CRCs that reach the decoder: damaged payload, digests, length or checksum."""
    from shared.coding.codec import decompress
    rng = random.Random(seed)
    header, digests, payload = dict(real["header"]), bytearray(real["digests"]), bytearray(real["payload"])
    for _ in range(rng.randint(1, 3)):
        what = rng.choice(["payload", "digest", "length", "sha256"])
        if what == "payload":
            payload[rng.randrange(len(payload))] ^= 1 << rng.randrange(8)
        elif what == "digest":
            digests[rng.randrange(len(digests))] ^= 1 << rng.randrange(8)
        elif what == "length":
            header["length"] = rng.randrange(2 * len(real["data"]))
        else:
            header["sha256"] = rng.randbytes(32).hex()
    row = -(-header["length"] // TINY.streams)
    n_sync = len(sync_steps(-(-row // TINY.model.chunk), TINY.sync_every))
    digests = (bytes(digests) + rng.randbytes(64))[:n_sync * DIGEST_PREFIX]
    header.update(payload_crc32=zlib.crc32(bytes(payload)), payload_bytes=len(payload),
                  digests_crc32=zlib.crc32(digests))
    blob = seal_header(header, rng, digests, bytes(payload))
    try:
        data, _ = decompress(parse(blob))
    except MarslinkError as e:
        assert one_line(e)
        return
    assert hashlib.sha256(data).hexdigest() == header["sha256"]   # accepted only if verified


# -- the endpoint -------------------------------------------------------------------------

HOSTS = ["127.0.0.1", "127.9.9.9", "localhost", "[::1]", "::1", "10.1.2.3", "0.0.0.0", "*", "example.org",
         "127.0.0.1.evil.org", "localhost.evil.org", "127.0.0.1%lo", "[::ffff:127.0.0.1]", "eth0", "",
         "127.0.0.1:80", "[::1", "1.2.3.4;127.0.0.1", "１２７.0.0.1", "127.0.0.1\x00"]
PORTS = ["5555", "0", "65535", "65536", "99999999", "*", "", "-1", "５５５５", "²", " 80", "0x50"]


def random_text(rng: random.Random, n: int) -> str:
    alphabet = rng.choice([":/.[]*0123456789tcpilohs", "".join(map(chr, range(32, 127))), "\x00\n\t\u0661\uff15\u00b2é"])
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(n)))


def endpoint_case(rng: random.Random) -> str:
    how = rng.random()
    if how < 0.2:
        return random_text(rng, 40)
    transport = rng.choice(["tcp", "tcp", "tcp", "ipc", "udp", "TCP", "inproc", ""])
    host = rng.choice(HOSTS) if how < 0.8 else random_text(rng, 20)
    port = rng.choice(PORTS) if rng.random() < 0.8 else str(rng.randrange(-10, 10**6))
    return f"{transport}://{host}:{port}"


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@FUZZ
@given(seed=st.integers(0, 2**32 - 1))
def test_check_endpoint_fuzz_plain_text_stays_on_this_machine(seed):
    rng = random.Random(seed)
    endpoint, role = endpoint_case(rng), rng.choice(["bind", "connect"])
    insecure, encrypted = rng.random() < 0.25, rng.random() < 0.25
    try:
        out = check_endpoint(endpoint, insecure, role, encrypted=encrypted)
    except MarslinkError as e:
        assert one_line(e)
        return
    assert out == endpoint
    transport, rest = endpoint.split("://", 1)
    assert transport in ("tcp", "ipc")
    if transport == "tcp":
        host, _, port = rest.rpartition(":")
        assert (port == "*" and role == "bind") or (port.isascii() and port.isdigit() and int(port) <= 65535)
        if not (insecure or encrypted):
            assert loopback(host), f"plain text allowed to {host!r}"


# -- the handshake --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fingerprint():
    from shared.core.fingerprint import fingerprint
    return fingerprint()


@FUZZ
@given(seed=st.integers(0, 2**32 - 1))
def test_check_hello_fuzz_only_clean_errors(fingerprint, seed):
    from receiver.stream import check_hello
    rng = random.Random(seed)
    what = rng.choice(["config", "fingerprint", "both", "random"])
    config, fp = TINY.to_dict(), dict(fingerprint)
    if what in ("config", "both"):
        config = mutate_json(config, rng)
    if what in ("fingerprint", "both"):
        fp = mutate_json(fp, rng)
    if what == "random":
        config, fp = ({rng.choice(["model", "x", ""]): rng.choice(HOSTILE) for _ in range(rng.randrange(4))}
                      for _ in range(2))
    if not isinstance(config, dict) or not isinstance(fp, dict):
        config, fp = {"not": config}, {"a": fp}    # HELLO itself only carries JSON objects
    length = rng.choice([0, 1, 1000, MAX_LENGTH, MAX_LENGTH + 1, 2**64 - 1])
    hello = Hello("s", config, fp, length, bytes(32))
    try:
        theirs = check_hello(hello, TINY)
    except MarslinkError as e:
        assert one_line(e)
        return
    assert theirs == TINY and fp == fingerprint and length <= MAX_LENGTH


def test_the_sync_count_a_header_implies_is_the_number_of_sync_steps():
    """container.parse counts digests without building the list (a header may claim any length)."""
    from shared.core.layout import sync_count
    for steps in range(0, 120):
        for every in range(1, 20):
            assert sync_count(steps, every) == len(sync_steps(steps, every))
    assert sync_count(10**15, 1) == 10**15 + 1
