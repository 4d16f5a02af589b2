"""Bob's side of a live stream: check the handshake, feed the twin from frames, verify, write.

The decoder pulls bytes from the link whenever it needs more (ByteSource.refill), so Bob's
twin simply waits for Alice's frames. Output is written only after every check has passed.
"""
from __future__ import annotations

import hashlib
import time
from typing import Callable

from protocol.frames import Data, Done, End, FrameError, Sync, Welcome
from protocol.link import BobLink, LinkSettings, PeerError, PeerLost
from shared import numeric
from shared.cli import write_atomic
from shared.coder import ByteSource, ChunkDecoder
from shared.config import RunConfig, require_same
from shared.engine import SyncLedger, Twin
from shared.errors import ChecksumError, ConfigMismatch, FormatError, LinkFailure, MarslinkError, ProfileError

MAX_STREAM_BYTES = 1 << 34        # 16 GiB: a declared length beyond this is refused, not allocated

ERROR_CODES = {ConfigMismatch: "config-mismatch", ProfileError: "profile-mismatch"}


def check_hello(hello, config: RunConfig) -> RunConfig:
    """Refuse a handshake that would not decode: the message names the differing field."""
    theirs = RunConfig.from_dict(hello.config)
    require_same(config, theirs, "Earth")
    numeric.compare(numeric.fingerprint(), hello.fingerprint, "Earth")
    if hello.total_length > MAX_STREAM_BYTES:
        raise FormatError(f"Earth announces {hello.total_length:,} bytes, above this receiver's limit "
                          f"of {MAX_STREAM_BYTES:,}")
    return theirs


def receive_stream(bind: str, config: RunConfig, out_path: str, settings: LinkSettings,
                   on_step: Callable | None = None, on_hello: Callable | None = None,
                   log=None, perturb_step: int | None = None) -> dict:
    with BobLink(bind, settings, log=log) as link:
        try:
            hello = link.accept()
        except PeerLost as e:
            raise LinkFailure(str(e)) from None
        started = time.perf_counter()
        try:
            check_hello(hello, config)
        except MarslinkError as e:
            link.refuse(ERROR_CODES.get(type(e), "refused"), str(e))
            raise
        if on_hello:
            on_hello(hello)
        link.welcome(Welcome(hello.stream_id, 0))
        try:
            return _receive(link, hello, config, out_path, started, on_step, perturb_step)
        except PeerError as e:
            raise LinkFailure(f"Earth stopped the stream ({e.code}): {e.message}") from None
        except PeerLost as e:
            raise LinkFailure(str(e)) from None
        except FrameError as e:
            link.abort("bad-frame", str(e))
            raise LinkFailure(f"corrupted frame from Earth: {e}; nothing was written") from None
        except MarslinkError as e:
            link.abort(type(e).__name__, str(e))
            raise
        except KeyboardInterrupt:
            link.abort("interrupted", "Mars was interrupted; nothing was written")
            raise


def _receive(link: BobLink, hello, config, out_path, started, on_step, perturb_step) -> dict:
    twin = Twin(config, hello.total_length)
    ledger = SyncLedger("Earth")
    state = {"end": None, "offset": 0}

    def refill(source: ByteSource) -> bool:
        """Called by the decoder when it needs more coded bytes: wait for the next frame."""
        while state["end"] is None:
            frame = link.next_frame()
            if isinstance(frame, Data):
                if frame.byte_offset != state["offset"]:
                    raise FormatError(f"DATA frame seq {frame.seq} starts at byte {frame.byte_offset}, "
                                      f"expected {state['offset']}")
                state["offset"] += len(frame.payload)
                source.feed(frame.payload)
                return True
            if isinstance(frame, Sync):
                ledger.sender(frame.step, frame.digest.hex())
            elif isinstance(frame, End):
                state["end"] = frame
        return False

    source = ByteSource(refill=refill)
    ledger.receiver(0, twin.digest())
    decoder = ChunkDecoder(source)
    while not twin.finished:
        report = twin.advance(decoder)
        if perturb_step is not None and report.step == perturb_step:   # fault injection for tests
            with __import__("torch").no_grad():
                next(twin.model.parameters()).view(-1)[0] += 1e-6
        if report.digest is not None:
            ledger.receiver(report.step, report.digest)
        link.poll()
        if on_step:
            on_step(twin, report, link)
    while state["end"] is None:                 # drain: trailing bytes, last SYNC, END
        refill(source)
    end: End = state["end"]
    if ledger.unmatched():
        raise FormatError(f"no matching digests for steps {ledger.unmatched()[:3]}: stream incomplete")
    if end.total_payload_bytes != state["offset"]:
        raise FormatError(f"END says {end.total_payload_bytes} payload bytes, received {state['offset']}")
    data = twin.output()
    sha = hashlib.sha256(data).digest()
    if sha != end.sha256 or sha != hello.sha256:
        raise ChecksumError("decoded data does not match the original's SHA-256; nothing was written")
    write_atomic(out_path, data)
    final = twin.digest()
    link.done(Done(sha, final))
    seconds = time.perf_counter() - started
    return {"input_bytes": len(data), "compressed_bytes": state["offset"], "payload_bytes": state["offset"],
            "ideal_bits": twin.ideal_bits, "seconds": seconds,
            "bytes_per_second": len(data) / seconds if seconds else 0.0, "steps": twin.step,
            "final_digest": final, "syncs_checked": ledger.checked, "stored_chunks": decoder.stored_chunks,
            "frames_received": link.stats.frames_received, "duplicates": link.stats.duplicates,
            "out_of_order": link.stats.out_of_order, "preset": config.preset,
            "profile": numeric.active().name, "stream_id": hello.stream_id}
