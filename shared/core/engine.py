"""The lockstep engine: the one object Alice and Bob both drive.

Training a model *is* compression. Alice and Bob each build a `Twin` from the same RunConfig
and the same seed, so their models start bit-identical. Then, chunk by chunk:

  1. predict  the twin re-reads the last `context` tokens of each stream (`prime`) and predicts
              the chunk one token at a time (`extend`), exactly as a decoder must; with
              `orders`, byte n-gram counts (ngram.py) are looked up for each position and
              mixed into the logits, and counted once the position is coded;
  2. code     each prediction becomes integer frequencies; Alice's coder *encodes* the true
              token with them, Bob's coder *decodes* the token from the bits. That call is the
              only place the two sides differ;
  3. learn    the twin takes a training step on the chunk just coded, which both sides now
              know, so both models change identically; with `replay`, more steps follow on
              windows of older history (known to both sides, so free of bits).

The input is cut into `streams` contiguous sub-streams coded side by side (one batch row
each), which is what makes a CPU fast enough. Every shape depends only on the config and the
input length, both of which Bob learns from the header before the first bit.

Every `sync_every` steps the twin hashes its weights; comparing those digests is how a
divergence (corrupted bits, a different CPU, one flipped weight) is caught at the step where it
happens instead of as garbage at the end.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from . import portable
from .config import FREQ_BITS, PAD, RunConfig
from .errors import DivergenceError, FormatError, NotANumber
from .layout import n_steps, row_length
from .mixer import TreeMixer, bit_cost
from .model import GPT, CountMixer, loss_on, make_optimizer
from .ngram import ContextCounts, table_bits_for, trust_index
from .pinned import torch
from .quantize import quantize


@dataclass
class StepReport:
    step: int                 # steps completed (1-based after the first chunk)
    tokens_done: int          # tokens coded so far, all streams
    chunk_tokens: int         # tokens coded in this step
    chunk_bits: float         # ideal bits for them: sum of -log2 p(true token)
    loss: float               # training loss after coding (nats, over the training window)
    digest: str | None        # weight digest after this step, on sync steps
    tokens: np.ndarray        # (streams, chunk) the chunk just coded, PAD where a stream had ended
    bits: np.ndarray          # (streams, chunk) -log2 p of each of its tokens, NaN where none


class Watcher:
    """Whoever watches a twin code (lectures): attach one as `twin.watcher`. The engine calls it
    and keeps no presentation state of its own; the default methods do nothing."""

    shows_distribution = True   # `position` gets the whole distribution coded with; with the tree
                                # mixer that costs a pass over all 255 nodes, so a watcher that
                                # reads only the bytes and counts says False and gets None

    def position(self, step: int, t: int, rows: np.ndarray, probs: np.ndarray, symbols: np.ndarray) -> None:
        """Position t of step `step` was coded on `rows` with `probs` (n, VOCAB), None if this
        watcher's `shows_distribution` is False: `symbols`."""

    def chunk(self, step: int, count_window: np.ndarray | None) -> None:
        """Step `step` was learned; `count_window` holds the counts its positions were predicted with."""


PARTS = ("network", "counts", "mixture", "final")   # Twin.earned: what each part would have cost


class Layout:
    """How a byte string of `length` maps onto `streams` rows of `chunk`-token steps."""

    def __init__(self, length: int, streams: int, chunk: int):
        self.length = length
        self.streams = streams
        self.chunk = chunk
        self.row_len = row_length(length, streams)
        self.n_steps = n_steps(length, streams, chunk)
        self.lens = np.clip(length - np.arange(streams) * self.row_len, 0, self.row_len)

    def active(self, pos: int) -> np.ndarray:
        """Which rows have a token at position `pos`."""
        return pos < self.lens

    def pieces(self, t0: int, width: int):
        """(row, byte offset in the original, count) for positions t0 .. t0+width of every row."""
        for b in range(self.streams):
            n = int(min(max(self.lens[b] - t0, 0), width))
            if n:
                yield b, b * self.row_len + t0, n

    def rows(self, data, t0: int, width: int) -> np.ndarray:
        """Tokens at positions t0 .. t0+width of every row, PAD where a row has ended."""
        out = np.full((self.streams, width), PAD, dtype=np.int64)
        for b, offset, n in self.pieces(t0, width):
            out[b, :n] = np.frombuffer(data, dtype=np.uint8, count=n, offset=offset)
        return out


class Twin:
    """One of the two identical machines. Build it, then call `advance(coder)` once per step.

    Memory stays flat however long the stream: the twin keeps only a window of
    `context + chunk` tokens per stream (`self.window`); finished chunks go to `sink`.
    """

    def __init__(self, config: RunConfig, length: int, data: bytes | None = None, sink=None):
        self.config = config.validate()
        m = config.model
        self.layout = Layout(length, config.streams, m.chunk)
        self.model = GPT(m, config.seed)
        self.opt = make_optimizer(self.model, config.train)
        self.data = data          # Alice has the text; Bob has None and decodes it
        self.sink = sink          # callable(t0, chunk tokens (streams, chunk)) after each step
        # positions t0-context .. t0+chunk-1 of every stream; PAD before a stream's start
        self.window = np.full((config.streams, m.context + m.chunk), PAD, dtype=np.int64)
        # n-gram counts (if the config has orders) and, per window position, the counts its
        # token was predicted with: training must see exactly what coding saw
        self.counts = (ContextCounts(m.orders, table_bits_for(m.table_bits, length), config.streams, m.words,
                                     m.match, -(-length // config.streams), m.structure) if m.n_contexts else None)
        self._network_rows = m.network_rows             # the count rows the network's count mixer reads
        self.count_window = (np.zeros((config.streams, m.context + m.chunk, m.n_contexts, 256), np.uint8)
                             if m.n_contexts else None)
        # their trust index, kept from coding for training: the same function of the same
        # counts, computed once instead of again for every training pass
        self._index_window = self._index(self.count_window) if m.n_contexts else None
        # the newest `replay_span` coded tokens of every stream, if the config replays history
        tc = config.train
        self.past = np.full((config.streams, tc.replay_span), PAD, dtype=np.int16) if tc.replay else None
        self.past_len = 0
        # with `tree`, a byte-tree mixer and APMs (mixer.py) refine every prediction before coding
        self.tree = TreeMixer(m.n_contexts, match=bool(m.match), orders=len(m.orders), words=m.words) if m.tree else None
        self.step = 0
        self.tokens_done = 0
        self.ideal_bits = 0.0
        # what the coded bytes would have cost under each part of the prediction (`earned`)
        self.part_bits = dict.fromkeys(PARTS[:3], 0.0)
        self.watcher: Watcher | None = None
        self._shown = None        # with a watcher and the tree mixer: the cdf shown for the last position

    @property
    def n_steps(self) -> int:
        return self.layout.n_steps

    @property
    def finished(self) -> bool:
        return self.step >= self.layout.n_steps

    def advance(self, coder) -> StepReport:
        """Predict, code and learn one chunk. `coder` is a ChunkEncoder (Alice) or ChunkDecoder (Bob)."""
        C, T = self.config.model.context, self.config.model.chunk
        t0 = self.step * T
        chunk_bits, chunk_tokens = 0.0, 0
        chunk_cost = np.full((self.config.streams, T), np.nan)
        win = self.window
        win[:, C:] = self.layout.rows(self.data, t0, T) if self.data is not None else PAD

        # 1-2. predict and code, token by token, identically on both sides
        probs = self.model.prime(torch.from_numpy(win[:, :C]), self._counts_for(C))
        coder.begin_chunk()
        for t in range(T):
            rows = self.layout.active(t0 + t)
            if rows.any():
                p = probs.numpy()[rows]
                if not np.isfinite(p).all():        # before quantize: a NaN's cast differs by CPU
                    raise NotANumber(self.step + 1)
                cdf = quantize(p)
                if self.tree is None:
                    symbols = coder.code(cdf, win[rows, C + t])
                    index = np.arange(len(symbols))
                    bits = FREQ_BITS - np.log2((cdf[index, symbols + 1] - cdf[index, symbols]).astype(np.float64))
                else:
                    symbols, bits = self._code_tree(coder, rows, C + t, cdf)
                win[rows, C + t] = symbols
                if self.counts is not None:
                    self.counts.update(rows, symbols)
                self._account(rows, symbols)
                chunk_cost[rows, t] = bits
                chunk_bits += float(bits.sum())
                chunk_tokens += len(symbols)
                if self.watcher is not None:    # what was coded: after the tree mixer, if any
                    shown = (None if not self.watcher.shows_distribution else p if self.tree is None else
                             (np.diff(self._shown, axis=1) / float(1 << FREQ_BITS)).astype(np.float32))
                    self.watcher.position(self.step, t, rows, shown, symbols)
            if t < T - 1:
                probs = self.model.extend(torch.from_numpy(win[:, C + t]), self._counts_for(C + t + 1))
        coder.end_chunk()

        # 3. learn from the chunk both sides now know
        loss = self._learn(t0)
        tokens = win[:, C:].copy()
        if self.sink is not None:
            self.sink(t0, tokens)
        if self.watcher is not None:
            self.watcher.chunk(self.step + 1, self.count_window)
        win[:, :C] = win[:, -C:].copy()      # slide: the newest `context` tokens are the next history
        win[:, C:] = PAD
        if self.count_window is not None:
            self.count_window[:, :C] = self.count_window[:, -C:].copy()
            self.count_window[:, C:] = 0
            self._index_window[:, :C] = self._index_window[:, -C:].copy()   # C.. are all written before training
        self.step += 1
        self.tokens_done += chunk_tokens
        self.ideal_bits += chunk_bits
        sync = self.step % self.config.sync_every == 0 or self.finished
        return StepReport(self.step, self.tokens_done, chunk_tokens, chunk_bits, loss,
                          self.digest() if sync else None, tokens, chunk_cost)

    def _code_tree(self, coder, rows: np.ndarray, pos: int, cdf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Code window position `pos` of `rows` through the byte-tree mixer: each byte is its 8
        binary decisions. Alice (and Bob in a stored chunk, whose bytes came uniformly) knows the
        bytes, so the mixer computes their paths; Bob walks down the tree, a bit per stream and
        depth from his decoder. Returns the bytes and what each cost (bits)."""
        win = self.window
        n = np.count_nonzero(rows)
        before = [win[rows, pos - d] if pos >= d else np.full(n, PAD) for d in (1, 2, 3)]
        prev = np.stack(before, axis=1)                             # (n, 3): the byte before, the two before it
        prev = np.where(prev == PAD, 0, prev)
        counts = self.count_window[rows, pos] if self.counts is not None else None
        if self.watcher is not None and self.watcher.shows_distribution:   # the whole tree, to show
            self._shown = self.tree.predict(cdf, counts, prev)
        if self.data is not None or coder.stored:
            symbols = win[rows, pos] if self.data is not None else coder.code(cdf)
            p16, bits = self.tree.path(cdf, counts, prev, symbols)
        else:
            symbols, p16, bits = self.tree.walk(cdf, counts, prev, coder.decode_bits, coder.decode_tree)
        cost = bit_cost(p16, bits).sum(axis=1)
        coder.code_bits(p16, bits, symbols, cost)
        return symbols, cost

    def _account(self, rows: np.ndarray, symbols: np.ndarray) -> None:
        """Add what `symbols` would have cost under the network alone, the counts alone and the
        mixture before SSE (float64 log-softmax at the coded byte: a report, never coded)."""
        index = np.arange(len(symbols))
        network, evidence = self.model.parts
        for name, logits in (("network", network), ("counts", evidence)):
            if logits is not None:
                z = logits.numpy()[rows]
                top = z.max(axis=1)
                lse = top + np.log(np.exp(z - top[:, None]).sum(axis=1))
                self.part_bits[name] += float((lse - z[index, symbols]).sum() / math.log(2))
        if self.tree is not None:
            self.part_bits["mixture"] += self.tree.update(symbols)

    @property
    def earned(self) -> dict:
        """Bits the coded bytes would have cost under each part of the prediction, and the
        final (coded) one: `network` alone, `counts` alone, the `mixture` before SSE and
        `final` after it. None where this configuration has no such part."""
        m = self.config.model
        out = {**self.part_bits, "final": self.ideal_bits}
        if not m.n_contexts:
            out["counts"] = None
        if self.tree is None:
            out["mixture"] = out["final"] if m.n_contexts else None
        return out

    def _counts_for(self, pos: int):
        """Look up the n-gram counts for predicting window position `pos`; remember them and
        their trust index."""
        if self.counts is None:
            return None
        counts = self.counts.lookup(out=self.count_window[:, pos])
        index = trust_index(counts, CountMixer.N_BUCKETS, self._network_rows, out=self._index_window[:, pos])
        return torch.from_numpy(counts), torch.from_numpy(index)

    def features_for_training(self, count_window: np.ndarray):
        """What the model reads of the counts, aligned with a training pass over window[:, :-1]
        (targets window[:, 1:])."""
        return self._features(count_window[:, 1:])

    def _index(self, counts: np.ndarray) -> np.ndarray:
        return trust_index(counts, CountMixer.N_BUCKETS, self._network_rows)

    def _features(self, counts: np.ndarray):
        return torch.from_numpy(counts), torch.from_numpy(self._index(counts))

    def _learn(self, t0: int) -> float:
        C, T = self.config.model.context, self.config.model.chunk
        window = self.window
        targets = window[:, 1:].copy()
        inputs = window[:, :-1].copy()
        positions = np.arange(t0 - C + 1, t0 + T)                  # position of each target
        mask = (positions[None, :] >= 0) & (positions[None, :] < self.layout.lens[:, None])
        if not self.config.train.loss_on_context:
            mask[:, :C - 1] = False
        targets[~mask] = -1
        if not mask.any():
            return math.nan
        x, y = torch.from_numpy(inputs), torch.from_numpy(targets)
        counts = ((torch.from_numpy(self.count_window[:, 1:]), torch.from_numpy(self._index_window[:, 1:]))
                  if self.counts is not None else None)     # = features_for_training(count_window)
        tc = self.config.train
        if tc.lr_decay:       # a function of the step alone: a resumed twin needs no scheduler state
            for group in self.opt.param_groups:
                group["lr"] = group["scale"] * tc.lr / math.sqrt(1.0 + self.step / tc.lr_decay)
        for _ in range(tc.steps_per_chunk):
            loss = loss_on(self.model, x, y, counts)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip > 0:
                portable.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
            self.opt.step()
        if self.past is not None:
            self._remember(window[:, C:])
            self._replay()
        return float(loss.detach())

    def _remember(self, chunk: np.ndarray) -> None:
        T = chunk.shape[1]
        self.past[:, :-T] = self.past[:, T:]
        self.past[:, -T:] = chunk
        self.past_len = min(self.past_len + T, self.past.shape[1])

    def _replay(self) -> None:
        """Train again on windows of older history. Both sides already have it, so it costs no
        bits; the draws come from PCG64([seed, step, r]), so they need no state to checkpoint.
        Count features are looked up leave-one-out (the target's own occurrence removed)."""
        C, T = self.config.model.context, self.config.model.chunk
        W, B, span = C + T, self.config.streams, self.past.shape[1]
        if self.past_len < W:
            return
        start = span - self.past_len
        for r in range(self.config.train.replay):
            rng = np.random.Generator(np.random.PCG64([self.config.seed, self.step, r]))
            rows = rng.integers(0, B, B)
            ends = rng.integers(start + W, span + 1, B)
            cols = ends[:, None] + np.arange(-W - 8, 0)[None, :]        # 8 bytes of context first
            seg = np.where(cols >= 0, self.past[rows[:, None], np.maximum(cols, 0)], PAD).astype(np.int64)
            window = seg[:, 8:]
            targets = window[:, 1:].copy()
            targets[targets == PAD] = -1
            if (targets < 0).all():
                continue
            counts = None
            if self.counts is not None:
                counts = self._features(self.counts.lookup_past(seg[:, 1:]))
            loss = loss_on(self.model, torch.from_numpy(window[:, :-1].copy()), torch.from_numpy(targets), counts)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.config.train.grad_clip > 0:
                portable.clip_grad_norm_(self.model.parameters(), self.config.train.grad_clip)
            self.opt.step()

    # --- checkpoints: everything that decides the next step, nothing more ---------------------
    def state_dict(self) -> dict:
        state = {"step": self.step, "tokens_done": self.tokens_done, "ideal_bits": self.ideal_bits,
                 "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                 "window": torch.from_numpy(self.window.copy()), "digest": self.model.digest()}
        if self.counts is not None:      # the tables themselves are rebuilt from the data on load
            state["ngram"] = {"history": torch.from_numpy(self.counts.history.view(np.int64).copy()),
                              "count_window": torch.from_numpy(self.count_window.copy())}
        if self.past is not None:
            state["past"] = {"tokens": torch.from_numpy(self.past.copy()), "length": self.past_len}
        if self.tree is not None:
            # 16-bit APM cells travel as int16 (torch's own 16-bit integer), 4 MB instead of 17
            state["tree"] = {k: torch.from_numpy(v.view(np.int16) if v.dtype == np.uint16 else v)
                             for k, v in self.tree.state().items()}
        state["part_bits"] = dict(self.part_bits)
        return state

    def load_state_dict(self, state: dict, source=None) -> None:
        """Continue from a checkpoint. With n-gram counts, `source` must hold the bytes coded so
        far at their original offsets (Alice: the input; Bob: his data.bin): the tables, far too
        big to checkpoint every few steps, are rebuilt from it by the same updates in the same order."""
        if not 0 <= state["step"] <= self.n_steps or tuple(state["window"].shape) != self.window.shape:
            raise FormatError("checkpoint does not fit this stream's layout; remove it and start again")
        if (self.counts is not None) != ("ngram" in state):
            raise FormatError("checkpoint does not fit this stream's configuration (n-gram counts); remove it")
        if self.counts is not None:
            ngram = state["ngram"]
            if (tuple(ngram["count_window"].shape) != self.count_window.shape
                    or tuple(ngram["history"].shape) != self.counts.history.shape):
                raise FormatError("checkpoint does not fit this stream (n-gram window); remove it")
            if source is None:
                raise ValueError("resuming with n-gram counts needs the bytes coded so far")
            self._rebuild_counts(source, state["step"])
            if not np.array_equal(self.counts.history, ngram["history"].numpy().view(np.uint64)):
                raise FormatError(f"checkpoint at step {state['step']} does not match the data coded so far "
                                  f"(n-gram history differs); remove it to start over")
            self.count_window[:] = ngram["count_window"].numpy()
            self._index_window = self._index(self.count_window)
        if (self.past is not None) != ("past" in state) or (
                self.past is not None and tuple(state["past"]["tokens"].shape) != self.past.shape):
            raise FormatError("checkpoint does not fit this stream's configuration (replay history); remove it")
        if self.past is not None:
            self.past[:] = state["past"]["tokens"].numpy()
            self.past_len = int(state["past"]["length"])
        if (self.tree is not None) != ("tree" in state):
            raise FormatError("checkpoint does not fit this stream's configuration (tree mixer); remove it")
        if self.tree is not None:
            try:
                self.tree.load({k: v.numpy().view(np.uint16) if v.dtype == torch.int16 else v.numpy()
                                for k, v in state["tree"].items()})
            except (KeyError, ValueError) as e:
                raise FormatError(f"checkpoint does not fit this stream (tree mixer: {e}); remove it") from None
        self.part_bits = {**dict.fromkeys(PARTS[:3], 0.0), **state.get("part_bits", {})}
        self.model.load_state_dict(state["model"])
        try:
            self.opt.load_state_dict(state["optimizer"])
        except (KeyError, ValueError) as e:
            raise FormatError(f"checkpoint does not fit this build's optimizer ({e}); remove it") from None
        self.window[:] = state["window"].numpy()
        self.step, self.tokens_done, self.ideal_bits = state["step"], state["tokens_done"], state["ideal_bits"]
        if self.model.digest() != state["digest"]:
            raise FormatError(f"checkpoint at step {self.step} is damaged (weight digest mismatch); remove it")

    def _rebuild_counts(self, source, steps: int) -> None:
        T = self.config.model.chunk
        self.counts.clear()
        for step in range(steps):
            t0 = step * T
            tokens = self.layout.rows(source, t0, T)
            for t in range(T):
                rows = self.layout.active(t0 + t)
                if rows.any():
                    self.counts.update(rows, tokens[rows, t])

    def digest(self) -> str:
        """SHA-256 of everything the twin has learned that the bytes alone do not rebuild: the
        GPT's weights and, with `tree`, the mixer's weights and APM tables. Matching digests at a
        step prove both sides predict the next byte alike."""
        if self.tree is None:
            return self.model.digest()
        h = hashlib.sha256(bytes.fromhex(self.model.digest()))
        for table in self.tree.tables():
            h.update(np.ascontiguousarray(table))     # the array's bytes, without a copy
        return h.hexdigest()


class Output:
    """Collects a twin's finished chunks into the original byte order (file mode: in memory)."""

    def __init__(self, layout: Layout):
        self.layout = layout
        self.buf = bytearray(layout.length)

    def __call__(self, t0: int, chunk: np.ndarray):
        for b, offset, n in self.layout.pieces(t0, chunk.shape[1]):
            self.buf[offset:offset + n] = chunk[b, :n].astype(np.uint8).tobytes()


class SyncLedger:
    """Matches the sender's digests against ours, whichever arrives first.

    On a link, Alice's digest for step s can arrive before or after Bob finishes step s; in a
    file, all of them are known up front. Either way the first disagreement names its step.
    """

    def __init__(self, what: str = "sender"):
        self.what = what
        self.theirs: dict[int, str] = {}      # sender digests not yet matched
        self.ours: dict[int, str] = {}        # all of ours: a resumed sender may repeat old steps
        self.checked = 0
        self.last_step = 0

    def _check(self, step: int):
        a, b = self.ours[step], self.theirs.pop(step)
        n = min(len(a), len(b))        # files keep a prefix (container.DIGEST_PREFIX), links the whole digest
        if a[:n] != b[:n]:
            raise DivergenceError(step, a, b, self.what)
        self.checked += 1
        self.last_step = step

    def sender(self, step: int, digest: str):
        self.theirs[step] = digest
        if step in self.ours:
            self._check(step)

    def receiver(self, step: int, digest: str):
        self.ours[step] = digest
        if step in self.theirs:
            self._check(step)

    def unmatched(self) -> list[int]:
        """Sender digests for steps we never reached (ours may lack a partner after a resume)."""
        return sorted(self.theirs)
