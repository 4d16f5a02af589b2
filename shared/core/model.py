"""A complete byte-level GPT in one file, in the spirit of nanoGPT's model.py.

Two ways to run it, and the lockstep engine uses each for one purpose only:
  * `forward(idx)`          full causal pass over a window, for *training*;
  * `prime(ctx)` + `extend(tok)`  incremental prediction with a KV cache, for *coding*.
They give slightly different floats (docs/determinism.md: a prefix forward and a full forward
disagree at most positions), which is why both sides code with prime/extend only, with the
same shapes in the same order.

Determinism choices: explicit matmul+softmax attention (no fused SDPA), tanh GELU (exact GELU
runs through oneDNN), weights initialised from numpy's PCG64 (torch.randn depends on the CPU's
vector unit), every matrix product and square root from exact.py (MKL's differ between
Intel and AMD CPUs), every sum, softmax, LayerNorm, GELU, embedding gradient, loss and Adam
update from portable.py (ATen's depend on the vector unit: x86 and ARM differ).
"""
from __future__ import annotations

import decimal
import hashlib
import math

import numpy as np

from . import exact, kernels, ngram, portable
from .config import PAD, VOCAB, ModelConfig, TrainConfig
from .pinned import torch

nn = torch.nn


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.head_dim = cfg.n_embd // cfg.n_head
        self.c_attn = exact.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.c_proj = exact.Linear(cfg.n_embd, cfg.n_embd)
        mask = torch.tril(torch.ones(cfg.block_size, cfg.block_size, dtype=torch.bool))
        self.register_buffer("mask", mask, persistent=False)
        self.scale = 1.0 / math.sqrt(self.head_dim)

    def _heads(self, x):  # (B, S, C) -> 3 x (B, H, S, hd)
        B, S, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        return [t.view(B, S, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v)]

    def _merge(self, y):
        B, H, S, hd = y.shape
        return self.c_proj(y.transpose(1, 2).reshape(B, S, H * hd))

    def forward(self, x, cache=None):
        """Full causal attention over x; if `cache` is given, keep k and v for later `step`s."""
        S = x.shape[1]
        q, k, v = self._heads(x)
        if cache is not None:
            cache[0][:, :, :S] = k
            cache[1][:, :, :S] = v
        att = exact.matmul(q, k.transpose(-2, -1)) * self.scale
        att = att.masked_fill(~self.mask[:S, :S], float("-inf"))
        return self._merge(exact.matmul(portable.softmax(att), v))

    def step(self, x, cache, pos: int):
        """One new position (x is (B, 1, C)) attending over the cached positions 0..pos."""
        q, k, v = self._heads(x)
        cache[0][:, :, pos:pos + 1] = k
        cache[1][:, :, pos:pos + 1] = v
        keys, values = cache[0][:, :, :pos + 1], cache[1][:, :, :pos + 1]
        # one query row: products and a fixed-order sum, cheaper than a matrix product
        att = portable.dot(q, keys, -1).transpose(-2, -1) * self.scale               # (B, H, 1, pos+1)
        return self._merge(portable.dot(portable.softmax(att).transpose(-2, -1), values, -2))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.c_fc = exact.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.c_proj = exact.Linear(4 * cfg.n_embd, cfg.n_embd)

    def forward(self, x):
        return self.c_proj(portable.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = portable.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = portable.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))

    def step(self, x, cache, pos):
        x = x + self.attn.step(self.ln_1(x), cache, pos)
        return x + self.mlp(self.ln_2(x))


class CountMixer(nn.Module):
    """Turns n-gram counts (shared/core/ngram.py) into logit evidence added to the GPT's logits.

    For order k, the evidence for byte s is log(count of s + 1/16), scaled by a learned trust
    that depends on how often each order's context was seen (a log2 bucket of its total), how
    much of it one byte owns (4 levels), and the transformer's state. A weighted sum of log-counts is a
    geometric mixture of the orders: the model learns, by the same Adam step, whom to believe.
    """
    N_BUCKETS = 16          # confidence buckets: 0 for an unseen context, then 1 + log2(total)
    PRIOR = 1 / 16          # added to every count before the log
    TRUST = 0.2             # each order's trust in itself at the start
    LR_SCALE = 0.5          # its learning rate, relative to the GPT's (`make_optimizer`)
    BETA1 = 0.5             # its Adam momentum: the trust follows the counts' changing worth faster

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.K = cfg.n_network_rows          # with the tree mixer, some rows are its alone
        # trust[k] = sum over orders j of trust_table[j, confidence of j][k]: how much to believe
        # order k may depend on how well every order knows its context (PAQ's selected weights)
        self.trust = portable.Embedding(self.K * self.N_BUCKETS * ngram.PURITY, self.K)
        self.gate = exact.Linear(cfg.n_embd, self.K)
        rows = cfg.network_rows
        self.rows = np.arange(self.K, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        self.log_count = log_count_table()  # constants, not weights: no digest or checkpoint holds them

    @torch.no_grad()
    def init_values(self, trust: float = TRUST):
        w = torch.zeros(self.K, self.N_BUCKETS * ngram.PURITY, self.K)
        for k in range(self.K):
            w[k, :, k] = trust              # each order starts trusting only itself
        self.trust.weight.copy_(w.view(-1, self.K))
        self.gate.weight.zero_()
        self.gate.bias.zero_()

    def forward(self, h, counts):
        """h (..., n_embd); counts = (count rows (..., n_contexts, 256) uint8, trust index (...,
        K) from ngram.trust_index of the rows this mixer reads) -> logit evidence (..., 256)."""
        count_rows, which = counts
        w = portable.sum_dim(self.trust(which), -2) + self.gate(h)
        return portable.mix(w, count_rows, self.rows, self.log_count)


class HashedContexts(nn.Module):
    """The network's own memory of contexts: for each order k, a learned vector per hashed
    context of the k bytes ending at a token, added to that token's embedding.

    A GPT of 64 channels cannot remember which byte followed which phrase; a table can, and
    gradient descent fills it like any other weight (no counts: with `neural` the network alone
    still learns everything it knows). The orders share one table. A training pass reads a few
    thousand of its rows, so it reads them as a small leaf of its own and Adam updates only those
    rows (`AdamW`'s sparse group): a dense step over the whole table would cost more than the
    network and move unread rows by their old momentum. Their gradient is not in the clipped
    norm (Adam's step hardly depends on a gradient's scale).
    """
    MUL = 0x2545F491        # odd and below 2**31: a 32-bit hash times MUL stays inside int64
    MASK = (1 << 32) - 1

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.orders, self.bits = cfg.hashed, cfg.hash_bits
        self.weight = nn.Parameter(torch.zeros(1 << cfg.hash_bits, cfg.n_embd))   # zero: unseen adds nothing
        self.read = None          # (rows, their copy that training differentiates) until Adam takes it

    @property
    def span(self) -> int:
        """Tokens before a token that its contexts read."""
        return max(self.orders) - 1

    def history(self, idx, before=None):
        """idx (B, S) with the `span` tokens before it in front, (B, span + S): `before`, or PAD
        where none are known (a window's start: training and `prime` read the same rows that
        way); `extend` carries the last `span` on, a token at a time."""
        if before is None:
            before = torch.full((idx.shape[0], self.span), PAD, dtype=idx.dtype)
        return torch.cat([before, idx], 1)

    def ids(self, idx, before=None):
        """(B, S) tokens -> (B, S, orders) table rows, with `before` as in `history`. Integers only:
        order k's hash starts at k and takes in the tokens 0, 1, ..., k - 1 places back. All orders
        step together, in numpy (int64, below 2**63 throughout), or as one compiled loop of the same
        integers (kernels.hashed_ids): it runs at every coded byte."""
        S = idx.shape[1]
        padded = self.history(idx, before).numpy()
        orders = np.array(self.orders, dtype=np.int64)               # increasing
        if kernels.ENABLED:                                           # the same integers, one loop
            out = np.empty(tuple(idx.shape) + (len(orders),), dtype=np.int64)
            kernels.hashed_ids(np.ascontiguousarray(padded, dtype=np.int64), orders, self.MUL, self.MASK,
                               32 - self.bits, out)
            return torch.from_numpy(out)
        end = padded.shape[1]
        h = np.repeat(orders, idx.shape[0] * S).reshape((len(orders),) + tuple(idx.shape))   # (orders, B, S)
        for j in range(int(orders[-1])):                              # the token j places back
            live = h[int(np.searchsorted(orders, j, side="right")):]  # the orders longer than j
            live *= self.MUL
            live += padded[:, end - S - j:end - j] + 1
            live &= self.MASK
        h *= self.MUL
        h &= self.MASK
        h >>= 32 - self.bits                                          # the best-mixed bits
        return torch.from_numpy(np.ascontiguousarray(np.moveaxis(h, 0, -1)))

    def forward(self, idx, before=None):
        """(B, S) tokens -> the sum of their contexts' vectors (B, S, n_embd), orders in order.
        With autograd on (training) the rows read are kept for Adam; coding just reads them."""
        ids = self.ids(idx, before)
        if torch.is_grad_enabled():
            rows, inverse = torch.unique(ids, sorted=True, return_inverse=True)
            read = torch.from_numpy(np.take(self.weight.detach().numpy(), rows.numpy(), axis=0)).requires_grad_()
            self.read = (rows, read)
            got = portable.embedding(inverse, read)
        else:                       # numpy's take: the same rows, a fraction of torch's indexing cost
            got = torch.from_numpy(np.take(self.weight.detach().numpy(), ids.numpy(), axis=0))
        x = got[:, :, 0]
        for k in range(1, len(self.orders)):
            x = portable.add(x, got[:, :, k])
        return x

    def take_grad(self):
        """(table, rows the last training pass read, their gradient), once; or None."""
        read, self.read = self.read, None
        if read is None or read[1].grad is None:
            return None
        return self.weight, read[0], read[1].grad


def log_count_table() -> np.ndarray:
    """log(count + 1/16) for counts 0..255 as float32: a constant both sides must share exactly,
    so it is computed with Python's decimal module (correctly rounded by specification) rather
    than a vectorised libm whose last bit may depend on the CPU's instruction set."""
    with decimal.localcontext() as ctx:
        ctx.prec = 40
        return np.array([float((decimal.Decimal(n) + decimal.Decimal(CountMixer.PRIOR)).ln())
                         for n in range(256)], dtype=np.float64).astype(np.float32)


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig, seed: int):
        super().__init__()
        self.cfg = cfg
        self.wte = portable.Embedding(VOCAB + 1, cfg.n_embd)       # +1: the PAD token
        self.wpe = portable.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = portable.LayerNorm(cfg.n_embd)
        self.lm_head = exact.Linear(cfg.n_embd, VOCAB, bias=False)
        self.mixer = CountMixer(cfg) if cfg.n_contexts else None
        self.hashed = HashedContexts(cfg) if cfg.hashed else None
        self._init_portably(seed)
        self._cache = None
        self._recent = None           # coding: the tokens before the next one, for its hashed contexts
        self._pos = 0
        self.parts = (None, None)     # (network logits, count evidence) of the last prediction

    @torch.no_grad()
    def _init_portably(self, seed: int):
        """GPT-2 style init drawn from numpy PCG64: same numbers on every CPU."""
        rng = np.random.Generator(np.random.PCG64(seed))
        resid_std = 0.02 / math.sqrt(2 * self.cfg.n_layer)
        for name, p in self.named_parameters():  # a fixed order: module definition order
            if name.endswith("bias") or name.startswith("hashed."):
                p.zero_()
            elif ".ln_" in name or name.startswith("ln_"):
                p.fill_(1.0)
            else:
                std = resid_std if name.endswith("c_proj.weight") else 0.02
                p.copy_(torch.from_numpy((rng.standard_normal(p.shape) * std).astype(np.float32)))
        if self.mixer is not None:
            self.mixer.init_values()

    def _logits(self, x, counts, keep: bool = False):
        """Logits of the network plus the counts' evidence; with `keep` (coding only), both
        parts stay in `self.parts` so the engine can say what each alone would have cost."""
        h = self.ln_f(x)
        logits = self.lm_head(h)
        evidence = self.mixer(h, counts) if self.mixer is not None else None
        if keep:
            self.parts = (logits, evidence)
        return logits if evidence is None else logits + evidence

    def forward(self, idx, counts=None):
        """Logits (B, S, VOCAB) for every position of idx (B, S): the training path.
        `counts` (B, S, K, 256): the n-gram counts each prediction was coded with."""
        S = idx.shape[1]
        x = portable.add(self.wte(idx), self.wpe.weight[:S])
        if self.hashed is not None:
            x = portable.add(x, self.hashed(idx))
        for block in self.blocks:
            x = block(x)
        return self._logits(x, counts)

    # --- incremental prediction: the coding path -------------------------------------------
    @torch.no_grad()
    def prime(self, ctx, counts=None):
        """Read a (B, C) context into a fresh KV cache; return next-token probabilities (B, VOCAB)."""
        B, S = ctx.shape
        hd = self.cfg.n_embd // self.cfg.n_head
        self._cache = [(torch.zeros(B, self.cfg.n_head, self.cfg.block_size, hd),
                        torch.zeros(B, self.cfg.n_head, self.cfg.block_size, hd)) for _ in self.blocks]
        x = self.wte(ctx) + self.wpe.weight[:S]
        if self.hashed is not None:
            x = x + self.hashed(ctx)
            self._recent = self.hashed.history(ctx)[:, S:]
        for block, cache in zip(self.blocks, self._cache):
            x = block(x, cache)
        self._pos = S
        return portable.softmax(self._logits(x[:, -1], counts, keep=True))

    @torch.no_grad()
    def extend(self, tok, counts=None):
        """Append one token per row (B,) to the cache; return next-token probabilities (B, VOCAB)."""
        pos = self._pos
        if pos >= self.cfg.block_size:
            raise RuntimeError("KV cache full: prime() again")
        x = (self.wte(tok) + self.wpe.weight[pos]).unsqueeze(1)
        if self.hashed is not None:
            x = x + self.hashed(tok[:, None], self._recent)
            self._recent = self.hashed.history(tok[:, None], self._recent)[:, 1:]
        for block, cache in zip(self.blocks, self._cache):
            x = block.step(x, cache, pos)
        self._pos = pos + 1
        return portable.softmax(self._logits(x[:, 0], counts, keep=True))

    # --- identity ----------------------------------------------------------------------------
    def digest(self) -> str:
        """SHA-256 of every parameter's bytes in a fixed order: the proof of lockstep."""
        h = hashlib.sha256()
        for p in self.parameters():
            h.update(p.detach().numpy().tobytes())
        return h.hexdigest()


class AdamW(torch.optim.Optimizer):
    """torch's AdamW update, step for step, with two changes for portability: every multiply, add,
    divide and square root is its own IEEE operation (portable.adamw_update: no lerp, addcmul or
    addcdiv, which may be fused on one CPU and not another), and the bias corrections are
    computed by multiplication (libm's pow is not ours to fix). A group marked `sparse` holds a
    table whose gradient `rows()` gives as (table, rows, their gradient): only those rows step."""

    def __init__(self, params, lr, betas, eps, weight_decay, rows=None):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.rows = rows

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            if group.get("sparse"):
                self._step_rows(group)
                continue
            for p in group["params"]:
                if p.grad is None:
                    continue
                state, correction1, correction2_sqrt = self._count_step(p, beta1, beta2)
                portable.adamw_update(p, p.grad, state["exp_avg"], state["exp_avg_sq"], lr, beta1, beta2,
                                      eps, decay, correction1, correction2_sqrt)

    def _count_step(self, p, beta1: float, beta2: float):
        """p's state, its step counted, and this step's two bias corrections."""
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        return state, 1 - _power(beta1, state["step"]), math.sqrt(1 - _power(beta2, state["step"]))

    @torch.no_grad()
    def _step_rows(self, group) -> None:
        """AdamW on the rows the last training pass read, lazily (a row nobody read keeps its
        value and moments), with the step count and bias corrections of the whole table."""
        got = self.rows() if self.rows is not None else None
        if got is None:
            return
        p, rows, grad = got
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        state, correction1, correction2_sqrt = self._count_step(p, beta1, beta2)
        rows = rows.numpy()         # distinct (torch.unique): numpy's take and put, torch's indexing costs more
        tables = [t.detach().numpy() for t in (p, state["exp_avg"], state["exp_avg_sq"])]
        w, m, v = (torch.from_numpy(np.take(t, rows, axis=0)) for t in tables)     # copies of the rows
        portable.adamw_update(w, grad, m, v, lr, beta1, beta2, eps, 0.0, correction1, correction2_sqrt)
        for t, new in zip(tables, (w, m, v)):
            t[rows] = new.numpy()


def _skip_dynamo(*methods) -> None:
    """torch wraps these Optimizer methods to keep torch.compile out, and that wrapper imports
    torch._dynamo (about 2 s of every process's start) on first call. Nothing here is compiled,
    so hand each wrapper its own function as the already-disabled one: same call, no import."""
    for method in methods:
        fn = getattr(method, "__wrapped__", None)
        if fn is not None:
            setattr(fn, "__dynamo_disable", fn)


_skip_dynamo(torch.optim.Optimizer.add_param_group, torch.optim.Optimizer.zero_grad,
             torch.optim.Optimizer.state_dict, torch.optim.Optimizer.load_state_dict)


def _power(x: float, n: int) -> float:
    """x**n by repeated squaring: IEEE multiplications only, the same bits everywhere."""
    result = 1.0
    while n:
        if n & 1:
            result *= x
        x *= x
        n >>= 1
    return result


def make_optimizer(model: GPT, train: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the GPT, with the CountMixer in a group of its own: a smaller, less smoothed
    step (CountMixer.LR_SCALE, BETA1), since its few weights decide how much every count row
    is believed; and the hashed contexts' table in a sparse group (only the rows read step, in
    larger steps: TrainConfig.hashed_lr, chosen per preset).
    Each group's `scale` times the schedule's lr is its lr (engine.Twin._learn)."""
    groups = [dict(params=[p for name, p in model.named_parameters() if not name.startswith(("mixer.", "hashed."))],
                   scale=1.0)]
    if model.mixer is not None:
        groups.append(dict(params=list(model.mixer.parameters()), scale=CountMixer.LR_SCALE,
                           lr=train.lr * CountMixer.LR_SCALE, betas=(CountMixer.BETA1, train.beta2)))
    if model.hashed is not None:
        groups.append(dict(params=[model.hashed.weight], scale=train.hashed_lr, lr=train.lr * train.hashed_lr,
                           sparse=True, weight_decay=0.0))
    return AdamW(groups, lr=train.lr, betas=(train.beta1, train.beta2), eps=train.eps,
                 weight_decay=train.weight_decay, rows=model.hashed.take_grad if model.hashed is not None else None)


def loss_on(model: GPT, window, targets, counts=None):
    """Mean cross-entropy in nats over the targets that are not -1."""
    logits = model(window, counts)
    return portable.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))


__all__ = ["GPT", "make_optimizer", "loss_on", "PAD"]
