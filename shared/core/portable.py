"""The twins' arithmetic, defined here rather than by a CPU's vector unit.

Alice and Bob may run on different CPUs (x86-64 with or without AVX2 or AVX-512, ARM64 with
NEON or SVE). torch's kernels for reductions (sum, softmax, LayerNorm) choose their summation
tree by the vector width, its exp/tanh come from SLEEF or libm, and some elementwise kernels
fuse a multiply and an add (../shared/handbook/determinism.md has the measurements). So every
float that reaches a probability, a coded bit or a weight is computed here from IEEE-754 basic
operations only (+ - * / sqrt, each correctly rounded on every CPU), one numpy elementwise
operation at a time (numpy never contracts a*b+c into an FMA), in an order fixed by this file:

* sums: a pairwise tree of elementwise adds (`tree_sum`), the same tree for any vector width;
  matrix products stay exact in exact.py;
* exp: Cody-Waite range reduction, a fixed polynomial by Horner, an exact scaling by 2**k;
  log likewise; tanh-GELU as x * sigmoid(2u) from that exp;
* each op's backward is written out too, including the sums autograd would hide in a
  broadcast (bias, position embedding, LayerNorm weights), an embedding's index accumulation,
  the loss, gradient clipping and the Adam update.

It runs in float32, what the model stores (float64 where a sum of squares or an embedding's
gradient is accumulated). `ARITHMETIC_VERSION` names this arithmetic in every file and
handshake: change any bit of it, bump the number. Design and measurements: docs/portability.md.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from . import kernels
from .pinned import torch

ARITHMETIC_VERSION = 1

F32, F64 = np.float32, np.float64


# --- sums in a fixed order -------------------------------------------------------------------
def tree_sum(x, axis: int = -1, keepdims: bool = False):
    """Sum a numpy array or torch tensor along `axis` as a fixed pairwise tree: zero-pad to a
    power of two, add the upper half onto the lower half until one term is left. Elementwise
    adds only (torch's add is a + 1*b, exact even where its kernel uses an FMA), so every CPU
    adds the same pairs in the same order; np.sum's and torch.sum's trees depend on the vector
    width. The padding is never built: its first level is written out, a term whose partner is
    padding plus 0 (the same IEEE add). numpy is cheaper for small arrays, torch for large
    ones: same bits."""
    axis = axis % x.ndim
    n = x.shape[axis]
    size = 1 << max(n - 1, 0).bit_length()
    half = size // 2
    if isinstance(x, torch.Tensor):
        if n == 0:
            x = x.new_zeros(x.shape[:axis] + (1,) + x.shape[axis + 1:])
        elif size != n:               # the first level: n - half pairs, then terms plus padding
            x = torch.cat([x.narrow(axis, 0, n - half) + x.narrow(axis, half, n - half),
                           x.narrow(axis, n - half, size - n) + 0.0], axis)
            size = half
        while size > 1:
            size //= 2
            x = x.narrow(axis, 0, size) + x.narrow(axis, size, size)
        return x if keepdims else x.squeeze(axis)
    if kernels.ENABLED and n and x.dtype.kind == "f":
        return _tree_sum_compiled(x, axis, keepdims)
    # numpy: the summed axis first and contiguous, so that every level is one contiguous add
    rest = x.shape[:axis] + x.shape[axis + 1:]
    if axis:
        x = x.transpose((axis,) + tuple(range(axis)) + tuple(range(axis + 1, x.ndim)))
    if n == 0:
        x = np.zeros((1,) + rest, x.dtype)
    elif size != n or not x.flags.c_contiguous:     # the first level, into a contiguous array
        y = np.empty((max(half, 1),) + rest, x.dtype)
        if n == 1:
            y[0] = x[0]
        else:
            np.add(x[:n - half], x[half:], out=y[:n - half])
            np.add(x[n - half:half], x.dtype.type(0), out=y[n - half:])
        x, size = y, max(half, 1)
    while size > 1:
        size //= 2
        x = x[:size] + x[size:]
    return x.reshape(x.shape[1:axis + 1] + (1,) + x.shape[axis + 1:]) if keepdims else x[0]


def _tree_sum_compiled(x: np.ndarray, axis: int, keepdims: bool) -> np.ndarray:
    """tree_sum's numpy branch as one compiled loop (kernels.tree_sum_last / _first): the same
    pairs added in the same order."""
    shape = x.shape
    n = shape[axis]
    zero = _ZEROS[x.dtype.char]
    if axis == x.ndim - 1 and x.flags.c_contiguous:
        out = np.empty(x.size // n, x.dtype)
        kernels.tree_sum_last(x.reshape(-1, n), zero, out)
    else:
        first = np.ascontiguousarray(np.moveaxis(x, axis, 0)).reshape(n, -1)
        out = np.empty(first.shape[1], x.dtype)
        kernels.tree_sum_first(first, zero, out)
    return out.reshape(shape[:axis] + ((1,) if keepdims else ()) + shape[axis + 1:])


_ZEROS = {np.dtype(t).char: np.zeros(1, t) for t in (np.float16, np.float32, np.float64)}


# --- exp and log ------------------------------------------------------------------------------
# float32 exp (Cephes expf): x = k ln2 + r, |r| <= ln2/2, with ln2 split so that k * _LN2_HI is
# exact; e**r = 1 + r + r**2 P(r), P of degree 5 (minimax coefficients); times 2**k exactly.
_LN2_HI = F32(0.693359375)
_LN2_LO = F32(-2.12194440e-4)
_INV_LN2 = F32(1.44269504088896341)
_EXP_P = [F32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                           1.6666665459e-1, 5.0000001201e-1)]
_EXP_LO, _EXP_HI = F32(-104), F32(89)     # e**-104 rounds to 0 (so does -inf), e**89 to inf
_BLOCK = 1 << 14     # elements per pass: a Horner loop over a block stays in the cache
# exp's constants in kernels.exp's order, and the powers of two its ldexp multiplies by
_EXP_CONSTANTS = np.array([_EXP_LO, _EXP_HI, _INV_LN2, _LN2_HI, _LN2_LO, *_EXP_P, 1, 1.5 * 2 ** 23], dtype=F32)
_POW2 = np.ldexp(1.0, np.arange(-150, 129))


def exp(x: np.ndarray) -> np.ndarray:
    """e**x for float32 x, within 1 ulp (tests/test_portable.py); -inf gives 0. Large arrays go
    block by block (same bits, faster)."""
    if kernels.ENABLED and x.dtype == F32:
        flat = np.ascontiguousarray(x).reshape(-1)
        out = np.empty_like(flat)
        kernels.exp(flat, _EXP_CONSTANTS, _POW2, out)
        return out.reshape(x.shape)
    if x.size > _BLOCK:
        flat = np.ascontiguousarray(x).reshape(-1)
        out = np.empty_like(flat)
        for i in range(0, flat.size, _BLOCK):
            out[i:i + _BLOCK] = exp(flat[i:i + _BLOCK])
        return out.reshape(x.shape)
    x = np.clip(x, _EXP_LO, _EXP_HI)
    k = np.rint(x * _INV_LN2)
    r = x - k * _LN2_HI
    r -= k * _LN2_LO
    p = r * _EXP_P[0]
    for c in _EXP_P[1:-1]:
        p += c
        p *= r
    p += _EXP_P[-1]
    p *= r * r
    p += r
    p += F32(1)
    with np.errstate(over="ignore"):
        return np.ldexp(p, k.astype(np.int32))


_LN2_HI64 = 6.93147180369123816490e-01     # ln 2's leading 32 bits (fdlibm): e * _LN2_HI64 is exact
_LN2_LO64 = 1.90821492927058770002e-10     # the rest of ln 2
_LOG_TERMS = [float(Fraction(2, 2 * k + 1)) for k in range(10, -1, -1)]      # 2 atanh(s) / s, Horner order


def log(x: np.ndarray) -> np.ndarray:
    """ln x for positive finite float64 x, about 1 ulp: x = m 2**e with m in [sqrt(1/2), sqrt(2)),
    ln m = 2 atanh(s), s = (m - 1)/(m + 1), |s| < 0.172, by its series to s**21. Only the loss
    that is reported uses it."""
    m, e = np.frexp(x)
    small = m < 0.70710678118654752440
    m = np.where(small, m * 2.0, m)
    e = (e - small).astype(F64)
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    p = np.full_like(s, _LOG_TERMS[0])
    for c in _LOG_TERMS[1:]:
        p *= s2
        p += c
    return e * _LN2_HI64 + (p * s + e * _LN2_LO64)


# --- numpy kernels: forward and backward -----------------------------------------------------
def softmax_np(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis of float32 x, in float32 (max is exact in any order)."""
    e = exp(x - x.max(axis=-1, keepdims=True))
    return e / tree_sum(e, -1, keepdims=True)


def softmax_backward_np(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    return p * (g - tree_sum(g * p, -1, keepdims=True))


_GELU_C = F32(0.7978845608028654)     # sqrt(2/pi)
_GELU_A = F32(0.044715)
_GELU_3A = F32(3 * 0.044715)
_GELU_CONSTANTS = np.array([_GELU_C, _GELU_A, _GELU_3A, -2, 88, 1], dtype=F32)   # in kernels.gelu's order


def gelu_np(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """tanh-GELU 0.5 x (1 + tanh u), u = c (x + a x**3), in float32, written as x * sigmoid(2u)
    (no cancellation for negative x). Returns (y, dy/dx)."""
    if kernels.ENABLED and x.dtype == F32:
        flat = np.ascontiguousarray(x).reshape(-1)
        y, dy = np.empty_like(flat), np.empty_like(flat)
        kernels.gelu(flat, _GELU_CONSTANTS, _EXP_CONSTANTS, _POW2, y, dy)
        return y.reshape(x.shape), dy.reshape(x.shape)
    x2 = x * x
    u = (x + (x2 * x) * _GELU_A) * _GELU_C
    e = exp(np.minimum(u * F32(-2), F32(88)))   # sigmoid(2u) = 1 / (1 + e); e finite, so e * s is
                                                # 1 - s, never inf * 0
    s = F32(1) / (e + F32(1))
    du = (x2 * _GELU_3A + F32(1)) * _GELU_C
    return x * s, s + ((x + x) * (s * (e * s))) * du


def layer_norm_np(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float):
    """LayerNorm over the last axis, float32, two passes (mean, then the mean square of the
    centred values: no cancellation): (y, xhat, rstd)."""
    if kernels.ENABLED and x.dtype == F32 and w.dtype == F32 and b.dtype == F32 and x.size and w.ndim == b.ndim == 1:
        rows = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
        y, xhat = np.empty_like(rows), np.empty_like(rows)
        rstd = np.empty(len(rows), F32)
        kernels.layer_norm(rows, w, b, np.array([x.shape[-1], eps, 0, 1], dtype=F32), y, xhat, rstd)
        return y.reshape(x.shape), xhat.reshape(x.shape), rstd.reshape(x.shape[:-1] + (1,))
    n = F32(x.shape[-1])
    xc = x - tree_sum(x, -1, keepdims=True) / n
    rstd = F32(1) / np.sqrt(tree_sum(xc * xc, -1, keepdims=True) / n + F32(eps))
    xhat = xc * rstd
    return xhat * w + b, xhat, rstd


def _rows_sum(g: np.ndarray, shape: tuple) -> np.ndarray:
    """A gradient summed back to `shape` (a broadcast's backward), every sum a tree_sum."""
    while g.ndim > len(shape):
        g = tree_sum(g, 0)
    for axis, n in enumerate(shape):
        if n == 1 and g.shape[axis] != 1:
            g = tree_sum(g, axis, keepdims=True)
    return g


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=F32))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


def _grad_mode(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


# --- autograd functions ----------------------------------------------------------------------
class _Sum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, keepdim):
        ctx.shape, ctx.dim, ctx.keepdim = x.shape, dim, keepdim
        return _t(tree_sum(_np(x), dim, keepdim))

    @staticmethod
    def backward(ctx, g):
        if not ctx.keepdim:
            g = g.unsqueeze(ctx.dim)
        return g.expand(ctx.shape).contiguous(), None, None


def sum_dim(x: torch.Tensor, dim: int, keepdim: bool = False) -> torch.Tensor:
    """x summed over `dim` by `tree_sum` (float32 adds, fixed tree); differentiable."""
    if _grad_mode(x):
        return _Sum.apply(x, dim, keepdim)
    return _t(tree_sum(_np(x), dim, keepdim))


def dot(a: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
    """sum over `dim` of a * b (float32, broadcasting) by tree_sum, without gradients."""
    return torch.from_numpy(tree_sum(_np(a) * _np(b), dim, keepdims=True))


class _Add(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = a.shape, b.shape
        return a + b

    @staticmethod
    def backward(ctx, g):
        gn = _np(g)
        return tuple(_t(_rows_sum(gn, tuple(s))) if need else None
                     for s, need in zip(ctx.shapes, ctx.needs_input_grad))


def add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a + b with broadcasting; in backward the broadcast dimensions are summed by tree_sum
    (autograd's own reduction would be a torch sum)."""
    if _grad_mode(a, b):
        return _Add.apply(a, b)
    return a + b


class _Softmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        p = _t(softmax_np(_np(x)))
        ctx.save_for_backward(p)
        return p

    @staticmethod
    def backward(ctx, g):
        p, = ctx.saved_tensors
        return _t(softmax_backward_np(_np(p), _np(g)))


def softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension, float32 out; differentiable."""
    if _grad_mode(x):
        return _Softmax.apply(x)
    return _t(softmax_np(_np(x)))


class _Gelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y, dy = gelu_np(_np(x))
        ctx.dy = dy
        return _t(y)

    @staticmethod
    def backward(ctx, g):
        return _t(_np(g) * ctx.dy)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU, tanh approximation (GPT-2's); differentiable."""
    if _grad_mode(x):
        return _Gelu.apply(x)
    return _t(gelu_np(_np(x))[0])


class _LayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, eps):
        y, xhat, rstd = layer_norm_np(_np(x), _np(w), _np(b), eps)
        ctx.xhat, ctx.rstd, ctx.w = xhat, rstd, _np(w).copy()
        return _t(y)

    @staticmethod
    def backward(ctx, g):
        g = _np(g)
        xhat, rstd = ctx.xhat, ctx.rstd
        n = xhat.shape[-1]
        nf = F32(n)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gxh = g * ctx.w
            gx = _t(rstd * ((gxh - tree_sum(gxh, -1, keepdims=True) / nf)
                            - xhat * (tree_sum(gxh * xhat, -1, keepdims=True) / nf)))
        rows = g.reshape(-1, n)
        if ctx.needs_input_grad[1]:
            gw = _t(tree_sum(rows * xhat.reshape(-1, n), 0))
        if ctx.needs_input_grad[2]:
            gb = _t(tree_sum(rows, 0))
        return gx, gw, gb, None


def layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm over the last dimension (`layer_norm_np`); differentiable in x, w and b."""
    if _grad_mode(x, w, b):
        return _LayerNorm.apply(x, w, b, eps)
    return _t(layer_norm_np(_np(x), _np(w), _np(b), eps)[0])


class LayerNorm(torch.nn.LayerNorm):
    """nn.LayerNorm's parameters and names, computed by `layer_norm`."""

    def forward(self, x):
        return layer_norm(x, self.weight, self.bias, self.eps)


class _Embedding(torch.autograd.Function):
    @staticmethod
    def forward(ctx, idx, w):
        ctx.idx, ctx.shape = _np(idx).reshape(-1), w.shape
        return torch.from_numpy(np.take(_np(w), _np(idx), axis=0))

    @staticmethod
    def backward(ctx, g):
        rows, dim = ctx.shape
        if kernels.ENABLED and g.dtype == torch.float32:
            gw = np.zeros((rows, dim), F64)
            kernels.embedding_grad(np.ascontiguousarray(ctx.idx, dtype=np.int64), _np(g).reshape(-1, dim), gw)
            return None, _t(gw)
        cells = (ctx.idx[:, None] * dim + np.arange(dim)).reshape(-1)
        # bincount adds each cell's terms one at a time, in the order of idx, in float64
        gw = np.bincount(cells, weights=_np(g).reshape(-1).astype(F64), minlength=rows * dim)
        return None, _t(gw.reshape(rows, dim))


def embedding(idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Rows of w; in backward each row's gradients are added in the order of idx."""
    if _grad_mode(w):
        return _Embedding.apply(idx, w)
    return torch.from_numpy(np.take(_np(w), _np(idx), axis=0))     # the same rows; numpy's take costs less


class Embedding(torch.nn.Embedding):
    """nn.Embedding's parameter and name, computed by `embedding`."""

    def forward(self, idx):
        return embedding(idx, self.weight)


MIX_ROWS = 64      # positions per slice of `mix`: a slice's products are about 1 MB


def _sliced(f, a: torch.Tensor, b: torch.Tensor, width: int) -> torch.Tensor:
    """f(a[i:j], b[i:j]) over slices of the first dimension of about MIX_ROWS positions each,
    written into one float32 result of `width` per position. f reduces within a position only,
    so the bits are those of one call; the slices keep a step's 25 MB products from being
    allocated and freed whole at every step, which lifts glibc's mmap threshold and fragments
    its heap. Slicing the first dimension needs no copy of b, which is often a view with gaps."""
    lead = b.shape[:-2]
    if not lead:
        return f(a, b)
    a = a.expand(lead + a.shape[-1:])
    out = torch.empty(lead + (width,), dtype=torch.float32)
    step = max(1, MIX_ROWS // max(1, math.prod(lead[1:])))
    for i in range(0, lead[0], step):
        out[i:i + step] = f(a[i:i + step], b[i:i + step])
    return out


def _evidence(counts: torch.Tensor, rows: np.ndarray, table: np.ndarray) -> torch.Tensor:
    """table[counts] of rows `rows`: (..., K, V) uint8 -> (..., R, V) float32."""
    return torch.from_numpy(table[_np(counts)[..., rows, :]])


def _mix_rows(w, counts, rows, table):
    return tree_sum(w.unsqueeze(-1) * _evidence(counts, rows, table), -2)


def _mix_grad_rows(g, counts, rows, table):
    return tree_sum(g.unsqueeze(-2) * _evidence(counts, rows, table), -1)


def _four(a: np.ndarray, dims: int) -> np.ndarray:
    """a with its leading dimensions made two (a view where they are one or two already)."""
    lead = a.ndim - dims
    if lead == 2:
        return a
    return a.reshape((1,) * (2 - lead) + a.shape) if lead < 2 else a.reshape((-1, a.shape[lead - 1]) + a.shape[lead:])


def _mix_compiled(kernel, a: torch.Tensor, counts: torch.Tensor, rows: np.ndarray, table: np.ndarray,
                  width: int) -> torch.Tensor:
    """_sliced(f, a, counts, width) for f = _mix_rows (kernel = kernels.mix) or _mix_grad_rows
    (kernels.mix_grad) as one compiled loop: the same products, added in the same tree."""
    lead = counts.shape[:-2]
    if not counts.numel() or not len(rows):
        return torch.zeros(lead + (width,))
    c = _four(_np(counts), 2)
    V = c.shape[-1]
    if c.strides[-2:] != (V, 1) or min(c.strides[:2]) < 0:
        c = np.ascontiguousarray(c)
    # the memory from its first element to its last, as one unit-stride row: the loops over a
    # position's K x V counts then run on contiguous memory, with no copy of a view with gaps
    span = 1 + sum((n - 1) * st for n, st in zip(c.shape, c.strides))
    flat = np.lib.stride_tricks.as_strided(c, shape=(span,), strides=(1,))
    an = np.broadcast_to(_np(a), lead + a.shape[-1:])
    out = np.empty(lead + (width,), np.float32)
    kernel(_four(an, 1), flat, np.array(c.strides[:2], dtype=np.int64), rows, table, _ZEROS["f"], _four(out, 1))
    return torch.from_numpy(out)


class _Mix(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, counts, rows, table):
        ctx.save_for_backward(counts)
        ctx.rows, ctx.table = rows, table
        return _mix_forward(w, counts, rows, table)

    @staticmethod
    def backward(ctx, g):
        counts, = ctx.saved_tensors
        rows, table = ctx.rows, ctx.table
        if kernels.ENABLED:
            return _mix_compiled(kernels.mix_grad, g, counts, rows, table, len(rows)), None, None, None
        grad = _sliced(lambda gi, ci: _mix_grad_rows(gi, ci, rows, table), g, counts, len(rows))
        return grad, None, None, None


def mix(w: torch.Tensor, counts: torch.Tensor, rows: np.ndarray, table: np.ndarray) -> torch.Tensor:
    """sum over r of w[..., r] * table[counts[..., rows[r], :]]: w (..., R), counts (..., K, V)
    uint8, rows (R,) int64 indices into K, table (256,) float32 -> (..., V), float32 products
    added by tree_sum; the backward likewise over V. The evidence is read from the counts where
    it is used, never kept as floats (4x their bytes in a step's window). torch's elementwise
    kernels here: these are the largest products of a step."""
    if _grad_mode(w):
        return _Mix.apply(w, counts, rows, table)
    return _mix_forward(w, counts, rows, table)


def _mix_forward(w: torch.Tensor, counts: torch.Tensor, rows: np.ndarray, table: np.ndarray) -> torch.Tensor:
    if kernels.ENABLED:
        return _mix_compiled(kernels.mix, w, counts, rows, table, counts.shape[-1])
    return _sliced(lambda wi, ci: _mix_rows(wi, ci, rows, table), w, counts, counts.shape[-1])


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets):
        x, t = _np(logits), _np(targets)
        valid = t >= 0
        rows, t = np.flatnonzero(valid), t[valid]
        n = max(len(rows), 1)
        shifted = x - x.max(axis=-1, keepdims=True)
        e = exp(shifted)
        s = tree_sum(e, -1, keepdims=True)
        grad = e / s                                   # softmax ...
        grad[rows, t] -= F32(1)                        # ... minus the one-hot target
        grad[~valid] = 0
        grad /= F32(n)
        ctx.grad = grad
        nll = log(s[rows, 0].astype(F64)) - shifted[rows, t]    # reported, never coded or learned
        return torch.tensor(tree_sum(nll, 0) / n if len(rows) else 0.0, dtype=torch.float32)

    @staticmethod
    def backward(ctx, g):
        return _t(ctx.grad * _np(g)), None


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood in nats of logits (N, V) over the targets (N,) that are not
    -1, and its gradient (softmax - onehot) / N."""
    return _CrossEntropy.apply(logits, targets)


# --- optimizer pieces ------------------------------------------------------------------------
def clip_grad_norm_(params, max_norm: float) -> float:
    """Scale all gradients so that their joint L2 norm is at most max_norm, as torch's
    clip_grad_norm_ does: squares in float64 (exact), summed per tensor by tree_sum and across
    tensors in parameter order, then one IEEE square root."""
    grads = [p.grad for p in params if p.grad is not None]
    total = 0.0
    for g in grads:
        a = _np(g).astype(F64).reshape(-1)
        total += float(tree_sum(a * a))
    norm = float(np.sqrt(total))
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        for g in grads:
            g.copy_(_t(_np(g) * F32(coef)))
    return norm


def adamw_update(p: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                 lr: float, beta1: float, beta2: float, eps: float, decay: float,
                 correction1: float, correction2_sqrt: float) -> None:
    """One AdamW step on float32 tensors, in place, one rounding per basic operation: torch's
    lerp/addcmul/addcdiv may fuse a multiply and an add on one CPU and not on another."""
    w, g, m, v = _np(p).copy(), _np(grad), _np(exp_avg), _np(exp_avg_sq)
    with np.errstate(all="ignore"):    # a blown-up step (0/0) is caught where it is coded (NotANumber), not warned of
        if decay:
            w *= F32(1 - lr * decay)
        m *= F32(beta1)
        m += g * F32(1 - beta1)
        v *= F32(beta2)
        v += (g * g) * F32(1 - beta2)
        denom = np.sqrt(v) / F32(correction2_sqrt)
        denom += F32(eps)
        w -= (m / denom) * F32(lr / correction1)
    p.copy_(torch.from_numpy(w))       # through torch: bumps the version exact.Linear watches
