"""File mode: the lockstep engine driven to the end in one process, into or out of a container."""
from __future__ import annotations

import hashlib
import time
from typing import Callable

from ..core import numeric
from ..core.config import MAX_LENGTH, RunConfig, require_same
from ..core.engine import Output, StepReport, SyncLedger, Twin
from ..core.errors import ChecksumError, FormatError, UsageError
from ..core.fingerprint import compare, fingerprint
from ..core.layout import n_steps, sync_steps
from .coder import ByteSource, ChunkDecoder, ChunkEncoder
from .container import DIGEST_PREFIX, Container

OnStep = Callable[[Twin, StepReport], None]
MAX_READ_PAST_END = 8     # the decoder may look a few bytes beyond the last coded byte


def compress(data: bytes, config: RunConfig, on_step: OnStep | None = None) -> tuple[bytes, dict]:
    if len(data) > MAX_LENGTH:                  # no receiver would decode it: say so before the work
        raise UsageError(f"input is {len(data):,} bytes; marslink codes at most {MAX_LENGTH:,} per file")
    started = time.perf_counter()
    twin = Twin(config, len(data), data)
    encoder = ChunkEncoder()
    digests = [twin.digest()]
    while not twin.finished:
        report = twin.advance(encoder)
        if report.digest is not None:
            digests.append(report.digest)
        if on_step:
            on_step(twin, report)
    payload = encoder.finish()
    final_digest = twin.digest()
    container = Container(
        header={"config": config.to_dict(), "fingerprint": fingerprint(), "length": len(data),
                "sha256": hashlib.sha256(data).hexdigest(), "sync_every": config.sync_every},
        digests=[d[:2 * DIGEST_PREFIX] for d in digests], payload=payload)
    blob = container.to_bytes()
    assert len(digests) == len(sync_steps(twin.n_steps, config.sync_every))
    stats = _stats(len(data), blob, payload, twin, final_digest, started)
    stats["stored_chunks"] = encoder.stored_chunks
    return blob, stats


def decompress(container: Container, on_step: OnStep | None = None,
               expect_config: RunConfig | None = None) -> tuple[bytes, dict]:
    """Decode and verify everything; returns the original only if every check passed."""
    started = time.perf_counter()
    header = container.header
    config = RunConfig.from_dict(header["config"])
    if expect_config is not None:
        require_same(expect_config, config, "file")
    compare(fingerprint(), header["fingerprint"], "the file")
    steps = sync_steps(n_steps(header["length"], config.streams, config.model.chunk), header["sync_every"])
    ledger = SyncLedger("file")
    for step, digest in zip(steps, container.digests):
        ledger.sender(step, digest)

    twin = Twin(config, header["length"])
    output = twin.sink = Output(twin.layout)
    ledger.receiver(0, twin.digest())
    source = ByteSource(container.payload)
    decoder = ChunkDecoder(source)
    while not twin.finished:
        report = twin.advance(decoder)
        if report.digest is not None:
            ledger.receiver(report.step, report.digest)
        if on_step:
            on_step(twin, report)
    if source.past_end > MAX_READ_PAST_END:
        raise FormatError(f"payload ended {source.past_end} bytes early: the file is truncated or corrupted")
    if ledger.unmatched():
        raise FormatError(f"sync digests for steps {ledger.unmatched()[:3]} were never matched: corrupted header")
    data = bytes(output.buf)
    if hashlib.sha256(data).hexdigest() != header["sha256"]:
        raise ChecksumError("decoded data does not match the original's SHA-256; nothing was written "
                            "(the file is corrupted or was made by an incompatible build)")
    return data, _stats(len(data), None, container.payload, twin, twin.digest(), started)


def _stats(n: int, blob: bytes | None, payload: bytes, twin: Twin, final_digest: str, started: float) -> dict:
    seconds = time.perf_counter() - started
    stats = {
        "input_bytes": n,
        "payload_bytes": len(payload),
        "ideal_bits": twin.ideal_bits,
        "coder_overhead_bits": len(payload) * 8 - twin.ideal_bits,
        "seconds": seconds,
        "bytes_per_second": n / seconds if seconds > 0 else 0.0,
        "steps": twin.step,
        "final_digest": final_digest,
        "preset": twin.config.preset,
        "profile": numeric.active().name,
        "threads": numeric.active().threads,
    }
    if blob is not None:
        stats["compressed_bytes"] = len(blob)
        stats["header_bytes"] = len(blob) - len(payload)
        stats["bits_per_byte"] = len(blob) * 8 / n if n else 0.0
    return stats
