"""Run configuration: plain dataclasses, one place for every constant both sides must share.

A `RunConfig` travels in the container header and in the handshake; the receiver rebuilds
its twin from it, so nothing here may depend on the machine it runs on.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from .errors import ConfigMismatch, UsageError

VOCAB = 256                 # byte-level tokens: every file is a token sequence
PAD = 256                   # input-only token: "before the start of the stream"
FREQ_BITS = 24              # probability quantisation: totals of 2**24 (docs/determinism.md)
PROB_BITS = 16              # a binary decision's P(bit 1), as the byte-tree mixer codes it: 1 .. 2**16 - 1

# What a configuration from a file header or a peer's HELLO may ask for (RunConfig.from_dict):
# checked before anything is allocated, so a hostile header cannot exhaust memory.
MAX_LENGTH = 1 << 30        # bytes one file or stream may declare: the decoder sizes its output by it
MAX_SYNC_EVERY = 64         # steps between weight digests: a crafted file is caught within this many steps
INT_RANGES = {"streams": (1, 1024), "seed": (0, 2**63 - 1), "sync_every": (1, MAX_SYNC_EVERY),
              "model.n_layer": (1, 64), "model.n_head": (1, 64), "model.n_embd": (1, 4096),
              "model.context": (1, 8192), "model.chunk": (1, 8192), "model.table_bits": (8, 24), "model.words": (0, 2),
              "model.match": (0, 8), "model.hash_bits": (8, 22), "model.tree": (0, 1), "model.structure": (0, 4095), "train.steps_per_chunk": (1, 64),
              "train.replay": (0, 16), "train.replay_span": (1, 1 << 16), "train.lr_decay": (0, 1 << 30)}
FLOAT_RANGES = {"train.lr": (0.0, 1.0), "train.beta1": (0.0, 0.999999), "train.beta2": (0.0, 0.999999),
                "train.eps": (0.0, 1.0), "train.weight_decay": (0.0, 1.0), "train.grad_clip": (0.0, 1e6),
                "train.hashed_lr": (0.0, 64.0)}
# What one twin of a configuration may cost, whatever its header says (`cost` estimates both from
# every big tensor the twin holds or builds in a step; the presets use at most 1/5 of each):
MAX_MEMORY = 4 << 30        # bytes: weights + Adam state, masks, KV cache, a step's training graph, tables
MAX_STEP_WORK = 1 << 39     # work units (one float64 multiply-add each) in one step (docs/reliability.md)
SCORE_WORK = 1 << 10        # one attention score through the portable softmax, in work units (measured)
CALL_WORK = 1 << 24         # one layer's per-position call overhead in `extend`, in work units (measured)
RUNTIME_BYTES = 1 << 27     # what a twin's first steps add whatever its size (allocator, thread pools)
PARAM_BYTES = 40            # per weight: itself, its gradient, Adam's moments, float64 and update temporaries
MAX_TABLES = 1 << 30        # bytes of n-gram count tables (one byte per count)
MATCH_SPAN = 1 << 18        # bytes of history the match model keeps per stream (ngram.MatchModel.SPAN)
MATCH_ROWS = 1 << 20        # its table of places (ngram.MatchModel.BITS), 8 bytes each
MAX_ORDER = 8               # n-gram contexts live in one 64-bit word per stream
STRUCTURE_BITS = 16         # rows per structure context (ngram.Structure), at most; the near ones too (docs/results.md)
WORD_KINDS = 0b1111 << 7    # the structure word rows (skip_word, word_mark, mark_gap, line_column): 2**WORD_BITS
WORD_BITS = 16              # rows each at most, as a structure row's; order 3's cap below pays for them (docs/results.md)
ORDER_BITS = {3: 16, 4: 17, 5: 17}   # order k's rows at most, below table_bits: order 3's contexts fit 2**16,
                            # orders 4 and 5 share what order 4 alone had (docs/results.md)
INDIRECT_KIND = 1 << 11     # the indirect structure row (the last byte and what followed it): 2**INDIRECT_BITS
INDIRECT_BITS = 15          # rows at most, half a structure row's: its contexts are few (for strong's memory)
STRUCTURE_RING = 1 << 13    # bytes of history per stream the structure contexts look back into
TAG_STACK = 16              # markup elements open per stream the nest context remembers (the innermost kept)
VOID_ELEMENTS = ("area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
                 "track", "wbr")   # HTML elements never closed: "<br>" opens none (ngram.Structure)
TREE_ONLY = 0b1111 << 8     # structure rows (word_mark, mark_gap, line_column, indirect) that, with the tree mixer, only it
                            # reads: so default's network mixes 16 of its 21 rows, one tree of sums (docs/results.md)
TREE_ONLY_ORDERS = (5,)     # byte orders that, with the tree mixer, only it reads (order 5: strong's memory estimate)
MAX_NGRAM_STREAMS = 128     # counts saturate at 255: a step adds at most `streams` to one row
HASHED_APM_BITS = 14        # rows of each hashed APM of the tree mixer (the two and three bytes before, with the node)


@dataclass(frozen=True)
class ModelConfig:
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    context: int = 64       # tokens of already-coded history re-read before each chunk
    chunk: int = 32         # tokens per stream coded between two training steps
    # Byte n-gram counts mixed into the logits (shared/core/ngram.py): which orders, table size.
    orders: tuple = ()      # e.g. (1, 2, 3, 4, 6): k bytes of context each, at most 8
    table_bits: int = 18    # each order's table holds 2**table_bits contexts x 256 counts
    words: int = 0          # word contexts: 1 = the word so far, 2 = also with the word before it
                            # (between words: the last word, and the last two)
    match: int = 0          # match model (ngram.MatchModel): bytes of context it looks up (0: none)
    structure: int = 0      # structure contexts, a bit each (ngram.STRUCTURE): shape, column, record, align, nest,
                            # near, near_word, skip_word, word_mark, mark_gap, line_column, indirect
    tree: int = 0           # 1: a byte-tree mixer and APMs refine each prediction (mixer.py)
    # The network's own memory of contexts (model.HashedContexts): a learned vector per hashed
    # k-byte context, added to each token's embedding; trained by the same Adam step.
    hashed: tuple = ()      # e.g. (2, 3, 4, 6): k bytes each, at most 8
    hash_bits: int = 16     # its table holds 2**hash_bits vectors, shared by those orders

    @property
    def n_contexts(self) -> int:
        """Count rows the model mixes: byte orders, word contexts and the match model's guess."""
        return len(self.orders) + self.words + bin(self.structure).count("1") + (1 if self.match else 0)

    def __post_init__(self):   # JSON gives lists; compare and hash as a tuple
        for name in ("orders", "hashed"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))

    @property
    def network_rows(self) -> tuple | None:
        """The count rows the network's CountMixer reads (indices into the n_contexts rows: the
        orders, the words, a row per structure bit, the match row), or None for all of them:
        with the tree mixer, every row but the TREE_ONLY kinds' and TREE_ONLY_ORDERS', which only
        the tree mixer reads."""
        skip = self.structure & TREE_ONLY if self.tree else 0
        orders = tuple(r for r, k in enumerate(self.orders) if not (self.tree and k in TREE_ONLY_ORDERS))
        if not skip and len(orders) == len(self.orders):
            return None
        bits = [i for i in range(self.structure.bit_length()) if self.structure >> i & 1]
        base = len(self.orders) + self.words
        return (orders + tuple(range(len(self.orders), base)) + tuple(base + r for r, i in enumerate(bits) if not skip >> i & 1)
                + ((self.n_contexts - 1,) if self.match else ()))

    @property
    def n_network_rows(self) -> int:
        rows = self.network_rows
        return self.n_contexts if rows is None else len(rows)

    @property
    def block_size(self) -> int:
        return self.context + self.chunk


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 2e-3
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    steps_per_chunk: int = 1     # optimizer steps on each freshly coded chunk
    loss_on_context: bool = True  # also learn again from the re-read history (free: both sides have it)
    replay: int = 0              # extra optimizer steps per chunk on windows drawn from older history
    replay_span: int = 4096      # tokens of history per stream kept for replay (bounded memory)
    lr_decay: int = 0            # lr * 1/sqrt(1 + step/lr_decay) (0: constant lr)
    hashed_lr: float = 16.0      # the hashed contexts' table's lr, times lr: a row steps only when read


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    streams: int = 16            # contiguous sub-streams coded side by side (the batch)
    seed: int = 1
    sync_every: int = 32         # steps between weight digests (file trailer / SYNC frames)
    preset: str = "default"

    def to_dict(self) -> dict:
        """Plain JSON types only (tuples become lists), so a dict survives the wire unchanged."""
        d = dataclasses.asdict(self)
        for name in ("orders", "hashed"):
            d["model"][name] = list(d["model"][name])
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        """Rebuild a configuration that came from a file or a peer: every type, range and size is
        checked (ConfigMismatch names the field) before anything would be allocated."""
        try:
            config = cls(model=ModelConfig(**d["model"]), train=TrainConfig(**d["train"]),
                         **{k: v for k, v in d.items() if k not in ("model", "train")})
        except (KeyError, TypeError, AttributeError) as e:
            raise ConfigMismatch(f"run configuration not understood by this build ({e}); "
                                 f"upgrade marslink on this side") from None
        problem = config.problem()
        if problem:
            raise ConfigMismatch(f"run configuration refused: {problem}")
        return config

    def problem(self) -> str | None:
        """What from_dict refuses: the first field of the wrong type or out of range, or None."""
        def get(dotted):   # attributes, not to_dict(): a hostile value may be deeply nested
            part, _, name = dotted.rpartition(".")
            return getattr(getattr(self, part) if part else self, name)
        for name, (lo, hi) in INT_RANGES.items():
            v = get(name)
            if type(v) is not int:
                return f"{name} must be an integer, not {v!r:.40}"
            if not lo <= v <= hi:
                return f"{name} = {str(v)[:40]} is outside {lo}..{hi}"
        for name, (lo, hi) in FLOAT_RANGES.items():
            v = get(name)
            if type(v) not in (int, float) or not math.isfinite(v):
                return f"{name} must be a finite number, not {v!r:.40}"
            if not lo <= v <= hi:
                return f"{name} = {v} is outside {lo}..{hi}"
        if type(self.train.loss_on_context) is not bool:
            return f"train.loss_on_context must be true or false, not {self.train.loss_on_context!r:.40}"
        if type(self.preset) is not str or len(self.preset) > 64:
            return f"preset must be a name of at most 64 characters, not {self.preset!r:.40}"
        m = self.model
        for name in ("orders", "hashed"):
            orders = getattr(m, name)
            if (type(orders) is not tuple or len(orders) > MAX_ORDER
                    or any(type(k) is not int or not 1 <= k <= MAX_ORDER for k in orders)
                    or list(orders) != sorted(set(orders))):
                return f"model.{name} must be increasing whole numbers in 1..{MAX_ORDER}, not {orders!r:.60}"
        if m.n_contexts and self.streams > MAX_NGRAM_STREAMS:
            return f"streams = {self.streams} is above {MAX_NGRAM_STREAMS}, the limit with n-gram counts"
        if m.n_embd % m.n_head:
            return f"model.n_embd ({m.n_embd}) must be a multiple of model.n_head ({m.n_head})"
        if m.n_contexts and not m.n_network_rows:   # every row is the tree mixer's alone: CountMixer of 0 rows
            return (f"model.structure = {m.structure} with model.tree = 1 leaves the network no count row to read; "
                    f"it needs an order other than {', '.join(map(str, TREE_ONLY_ORDERS))} in model.orders, model.words, model.match "
                    f"or a structure bit outside {TREE_ONLY}")
        if self.train.replay and self.train.replay_span < m.block_size:   # engine.Twin._remember, _replay
            return (f"train.replay_span = {self.train.replay_span} is below model.context + model.chunk = "
                    f"{m.block_size}, the window each train.replay step trains on")
        memory, work = cost(self)
        for what, size, limit in (("n-gram tables (bytes)", table_bytes(m), MAX_TABLES),
                                  ("memory (bytes)", memory, MAX_MEMORY),
                                  ("work per step (multiply-adds)", work, MAX_STEP_WORK)):
            if size > limit:
                return f"{what} = {size:,} exceeds this build's limit of {limit:,}"
        return None

    def validate(self) -> "RunConfig":
        """Refuse, before any work, every configuration from_dict would refuse: a run one side
        starts is one the other side accepts."""
        problem = self.problem()
        if problem:
            raise UsageError(f"run configuration refused: {problem}")
        return self


def cost(config: RunConfig) -> tuple[int, int]:
    """(bytes of memory, work units per step) one twin of `config` needs, counted from every big
    tensor it holds or builds in a step, so that a crafted header is refused before it is built
    (MAX_MEMORY, MAX_STEP_WORK). Generous rather than exact; tests/test_limits.py checks it
    against what a twin really takes. A new model field that costs memory or time belongs here."""
    m, tc, B = config.model, config.train, config.streams
    E, L, H, S, C, T, K = m.n_embd, m.n_layer, m.n_head, m.block_size, m.context, m.chunk, m.n_contexts
    N = m.n_network_rows                                           # the rows the network's count mixer reads
    params = (VOCAB + 1 + S) * E + L * (12 * E * E + 13 * E) + 2 * E + VOCAB * E + (N * N * 64 + E * N + N)
    trains = tc.steps_per_chunk + tc.replay                        # forward + backward passes per step
    scores = L * B * H * (C * C + C * T + T * T // 2 + 3 * trains * S * S)   # attention scores computed
    macs = B * S * (L * 12 * E * E + VOCAB * E + E * N + N * VOCAB) * (2 + 3 * trains)
    work = macs + SCORE_WORK * scores + CALL_WORK * L * (T + 1 + 3 * trains) + B * S * len(m.hashed) * E * 8 * trains
    R = (1 << m.hash_bits) * E if m.hashed else 0                 # the hashed contexts' table (model.HashedContexts)
    memory = (RUNTIME_BYTES + PARAM_BYTES * params                # weights, gradients, Adam, their temporaries
              + 12 * R + B * S * len(m.hashed) * E * 4 * 12 * trains   # it and its moments; a step's rows read
              + L * S * S                                         # each layer's causal mask
              + L * 2 * B * S * E * 4                             # KV cache
              + B * S * (L * (24 * E * 4 + 24 * H * S) + VOCAB * 16 + K * VOCAB + N * VOCAB * 8)   # a step's graph
              + table_bytes(m) + 4 * (table_bytes(m) >> 8)        # count tables; per row: check, total, top
              + (B * MATCH_SPAN + MATCH_ROWS * 8 if m.match else 0)
              + B * tc.replay_span * 2 * (tc.replay > 0)
              + (B * (STRUCTURE_RING * 8 + 3 * 256 * 8 + (TAG_STACK + 26) * 8) if m.structure else 0)   # ngram.Structure's rings, state
              # mixer.TreeMixer: its APMs (node, node x previous byte, the two hashed ones; 33
              # cells of uint16), its int32 weights and update counts (per node: 9 rows by kind of
              # byte, 256 by byte, 9 * 9 * 9 by shape, `reaches` by reach) and a position's inputs
              # and the sets' products for every node of every stream (`predict` holds one set's
              # rows at a time)
              + (((VOCAB + 1) * (VOCAB - 1) + 2 * (1 << HASHED_APM_BITS)) * 33 * 2
                 + (9 + VOCAB + 9 * 9 * 9 + reaches(len(m.orders), m.words)) * (VOCAB - 1) * ((2 * K + 3) * 4 + 4)
                 + B * (2 * K + 3) * (VOCAB - 1) * 8 * 7 if m.tree else 0))
    work += 4 * B * T * (VOCAB - 1) * (2 * K + 3) * 8 if m.tree else 0   # four weight sets
    return memory, work


def reaches(orders: int, words: int) -> int:
    """Rows per node of the tree mixer's reach set (mixer.reach): the longest byte order of
    `orders` that has seen the node or none, whether it saw one side only, and how many of the
    `words` word rows saw it."""
    return (orders + 1) * 2 * (words + 1)


def order_bits(k: int, table_bits: int) -> int:
    """Order k's table holds 2**order_bits rows: no more than its 256**k contexts, table_bits,
    or its cap in ORDER_BITS."""
    return min(8 * k, table_bits, ORDER_BITS.get(k, table_bits))


def kind_bits(i: int, table_bits: int) -> int:
    """Structure kind i's table (bit i of ModelConfig.structure) holds 2**kind_bits rows: its cap
    (the indirect row's is smaller), within table_bits."""
    cap = WORD_BITS if WORD_KINDS >> i & 1 else INDIRECT_BITS if INDIRECT_KIND >> i & 1 else STRUCTURE_BITS
    return min(table_bits, cap)


def table_bytes(m: ModelConfig) -> int:
    """Memory of the n-gram count tables, 256 counts a row (ngram.ContextCounts)."""
    return (sum(256 << order_bits(k, m.table_bits) for k in m.orders) + m.words * (256 << m.table_bits)
            + sum(256 << kind_bits(i, m.table_bits) for i in range(m.structure.bit_length()) if m.structure >> i & 1))


def diff(ours: RunConfig, theirs: RunConfig) -> list[str]:
    """Names of the fields that differ, dotted (e.g. 'train.lr')."""
    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[prefix + k] = v
        return out
    a, b = flat(ours.to_dict()), flat(theirs.to_dict())
    return [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def require_same(ours: RunConfig, theirs: RunConfig, what: str = "sender", us: str = "this side") -> None:
    fields = diff(ours, theirs)
    if fields:
        a, b = ours.to_dict(), theirs.to_dict()

        def get(d, dotted):
            for part in dotted.split("."):
                d = d.get(part, "<missing>") if isinstance(d, dict) else "<missing>"
            return d
        k = "preset" if "preset" in fields else fields[0]     # the name a user typed, before its fields
        raise ConfigMismatch(f"configuration mismatch in {k!r}: {what} has {get(b, k)!r}, {us} has {get(a, k)!r}"
                             + (f" (and {len(fields) - 1} more field(s))" if len(fields) > 1 else "")
                             + "; start both sides with the same preset and options")


PRESETS: dict[str, RunConfig] = {
    # Points on the speed/ratio curve, chosen by measurement (scripts/tune.py, scripts/bench.py);
    # how each was chosen, and what else was tried, is in docs/results.md.
    # fast: a narrow GPT and the counts, half the optimizer steps (chunks of 16), no tree mixer.
    "fast": RunConfig(model=ModelConfig(n_layer=1, n_head=2, n_embd=32, context=8, chunk=16,
                                        orders=(1, 2, 3, 4), words=1, table_bits=16, match=8),
                      train=TrainConfig(lr=4e-3, lr_decay=15), streams=64, preset="fast"),
    # default: the demo's and everyone's; the counts and the structure contexts (the near ones
    # too) carry the ratio, a narrow GPT with its own memory of the contexts of 2, 3, 4 and 6
    # bytes (2**16 vectors) the rest, and the byte-tree mixer with its APMs learns at every
    # position. Weight digests every 64 steps: every 32 KB of input, as `fast`.
    "default": RunConfig(model=ModelConfig(n_layer=1, n_head=2, n_embd=32, context=8, chunk=8,
                                           orders=(1, 2, 3, 4, 5, 6), words=2, table_bits=18, match=8,
                                           structure=4095, tree=1, hashed=(2, 3, 4, 6), hash_bits=16),
                         train=TrainConfig(lr=4e-3, lr_decay=15, hashed_lr=4.0), streams=64, sync_every=64, preset="default"),
    # strong: ratio first; default's counts and hashed contexts, a two-layer GPT with a longer
    # context (10 bytes: 12 coded the same and took strong's memory estimate past a fifth of
    # MAX_MEMORY); at least a quarter of default's speed. With the hashed contexts neither a
    # wider GPT nor a replay step on older history pays (docs/results.md).
    "strong": RunConfig(model=ModelConfig(n_layer=2, n_head=2, n_embd=32, context=10, chunk=8,
                                          orders=(1, 2, 3, 4, 5, 6), words=2, table_bits=18,
                                          match=8, structure=4095, tree=1, hashed=(2, 3, 4, 6), hash_bits=16),
                        train=TrainConfig(lr=4e-3, lr_decay=15, hashed_lr=4.0), streams=64, sync_every=64, preset="strong"),
    # neural: the network alone, no counts and no match model: what the GPT itself learns; on 32
    # streams, so that it takes an optimizer step every 256 bytes (the network alone is
    # starved of steps, not of batch); with its own learned memory of the contexts of 2, 3, 4
    # and 6 bytes (model.HashedContexts), 2**18 vectors.
    "neural": RunConfig(model=ModelConfig(n_layer=2, n_head=4, n_embd=64, context=32, chunk=8,
                                          hashed=(2, 3, 4, 6), hash_bits=18),
                        train=TrainConfig(lr=3e-3, lr_decay=60), streams=32, preset="neural"),
    # bulk: the GPT alone, small: raw throughput for soaks and big transfers.
    "bulk": RunConfig(model=ModelConfig(n_layer=1, n_head=2, n_embd=32, context=16, chunk=16),
                      train=TrainConfig(lr=3e-3), streams=64, sync_every=16, preset="bulk"),
    # tiny: quick runs for tests and lectures; it has every kind of count row, the structure
    # contexts and the tree mixer, so the golden digests cover them all. 32 streams of 8 bytes a
    # step with a context of 8: the 256 bytes a step of 16 x 16, in less time (docs/results.md).
    "tiny": RunConfig(model=ModelConfig(n_layer=1, n_head=2, n_embd=32, context=8, chunk=8,
                                        orders=(1, 2, 3), words=2, table_bits=12, match=8,
                                        structure=4095, tree=1),
                      train=TrainConfig(lr=3e-3), streams=32, sync_every=4, preset="tiny"),
}


def preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
