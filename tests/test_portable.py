"""shared/core/portable.py: the twins' arithmetic gives the same bits whatever the CPU's vector unit.

Other CPUs are stood in for by torch's other kernel levels (ATEN_CPU_CAPABILITY): the
measurements behind issue 18 found default, AVX2 and AVX-512 kernels disagreeing in softmax,
sums and SDPA. scripts/check_arm64.sh does the same on emulated ARM64 (NEON, SVE256).
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.core import exact, numeric, portable
from shared.core.fingerprint import canary_hash, fingerprint
from tests.helpers import ROOT

GOLDEN = json.loads((ROOT / "tests" / "golden.json").read_text())

GOLDEN_PROBE = """
import hashlib, json, sys
from shared.core import numeric
numeric.activate()
import torch
from shared.coding.codec import compress
from shared.core.config import preset
from shared.core.fingerprint import fingerprint
from shared.texts import mission_log
blob, stats = compress(mission_log(int(sys.argv[1])), preset(sys.argv[2]))
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability().lower(),
                  "canary": fingerprint()["canary"],
                  "container_sha256": hashlib.sha256(blob).hexdigest(), "final_digest": stats["final_digest"]}))
"""


def _cpu_flags() -> set:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


# what torch needs for each level (aten/src/ATen/native/DispatchStub.cpp, cpuinfo)
NEEDS = {"default": set(), "avx2": {"avx2", "fma"}, "avx512": {"avx512f", "avx512bw", "avx512vl", "avx512dq"}}


@pytest.mark.parametrize("capability", ["default", "avx2", "avx512"])
def test_golden_bits_at_every_kernel_level(capability):
    """The in-suite stand-in for another CPU: torch's kernels at another vector level."""
    if capability != "default" and not NEEDS[capability] <= _cpu_flags():
        pytest.skip(f"this CPU cannot run torch's {capability} kernels (torch would fall back to another level)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARSLINK_")}
    env.update(PYTHONPATH=str(ROOT), ATEN_CPU_CAPABILITY=capability)
    r = subprocess.run([sys.executable, "-c", GOLDEN_PROBE, str(GOLDEN["input_bytes"]), GOLDEN["preset"]],
                       capture_output=True, cwd=ROOT, env=env, timeout=600)
    assert r.returncode == 0, r.stderr.decode()
    assert json.loads(r.stdout) == {"capability": capability, "canary": GOLDEN["fingerprint"]["canary"],
                                    "container_sha256": GOLDEN["container_sha256"],
                                    "final_digest": GOLDEN["final_digest"]}


def test_the_profile_leaves_the_kernel_level_to_torch():
    assert "ATEN_CPU_CAPABILITY" not in numeric.active().environment()
    assert set(fingerprint()) == {"arithmetic", "canary"}
    assert fingerprint()["arithmetic"] == str(portable.ARITHMETIC_VERSION)


# --- sums --------------------------------------------------------------------------------------
def _pairwise(values: list) -> float:
    """The tree, one float32 addition at a time, as the specification of tree_sum."""
    size = 1 << max(len(values) - 1, 0).bit_length()
    values = [np.float32(v) for v in values] + [np.float32(0)] * (size - len(values))
    while len(values) > 1:
        half = len(values) // 2
        values = [values[i] + values[i + half] for i in range(half)]
    return values[0]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 70), rows=st.integers(1, 9), seed=st.integers(0, 2**32 - 1))
def test_tree_sum_is_the_specified_tree_in_numpy_and_in_torch(n, rows, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, n)) * np.exp(rng.normal(0, 6, (rows, n)))).astype(np.float32)
    x[rng.random((rows, n)) < 0.2] = -0.0          # -0.0 + padding is +0.0: the bits, not just ==
    want = np.array([_pairwise(list(row)) for row in x], dtype=np.float32).tobytes()
    assert portable.tree_sum(x, -1).tobytes() == want
    assert portable.tree_sum(torch.from_numpy(x), -1).numpy().tobytes() == want
    assert portable.tree_sum(np.ascontiguousarray(x.T), 0).tobytes() == want        # any axis, any layout
    assert portable.tree_sum(x.T, 0).tobytes() == want
    assert portable.tree_sum(x[:, None, :], -1, keepdims=True)[:, 0, 0].tobytes() == want


@settings(max_examples=30, deadline=None)
@given(k=st.integers(1, 300), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_exact_products_do_not_depend_on_the_order_of_the_terms(k, seed, data):
    """The grid of shared/core/exact.py: the K terms of each product sum exactly, so any order (any
    BLAS, any vector width) gives the same bits."""
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal((3, k)) * np.exp(rng.normal(0, 5, (3, 1)))).astype(np.float32)
    b = (rng.standard_normal((k, 2)) * 0.02).astype(np.float32)
    perm = np.array(data.draw(st.permutations(range(k))))
    whole = exact.matmul(torch.from_numpy(a), torch.from_numpy(b))
    shuffled = exact.matmul(torch.from_numpy(a[:, perm].copy()), torch.from_numpy(b[perm].copy()))
    assert torch.equal(whole, shuffled)


# --- exp, log and the functions made of them ---------------------------------------------------
def _ulps(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Distance in float32 ulps of the reference (want: float64)."""
    return np.abs(got.astype(np.float64) - want) / np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)


def test_exp_is_within_one_ulp():
    x = np.concatenate([np.linspace(-87, 88, 2_000_003, dtype=np.float32),
                        np.float32([0, -0.0, 1e-30, -1e-30, 0.5, -0.5, 88.5])])
    got = portable.exp(x)
    assert got.dtype == np.float32 and _ulps(got, np.exp(x.astype(np.float64))).max() <= 1.0
    assert portable.exp(np.float32([0]))[0] == 1
    tiny = portable.exp(np.float32([-95, -103, -104, -200, -np.inf]))
    np.testing.assert_allclose(tiny, np.exp(np.float64([-95, -103, -104, -200, -np.inf])), rtol=0, atol=2.0 ** -149)
    assert tiny[-3:].tolist() == [0, 0, 0]                      # masked attention scores weigh nothing
    assert np.isfinite(portable.exp(np.float32([88.72]))).all()
    assert portable.exp(np.float32([89, 1e30, np.inf])).tolist() == [np.inf] * 3


def test_log_is_within_two_ulps_of_float64():
    x = np.exp(np.random.default_rng(1).uniform(-50, 50, 100_000))
    want = np.array([math.log(v) for v in x])
    assert (np.abs(portable.log(x) - want) <= 2 * np.spacing(np.abs(want))).all()


def test_softmax_layer_norm_and_gelu_against_float64():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((200, 256)) * 4).astype(np.float32)
    x64 = x.astype(np.float64)
    shifted = x64 - x64.max(-1, keepdims=True)
    e = np.exp(shifted)
    # a few ulps, plus the rounding of x - max in float32 (every float32 softmax has it)
    assert (_ulps(portable.softmax_np(x), e / e.sum(-1, keepdims=True)) <= 4 + np.abs(shifted)).all()
    w, b = rng.standard_normal(256).astype(np.float32), rng.standard_normal(256).astype(np.float32)
    xc = x64 - x64.mean(-1, keepdims=True)
    xhat = xc / np.sqrt((xc * xc).mean(-1, keepdims=True) + 1e-5)
    y = portable.layer_norm_np(x, w, b, 1e-5)[0]
    assert np.abs(y - (xhat * w + b)).max() <= 16 * 2.0 ** -24 * np.abs(xhat * w + b).max()
    ref = 0.5 * x64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64 ** 3)))
    assert np.abs(portable.gelu_np(x)[0] - ref).max() <= 8 * 2.0 ** -24 * np.abs(ref).max()
    far = portable.gelu_np(np.float32([-1e4, -50, -11, 11, 50, 1e4]))
    assert np.isfinite(far).all() and far[0][3:].tolist() == [11, 50, 1e4] and far[1][3:].tolist() == [1, 1, 1]


def _grads(f, *xs):
    xs = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in xs]
    out = f(*xs)
    out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape).to(out.dtype))
    return out.detach(), [x.grad for x in xs if x.requires_grad]


_COUNTS = torch.from_numpy(np.random.default_rng(4).integers(0, 256, (3, 5, 7, 256)).astype(np.uint8))
_ROWS = np.array([6, 0, 3, 2])                   # the rows the mixer reads, in its order
_TABLE = (np.log(np.arange(256) + 1 / 16)).astype(np.float32)
CASES = {  # portable op, torch's own in float64 (the reference)
    "softmax": (portable.softmax, lambda x: torch.softmax(x, -1), [(6, 2, 5, 24)]),
    "gelu": (portable.gelu, lambda x: torch.nn.functional.gelu(x, approximate="tanh"), [(7, 130)]),
    "layer_norm": (lambda x, w, b: portable.layer_norm(x, w, b, 1e-5),
                   lambda x, w, b: torch.nn.functional.layer_norm(x, (32,), w, b, 1e-5), [(5, 7, 32), (32,), (32,)]),
    "add": (portable.add, torch.add, [(4, 9, 12), (12,)]),
    "sum_dim": (lambda x: portable.sum_dim(x, -2), lambda x: x.sum(-2), [(4, 6, 3)]),
    "mix": (lambda w: portable.mix(w, _COUNTS, _ROWS, _TABLE),
            lambda w: (w.unsqueeze(-1) * torch.from_numpy(_TABLE).double()[_COUNTS[..., _ROWS, :].long()]).sum(-2),
            [(3, 5, 4)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_and_gradient_match_torch_in_float64(name):
    ours, reference, shapes = CASES[name]
    rng = np.random.default_rng(3)
    xs = [torch.from_numpy((rng.standard_normal(s) * 2).astype(np.float32)) for s in shapes]
    y, grads = _grads(ours, *xs)
    y_ref, grads_ref = _grads(reference, *[x.double() for x in xs])
    torch.testing.assert_close(y, y_ref.float(), rtol=2e-6, atol=2e-6)
    assert len(grads) == len(grads_ref)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref.float(), rtol=2e-5, atol=2e-5)


def test_mix_in_slices_gives_the_bits_of_one_whole_product():
    """`mix` works a few positions at a time (for memory); each position's sums are its own, so
    its forward and its gradient must be the whole product's, bit for bit, also on a view with
    gaps (the engine hands it window positions sliced from a longer window)."""
    rng = np.random.default_rng(8)
    whole = torch.from_numpy(rng.integers(0, 256, (5, 3 * portable.MIX_ROWS + 7, 6, 256)).astype(np.uint8))
    counts = whole[:, 1:]                                    # (5, T, 6, 256), not contiguous
    assert not counts.is_contiguous()
    rows, table = np.array([5, 1, 2, 4]), rng.standard_normal(256).astype(np.float32)
    evidence = torch.from_numpy(table[counts.numpy()[..., rows, :]])
    w = torch.from_numpy(rng.standard_normal(evidence.shape[:-1]).astype(np.float32))
    g = torch.from_numpy(rng.standard_normal(evidence.shape[:-2] + (256,)).astype(np.float32))
    learned = w.clone().requires_grad_(True)
    y = portable.mix(learned, counts, rows, table)
    y.backward(g)
    assert torch.equal(y.detach(), portable.tree_sum(w.unsqueeze(-1) * evidence, -2))
    assert torch.equal(learned.grad, portable.tree_sum(g.unsqueeze(-2) * evidence, -1))
    with torch.no_grad():                                   # the coding path: no autograd
        assert torch.equal(portable.mix(w, counts, rows, table), y.detach())


def test_embedding_gradient_adds_repeated_rows():
    w = torch.randn(10, 4)
    idx = torch.tensor([[1, 3, 1], [9, 1, 0]])
    _, (g,) = _grads(lambda w: portable.embedding(idx, w), w)
    _, (g_ref,) = _grads(lambda w: torch.nn.functional.embedding(idx, w.double()), w)
    torch.testing.assert_close(g, g_ref.float())


def test_cross_entropy_and_its_gradient_skip_ignored_targets():
    rng = np.random.default_rng(4)
    logits = torch.from_numpy((rng.standard_normal((12, 256)) * 3).astype(np.float32))
    targets = torch.from_numpy(rng.integers(0, 256, 12))
    targets[[2, 7]] = -1
    loss, (g,) = _grads(lambda x: portable.cross_entropy(x, targets), logits)
    ref, (g_ref,) = _grads(lambda x: torch.nn.functional.cross_entropy(x, targets, ignore_index=-1),
                           logits.double())
    torch.testing.assert_close(loss, ref.float(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g, g_ref.float(), rtol=1e-6, atol=1e-8)
    assert not g[[2, 7]].any()


def test_clipping_and_adam_follow_torch():
    rng = np.random.default_rng(5)
    make = lambda: [torch.nn.Parameter(torch.from_numpy(rng.standard_normal(s).astype(np.float32)))  # noqa: E731
                    for s in ((7, 3), (5,))]
    ours, theirs = make(), make()
    for a, b in zip(ours, theirs):
        b.data.copy_(a.data)
    from shared.core.model import AdamW
    opt_ours = AdamW(ours, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.01)
    opt_theirs = torch.optim.AdamW(theirs, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.01, foreach=False)
    for step in range(5):
        grads = [torch.from_numpy(rng.standard_normal(p.shape).astype(np.float32)) for p in ours]
        for a, b, g in zip(ours, theirs, grads):
            a.grad, b.grad = g.clone(), g.clone()
        norm = portable.clip_grad_norm_(ours, 1.0)
        assert norm == pytest.approx(float(torch.nn.utils.clip_grad_norm_(theirs, 1.0, foreach=False)), rel=1e-6)
        opt_ours.step()
        opt_theirs.step()
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a.data, b.data, rtol=1e-5, atol=1e-6)


def test_hash_of_the_canary_is_the_golden_one():
    """The canary is the fingerprint's proof: equal on every CPU, so it is a golden value too."""
    assert canary_hash() == GOLDEN["fingerprint"]["canary"]
