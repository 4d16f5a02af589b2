"""The file-mode container. Torch-free, so Bob can read the header before choosing his profile.

Format version 27:

    offset   size  field
    0        4     magic  b"MRSL"
    4        1     format version (FORMAT_VERSION: it changes whenever the twins' bits or this
                   layout do)
    5        4     header length H, u32 little-endian
    9        H     header: zlib-deflated UTF-8 JSON {config, fingerprint, length, sha256,
                   sync_every, digests_crc32, payload_bytes, payload_crc32, segment_size,
                   segments}; segments is the segment table, one row per segment:
                   [offset, length, payload bytes, payload CRC32, digests CRC32, SHA-256 (hex)
                   of the segment's original bytes]. Deflated with HEADER_DICTIONARY as zlib's
                   preset dictionary (version 12 on), whose Adler-32 the zlib stream names
    9+H      4     CRC32 of bytes 0 .. 9+H: covers the header, and through digests_crc32 and
                   payload_crc32 everything after it
    13+H     4*S   sync digests: the first DIGEST_PREFIX bytes of the weight digest after steps
                   0, k, 2k, ... (k = sync_every) and after the last step; CRC32 in digests_crc32
    ...      P     payload: the arithmetic-coded stream; CRC32 in payload_crc32

Segments (since version 6): the input is cut into N = ceil(length / segment_size) segments (one if
the input is empty), each coded by its own twin from the same configuration, independently of
the others. The digest table and the payload are the segments' own, laid end to end in segment
order; a one-segment file holds exactly the digests and payload one twin makes.

Versions 1 to 4 are refused by number: 1, 2 and 4 decode differently (4: before the portable
arithmetic of shared/core/portable.py), and 3 has no checksum over the digest table (a flipped
bit there showed only after decoding, as a divergence). Version 5 has version 4's layout; 6
predicts differently (the byte-tree mixer, structure contexts, UTF-8 words and the verified match
model of issue 23) and adds the segment table, so a version-5 file is refused by number too.
Version 7 has version 6's layout and predicts differently again (the nest structure context and
the match model's recovery after one wrong byte), so a version-6 file is refused by number.
Version 8 has the same layout again; its byte-tree mixer has a second weight set, chosen by the
kind of the byte before, and a final mixer, so a version-7 file is refused by number. Version 9
has it too, and two more count rows, the near structure contexts (each stream's own rows), so a
version-8 file is refused by number. Version 10 predicts as 9 does but codes a byte through
the byte-tree mixer as its 8 binary decisions, depth by depth across the streams (so Bob walks
the tree instead of computing all of it), so a version-9 file is refused by number. Version 11
has the same layout; its count mixer and byte-tree mixer start and learn differently (the
CountMixer's own optimizer group, the tree mixer's starting weights), so a version-10 file is
refused by number. Version 12 deflates its header with a preset
dictionary (HEADER_DICTIONARY: about 130 bytes instead of 440, 3% of a small file's output), and
its byte-tree mixer starts every count input on the counts, steps larger over a weight row's
first updates and chooses its weight sets by the kind of the byte before and by that byte, so a
version-11 file is refused by number. Version 13 adds four word rows (skip_word, word_mark,
mark_gap, line_column) to the presets with structure contexts, the last three read by the
byte-tree mixer alone, so a version-12 file is refused by number. Version 14 has the same
layout; its byte-tree mixer has a third weight set, chosen by the match model's run and the
kinds of the two bytes before, so a version-13 file is refused by number. Version 15 has the
same layout; `neural`'s network has its own learned memory of hashed contexts (and every
preset's header dictionary changes with it), so a version-14 file is refused by number.
Version 16 has the same layout; the presets with structure contexts have one more, the
indirect context (what followed the last byte the last two times), read by the byte-tree mixer
alone, so a version-15 file is refused by number. Version 17 has the same layout; its count
rows are kept fuller (a row may carry 255 less the number of streams into an update, not 127)
and a full row keeps three quarters of each count instead of half, so a version-16 file is
refused by number. Version 18 has the same layout; between words, its second word context is
the last two words (it was the last word alone, as the first one is), so a version-17 file is
refused by number. Version 19 has the same layout; its byte-tree mixer's weight rows take smaller
steps once they have learned, and every mixer and APM step is rounded to the nearest, so a
version-18 file is refused by number. Version 20 has the same layout; `default`'s network has
`neural`'s learned memory of the contexts of 2, 3, 4 and 6 bytes (2**16 vectors), so a
version-19 file is refused by number. Version 21 has the same layout; `tiny`, the tests' and
the lectures' preset, runs 32 streams of 8 bytes a step with a context of 8 (16 of 16 with a
context of 16 before: 1.3x as fast for the same bytes per step), and the header dictionary
names it so, so a version-20 file is refused by number. Version 22 has the same layout; order 3's
count table holds 2**16 rows at most (2**18 in `default` and `strong` before) and the four word
rows 2**16 each (2**14 before), the same memory spent where it pays, so a version-21 file is
refused by number. Version 23 has the same layout; `default` and `strong` count order 5 too (orders 4
and 5 at 2**17 rows, in order 4's memory before), step the hashed contexts' table at 4x the GPT's
rate (`train.hashed_lr`, 16x before) and keep a weight digest every 64 steps (32 before), and the
header dictionary names them so, so a version-22 file is refused by number. Version 24 has the
same layout; its byte-tree mixer has a fourth weight set, chosen per node by the reach (the
longest byte order and the word rows that have seen the node), one more input (the longest
order's), and two more APMs (on hashes of the node with the two and the three bytes before),
so a version-23 file is refused by number. Version 25 has the same layout; the first structure
context is the shape of the text before (the runs of byte classes; the two bytes before the
last one where the bytes are not text, as every earlier version's first structure context),
so a version-24 file is refused by number. Version 26 has the same layout; the nest context
knows the markup elements open (after "</" the innermost one, between tags the one the text is
in), so a version-25 file is refused by number. Version 27 has the same layout; the nest
context also knows, in a line's indentation, the line before's indentation and last mark, and
in an opening tag after an attribute's "=", that attribute's name, so a version-26 file is
refused by number.

Everything that can be checked without a model is checked in `parse`, in the order a user
would want to hear about it: is this our file at all, can this build read it, is it whole.
`parse` treats the blob as hostile: it raises FormatError or ConfigMismatch (never anything
else), and a header cannot make it (or the decoder after it) allocate more than the limits in
shared/core/config.py allow: the header inflates to at most MAX_HEADER_JSON bytes, the run
configuration is range-checked, and the declared length is capped at MAX_LENGTH.
"""
from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field

from ..core.config import MAX_LENGTH, PRESETS, RunConfig
from ..core.errors import FormatError, UsageError
from ..core.layout import n_steps, sync_count

MAGIC = b"MRSL"
FORMAT_VERSION = 27         # the twins' computation is part of the format; see the table above
DIGEST_PREFIX = 4                # bytes of each weight digest kept in the file
_FIXED = struct.Struct("<4sBI")
MAX_HEADER_JSON = 1 << 20        # inflated header bytes (a real one is ~1 KB): no zlib bombs
MAX_CONTAINER_BYTES = MAX_LENGTH + (MAX_LENGTH >> 3)   # the largest file a preset writes, with room
MIN_SEGMENT = 1 << 10            # smallest segment size (bytes)
MAX_SEGMENT = MAX_LENGTH         # largest: one segment holds the largest file
MAX_SEGMENTS = 4096              # rows of the segment table: ~110 bytes of header JSON each
DEFAULT_SEGMENT = 16 << 20       # alice compress's --segment; why this size: docs/segments.md


def _json(header: dict) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def _header_dictionary() -> bytes:
    """zlib's preset dictionary for the header: a blank header of every preset, `default` last
    (deflate's nearest matches are the cheapest). Most of a header is the run configuration,
    which is then a few back-references. It is part of the format: a preset's change changes it,
    and tests/test_roundtrip.py pins its Adler-32 to FORMAT_VERSION."""
    blank = {"digests_crc32": 0, "fingerprint": {"arithmetic": "", "canary": ""}, "length": 0, "payload_bytes": 0,
             "payload_crc32": 0, "segment_size": DEFAULT_SEGMENT, "segments": [[0, 0, 0, 0, 0, ""]], "sha256": ""}
    names = sorted(PRESETS, key=lambda name: name == "default")
    return b"".join(_json(dict(blank, config=PRESETS[n].to_dict(), sync_every=PRESETS[n].sync_every)) for n in names)


HEADER_DICTIONARY = _header_dictionary()


@dataclass(frozen=True)
class Segment:
    """One segment's row of the segment table: where its bytes go, how many coded bytes it has,
    and the checks a worker can apply to its part alone."""
    offset: int
    length: int
    payload_bytes: int
    payload_crc32: int
    digests_crc32: int
    sha256: str                  # hex, of the segment's original bytes

    def row(self) -> list:
        return [self.offset, self.length, self.payload_bytes, self.payload_crc32, self.digests_crc32, self.sha256]


def segment_count(length: int, segment_size: int) -> int:
    """Segments an input of `length` bytes is cut into: ceil(length / size), and one if empty."""
    return max(1, -(-length // segment_size))


def check_plan(length: int, segment_size: int) -> None:
    """Refuse, before any work, an input that no receiver would decode: too long, or cut into
    more segments than a file may hold."""
    if length > MAX_LENGTH:
        raise UsageError(f"input is {length:,} bytes; marslink codes at most {MAX_LENGTH:,} per file")
    count = segment_count(length, segment_size)
    if count > MAX_SEGMENTS:
        least = -(-length // MAX_SEGMENTS)
        raise UsageError(f"--segment {segment_size:,} cuts this {length:,}-byte input into {count:,} segments, "
                         f"more than {MAX_SEGMENTS:,}; give --segment {-(-least // 1024)}K or more")


@dataclass
class Container:
    header: dict
    digests: list[str]           # hex prefixes, aligned with sync_steps(...)
    payload: bytes
    config: RunConfig | None = None   # header["config"] as parse() checked it; None: built in memory
    segments: list[Segment] = field(default_factory=list)   # empty: one segment, the whole input

    def to_bytes(self) -> bytes:
        table = b"".join(bytes.fromhex(d) for d in self.digests)
        segments = self.segments or [Segment(0, self.header["length"], len(self.payload), zlib.crc32(self.payload),
                                             zlib.crc32(table), self.header["sha256"])]
        header = dict(self.header, digests_crc32=zlib.crc32(table), payload_bytes=len(self.payload),
                      payload_crc32=zlib.crc32(self.payload), segments=[s.row() for s in segments])
        header.setdefault("segment_size", max(self.header["length"], DEFAULT_SEGMENT))   # as alice's default
        deflater = zlib.compressobj(9, zdict=HEADER_DICTIONARY)
        hjson = deflater.compress(_json(header)) + deflater.flush()
        head = _FIXED.pack(MAGIC, FORMAT_VERSION, len(hjson)) + hjson
        head += struct.pack("<I", zlib.crc32(head))
        return head + table + self.payload



def parse(blob: bytes, name: str = "input") -> Container:
    if blob[:4] != MAGIC[:len(blob)] or not blob:
        raise FormatError(f"{name} is not a marslink file (no MRSL signature); was it made by 'alice compress'?")
    if len(blob) < _FIXED.size:
        raise FormatError(f"{name} is truncated: it has only {len(blob)} of a marslink header's first "
                          f"{_FIXED.size} bytes")
    _, version, hlen = _FIXED.unpack_from(blob)
    if version != FORMAT_VERSION:
        raise FormatError(f"{name} is marslink format version {version}; this build reads version {FORMAT_VERSION} "
                          f"(use a matching marslink release)")
    end = _FIXED.size + hlen
    if hlen > MAX_HEADER_JSON:                      # deflated, it is smaller still: no header is this long
        raise FormatError(f"{name} is corrupted: its header length field says {hlen:,} bytes, more than any header "
                          f"(bit flip or damaged copy)")
    if len(blob) < end + 4:
        raise FormatError(f"{name} is truncated: the header needs {end + 4} bytes, the file has {len(blob)}")
    (crc,) = struct.unpack_from("<I", blob, end)
    if crc != zlib.crc32(blob[:end]):
        raise FormatError(f"{name} is corrupted: header checksum mismatch (bit flip or damaged copy)")
    header, config = _read_header(blob[_FIXED.size:end], name)
    lengths = _segment_lengths(header, name)
    n_sync = sum(sync_count(n_steps(n, config.streams, config.model.chunk), header["sync_every"]) for n in lengths)
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
    segments = _read_segments(header, lengths, name)
    _check_segments(segments, config, header["sync_every"], blob[start:digests_end], payload, name)
    return Container(header, digests, payload, config, segments)


def _damaged(name: str, why: str) -> FormatError:
    return FormatError(f"{name} has a damaged segment table ({why}); the file is corrupted")


def _segment_lengths(header: dict, name: str) -> list[int]:
    """The segments' lengths, from the length and segment size alone (checked, bounded)."""
    size = header.get("segment_size")
    if type(size) is not int or not MIN_SEGMENT <= size <= MAX_SEGMENT:
        raise _damaged(name, f"segment size {str(size)[:40]} is not a whole number in {MIN_SEGMENT:,}..{MAX_SEGMENT:,}")
    count = segment_count(header["length"], size)
    if count > MAX_SEGMENTS:
        raise _damaged(name, f"{count:,} segments; this build reads at most {MAX_SEGMENTS:,}")
    return [min(size, header["length"] - i * size) for i in range(count)]


def _read_segments(header: dict, lengths: list[int], name: str) -> list[Segment]:
    """The segment table's rows: each must sit where `segment_size` puts it and be of the right
    types, so a crafted table cannot make a decoder write outside the output."""
    rows, size = header.get("segments"), header["segment_size"]
    if type(rows) is not list or len(rows) != len(lengths):
        raise _damaged(name, f"{len(rows) if type(rows) is list else 'no'} rows for {len(lengths):,} segments")
    segments = []
    for i, (row, n) in enumerate(zip(rows, lengths)):
        if (type(row) is not list or len(row) != 6 or any(type(v) is not int or v < 0 for v in row[:5])
                or row[3] >= 1 << 32 or row[4] >= 1 << 32 or type(row[5]) is not str or len(row[5]) != 64
                or row[5].strip("0123456789abcdef")):
            raise _damaged(name, f"row {i} is not [offset, length, payload bytes, CRC32, CRC32, SHA-256]")
        if row[0] != i * size or row[1] != n:
            raise _damaged(name, f"segment {i} at {row[0]:,}+{row[1]:,}, expected {i * size:,}+{n:,}")
        segments.append(Segment(*row))
    if sum(s.payload_bytes for s in segments) != header["payload_bytes"]:
        raise _damaged(name, "segment payload sizes do not add up to the payload")
    return segments


def _check_segments(segments: list[Segment], config: RunConfig, every: int, digests: bytes, payload: bytes,
                    name: str) -> None:
    """Each segment's slice of the digest table and payload against its row's CRC32s."""
    d = p = 0
    for i, s in enumerate(segments):
        n = sync_count(n_steps(s.length, config.streams, config.model.chunk), every) * DIGEST_PREFIX
        if (zlib.crc32(digests[d:d + n]) != s.digests_crc32
                or zlib.crc32(payload[p:p + s.payload_bytes]) != s.payload_crc32):
            raise FormatError(f"{name} is corrupted: segment {i} checksum mismatch (bit flip or damaged copy)")
        d, p = d + n, p + s.payload_bytes


def segment_slices(container: Container, config: RunConfig) -> list[tuple[Segment, list[str], bytes]]:
    """Each segment with its own digests and payload, cut out of the container's tables."""
    out, d, p = [], 0, 0
    for s in container.segments:
        n = sync_count(n_steps(s.length, config.streams, config.model.chunk), container.header["sync_every"])
        out.append((s, container.digests[d:d + n], container.payload[p:p + s.payload_bytes]))
        d, p = d + n, p + s.payload_bytes
    return out



def _no_constants(name: str):
    raise ValueError(f"{name} is not allowed")


def _read_header(deflated: bytes, name: str) -> tuple[dict, RunConfig]:
    """Inflate (bounded), parse and type-check the header; FormatError / ConfigMismatch only."""
    def unreadable(why: str) -> FormatError:
        return FormatError(f"{name} has a header this build cannot read ({why}); "
                           f"was it written by a newer marslink?")
    try:
        inflater = zlib.decompressobj(zdict=HEADER_DICTIONARY)
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


def size_stats(compressed_bytes: int, payload_bytes: int, input_bytes: int) -> dict:
    """The sizes every --stats-json reports, compress and decompress alike; bits_per_byte is
    null for an empty input (it has no such ratio)."""
    return {"compressed_bytes": compressed_bytes, "header_bytes": compressed_bytes - payload_bytes,
            "bits_per_byte": compressed_bytes * 8 / input_bytes if input_bytes else None}
