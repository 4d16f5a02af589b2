"""The file-mode container. Torch-free, so Bob can read the header before choosing his profile.

    offset   size  field
    0        4     magic  b"MRSL"
    4        1     format version (1)
    5        4     header length H, u32 little-endian
    9        H     header: zlib-deflated UTF-8 JSON {config, fingerprint, length, sha256,
                   payload_bytes, payload_crc32, sync_every}
    9+H      4     CRC32 of bytes 0 .. 9+H
    13+H     4*S   sync digests: the first 4 bytes of the weight digest after steps
                   0, k, 2k, ... (k = sync_every) and after the last step
    ...      P     payload: the arithmetic-coded stream

Everything that can be checked without a model is checked in `parse`, in the order a user
would want to hear about it: is this our file at all, can this build read it, is it whole.
"""
from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass

from .errors import FormatError

MAGIC = b"MRSL"
FORMAT_VERSION = 1
DIGEST_PREFIX = 4                # bytes of each weight digest kept in the file
_FIXED = struct.Struct("<4sBI")


def sync_steps(n_steps: int, every: int) -> list[int]:
    """Steps after which a digest is recorded: 0 (initial weights), every k-th, and the last."""
    steps = list(range(0, n_steps + 1, every))
    if n_steps not in steps:
        steps.append(n_steps)
    return steps


@dataclass
class Container:
    header: dict
    digests: list[str]           # hex prefixes, aligned with sync_steps(...)
    payload: bytes

    def to_bytes(self) -> bytes:
        header = dict(self.header, payload_bytes=len(self.payload),
                      payload_crc32=zlib.crc32(self.payload))
        hjson = zlib.compress(json.dumps(header, sort_keys=True, separators=(",", ":")).encode(), 9)
        head = _FIXED.pack(MAGIC, FORMAT_VERSION, len(hjson)) + hjson
        head += struct.pack("<I", zlib.crc32(head))
        return head + b"".join(bytes.fromhex(d) for d in self.digests) + self.payload

    @property
    def header_bytes(self) -> int:
        return len(self.to_bytes()) - len(self.payload)


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
    try:
        header = json.loads(zlib.decompress(blob[_FIXED.size:end]))
        n_sync = len(sync_steps(_n_steps(header), header["sync_every"]))
        declared = int(header["payload_bytes"])
    except (ValueError, KeyError, TypeError, ZeroDivisionError, zlib.error) as e:
        raise FormatError(f"{name} has a header this build cannot read ({e.__class__.__name__}); "
                          f"was it written by a newer marslink?") from None
    start = end + 4
    digests_end = start + n_sync * DIGEST_PREFIX
    have = len(blob) - digests_end
    if have < declared:
        raise FormatError(f"{name} is truncated: payload has {max(have, 0)} of {declared} bytes")
    if have > declared:
        raise FormatError(f"{name} has {have - declared} unexpected bytes after the payload (damaged or concatenated file)")
    payload = blob[digests_end:]
    if zlib.crc32(payload) != header["payload_crc32"]:
        raise FormatError(f"{name} is corrupted: payload checksum mismatch (bit flip or damaged copy)")
    digests = [blob[i:i + DIGEST_PREFIX].hex() for i in range(start, digests_end, DIGEST_PREFIX)]
    return Container(header, digests, payload)


def _n_steps(header: dict) -> int:
    """Number of engine steps for this header; mirrors engine.Layout without importing torch."""
    length = int(header["length"])
    streams = int(header["config"]["streams"])
    chunk = int(header["config"]["model"]["chunk"])
    if length < 0 or streams < 1 or chunk < 1:
        raise ValueError("bad layout")
    row = -(-length // streams) if length else 0
    return -(-row // chunk)
