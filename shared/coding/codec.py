"""File mode: the lockstep engine driven to the end in one process, into or out of a container."""
from __future__ import annotations

import hashlib
import mmap
import time
from typing import Callable

from ..core import numeric
from ..core.config import MAX_LENGTH, RunConfig, require_same
from ..core.engine import Output, StepReport, SyncLedger, Twin
from ..core.errors import ChecksumError, FormatError, UsageError
from ..core.fingerprint import compare, fingerprint
from ..core.layout import n_steps, sync_steps
from .coder import STATE_BITS, ByteSource, ChunkDecoder, ChunkEncoder
from .container import DIGEST_PREFIX, Container, size_stats

OnStep = Callable[[Twin, StepReport], None]
MAX_READ_PAST_END = STATE_BITS // 8 + 2   # the decoder looks this far beyond the last coded byte, at most


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
    container = Container(
        header={"config": config.to_dict(), "fingerprint": fingerprint(), "length": len(data),
                "sha256": hashlib.sha256(data).hexdigest(), "sync_every": config.sync_every},
        digests=[d[:2 * DIGEST_PREFIX] for d in digests], payload=payload, config=config)
    blob = container.to_bytes()
    assert len(digests) == len(sync_steps(twin.n_steps, config.sync_every))
    return blob, run_stats(twin, len(data), len(payload), started, len(blob), stored_chunks=encoder.stored_chunks)


def decompress(container: Container, on_step: OnStep | None = None,
               expect_config: RunConfig | None = None) -> tuple[bytes, dict]:
    """Decode and verify everything; returns the original only if every check passed."""
    started = time.perf_counter()
    header = container.header
    config = container.config or RunConfig.from_dict(header["config"])   # parse() did it, unless built here
    if expect_config is not None:
        require_same(expect_config, config, "file")
    compare(fingerprint(), header["fingerprint"], "the file")
    steps = sync_steps(n_steps(header["length"], config.streams, config.model.chunk), header["sync_every"])
    ledger = SyncLedger("file")
    for step, digest in zip(steps, container.digests):
        ledger.sender(step, digest)

    twin = Twin(config, header["length"])
    output = twin.sink = _Output(twin.layout)
    ledger.receiver(0, twin.digest())
    source = _Payload(container.payload, twin)
    decoder = ChunkDecoder(source)
    while not twin.finished:
        report = twin.advance(decoder)
        if report.digest is not None:
            ledger.receiver(report.step, report.digest)
        if on_step:
            on_step(twin, report)
    if ledger.unmatched():
        raise FormatError(f"sync digests for steps {ledger.unmatched()[:3]} were never matched: corrupted header")
    data = output.buf[:header["length"]]
    if hashlib.sha256(data).hexdigest() != header["sha256"]:
        raise ChecksumError("decoded data does not match the original's SHA-256; nothing was written "
                            "(the file is corrupted or was made by an incompatible build)")
    return data, run_stats(twin, len(data), len(container.payload), started)


class _Payload(ByteSource):
    """The payload for the decoder, which stops the moment it reads further past the end than
    its look-ahead: a header that declares more than the payload holds decodes no further."""

    def __init__(self, payload: bytes, twin: Twin):
        super().__init__(payload)
        self.twin = twin
        self.past_end_limit = MAX_READ_PAST_END

    def next_byte(self) -> int:
        byte = super().next_byte()
        if self.past_end > self.past_end_limit:
            twin = self.twin
            raise FormatError(f"payload ended in step {twin.step + 1} of {twin.n_steps:,}, "
                              f"{twin.layout.length - twin.tokens_done:,} bytes before the end: the file is "
                              f"truncated or corrupted; nothing was written")
        return byte


class _Output(Output):
    """Output into an anonymous mapping: a page costs memory only once bytes are decoded into
    it, so a header that merely declares a large length costs nothing (a bytearray is zeroed,
    so touched, whole)."""

    def __init__(self, layout):     # Output's fields, without its zeroed bytearray
        self.layout = layout
        self.buf = mmap.mmap(-1, max(layout.length, 1))


def run_stats(twin: Twin, input_bytes: int, payload_bytes: int, started: float,
              compressed_bytes: int | None = None, **extra) -> dict:
    """The statistics record every run writes (file mode, Alice's and Bob's stream, --stats-json):
    one builder, so the three agree on names and meanings. `extra` adds side-specific fields."""
    seconds = time.perf_counter() - started
    profile = numeric.active()
    stats = {
        "input_bytes": input_bytes,
        "payload_bytes": payload_bytes,
        "ideal_bits": twin.ideal_bits,
        # what the coded bytes would have cost under each part of the prediction (Twin.earned)
        "bits_by_part": twin.earned,
        "coder_overhead_bits": payload_bytes * 8 - twin.ideal_bits,
        "seconds": seconds,
        "bytes_per_second": input_bytes / seconds if seconds > 0 else 0.0,
        "steps": twin.step,
        "final_digest": twin.digest(),
        "preset": twin.config.preset,
        "profile": profile.name,
        "threads": profile.threads,
    }
    if compressed_bytes is not None:
        stats.update(size_stats(compressed_bytes, payload_bytes, input_bytes))
    stats.update(extra)
    return stats
