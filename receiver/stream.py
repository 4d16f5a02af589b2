"""Bob's side of a live stream: check the handshake, feed the twin from frames, verify, write.

The decoder pulls bytes from the link whenever it needs more (ByteSource.refill), so Bob's
twin simply waits for Alice's frames. Output is written only after every check has passed.

Resume (the ZeroMQ Guide's "resume by offset"): every coded byte Bob receives is appended to
`<out>.partial/stream.bin`, and every `checkpoint_every` steps the twin and the decoder are
checkpointed there. A restarted Bob reloads the checkpoint (or starts from the deterministic
initial state when there is none), replays the bytes he already holds, and tells Alice
(WELCOME.resume_offset) where to continue: every byte he advertises is one he can resume from.
A restarted Alice is taken back the same way without Bob losing his place.

Bob keeps his watch: a HELLO he cannot serve is refused with a reason and he listens on; a
sender who vanishes before sending a byte leaves nothing behind. After publishing he keeps a
receipt (receipts/ in his state folder) and lingers until Alice acknowledges DONE.
"""
from __future__ import annotations

import errno
import hashlib
import mmap
import os
import re
import shutil
import time
from contextlib import contextmanager
from typing import Callable

from protocol.frames import Data, Done, End, FrameError, Sync, Welcome
from protocol.link import (INTERRUPTED, RECEIPT_LINGER_S, BobLink, LinkError, LinkSettings, PeerError, PeerLost,
                           PeerStopped, Reconnected)
from shared.app import checkpoint
from shared.app.files import NEW_FILE_MODE, StorageError, absolute, publish, spool_folder, storage_error
from shared.coding.codec import run_stats
from shared.coding.coder import ByteSource, ChunkDecoder
from shared.core.config import MAX_LENGTH, RunConfig, require_same
from shared.core.engine import SyncLedger, Twin
from shared.core.errors import ChecksumError, ConfigMismatch, DivergenceError, FormatError, LinkFailure, MarslinkError, ProfileError
from shared.core.fingerprint import compare, fingerprint
from shared.core.pinned import torch
from shared.show.telemetry import Telemetry

MAX_STREAM_BYTES = MAX_LENGTH     # a declared length beyond this is refused, not allocated

KEEP_RECEIPTS = 100               # the newest receipts kept in the state folder
RECEIPT_NAME = re.compile(r"[0-9a-f]{24}\.json")   # write_receipt's names: the only files it prunes

# what the spool's files must hold to resume from (Spool.open and _Session._checkpoint write them)
META = {"stream_id": checkpoint.TEXT, "sha256": checkpoint.TEXT, "length": checkpoint.INT, "config": checkpoint.DICT}
STEP_DIGESTS = checkpoint.Kind("a dict of step digests", lambda v: isinstance(v, dict) and all(
    type(k) is str and k.isdecimal() and type(d) is str for k, d in v.items()))
FIELDS = {"twin": checkpoint.TWIN, "decoder": checkpoint.CODER, "stored_chunks": checkpoint.INT,
          "resent_bytes": checkpoint.optional(checkpoint.INT), "ours": STEP_DIGESTS}


ERROR_CODES = {ConfigMismatch: "config-mismatch", ProfileError: "profile-mismatch", StorageError: "write-failed"}


@contextmanager
def writing(path: str):
    """An OS error while writing `path` becomes one line naming it and what to do."""
    try:
        yield
    except OSError as e:
        raise storage_error("", path, e, then="run both sides again to resume") from None


def write_receipt(state_dir: str, hello, final_digest: str, out_path: str) -> str:
    """The delivery receipt: what was delivered where, and when; the newest KEEP_RECEIPTS stay."""
    folder = os.path.join(state_dir, "receipts")
    path = os.path.join(folder, hashlib.sha256(hello.stream_id.encode() + hello.sha256).hexdigest()[:24] + ".json")
    with writing(path):
        os.makedirs(folder, exist_ok=True)
        checkpoint.write_json(path, {"stream_id": hello.stream_id, "length": hello.total_length,
                                     "sha256": hello.sha256.hex(), "final_digest": final_digest,
                                     "out": os.path.abspath(out_path), "time": time.time()})
    try:                  # housekeeping, of receipts only (the rest of the folder is not ours): the receipt is kept
        mine = [(e.stat(follow_symlinks=False).st_mtime, e.path) for e in os.scandir(folder)
                if RECEIPT_NAME.fullmatch(e.name) and e.is_file(follow_symlinks=False)]
        for _, old in sorted(mine)[:-KEEP_RECEIPTS]:
            os.unlink(old)
    except OSError:
        pass
    return path


def check_hello(hello, config: RunConfig) -> RunConfig:
    """Refuse a handshake that would not decode: the message names the differing field."""
    theirs = RunConfig.from_dict(hello.config)
    require_same(config, theirs, "Earth", "Mars")   # read on both ends: name each side
    compare(fingerprint(), hello.fingerprint, "Earth", "Mars")
    if hello.total_length > MAX_STREAM_BYTES:
        raise FormatError(f"Earth announces {hello.total_length:,} bytes, above this receiver's limit "
                          f"of {MAX_STREAM_BYTES:,}")
    return theirs


def _other_config(then: dict, now: dict) -> str:
    """How a partial stream's configuration differs from Earth's now, in the words a user typed."""
    presets = [c.get("preset") if isinstance(c, dict) else None for c in (then, now)]
    if presets[0] != presets[1]:
        return f"preset {presets[0]!r} (Earth now has {presets[1]!r})"
    return f"preset {presets[0]!r} and another seed or option than Earth's now"


class Spool:
    """Bob's partial stream on disk, beside the output: <out>.partial/{meta.json,stream.bin,checkpoint.pt}."""

    def __init__(self, out_path: str):
        self.dir = spool_folder(out_path)
        self.stream = None

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def open(self, hello) -> dict | None:
        """Open (or create) the spool for this stream; returns the saved checkpoint, if any."""
        meta = {"stream_id": hello.stream_id, "sha256": hello.sha256.hex(), "length": hello.total_length,
                "config": hello.config}
        if os.path.isdir(self.dir):
            meta_path = self.path("meta.json")
            saved = checkpoint.read_json(meta_path, META) if os.path.exists(meta_path) else None
            if saved is not None and saved != meta:
                if self._bytes_held() == 0:      # a stream that never got a byte: nothing to keep
                    self.remove()
                elif {**saved, "config": None} == {**meta, "config": None}:
                    raise FormatError(f"{self.dir} holds this stream, coded with "
                                      f"{_other_config(saved['config'], meta['config'])}; start both sides as "
                                      f"they were to resume it, or remove it to start over")
                else:
                    raise FormatError(f"{self.dir} holds a partial stream {saved.get('stream_id')!r} of another "
                                      f"input; remove it or choose another --out")
        if not os.path.isdir(self.dir):
            free = shutil.disk_usage(os.path.dirname(self.dir)).free
            if hello.total_length > free:
                raise FormatError(f"Earth announces {hello.total_length:,} bytes but only {free:,} bytes are free "
                                  f"beside {self.dir[:-len('.partial')]}; free some space or choose another --out")
            with writing(self.dir):
                os.makedirs(self.dir)
        with writing(self.dir):
            if not os.path.exists(self.path("meta.json")):
                checkpoint.write_json(self.path("meta.json"), meta)
            self.stream = open(self.path("stream.bin"), "ab")
            # decoded bytes go straight to their place in data.bin: memory stays flat
            self.data = os.open(self.path("data.bin"), os.O_RDWR | os.O_CREAT, NEW_FILE_MODE)   # the output, once verified
            os.ftruncate(self.data, hello.total_length)
        saved = self.path("checkpoint.pt")
        return checkpoint.load(saved, FIELDS) if os.path.exists(saved) else None

    def _bytes_held(self) -> int:
        try:
            return os.path.getsize(self.path("stream.bin"))
        except OSError:
            return 0

    def held(self) -> int:
        return self.stream.tell()

    def read_from(self, offset: int) -> bytes:
        with open(self.path("stream.bin"), "rb") as f:
            f.seek(offset)
            return f.read()

    def append(self, data: bytes) -> None:
        with writing(self.path("stream.bin")):
            self.stream.write(data)
            self.stream.flush()

    def write_chunk(self, layout, t0: int, chunk) -> None:
        """A twin sink: put a finished chunk of every stream at its offset in data.bin."""
        with writing(self.path("data.bin")):
            for b, offset, n in layout.pieces(t0, chunk.shape[1]):
                os.pwrite(self.data, chunk[b, :n].astype("uint8").tobytes(), offset)

    def decoded(self):
        """data.bin as read-only memory: what Bob decoded so far, for rebuilding n-gram counts."""
        size = os.fstat(self.data).st_size
        return mmap.mmap(self.data, size, access=mmap.ACCESS_READ) if size else b""

    def data_sha256(self) -> bytes:
        h = hashlib.sha256()
        with open(self.path("data.bin"), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.digest()

    def identity(self) -> tuple[int, int]:
        """The data file's (device, inode): publishing links that very file in as the output."""
        return identity(self.path("data.bin"))

    def publish(self, out_path: str, force: bool) -> None:
        """Put the verified data in place: same folder, so it is atomic; as file mode does it (a
        hard link), so without --force an --out that appeared meanwhile is never replaced."""
        with writing(out_path):
            os.fsync(self.data)
            publish(self.path("data.bin"), absolute(out_path), force)

    def close(self) -> None:
        if self.stream is not None:
            try:
                self.stream.close()
            except OSError:                  # its bytes were flushed (or reported) by append()
                pass
            os.close(self.data)
            self.stream = None

    def save(self, state: dict) -> None:
        """Atomically (checkpoint.save: the last good checkpoint stays if this one cannot be
        written), and only once the bytes it refers to are on disk."""
        with writing(self.path("stream.bin")):
            os.fsync(self.stream.fileno())
            os.fsync(self.data)
        checkpoint.save(self.path("checkpoint.pt"), state)

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class _Vacated(Exception):
    """The sender vanished before sending a single byte: drop its spool and listen again."""


def receive_stream(bind: str, config: RunConfig, out_path: str, settings: LinkSettings,
                   on_step: Callable | None = None, on_hello: Callable | None = None,
                   log=None, perturb_step: int | None = None, checkpoint_every: int = checkpoint.CHECKPOINT_EVERY,
                   telemetry=None, linger_s: float = RECEIPT_LINGER_S, state_dir: str | None = None,
                   force: bool = False, on_listen: Callable | None = None) -> dict:
    """Listen on `bind` (on_listen(endpoint) once bound: the real address, port 0's too), serve
    one stream to a verified `out_path`, keep its receipt and linger for a returning sender."""
    state_dir = state_dir or checkpoint.default_state_dir("mars")   # probed by the caller (check_folder)
    try:
        link = BobLink(bind, settings, log=log)
    except LinkError as e:                            # e.g. the port is taken: one clear line
        raise LinkFailure(str(e)) from None
    with link:
        if on_listen:
            on_listen(link.endpoint)
        deadline = time.monotonic() + settings.handshake_timeout_s
        while True:
            hello, spool, saved = _admit(link, config, out_path, deadline)
            try:
                stats = _serve(link, hello, config, spool, saved, out_path, on_hello, on_step, perturb_step,
                               checkpoint_every, telemetry, force, log)
            except _Vacated:
                spool.remove()
                deadline = time.monotonic() + settings.handshake_timeout_s
                continue
            try:
                write_receipt(state_dir, hello, stats["final_digest"], out_path)
            except StorageError as e:         # delivered and verified: a missing receipt only costs a resend
                if log:
                    log(f"delivered, but no receipt was kept ({e})")
            except KeyboardInterrupt as e:
                e.written = delivered(out_path, "its receipt")
                raise
            try:
                link.linger(linger_s)
            except KeyboardInterrupt:         # delivered already: being stopped now only ends the wait
                pass
            return stats


def _admit(link: BobLink, config: RunConfig, out_path: str, deadline: float):
    """Accept HELLOs until one can be served; every other one is refused with its reason
    (an ERROR frame, and a line in Bob's log) and Bob listens on."""
    while True:
        try:
            hello = link.accept(deadline)
        except PeerLost as e:
            raise LinkFailure(str(e)) from None
        spool = Spool(out_path)
        try:
            check_hello(hello, config)
            return hello, spool, spool.open(hello)
        except MarslinkError as e:
            spool.close()
            link.refuse(ERROR_CODES.get(type(e), "refused"), str(e))


def identity(path: str) -> tuple[int, int]:
    held = os.stat(path)
    return held.st_dev, held.st_ino


def delivered(out_path: str, missing: str) -> str:
    """What a stop after publishing says (run_main): the output is there, verified; `missing` is not."""
    return f"{out_path} was written and verified before it ({missing} not)"


def _serve(link: BobLink, hello, config, spool: "Spool", saved, out_path: str, on_hello, on_step, perturb_step,
           checkpoint_every: int, telemetry, force: bool, log=None) -> dict:
    started = time.perf_counter()
    session = None
    try:
        if on_hello:
            on_hello(hello)
        session = _Session(link, hello, config, spool, saved, perturb_step, checkpoint_every, log)
        session.telemetry = telemetry if telemetry is not None else Telemetry()   # curves for the report
        stats = session.run(out_path, on_step, started, force)
    except PeerError as e:
        raise LinkFailure(f"Earth stopped the stream ({e.code}): {e.message}") from None
    except PeerLost as e:
        raise LinkFailure(f"{e} (partial stream kept in {spool.dir} for resume)") from None
    except FrameError as e:
        link.abort("bad-frame", str(e))
        raise LinkFailure(f"corrupted frame from Earth: {e}; nothing was written") from None
    except MarslinkError as e:
        link.abort(ERROR_CODES.get(type(e), type(e).__name__), str(e))
        if isinstance(e, (DivergenceError, ChecksumError)):
            spool.remove()                   # its checkpoints cannot be trusted: no resume from them
        raise
    except KeyboardInterrupt as e:
        if session is not None and session.in_place(out_path):    # delivered: nothing left to resume
            if not session.published:        # stopped between the two: Earth is told now, once
                try:
                    link.done(session.done)
                except Exception:            # noqa: BLE001 - a link already closed: the output stands
                    pass
            spool.close()
            spool.remove()
            e.written = delivered(out_path, "its statistics and receipt")
            raise
        link.abort(INTERRUPTED, "Mars was interrupted; its partial stream is kept for resume")
        raise
    except BrokenPipeError:
        link.abort(INTERRUPTED, "Mars's standard output was closed (broken pipe); its partial stream is kept "
                                  "for resume")
        raise
    except _Vacated:                          # a stranger who left: not a failure, and the link stays open
        raise
    except OSError as e:                      # a spool file removed, its disk gone: which file, what to do
        path = e.filename or spool.dir
        if e.errno == errno.ENOENT and os.path.dirname(os.path.abspath(path)) == os.path.abspath(spool.dir):
            spool.remove()                   # a file of it is gone: what is left cannot be resumed
            error = StorageError(f"{path!r} was removed while the stream arrived, so its partial stream cannot be "
                                 f"resumed and was removed too; run both sides again to start over")
        else:
            error = storage_error("", path, e, then="run both sides again to resume")
        link.abort(ERROR_CODES[StorageError], str(error))
        raise error from None
    except Exception as e:                    # anything else on Mars's side: Earth must hear of it too
        link.abort("receiver-failed", f"Mars failed ({e.__class__.__name__}: {e})")
        raise
    finally:
        spool.close()
    spool.remove()
    return stats


class _Session:
    """One stream on Bob's side, across any number of sender reconnections."""

    telemetry = None
    published = False                     # the verified output is in place, and Earth told (DONE)
    placed = None                         # (device, inode) the output has once published: Spool.identity
    done = None                           # what Earth is told once it is

    def in_place(self, out_path: str) -> bool:
        """The verified output is at `out_path`: published, or stopped right after it was put there."""
        if self.published:
            return True
        try:
            return self.placed is not None and identity(out_path) == self.placed
        except OSError:
            return False

    def __init__(self, link: BobLink, hello, config, spool: Spool, saved, perturb_step, checkpoint_every, log=None):
        self.link, self.hello, self.config, self.spool = link, hello, config, spool
        self.log = log                    # link events for the operator (receive_stream's log)
        self.perturb_step, self.checkpoint_every = perturb_step, checkpoint_every
        self.twin = Twin(config, hello.total_length)
        self.twin.sink = lambda t0, chunk: spool.write_chunk(self.twin.layout, t0, chunk)
        self.ledger = SyncLedger("Earth")
        self.end: End | None = None
        self.reconnects = 0
        self.resent_bytes = 0             # payload bytes that arrived again (after a restart), across restarts
        self.link.welcome(Welcome(hello.stream_id, 0, self.spool.held()))
        self.resumed_from = None          # the step a restart resumed from (0: replayed from the start)
        if saved is None:                 # from the initial state, replaying any bytes already held
            self.resumed_from = 0 if self.spool.held() else None
            self.ledger.receiver(0, self.twin.digest())
            self.source = ByteSource(spool.read_from(0), refill=self._refill)
            self.decoder = ChunkDecoder(self.source)
        else:
            checkpoint.fits_twin(spool.path("checkpoint.pt"), saved, self.twin)
            self.twin.load_state_dict(saved["twin"], spool.decoded())
            self.ledger.ours = {int(k): v for k, v in saved["ours"].items()}
            consumed = saved["decoder"][-1]
            self.source = ByteSource(spool.read_from(consumed), refill=self._refill, base=consumed)
            self.decoder = ChunkDecoder(self.source, saved["decoder"])
            self.decoder.stored_chunks = saved["stored_chunks"]
            self.resent_bytes = saved.get("resent_bytes", 0)
            self.resumed_from = self.twin.step

    # -- the link, with sender reconnections handled in one place ---------------------------
    def _refusal(self, hello) -> tuple[str, str] | None:
        """Why a returning sender cannot take this stream over (code, message), or None."""
        if not hello.same_stream(self.hello):
            return "busy", (f"Mars is waiting for stream {self.hello.stream_id!r} to resume; "
                            f"try again once it is delivered")
        try:
            compare(fingerprint(), hello.fingerprint, "Earth", "Mars")
        except ProfileError as e:
            return "profile-mismatch", str(e)
        return None

    def _welcome_back(self):
        self.reconnects += 1
        self.link.welcome(Welcome(self.hello.stream_id, 0, self.spool.held()))

    def _await_sender(self):
        """Our sender went quiet: wait for it to come back; refuse anyone else, and listen on."""
        deadline = time.monotonic() + self.link.settings.handshake_timeout_s
        while True:
            hello = self.link.accept(deadline)
            why = self._refusal(hello)
            if why is None:
                return self._welcome_back()
            self.link.refuse(*why)

    def _guarded(self, call):
        while True:
            try:
                return call()
            except Reconnected as r:             # a restarted Alice: carry on where we are
                why = self._refusal(r.hello)
                if why is not None:
                    self.link.turn_away(r.identity, *why)
                    continue
                self.link.readmit(r)
                self._welcome_back()
            except PeerLost as e:                # Alice went quiet, or was stopped: wait for her to come back
                if isinstance(e, PeerStopped) and self.log:
                    self.log(f"Earth was interrupted; the partial stream is kept, waiting for her to "
                             f"return (up to {self.link.settings.handshake_timeout_s:g} s)")
                if self.spool.held() == 0 and self.resumed_from is None:
                    raise _Vacated() from None   # not a byte from her: nothing worth waiting for
                try:
                    self._await_sender()
                except PeerLost as e2:
                    raise PeerLost(str(e2)) from None

    def _refill(self, source: ByteSource) -> bool:
        """Called by the decoder when it needs more coded bytes: wait for the next frame."""
        while self.end is None:
            frame = self._guarded(self.link.next_frame)
            if isinstance(frame, Data):
                held = self.spool.held()
                if frame.byte_offset > held:
                    raise FormatError(f"DATA frame seq {frame.seq} starts at byte {frame.byte_offset}, "
                                      f"but only {held} bytes arrived before it")
                fresh = frame.payload[held - frame.byte_offset:]
                self.resent_bytes += len(frame.payload) - len(fresh)
                if fresh:
                    self.spool.append(fresh)
                    source.feed(fresh)
                    return True
            elif isinstance(frame, Sync):
                self.ledger.sender(frame.step, frame.digest.hex())
            elif isinstance(frame, End):
                self.end = frame
        return False

    def _checkpoint(self):
        self.spool.save({"twin": self.twin.state_dict(), "decoder": self.decoder.arith.state(),
                         "stored_chunks": self.decoder.stored_chunks, "resent_bytes": self.resent_bytes,
                         "ours": {str(k): v for k, v in self.ledger.ours.items()}})

    def run(self, out_path: str, on_step, started: float, force: bool) -> dict:
        twin = self.twin
        while not twin.finished:
            report = twin.advance(self.decoder)
            if self.perturb_step is not None and report.step == self.perturb_step:   # fault injection (tests)
                with torch.no_grad():
                    next(twin.model.parameters()).view(-1)[0] += 1e-6
            if report.digest is not None:
                self.ledger.receiver(report.step, report.digest)
            if report.step % self.checkpoint_every == 0:
                self._checkpoint()
            self._guarded(self.link.poll)
            if self.telemetry is not None:
                self.telemetry.record(twin, report, self.spool.held(), syncs_checked=self.ledger.checked,
                                      last_matched_step=self.ledger.last_step)
            if on_step:
                on_step(twin, report, self.link)
        while self.end is None:                 # drain: trailing bytes, last SYNC, END
            self._refill(self.source)
        if self.ledger.unmatched():
            raise FormatError(f"no matching digests for steps {self.ledger.unmatched()[:3]}: stream incomplete")
        if self.end.total_payload_bytes != self.spool.held():
            raise FormatError(f"END says {self.end.total_payload_bytes} payload bytes, received {self.spool.held()}")
        sha = self.spool.data_sha256()
        if sha != self.end.sha256 or sha != self.hello.sha256:
            raise ChecksumError("decoded data does not match the original's SHA-256; nothing was written")
        self.done = Done(sha, twin.digest())
        self.placed = self.spool.identity()   # the output once in place: a stop from here on may find it there
        self.spool.publish(out_path, force)
        self.link.done(self.done)             # repeated while Bob lingers (receive_stream)
        self.published = True
        link = self.link.stats
        stats = run_stats(twin, self.hello.total_length, self.spool.held(), started, self.spool.held(),
                          syncs_checked=self.ledger.checked, stored_chunks=self.decoder.stored_chunks,
                          frames_received=link.frames_received, duplicates=link.duplicates,
                          out_of_order=link.out_of_order, sender_reconnects=self.reconnects,
                          resent_bytes=self.resent_bytes, resumed_from_step=self.resumed_from,
                          stream_id=self.hello.stream_id)
        if self.telemetry is not None:        # after the clock stopped: the ledger's sizing is no coding time
            stats.update(self.telemetry.stats())
        return stats
