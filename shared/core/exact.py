"""Arithmetic whose bits do not depend on the CPU, the BLAS library or its code branch.

Measured (tests/golden.json, 2026-11): the same torch 2.13 build with MKL_CBWR=COMPATIBLE gave
different weights on an AMD EPYC and an Intel Xeon. Two things in MKL differ by vendor even in
its "compatible" branch: the float32 GEMMs, and the vector-math `torch.sqrt` (on the Xeon it
rounded 17% of square roots differently from IEEE). So the twins use no MKL result whose bits
could differ:

* `matmul`: block fixed point. Each row of `a` is rounded to a multiple of one power of two
  2**g_i, as an integer of at most p bits times 2**g_i, and each column of `b` likewise (q bits,
  2**g_j), with p + q + ceil(log2 K) <= 53. Every product and every partial sum for output
  (i, j) is then an integer below 2**53 times 2**(g_i + g_j), so a float64 GEMM computes the
  sum *exactly*, whatever its blocking, summation order, FMA use, vector width or thread count;
  one rounding to float32 follows. Precision: 21-24 bits of each row's largest entry, about
  float32's own 24 bits.

Everything else whose bits matter (sums, softmax, LayerNorm, GELU, the optimizer and its square
roots) is defined in portable.py from IEEE basic operations in a fixed order.
"""
from __future__ import annotations

import numpy as np

from . import kernels, portable
from .pinned import torch

_MANTISSA = 53     # float64 holds every integer up to 2**53 exactly


def _grid(x: np.ndarray, axis: int, bits: int) -> np.ndarray:
    """float32 x rounded to a grid of 2**g per slice along `axis`, as float64, with g chosen so
    that x = integer * 2**g, |integer| <= 2**bits. Rounding is the float64 "magic number": adding
    1.5 * 2**(52 + g) leaves exactly the multiples of 2**g (round half to even), subtracting
    it again is exact."""
    if kernels.ENABLED and x.dtype == np.float32 and x.ndim >= 2 and x.size:
        y = _grid_compiled(x, axis, bits)
        if y is not None:
            return y
    _, exponent = np.frexp(np.abs(x).max(axis=axis, keepdims=True))     # max |x| < 2**exponent
    magic = np.ldexp(1.5, 52 + exponent - bits)
    y = np.add(x, magic, dtype=np.float64)      # x widened exactly, then one rounding, one pass
    y -= magic
    return y


def _grid_compiled(x: np.ndarray, axis: int, bits: int) -> np.ndarray | None:
    """_grid as one compiled loop (kernels.grid_last / grid_columns), the same adds; None where
    x holds a value that is not finite (the definition handles it)."""
    axis %= x.ndim
    if axis < x.ndim - 2:
        return None
    y = np.empty(x.shape, np.float64)
    x3, y3 = x.reshape((-1,) + x.shape[-2:]), y.reshape((-1,) + x.shape[-2:])
    if axis == x.ndim - 2 and x3.strides[-2] < x3.strides[-1]:   # a transposed matrix: its columns are rows
        x3, y3 = x3.swapaxes(-1, -2), y3.swapaxes(-1, -2)
        axis = x.ndim - 1
    if axis == x.ndim - 1:
        ok = kernels.grid_last(x3, x3.view(np.int32), bits, y3)
    else:
        ok = kernels.grid_columns(x3, bits, y3)
    return y if ok else None


def _bits(k: int) -> tuple[int, int]:
    """Integer sizes p, q for a K-term product: p + q + ceil(log2 K) <= 53."""
    room = _MANTISSA - (k - 1).bit_length()
    return room // 2, room - room // 2


def _product(a_grid: np.ndarray, b_grid: np.ndarray) -> torch.Tensor:
    """Every product is (integer <= 2**(p+q)) * 2**(g_i + g_j) and every partial sum of row i,
    column j a multiple of the same 2**(g_i + g_j) below 2**(53 + g_i + g_j): any BLAS, in any
    order, computes the exact sum. One rounding, to float32, follows."""
    return torch.from_numpy(np.matmul(a_grid, b_grid).astype(np.float32))


def _matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    p, q = _bits(a.shape[-1])
    return _product(_grid(a.detach().numpy(), -1, p), _grid(b.detach().numpy(), -2, q))


class _ExactMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return _matmul(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        grad_a = _matmul(grad, b.transpose(-2, -1)) if ctx.needs_input_grad[0] else None
        grad_b = _matmul(a.transpose(-2, -1), grad) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a (..., M, K) @ b (..., K, N), same leading dimensions, exactly rounded from the exact sum
    of the fixed-point products (see the module docstring); differentiable."""
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
        return _ExactMatmul.apply(a, b)
    return _matmul(a, b)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight.T + bias over the last dimension of x, with `matmul`."""
    y = matmul(x.reshape(-1, x.shape[-1]), weight.t()).view(*x.shape[:-1], weight.shape[0])
    return y if bias is None else portable.add(y, bias)


class Linear(torch.nn.Linear):
    """nn.Linear (same parameters, same names) computed with `linear`. Without gradients (the
    coding path: one weight, many positions) the fixed-point weight is kept until it changes."""
    _frozen = None

    def forward(self, x):
        if torch.is_grad_enabled():
            return linear(x, self.weight, self.bias)
        key = (self.weight._version, self.weight.data_ptr())
        if self._frozen is None or self._frozen[0] != key:
            self._frozen = (key, _grid(self.weight.detach().numpy().T, -2, _bits(self.in_features)[1]))
        flat = x.reshape(-1, x.shape[-1]).numpy()
        y = _product(_grid(flat, -1, _bits(self.in_features)[0]), self._frozen[1])
        y = y.view(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias

