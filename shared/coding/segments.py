"""Segment-parallel file mode: the input cut into segments, each coded by its own twin.

A segment is exactly a one-twin file (codec.compress / codec.decompress on its bytes, with the
same configuration and seed), so the one path that makes and checks a twin's output is the
only one; this module cuts, and puts the segments' digests and payloads into one container
(container.py's segment table). Which process or machine codes a segment never changes its
bits: a twin sees only its own segment. Who runs the segments is shared/app/parallel.py's job.

Torch-free at import: the parent of `--jobs` workers only cuts, assembles and checks, so it
never loads torch (seconds of start-up on the critical path); `codec` loads where a twin runs.
"""
from __future__ import annotations

import hashlib
import time
import zlib
from dataclasses import dataclass

from ..core.config import RunConfig
from ..core.errors import ChecksumError, ProfileError
from .container import Container, DIGEST_PREFIX, Segment, parse, segment_count, segment_slices, size_stats


@dataclass
class Coded:
    """One segment's share of the file, as a worker hands it back (picklable)."""
    index: int
    digests: list[str]           # hex prefixes, DIGEST_PREFIX bytes each
    payload: bytes
    stats: dict                  # codec.run_stats of the segment's twin
    fingerprint: dict            # the arithmetic that coded it (the header records it)


@dataclass
class Decoded:
    """One segment decoded and checked, as a worker hands it back."""
    index: int
    data: bytes
    stats: dict


def plan(length: int, segment_size: int) -> list[tuple[int, int]]:
    """(offset, length) of each segment."""
    return [(i * segment_size, min(segment_size, length - i * segment_size))
            for i in range(segment_count(length, segment_size))]


def encode_segment(index: int, data: bytes, config: RunConfig, on_step=None) -> Coded:
    """One twin over one segment: the digests and payload a one-twin file of it holds."""
    from . import codec          # start-up: torch, where the twin runs
    blob, stats = codec.compress(data, config, on_step)
    one = parse(blob)
    return Coded(index, one.digests, one.payload, _segment_stats(stats, index), one.header["fingerprint"])


def decode_segment(index: int, header: dict, segment: Segment, digests: list[str], payload: bytes,
                   on_step=None) -> Decoded:
    """One twin back over one segment, checked alone: its arithmetic against the file's (before
    the first token), its digests and its SHA-256."""
    from . import codec          # start-up: torch, where the twin runs
    one = Container({"config": header["config"], "fingerprint": header["fingerprint"], "length": segment.length,
                     "sha256": segment.sha256, "sync_every": header["sync_every"]}, digests, payload)
    data, stats = codec.decompress(one, on_step)
    return Decoded(index, data, _segment_stats(stats, index))


def _segment_stats(stats: dict, index: int) -> dict:
    """A segment's row of the statistics: its own twin's numbers, without its one-twin header."""
    keep = ("input_bytes", "payload_bytes", "ideal_bits", "coder_overhead_bits", "seconds", "steps",
            "final_digest", "stored_chunks", "bits_by_part")
    row = {"segment": index, **{k: stats[k] for k in keep if k in stats}}
    row["bits_per_byte"] = row["payload_bytes"] * 8 / row["input_bytes"] if row["input_bytes"] else 0.0
    return row


def assemble(data: bytes, config: RunConfig, segment_size: int, coded: list[Coded]) -> bytes:
    """The container of a segmented file from its segments' results, in segment order. The
    header records the arithmetic the twins ran, which must be one for every segment."""
    coded = sorted(coded, key=lambda c: c.index)
    fingerprint = coded[0].fingerprint
    for c in coded:
        if c.fingerprint != fingerprint:
            raise ProfileError(f"segment {c.index} was coded with arithmetic {c.fingerprint}, segment 0 with "
                               f"{fingerprint}; every worker needs the same marslink build")
    rows = []
    for (offset, length), c in zip(plan(len(data), segment_size), coded):
        table = b"".join(bytes.fromhex(d) for d in c.digests)
        rows.append(Segment(offset, length, len(c.payload), zlib.crc32(c.payload), zlib.crc32(table),
                            hashlib.sha256(data[offset:offset + length]).hexdigest()))
    container = Container(
        header={"config": config.to_dict(), "fingerprint": fingerprint, "length": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "sync_every": config.sync_every, "segment_size": segment_size},
        digests=[d for c in coded for d in c.digests], payload=b"".join(c.payload for c in coded), segments=rows)
    assert all(len(d) == 2 * DIGEST_PREFIX for d in container.digests)
    return container.to_bytes()


def jobs_of(container: Container) -> list[tuple[int, Segment, list[str], bytes]]:
    """The decoding work of a container: (index, segment row, its digests, its payload)."""
    config = container.config or RunConfig.from_dict(container.header["config"])
    return [(i, *part) for i, part in enumerate(segment_slices(container, config))]


def join(container: Container, parts: list[Decoded]) -> bytes:
    """The decoded segments in order, checked against the whole file's SHA-256."""
    data = b"".join(part.data for part in sorted(parts, key=lambda p: p.index))
    if hashlib.sha256(data).hexdigest() != container.header["sha256"]:
        raise ChecksumError("decoded data does not match the original's SHA-256; nothing was written "
                            "(the file is corrupted or was made by an incompatible build)")
    return data


def total_stats(rows: list[dict], started: float, compressed_bytes: int | None, **extra) -> dict:
    """Statistics of the whole file: sums over the segments (bits, bytes, steps, CPU seconds),
    the wall-clock time of the run, and the per-segment rows. With one segment the totals are
    that twin's own numbers (final_digest included); with more, final_digest is the SHA-256 of
    the segments' final digests in order, since no single twin saw the whole file."""
    rows = sorted(rows, key=lambda r: r["segment"])
    seconds = time.perf_counter() - started
    n = sum(r["input_bytes"] for r in rows)
    payload = sum(r["payload_bytes"] for r in rows)
    ideal = sum(r["ideal_bits"] for r in rows)
    stats = {
        "input_bytes": n, "payload_bytes": payload, "ideal_bits": ideal,
        "coder_overhead_bits": payload * 8 - ideal, "seconds": seconds,
        "bytes_per_second": n / seconds if seconds > 0 else 0.0,
        "cpu_seconds": sum(r["seconds"] for r in rows),     # the twins' own time, all workers
        "steps": sum(r["steps"] for r in rows),
        "final_digest": rows[0]["final_digest"] if len(rows) == 1 else
        hashlib.sha256("".join(r["final_digest"] for r in rows).encode()).hexdigest(),
        "segments": len(rows), "segment_stats": rows,
    }
    parts = [r["bits_by_part"] for r in rows if "bits_by_part" in r]
    if parts:             # what earned the bits, summed over the segments (None: not in this preset)
        stats["bits_by_part"] = {k: None if any(p[k] is None for p in parts) else sum(p[k] for p in parts)
                                 for k in parts[0]}
    if "stored_chunks" in rows[0]:
        stats["stored_chunks"] = sum(r["stored_chunks"] for r in rows)
    if compressed_bytes is not None:
        stats.update(size_stats(compressed_bytes, payload, n))
    stats.update(extra)
    return stats
