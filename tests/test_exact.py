"""shared/core/exact.py: matrix products and square roots whose bits no BLAS, branch or CPU decides."""
from fractions import Fraction

import numpy as np
import pytest
import torch

from shared.core import exact


def _reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The same product in exact rational arithmetic, rounded once to float32."""
    p, q = exact._bits(a.shape[-1])
    ga, gb = exact._grid(a, -1, p), exact._grid(b, -2, q)
    out = np.empty((a.shape[0], b.shape[1]), dtype=np.float32)
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            out[i, j] = np.float32(float(sum(Fraction(float(x)) * Fraction(float(y)) for x, y in zip(ga[i], gb[:, j]))))
    return out


@pytest.mark.parametrize("k", [1, 7, 64, 300])
def test_product_is_the_exact_sum_rounded_once(k):
    rng = np.random.default_rng(k)
    a = (rng.standard_normal((5, k)) * np.exp(rng.normal(0, 4, (5, 1)))).astype(np.float32)
    b = (rng.standard_normal((k, 4)) * 0.02).astype(np.float32)
    got = exact.matmul(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    assert np.array_equal(got, _reference(a, b))
    # and it is a float32 matrix product: within float32 rounding of the plain one
    np.testing.assert_allclose(got, a.astype(np.float64) @ b.astype(np.float64), rtol=1e-5, atol=1e-6 * np.abs(a).max())


def test_grid_bounds_the_integers():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((6, 50)) * np.array([[0], [1e-30], [1e-3], [1], [1e6], [1e30]])).astype(np.float32)
    g = exact._grid(x, -1, 22)
    exponent = np.frexp(np.abs(x).max(axis=-1, keepdims=True))[1]
    ints = g / np.ldexp(1.0, exponent - 22)
    assert np.array_equal(ints, np.round(ints)) and np.abs(ints).max() <= 2 ** 22
    assert (np.abs(g - x) <= np.ldexp(0.5, exponent - 22)).all()   # half a grid step: 22 bits of the row's largest
    assert not exact._grid(np.zeros((2, 3), np.float32), -1, 22).any()


def test_blocking_and_order_do_not_change_a_bit():
    """What differs between BLAS builds and CPUs: how the K terms are split and ordered."""
    rng = np.random.default_rng(2)
    a = rng.standard_normal((33, 200)).astype(np.float32)
    b = rng.standard_normal((200, 17)).astype(np.float32)
    p, q = exact._bits(200)
    ga, gb = exact._grid(a, -1, p), exact._grid(b, -2, q)
    whole = np.matmul(ga, gb)
    perm = rng.permutation(200)
    reordered = sum(np.matmul(ga[:, perm[i:i + 37]], gb[perm[i:i + 37]]) for i in range(0, 200, 37))
    by_torch = torch.from_numpy(ga) @ torch.from_numpy(gb)          # MKL instead of numpy's BLAS
    assert np.array_equal(whole, reordered)
    assert np.array_equal(whole, by_torch.numpy())


def test_batched_and_transposed_operands():
    rng = np.random.default_rng(3)
    q = torch.from_numpy(rng.standard_normal((2, 3, 5, 8)).astype(np.float32))
    k = torch.from_numpy(rng.standard_normal((2, 3, 6, 8)).astype(np.float32))
    got = exact.matmul(q, k.transpose(-2, -1))
    assert got.shape == (2, 3, 5, 6) and got.dtype == torch.float32
    for i in range(2):
        for h in range(3):
            assert torch.equal(got[i, h], exact.matmul(q[i, h], k[i, h].T.contiguous()))


def test_gradients_match_the_plain_product():
    rng = np.random.default_rng(4)
    a = torch.from_numpy(rng.standard_normal((6, 10)).astype(np.float32)).requires_grad_()
    w = torch.from_numpy(rng.standard_normal((4, 10)).astype(np.float32)).requires_grad_()
    bias = torch.zeros(4, requires_grad=True)
    exact.linear(a, w, bias).pow(2).sum().backward()
    grads = a.grad.clone(), w.grad.clone(), bias.grad.clone()
    for t in (a, w, bias):
        t.grad = None
    torch.nn.functional.linear(a, w, bias).pow(2).sum().backward()
    for got, want in zip(grads, (a.grad, w.grad, bias.grad)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_linear_reuses_its_fixed_point_weight_only_while_unchanged():
    lin = exact.Linear(8, 3)
    x = torch.randn(4, 8)
    with torch.no_grad():
        first = lin(x)
        lin.weight.mul_(2)                 # an optimizer step changes the weight in place
        second = lin(x)
    torch.testing.assert_close(second - lin.bias, 2 * (first - lin.bias))
    assert torch.equal(second, exact.linear(x, lin.weight, lin.bias).detach())

