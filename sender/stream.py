"""Alice's side of a live stream: drive the twin, ship its bytes and digests over the link.

All lockstep logic is in shared.core.engine.Twin; this file only decides what goes in which frame,
and how to pick up again after either side was restarted:

  resume by offset   Bob's WELCOME says how many coded bytes he already holds (R). Alice
                     rewinds her twin to her latest checkpoint that had emitted at most R bytes
                     (or to the start: the initial state is deterministic), codes forward, and
                     sends only bytes from R on. Re-coding costs time, never bits on the wire.
  reconnect          if Mars goes silent, or says he was interrupted, Alice keeps her place
                     and handshakes again until Mars is back or `handshake_timeout_s` has passed.
  receipts           a Mars that already delivered this stream answers HELLO with DONE: Alice
                     says so, clears her checkpoints and succeeds without sending a byte.
"""
from __future__ import annotations

import glob
import hashlib
import os
import shutil
import time
from typing import Callable

from protocol.frames import Data, Done, End, FrameError, Hello, Sync
from protocol.link import (INTERRUPTED, AliceLink, AuthFailed, HandshakeTimeout, LinkError, LinkSettings, PeerError,
                           PeerLost, PeerStopped)
from shared.app import checkpoint
from shared.app.files import StorageError, check_folder, locked, storage_error
from shared.coding.codec import run_stats
from shared.coding.coder import ChunkEncoder
from shared.core.config import RunConfig
from shared.core.engine import Twin
from shared.core.errors import LinkFailure, MarslinkError
from shared.core.fingerprint import fingerprint
from shared.show.telemetry import Telemetry

MAX_PAYLOAD = 256 * 1024          # split a step's bytes into frames no larger than this
KEEP_CHECKPOINTS = 4
# what a checkpoint must hold to resume from (Checkpoints.save writes it)
FIELDS = {"twin": checkpoint.TWIN, "encoder": checkpoint.CODER, "stored_chunks": checkpoint.INT,
          "high_water": checkpoint.INT}


class Checkpoints:
    """Alice's checkpoints for one stream: ckpt-<step>.pt, the last few kept."""

    def __init__(self, root: str, key: str):
        self.dir = os.path.join(root, key)    # made by the first save: no folder for streams never started

    def save(self, twin: Twin, encoder: ChunkEncoder, high_water: int):
        try:
            os.makedirs(self.dir, exist_ok=True)
        except OSError as e:
            raise storage_error("checkpoint folder ", self.dir, e, then="run again to resume") from None
        checkpoint.save(os.path.join(self.dir, f"ckpt-{twin.step:09d}.pt"),
                        {"twin": twin.state_dict(), "encoder": encoder.arith.state(),
                         "stored_chunks": encoder.stored_chunks, "high_water": high_water})
        for old in sorted(glob.glob(os.path.join(self.dir, "ckpt-*.pt")))[:-KEEP_CHECKPOINTS]:
            os.unlink(old)

    def latest_within(self, offset: int, twin: Twin) -> dict | None:
        """The newest checkpoint whose coder had emitted no more than `offset` bytes (one that
        `twin` can load: a damaged one is a FormatError naming it)."""
        for path in sorted(glob.glob(os.path.join(self.dir, "ckpt-*.pt")), reverse=True):
            state = checkpoint.load(path, FIELDS)
            if state["encoder"][-1] <= offset:
                return checkpoint.fits_twin(path, state, twin)
        return None

    def high_water(self) -> int:
        paths = sorted(glob.glob(os.path.join(self.dir, "ckpt-*.pt")))
        return checkpoint.load(paths[-1], FIELDS)["high_water"] if paths else 0

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def send_stream(data: bytes, config: RunConfig, endpoint: str, settings: LinkSettings,
                stream_id: str | None = None, on_step: Callable | None = None, log=None,
                state_dir: str | None = None, checkpoint_every: int = checkpoint.CHECKPOINT_EVERY, telemetry=None) -> dict:
    started = time.perf_counter()
    sha = hashlib.sha256(data).digest()
    stream_id = stream_id or sha.hex()[:16]
    hello = Hello(stream_id=stream_id, config=config.to_dict(), fingerprint=fingerprint(),
                  total_length=len(data), sha256=sha)
    # one folder per stream and receiver: one file sent to two Bobs at once keeps two resume points
    key = hashlib.sha256(sha + config.to_json().encode() + endpoint.encode()).hexdigest()[:24]
    root = state_dir or checkpoint.default_state_dir("earth")
    check_folder(root, "Earth's state folder (--state-dir) ")
    with locked(os.path.join(root, key + ".lock"), f"another alice is sending this file to {endpoint} from "
                f"state folder {root!r}; wait for it to finish"):
        return _send(data, config, endpoint, settings, stream_id, on_step, log, Checkpoints(root, key),
                     checkpoint_every, telemetry, hello, sha, started)


def _send(data, config, endpoint, settings, stream_id, on_step, log, store, checkpoint_every, telemetry,
          hello, sha, started) -> dict:
    run = _Run(data, config, store, checkpoint_every)
    run.telemetry = telemetry if telemetry is not None else Telemetry()   # per-step curves for the report
    run.high_water = store.high_water()
    totals = {"frames_sent": 0, "frames_resent": 0, "wire_bytes": 0}
    lost_since = None
    while True:
        try:
            link = AliceLink(endpoint, settings, log=log)
        except LinkError as e:                        # cannot even open the socket: say so, plainly
            raise LinkFailure(str(e)) from None
        with link:
            try:
                welcome = link.handshake(hello)
                if isinstance(welcome, Done):        # a receipt: Mars delivered this stream before
                    return _already_delivered(welcome, sha, store, len(data), endpoint, stream_id, started)
                lost_since = None
                done = run.stream(link, welcome.resume_offset, on_step)
                break
            except HandshakeTimeout as e:            # nobody answered for the whole handshake time: final
                if lost_since is None:
                    raise LinkFailure(str(e)) from None
                raise LinkFailure(f"{e} (contact lost {time.monotonic() - lost_since:.0f} s ago; Earth's "
                                  f"checkpoints are kept in {store.dir}; run the same command again to resume)") from None
            except PeerLost as e:                    # Mars vanished mid-stream, or was stopped: knock again
                if isinstance(e, PeerStopped) and log:
                    log(f"Mars was interrupted; waiting for him to return (up to {settings.handshake_timeout_s:g} s)")
                lost_since = time.monotonic()
            except AuthFailed as e:                  # turned away by Mars's security: final
                raise LinkFailure(str(e)) from None
            except PeerError as e:
                raise LinkFailure(f"Mars stopped the stream ({e.code}): {e.message}") from None
            except FrameError as e:
                raise LinkFailure(f"Mars sent a malformed message: {e}") from None
            except MarslinkError as e:
                link.abort("write-failed" if isinstance(e, StorageError) else "sender-failed", str(e))
                raise
            except KeyboardInterrupt:
                link.abort(INTERRUPTED, "Earth was interrupted; run it again to resume")
                raise
            except BrokenPipeError:
                link.abort(INTERRUPTED, "Earth's standard output was closed (broken pipe); run it again to resume")
                raise
            except Exception as e:                   # anything else on Earth's side: Mars must hear of it too
                link.abort("sender-failed", f"Earth failed ({e.__class__.__name__}: {e})")
                raise
            finally:
                for k in totals:
                    totals[k] += getattr(link.stats, {"wire_bytes": "bytes_sent"}.get(k, k))
    twin = run.twin
    final = twin.digest()
    if done.final_digest != final or done.sha256 != sha:
        raise LinkFailure(f"Mars reports final digest {done.final_digest[:16]}, Earth has {final[:16]}")
    store.remove()
    stats = run_stats(twin, len(data), run.offset, started, run.offset, verified_by_receiver=True,
                      stored_chunks=run.encoder.stored_chunks, **totals, resumes=run.resumes,
                      bytes_resent_after_resume=run.bytes_resent, resumed_from_step=run.resumed_from_step,
                      endpoint=endpoint, stream_id=stream_id)
    stats.update(run.telemetry.stats())       # after the clock stopped: the ledger's sizing is no coding time
    return stats


def _already_delivered(done: Done, sha: bytes, store: Checkpoints, length: int, endpoint: str,
                       stream_id: str, started: float) -> dict:
    if done.sha256 != sha:
        raise LinkFailure("Mars answered with a receipt for other data (SHA-256 differs); nothing was sent")
    store.remove()
    return {"already_delivered": True, "input_bytes": length, "final_digest": done.final_digest,
            "verified_by_receiver": True, "endpoint": endpoint, "stream_id": stream_id,
            "seconds": time.perf_counter() - started}


class _Run:
    """Alice's twin and coder, able to rewind to any byte offset Bob asks for."""

    def __init__(self, data: bytes, config: RunConfig, store: Checkpoints, checkpoint_every: int):
        self.data, self.config, self.store, self.checkpoint_every = data, config, store, checkpoint_every
        self.resumes = 0
        self.telemetry = None
        self.bytes_resent = 0
        self.high_water = 0               # furthest byte ever sent, across restarts
        self.resumed_from_step = 0        # the checkpoint's step the last resume coded on from
        self._fresh()

    def _fresh(self):
        self.twin = Twin(self.config, len(self.data), self.data)
        self.encoder = ChunkEncoder()

    @property
    def offset(self) -> int:
        return self.encoder.arith.bytes_taken

    def rewind(self, resume_offset: int):
        """To the newest checkpoint that Bob's `resume_offset` covers, or to the start. A fresh
        twin is rewound too when Bob holds bytes: that is Alice restarted, and her checkpoints
        spare her coding again what he has."""
        if resume_offset == 0 and self.twin.step == 0 and self.offset == 0:
            return
        self._fresh()
        state = self.store.latest_within(resume_offset, self.twin)
        if state is not None:
            self.twin.load_state_dict(state["twin"], self.data)
            self.encoder.arith.restore(state["encoder"])
            self.encoder.stored_chunks = state["stored_chunks"]
        self.resumed_from_step = self.twin.step

    def stream(self, link: AliceLink, resume_offset: int, on_step) -> "object":
        if resume_offset > 0 or self.twin.step > 0:          # picking up an interrupted stream
            self.resumes += 1
            self.bytes_resent += max(0, self.high_water - resume_offset)
        self.rewind(resume_offset)
        twin, encoder = self.twin, self.encoder

        def ship(token_start: int, token_end: int, payload: bytes):
            start = self.offset - len(payload)        # stream offset of payload[0]
            skip = max(0, resume_offset - start)      # Bob already holds these bytes
            for i in range(skip, len(payload), MAX_PAYLOAD):
                piece = payload[i:i + MAX_PAYLOAD]
                link.send(Data(link.next_seq, token_start, token_end, start + i, piece))
            self.high_water = max(self.high_water, self.offset)

        if twin.step == 0:
            link.send(Sync(link.next_seq, 0, bytes.fromhex(twin.digest())))
        while not twin.finished:
            token_start = twin.tokens_done
            report = twin.advance(encoder)
            ship(token_start, report.tokens_done, encoder.take())
            if report.digest is not None:
                link.send(Sync(link.next_seq, report.step, bytes.fromhex(report.digest)))
            if report.step % self.checkpoint_every == 0:
                self.store.save(twin, encoder, self.high_water)
            if self.telemetry is not None:
                self.telemetry.record(twin, report, self.offset)
            if on_step:
                on_step(twin, report, link)
        ship(twin.tokens_done, twin.tokens_done, encoder.finish())
        link.send(End(link.next_seq, self.offset, hashlib.sha256(self.data).digest()))
        return link.wait_done()
