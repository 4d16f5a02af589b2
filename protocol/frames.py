"""Marslink wire format: one message = one frame, versioned, checksummed, canonical.

Every message on the wire is

    | magic "ML" (2) | version u8 | kind u8 | body ... | crc32 u32 |

all little-endian, where crc32 = zlib.crc32 of everything before it. Each frame
kind below documents its body layout; variable fields are length-prefixed.

    encode(frame) -> bytes          # raises FrameError for invalid/oversized frames
    decode(data)  -> frame          # raises FrameError (and only FrameError) for anything bad

The encoding is canonical: encode(decode(data)) == data for every accepted
message (JSON must be in our compact sorted form, floats must be finite), so
there is exactly one byte string per frame and fuzzing can check round trips.
"""

from __future__ import annotations

import enum
import json
import math
import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import ClassVar, Union

PROTOCOL_VERSION = 27       # as FORMAT_VERSION: a version-1 to -7, -9 to -16, -18 to -26 peer's twin computes differently,
                            # a version-8 peer codes the same predictions differently (bytes whole, not bit by bit),
                            # a version-17 Alice takes Bob's ERROR say-hello as the end of her stream
MAGIC = b"ML"
MAX_MESSAGE_BYTES = 1 << 20  # 1 MiB: the one place the message size limit lives

HEADER = struct.Struct("<2sBB")  # magic, version, kind
CRC = struct.Struct("<I")
U8, U16, U32 = struct.Struct("<B"), struct.Struct("<H"), struct.Struct("<I")

MAX_STREAM_ID_CHARS = 64
MAX_DIGEST_BYTES = 32
MAX_HEX_DIGEST_CHARS = 64
MAX_ERROR_CODE_CHARS = 32
MAX_ERROR_MESSAGE_CHARS = 1000
ONE_LINE = r"[^\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]*"  # no char that str.splitlines() breaks on


class FrameError(ValueError):
    """Anything wrong with a message: the one exception encode/decode raise."""


class Kind(enum.IntEnum):
    HELLO = 1
    WELCOME = 2
    DATA = 3
    SYNC = 4
    END = 5
    ACK = 6
    DONE = 7
    HEARTBEAT = 8
    ERROR = 9


# ----------------------------------------------------------------------------
# field checks, shared by construction and decoding (decode builds frames
# through their constructors, so a frame object is always a valid frame)


def _u64(kind: Kind, name: str, v: int) -> None:
    if not isinstance(v, int) or not 0 <= v < 1 << 64:
        raise FrameError(f"{kind.name} {name} must be an integer in [0, 2**64), got {v!r}")


def _u32(kind: Kind, name: str, v: int) -> None:
    if not isinstance(v, int) or not 0 <= v < 1 << 32:
        raise FrameError(f"{kind.name} {name} must be an integer in [0, 2**32), got {v!r}")


def _sha256(kind: Kind, name: str, v: bytes) -> None:
    if not isinstance(v, bytes) or len(v) != 32:
        raise FrameError(f"{kind.name} {name} must be 32 bytes")


def _text(kind: Kind, name: str, v: str, max_chars: int, pattern: str | None = None) -> None:
    if not isinstance(v, str) or len(v) > max_chars:
        raise FrameError(f"{kind.name} {name} must be a str of at most {max_chars} chars")
    if pattern is not None and not re.fullmatch(pattern, v):
        raise FrameError(f"{kind.name} {name} {v[:80]!r} does not match {pattern}")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise FrameError(f"{kind.name} {name} is not encodable as UTF-8") from None


def _stream_id(kind: Kind, v: str) -> None:
    """A stream id is drawn on both sides' displays: printable text only. A control, format or
    line-separator character (U+2028, a right-to-left override) could forge or hide a display
    line, and a byte that is not text (a surrogate) cannot be sent as UTF-8."""
    _text(kind, "stream_id", v, MAX_STREAM_ID_CHARS)
    if not v or not v.isprintable():
        raise FrameError(f"{kind.name} stream_id {v[:80]!r} must be 1 or more printable characters")


def _json_text(kind: Kind, name: str, v: dict) -> bytes:
    """Canonical JSON bytes of a dict; refuses anything that would not survive a round trip."""
    if not isinstance(v, dict):
        raise FrameError(f"{kind.name} {name} must be a dict")
    try:
        text = json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        ok = json.loads(text) == v
        raw = text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as e:
        raise FrameError(f"{kind.name} {name} is not JSON-serializable: {e}") from None
    if not ok:
        raise FrameError(f"{kind.name} {name} does not survive a JSON round trip (tuples? non-str keys?)")
    return raw


def one_line(text: str, limit: int = MAX_ERROR_MESSAGE_CHARS) -> str:
    """Squash arbitrary text (e.g. str(exception)) into a valid ERROR message."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------
# byte-level reader/writer: bounds-checked, so decoding never over-reads or
# allocates more than the message itself


class _Reader:
    def __init__(self, kind: Kind, body: memoryview):
        self.kind, self.buf, self.pos = kind, body, 0

    def take(self, n: int, what: str) -> bytes:
        left = len(self.buf) - self.pos
        if n > left:
            raise FrameError(f"truncated {self.kind.name} frame: {what} needs {n} bytes, {left} left")
        out = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return out

    def unpack(self, st: struct.Struct, what: str) -> tuple:
        return st.unpack(self.take(st.size, what))

    def blob(self, prefix: struct.Struct, what: str) -> bytes:
        (n,) = self.unpack(prefix, f"{what} length")
        return self.take(n, what)

    def text(self, what: str) -> str:
        try:
            return self.blob(U16, what).decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError(f"{self.kind.name} {what} is not valid UTF-8") from None

    def json(self, what: str) -> dict:
        raw = self.blob(U32, what)
        try:
            value = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
        except UnicodeDecodeError:
            raise FrameError(f"{self.kind.name} {what} is not valid UTF-8") from None
        except (ValueError, RecursionError) as e:
            raise FrameError(f"{self.kind.name} {what} is not valid JSON: {one_line(e, 200)}") from None
        if not isinstance(value, dict):
            raise FrameError(f"{self.kind.name} {what} must be a JSON object")
        try:
            canonical = _json_text(self.kind, what, value) == raw
        except FrameError:
            canonical = False
        if not canonical:
            raise FrameError(f"{self.kind.name} {what} is not canonical JSON")
        return value

    def end(self) -> None:
        extra = len(self.buf) - self.pos
        if extra:
            raise FrameError(f"{self.kind.name} frame has {extra} bytes of trailing garbage")


def _no_constants(name: str):
    raise ValueError(f"{name} is not allowed")


class _Writer:
    def __init__(self, kind: Kind):
        self.kind, self.parts = kind, [HEADER.pack(MAGIC, PROTOCOL_VERSION, kind)]

    def pack(self, st: struct.Struct, *values) -> None:
        self.parts.append(st.pack(*values))

    def blob(self, prefix: struct.Struct, what: str, data: bytes) -> None:
        if len(data) >= 1 << (8 * prefix.size):
            raise FrameError(f"{self.kind.name} {what} of {len(data)} bytes is too long")
        self.parts += [prefix.pack(len(data)), data]

    def text(self, what: str, s: str) -> None:
        self.blob(U16, what, s.encode("utf-8"))

    def json(self, what: str, v: dict) -> None:
        self.blob(U32, what, _json_text(self.kind, what, v))


# ----------------------------------------------------------------------------
# the frames. Each class: fields, checks, and its body layout in _put/_get.


@dataclass(frozen=True)
class Hello:
    """Alice -> Bob: 'here is a stream; this is how I'll code it'.

    Body: stream_id (u16 len + UTF-8) | total_length u64 | sha256 32s |
          config (u32 len + JSON) | fingerprint (u32 len + JSON).
    protocol_version is the header's version byte (decode rejects any other).
    """

    KIND: ClassVar[Kind] = Kind.HELLO
    FIXED: ClassVar[struct.Struct] = struct.Struct("<Q32s")
    stream_id: str
    config: dict
    fingerprint: dict
    total_length: int
    sha256: bytes
    protocol_version: int = field(default=PROTOCOL_VERSION, init=False)

    def same_stream(self, other: "Hello") -> bool:
        """The same stream coded the same way: a restarted Alice, who may resume."""
        return (self.stream_id, self.sha256, self.total_length, self.config) == \
            (other.stream_id, other.sha256, other.total_length, other.config)

    def __post_init__(self):
        _stream_id(self.KIND, self.stream_id)
        for name in ("config", "fingerprint"):
            if not isinstance(getattr(self, name), dict):
                raise FrameError(f"HELLO {name} must be a dict")
        _u64(self.KIND, "total_length", self.total_length)
        _sha256(self.KIND, "sha256", self.sha256)

    def _put(self, w: _Writer) -> None:
        w.text("stream_id", self.stream_id)
        w.pack(self.FIXED, self.total_length, self.sha256)
        w.json("config", self.config)
        w.json("fingerprint", self.fingerprint)

    @classmethod
    def _get(cls, r: _Reader) -> Hello:
        stream_id = r.text("stream_id")
        total_length, sha256 = r.unpack(cls.FIXED, "total_length+sha256")
        config, fingerprint = r.json("config"), r.json("fingerprint")
        return cls(stream_id, config, fingerprint, total_length, sha256)


@dataclass(frozen=True)
class Welcome:
    """Bob -> Alice: handshake accepted; start sending at next_seq (0 for a new session).

    resume_offset is how many bytes of the coded stream Bob already holds (0 for a new
    stream): Alice resumes by offset and never resends them.

    Body: stream_id (u16 len + UTF-8) | next_seq u64 | resume_offset u64.
    """

    KIND: ClassVar[Kind] = Kind.WELCOME
    FIXED: ClassVar[struct.Struct] = struct.Struct("<QQ")
    stream_id: str
    next_seq: int = 0
    resume_offset: int = 0

    def __post_init__(self):
        _stream_id(self.KIND, self.stream_id)
        _u64(self.KIND, "next_seq", self.next_seq)
        _u64(self.KIND, "resume_offset", self.resume_offset)

    def _put(self, w: _Writer) -> None:
        w.text("stream_id", self.stream_id)
        w.pack(self.FIXED, self.next_seq, self.resume_offset)

    @classmethod
    def _get(cls, r: _Reader) -> Welcome:
        stream_id = r.text("stream_id")
        next_seq, resume_offset = r.unpack(cls.FIXED, "next_seq+resume_offset")
        return cls(stream_id, next_seq, resume_offset)


@dataclass(frozen=True)
class Data:
    """Alice -> Bob: coded bytes. This payload finished coding tokens [token_start, token_end)
    and sits at byte_offset in the coded stream.

    Body: seq u64 | token_start u64 | token_end u64 | byte_offset u64 | payload (u32 len + bytes).
    """

    KIND: ClassVar[Kind] = Kind.DATA
    FIXED: ClassVar[struct.Struct] = struct.Struct("<QQQQ")
    seq: int
    token_start: int
    token_end: int
    byte_offset: int
    payload: bytes

    def __post_init__(self):
        for name in ("seq", "token_start", "token_end", "byte_offset"):
            _u64(self.KIND, name, getattr(self, name))
        if self.token_end < self.token_start:
            raise FrameError(f"DATA frame seq {self.seq} has token_end {self.token_end} < token_start {self.token_start}")
        if not isinstance(self.payload, bytes):
            raise FrameError("DATA payload must be bytes")

    def _put(self, w: _Writer) -> None:
        w.pack(self.FIXED, self.seq, self.token_start, self.token_end, self.byte_offset)
        w.blob(U32, "payload", self.payload)

    @classmethod
    def _get(cls, r: _Reader) -> Data:
        seq, token_start, token_end, byte_offset = r.unpack(cls.FIXED, "seq+tokens+offset")
        return cls(seq, token_start, token_end, byte_offset, r.blob(U32, "payload"))


@dataclass(frozen=True)
class Sync:
    """Alice -> Bob: 'after training step `step` my weights hash to `digest`'. Shares DATA's
    seq space so it arrives exactly where it belongs in the stream.

    Body: seq u64 | step u64 | digest (u8 len + bytes, <= 32).
    """

    KIND: ClassVar[Kind] = Kind.SYNC
    FIXED: ClassVar[struct.Struct] = struct.Struct("<QQ")
    seq: int
    step: int
    digest: bytes

    def __post_init__(self):
        _u64(self.KIND, "seq", self.seq)
        _u64(self.KIND, "step", self.step)
        if not isinstance(self.digest, bytes) or len(self.digest) > MAX_DIGEST_BYTES:
            raise FrameError(f"SYNC digest must be at most {MAX_DIGEST_BYTES} bytes")

    def _put(self, w: _Writer) -> None:
        w.pack(self.FIXED, self.seq, self.step)
        w.blob(U8, "digest", self.digest)

    @classmethod
    def _get(cls, r: _Reader) -> Sync:
        seq, step = r.unpack(cls.FIXED, "seq+step")
        return cls(seq, step, r.blob(U8, "digest"))


@dataclass(frozen=True)
class End:
    """Alice -> Bob: the stream is over; last in-order frame.

    Body: seq u64 | total_payload_bytes u64 | sha256 32s (of the original file).
    """

    KIND: ClassVar[Kind] = Kind.END
    FIXED: ClassVar[struct.Struct] = struct.Struct("<QQ32s")
    seq: int
    total_payload_bytes: int
    sha256: bytes

    def __post_init__(self):
        _u64(self.KIND, "seq", self.seq)
        _u64(self.KIND, "total_payload_bytes", self.total_payload_bytes)
        _sha256(self.KIND, "sha256", self.sha256)

    def _put(self, w: _Writer) -> None:
        w.pack(self.FIXED, self.seq, self.total_payload_bytes, self.sha256)

    @classmethod
    def _get(cls, r: _Reader) -> End:
        return cls(*r.unpack(cls.FIXED, "seq+total_payload_bytes+sha256"))


@dataclass(frozen=True)
class Ack:
    """Bob -> Alice: 'I have everything below acked_seq; you may send up to acked_seq + credit'.

    Body: acked_seq u64 | credit u32.
    """

    KIND: ClassVar[Kind] = Kind.ACK
    FIXED: ClassVar[struct.Struct] = struct.Struct("<QI")
    acked_seq: int
    credit: int

    def __post_init__(self):
        _u64(self.KIND, "acked_seq", self.acked_seq)
        _u32(self.KIND, "credit", self.credit)

    def _put(self, w: _Writer) -> None:
        w.pack(self.FIXED, self.acked_seq, self.credit)

    @classmethod
    def _get(cls, r: _Reader) -> Ack:
        return cls(*r.unpack(cls.FIXED, "acked_seq+credit"))


@dataclass(frozen=True)
class Done:
    """Bob -> Alice: decoded and verified; here is what I got.

    Body: sha256 32s | final_digest (u16 len + lowercase hex, <= 64 chars).
    """

    KIND: ClassVar[Kind] = Kind.DONE
    FIXED: ClassVar[struct.Struct] = struct.Struct("<32s")
    sha256: bytes
    final_digest: str

    def __post_init__(self):
        _sha256(self.KIND, "sha256", self.sha256)
        _text(self.KIND, "final_digest", self.final_digest, MAX_HEX_DIGEST_CHARS, r"[0-9a-f]*")

    def _put(self, w: _Writer) -> None:
        w.pack(self.FIXED, self.sha256)
        w.text("final_digest", self.final_digest)

    @classmethod
    def _get(cls, r: _Reader) -> Done:
        (sha256,) = r.unpack(cls.FIXED, "sha256")
        return cls(sha256, r.text("final_digest"))


@dataclass(frozen=True)
class Heartbeat:
    """Either way: 'still here' when there is nothing else to say.

    Body: sent_at f64 (sender's monotonic clock; finite).
    """

    KIND: ClassVar[Kind] = Kind.HEARTBEAT
    FIXED: ClassVar[struct.Struct] = struct.Struct("<d")
    sent_at: float

    def __post_init__(self):
        if not isinstance(self.sent_at, (int, float)) or not math.isfinite(self.sent_at):
            raise FrameError("HEARTBEAT sent_at must be a finite number")

    def _put(self, w: _Writer) -> None:
        w.pack(self.FIXED, self.sent_at)

    @classmethod
    def _get(cls, r: _Reader) -> Heartbeat:
        return cls(*r.unpack(cls.FIXED, "sent_at"))


@dataclass(frozen=True)
class Error:
    """Either way: 'I am giving up, and here is why'. The receiver raises PeerError.

    Body: code (u16 len + ASCII [A-Za-z0-9._-], <= 32) | message (u16 len + UTF-8, one line, <= 1000 chars).
    """

    KIND: ClassVar[Kind] = Kind.ERROR
    code: str
    message: str

    def __post_init__(self):
        _text(self.KIND, "code", self.code, MAX_ERROR_CODE_CHARS, r"[A-Za-z0-9._-]+")
        _text(self.KIND, "message", self.message, MAX_ERROR_MESSAGE_CHARS, ONE_LINE)

    def _put(self, w: _Writer) -> None:
        w.text("code", self.code)
        w.text("message", self.message)

    @classmethod
    def _get(cls, r: _Reader) -> Error:
        return cls(r.text("code"), r.text("message"))


Frame = Union[Hello, Welcome, Data, Sync, End, Ack, Done, Heartbeat, Error]
SEQUENCED = (Data, Sync, End)  # frames in the ordered, acknowledged seq space
FRAME_TYPES = {cls.KIND: cls for cls in (Hello, Welcome, Data, Sync, End, Ack, Done, Heartbeat, Error)}

# the largest DATA payload that still fits in one message
MAX_PAYLOAD_BYTES = MAX_MESSAGE_BYTES - HEADER.size - Data.FIXED.size - U32.size - CRC.size


# ----------------------------------------------------------------------------


def encode(frame: Frame) -> bytes:
    """Frame -> message bytes. Raises FrameError if it would exceed MAX_MESSAGE_BYTES."""
    if type(frame) not in FRAME_TYPES.values():
        raise FrameError(f"cannot encode {type(frame).__name__}; not a marslink frame")
    w = _Writer(frame.KIND)
    frame._put(w)
    msg = b"".join(w.parts)
    if len(msg) + CRC.size > MAX_MESSAGE_BYTES:
        raise FrameError(
            f"{frame.KIND.name} frame of {len(msg) + CRC.size} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit"
        )
    return msg + CRC.pack(zlib.crc32(msg))


def decode(data: bytes) -> Frame:
    """Message bytes -> Frame. Raises FrameError (one line) for anything malformed."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FrameError(f"expected bytes, got {type(data).__name__}")
    n = data.nbytes if isinstance(data, memoryview) else len(data)
    if n > MAX_MESSAGE_BYTES:  # before any other work
        raise FrameError(f"message of {n} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    data = memoryview(data.tobytes() if isinstance(data, memoryview) else data)
    if n < HEADER.size + CRC.size:
        raise FrameError(f"message of {n} bytes is too short to be a marslink message")
    magic, version, kind_byte = HEADER.unpack(data[: HEADER.size])
    if magic != MAGIC:
        raise FrameError("not a marslink message")
    if version != PROTOCOL_VERSION:
        raise FrameError(f"peer speaks protocol version {version}; this build speaks {PROTOCOL_VERSION}")
    cls = FRAME_TYPES.get(kind_byte)
    body = data[HEADER.size : n - CRC.size]
    (crc,) = CRC.unpack(data[n - CRC.size :])
    if zlib.crc32(data[: n - CRC.size]) != crc:
        if cls is None:
            raise FrameError("CRC mismatch in message")
        where = f"CRC mismatch in {cls.KIND.name} frame"
        if cls in SEQUENCED and len(body) >= 8:
            where += f" seq {struct.unpack_from('<Q', body)[0]}"
        raise FrameError(where)
    if cls is None:
        raise FrameError(f"unknown frame kind {kind_byte}")
    r = _Reader(cls.KIND, body)
    frame = cls._get(r)
    r.end()
    return frame
