"""Alice's side of a live stream: drive the twin, ship its bytes and digests over the link.

All lockstep logic is in shared.engine.Twin; this file only decides what goes in which frame.
"""
from __future__ import annotations

import hashlib
import time
from typing import Callable

from protocol.frames import Data, End, FrameError, Hello, Sync
from protocol.link import AliceLink, LinkSettings, PeerError, PeerLost
from shared import numeric
from shared.coder import ChunkEncoder
from shared.config import RunConfig
from shared.engine import Twin
from shared.errors import LinkFailure, MarslinkError

MAX_PAYLOAD = 256 * 1024          # split a step's bytes into frames no larger than this


def send_stream(data: bytes, config: RunConfig, endpoint: str, settings: LinkSettings,
                stream_id: str | None = None, on_step: Callable | None = None, log=None) -> dict:
    started = time.perf_counter()
    sha = hashlib.sha256(data).digest()
    twin = Twin(config, len(data), data)
    encoder = ChunkEncoder()
    hello = Hello(stream_id=stream_id or sha.hex()[:16], config=config.to_dict(),
                  fingerprint=numeric.fingerprint(), total_length=len(data), sha256=sha)
    offset = 0
    with AliceLink(endpoint, settings, log=log) as link:
        def data_frames(token_start: int, token_end: int, payload: bytes):
            nonlocal offset
            for i in range(0, len(payload), MAX_PAYLOAD):
                piece = payload[i:i + MAX_PAYLOAD]
                link.send(Data(link.next_seq, token_start, token_end, offset, piece))
                offset += len(piece)

        try:
            link.handshake(hello)
            link.send(Sync(link.next_seq, 0, bytes.fromhex(twin.digest())))
            while not twin.finished:
                token_start = twin.tokens_done
                report = twin.advance(encoder)
                data_frames(token_start, report.tokens_done, encoder.take())
                if report.digest is not None:
                    link.send(Sync(link.next_seq, report.step, bytes.fromhex(report.digest)))
                if on_step:
                    on_step(twin, report, link)
            data_frames(twin.tokens_done, twin.tokens_done, encoder.finish())
            link.send(End(link.next_seq, offset, sha))
            done = link.wait_done()
        except PeerError as e:
            raise LinkFailure(f"Mars stopped the stream ({e.code}): {e.message}") from None
        except PeerLost as e:
            raise LinkFailure(str(e)) from None
        except FrameError as e:
            raise LinkFailure(f"Mars sent a malformed message: {e}") from None
        except MarslinkError as e:
            link.abort("sender-failed", str(e))
            raise
        except KeyboardInterrupt:
            link.abort("interrupted", "Earth was interrupted")
            raise
        stats = link.stats
    final = twin.digest()
    if done.final_digest != final or done.sha256 != sha:
        raise LinkFailure(f"Mars reports final digest {done.final_digest[:16]}, Earth has {final[:16]}")
    seconds = time.perf_counter() - started
    return {"input_bytes": len(data), "compressed_bytes": offset, "payload_bytes": offset,
            "ideal_bits": twin.ideal_bits, "seconds": seconds,
            "bytes_per_second": len(data) / seconds if seconds else 0.0, "steps": twin.step,
            "final_digest": final, "verified_by_receiver": True, "stored_chunks": encoder.stored_chunks,
            "frames_sent": stats.frames_sent, "frames_resent": stats.frames_resent,
            "wire_bytes": stats.bytes_sent, "preset": config.preset,
            "profile": numeric.active().name, "endpoint": endpoint}
