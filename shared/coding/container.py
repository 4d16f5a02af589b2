"""The file-mode container. Torch-free, so Bob can read the header before choosing his profile.

Format version 5:

    offset   size  field
    0        4     magic  b"MRSL"
    4        1     format version (FORMAT_VERSION: it changes whenever the twins' bits or this
                   layout do)
    5        4     header length H, u32 little-endian
    9        H     header: zlib-deflated UTF-8 JSON {config, fingerprint, length, sha256,
                   sync_every, digests_crc32, payload_bytes, payload_crc32}
    9+H      4     CRC32 of bytes 0 .. 9+H: covers the header, and through digests_crc32 and
                   payload_crc32 everything after it
    13+H     4*S   sync digests: the first DIGEST_PREFIX bytes of the weight digest after steps
                   0, k, 2k, ... (k = sync_every) and after the last step; CRC32 in digests_crc32
    ...      P     payload: the arithmetic-coded stream; CRC32 in payload_crc32

Versions 1 to 4 are refused by number: 1, 2 and 4 decode differently (4: before the portable
arithmetic of shared/core/portable.py), and 3 has no checksum over the digest table (a flipped
bit there showed only after decoding, as a divergence). Version 5 has version 4's layout.

Everything that can be checked without a model is checked in `parse`, in the order a user
would want to hear about it: is this our file at all, can this build read it, is it whole.
`parse` treats the blob as hostile: it raises FormatError or ConfigMismatch (never anything
else), and a header cannot make it (or the decoder after it) allocate more than the limits in
shared/config.py allow: the header inflates to at most MAX_HEADER_JSON bytes, the run
configuration is range-checked, and the declared length is capped at MAX_LENGTH.
"""
from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass

from ..core.config import MAX_LENGTH, RunConfig
from ..core.errors import FormatError
from ..core.layout import n_steps

MAGIC = b"MRSL"
FORMAT_VERSION = 5          # the twins' computation is part of the format; see the table above
DIGEST_PREFIX = 4                # bytes of each weight digest kept in the file
_FIXED = struct.Struct("<4sBI")
MAX_HEADER_JSON = 1 << 20        # inflated header bytes (a real one is ~1 KB): no zlib bombs
MAX_CONTAINER_BYTES = MAX_LENGTH + (MAX_LENGTH >> 3)   # the largest file a preset writes, with room


@dataclass
class Container:
    header: dict
    digests: list[str]           # hex prefixes, aligned with sync_steps(...)
    payload: bytes

    def to_bytes(self) -> bytes:
        table = b"".join(bytes.fromhex(d) for d in self.digests)
        header = dict(self.header, digests_crc32=zlib.crc32(table), payload_bytes=len(self.payload),
                      payload_crc32=zlib.crc32(self.payload))
        hjson = zlib.compress(json.dumps(header, sort_keys=True, separators=(",", ":")).encode(), 9)
        head = _FIXED.pack(MAGIC, FORMAT_VERSION, len(hjson)) + hjson
        head += struct.pack("<I", zlib.crc32(head))
        return head + table + self.payload



def parse(blob: bytes, name: str = "input") -> Container:
    if len(blob) < _FIXED.size or blob[:4] != MAGIC:
        raise FormatError(f"{name} is not a marslink file (no MRSL signature); was it made by 'alice compress'?")
    _, version, hlen = _FIXED.unpack_from(blob)
    if version != FORMAT_VERSION:
        raise FormatError(f"{name} is marslink format version {version}; this build reads version {FORMAT_VERSION} "
                          f"(use a matching marslink release)")
    end = _FIXED.size + hlen
    if len(blob) < end + 4:
        raise FormatError(f"{name} is truncated: the header needs {end + 4} bytes, the file has {len(blob)}")
    (crc,) = struct.unpack_from("<I", blob, end)
    if crc != zlib.crc32(blob[:end]):
        raise FormatError(f"{name} is corrupted: header checksum mismatch (bit flip or damaged copy)")
    header, config = _read_header(blob[_FIXED.size:end], name)
    n_sync = _n_sync(n_steps(header["length"], config.streams, config.model.chunk), header["sync_every"])
    declared = header["payload_bytes"]
    start = end + 4
    digests_end = start + n_sync * DIGEST_PREFIX
    have = len(blob) - digests_end
    if have < declared:
        raise FormatError(f"{name} is truncated: payload has {max(have, 0)} of {declared} bytes")
    if have > declared:
        raise FormatError(f"{name} has {have - declared} unexpected bytes after the payload (damaged or concatenated file)")
    if zlib.crc32(blob[start:digests_end]) != header["digests_crc32"]:
        raise FormatError(f"{name} is corrupted: sync digest table checksum mismatch (bit flip or damaged copy)")
    payload = blob[digests_end:]
    if zlib.crc32(payload) != header["payload_crc32"]:
        raise FormatError(f"{name} is corrupted: payload checksum mismatch (bit flip or damaged copy)")
    digests = [blob[i:i + DIGEST_PREFIX].hex() for i in range(start, digests_end, DIGEST_PREFIX)]
    return Container(header, digests, payload)


def _n_sync(n_steps: int, every: int) -> int:
    """len(sync_steps(n_steps, every)), without building the list."""
    return n_steps // every + 1 + (1 if n_steps % every else 0)


def _no_constants(name: str):
    raise ValueError(f"{name} is not allowed")


def _read_header(deflated: bytes, name: str) -> tuple[dict, RunConfig]:
    """Inflate (bounded), parse and type-check the header; FormatError / ConfigMismatch only."""
    def unreadable(why: str) -> FormatError:
        return FormatError(f"{name} has a header this build cannot read ({why}); "
                           f"was it written by a newer marslink?")
    try:
        inflater = zlib.decompressobj()
        text = inflater.decompress(deflated, MAX_HEADER_JSON + 1)
        if len(text) > MAX_HEADER_JSON or not inflater.eof:
            raise unreadable("header too large or incomplete")
        header = json.loads(text, parse_constant=_no_constants)
    except zlib.error:
        raise unreadable("damaged deflate stream") from None
    except (ValueError, RecursionError) as e:   # UnicodeDecodeError is a ValueError
        raise unreadable(e.__class__.__name__) from None
    if not isinstance(header, dict):
        raise unreadable("not a JSON object")
    fields = {"config": dict, "fingerprint": dict, "length": int, "sha256": str, "sync_every": int,
              "digests_crc32": int, "payload_bytes": int, "payload_crc32": int}
    for key, kind in fields.items():
        if key not in header:
            raise unreadable(f"no {key!r}")
        if type(header[key]) is not kind:
            raise unreadable(f"{key!r} is not {'an integer' if kind is int else 'a ' + kind.__name__}")
    config = RunConfig.from_dict(header["config"])   # types and sizes; ConfigMismatch names the field
    if not 0 <= header["length"] <= MAX_LENGTH:
        raise FormatError(f"{name} declares {header['length']:,} bytes of output; this build decodes at most "
                          f"{MAX_LENGTH:,}")
    if header["sync_every"] != config.sync_every:
        raise unreadable("'sync_every' differs from the run configuration's")
    if (not 0 <= header["payload_bytes"] or not 0 <= header["payload_crc32"] < 1 << 32
            or not 0 <= header["digests_crc32"] < 1 << 32):
        raise unreadable("payload size or a checksum out of range")
    if len(header["sha256"]) != 64 or header["sha256"].strip("0123456789abcdef"):
        raise unreadable("'sha256' is not 64 hex digits")
    return header, config
