"""The byte-tree mixer and its APMs (shared/core/mixer.py): exact integer cdfs, learning that
approaches the entropy bound, results independent of the order of the streams."""
from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from shared.core import mixer as M
from shared.core.config import FREQ_BITS, VOCAB
from shared.core.quantize import quantize


def test_squash_and_stretch_are_inverse_and_monotone():
    p = np.arange(1, 4096)
    assert np.abs(M.squash(M.stretch(p)) - p).max() <= 3          # the 33-knot table's resolution
    d = np.arange(-2047, 2048)
    assert (np.diff(M.squash(d)) >= 0).all() and M.squash(np.array([-9999]))[0] == 1
    assert (np.diff(M.stretch(p)) >= 0).all() and abs(M.stretch(np.array([2048]))[0]) <= 1


def test_tree_numbering():
    nodes, bits = M.path(np.array([0, 255, 0b10110001]))
    assert nodes[0].tolist() == [0, 1, 3, 7, 15, 31, 63, 127]
    assert nodes[1].tolist() == [0, 2, 6, 14, 30, 62, 126, 254]
    assert bits[2].tolist() == [1, 0, 1, 1, 0, 0, 0, 1]
    for node in range(M.NODES):    # the byte ranges: a node's children split it in halves
        assert M.HI[node] - M.LO[node] == 2 * (M.MID[node] - M.LO[node])


def test_split_to_cdf_is_exact_and_keeps_every_byte_codable():
    rng = np.random.default_rng(7)
    p16 = rng.integers(1, 65536, (50, M.NODES))
    p16[0] = 65535                       # as skewed as allowed: one byte takes nearly everything
    cdf = M.split_to_cdf(p16)
    freqs = np.diff(cdf, axis=1)
    assert (cdf[:, -1] == 1 << FREQ_BITS).all() and (freqs >= 1).all()
    assert freqs[0].argmax() == 255
    # and a node's split is what the node said, to within the integer rounding
    right = cdf[:, M.HI] - cdf[:, M.MID]
    whole = cdf[:, M.HI] - cdf[:, M.LO]
    big = whole > 1 << 16
    assert np.abs(right[big] / whole[big] - p16[big] / 65536).max() < 1e-3


def test_count_splits_match_cumulative_sums():
    counts = np.random.default_rng(1).integers(0, 256, (3, 4, VOCAB)).astype(np.uint8)
    n0, n1 = M.count_splits(counts)
    cum = np.concatenate([np.zeros((3, 4, 1), np.int64), counts.astype(np.int64).cumsum(-1)], axis=-1)
    assert (n0 == cum[..., M.MID] - cum[..., M.LO]).all() and (n1 == cum[..., M.HI] - cum[..., M.MID]).all()


def _cost(cdf, symbols):
    i = np.arange(len(symbols))
    return float((FREQ_BITS - np.log2(cdf[i, symbols + 1] - cdf[i, symbols])).sum())


def _source(n_pos, streams, seed):
    """A skewed memoryless source over 16 bytes, its entropy in bits, and draws from it."""
    rng = np.random.default_rng(seed)
    p = np.zeros(VOCAB)
    p[65:81] = 0.5 ** np.arange(1, 17)
    p /= p.sum()
    entropy = -float((p[p > 0] * np.log2(p[p > 0])).sum())
    return rng.choice(VOCAB, size=(n_pos, streams), p=p), entropy


def test_learns_a_source_the_model_does_not_know_to_near_its_entropy():
    """The model says 'uniform' (8 bits/byte); the mixer's bias and APMs learn the source."""
    symbols, entropy = _source(1500, 16, seed=3)
    mixer = M.TreeMixer(0)
    uniform = quantize(np.full((16, VOCAB), 1 / VOCAB, dtype=np.float32))
    cost = []
    for sym in symbols:
        cdf = mixer.predict(uniform, None, np.zeros((16, 3), dtype=np.int64))
        cost.append(_cost(cdf, sym) / 16)
        mixer.update(sym)
    late = float(np.mean(cost[-200:]))
    assert entropy < late < entropy * 1.06, (late, entropy)


def test_a_model_that_knows_the_source_loses_almost_nothing():
    symbols, entropy = _source(400, 16, seed=4)
    p = np.zeros(VOCAB, dtype=np.float32)
    p[65:81] = 0.5 ** np.arange(1, 17)
    true_cdf = quantize(np.tile(p / p.sum(), (16, 1)).astype(np.float32))
    mixer = M.TreeMixer(0)
    before = after = 0.0
    for sym in symbols:
        cdf = mixer.predict(true_cdf, None, np.zeros((16, 3), dtype=np.int64))
        before += _cost(true_cdf, sym)
        after += _cost(cdf, sym)
        mixer.update(sym)
    assert after < before * 1.01, (after / symbols.size, before / symbols.size, entropy)


def _run(mixer, order, steps=60):
    rng = np.random.default_rng(11)
    counts = rng.integers(0, 5, (steps, 8, 3, VOCAB)).astype(np.uint8)
    probs = rng.dirichlet(np.ones(VOCAB), (steps, 8)).astype(np.float32)
    symbols = rng.integers(0, VOCAB, (steps, 8))
    prev = rng.integers(0, VOCAB, (steps, 8, 3))
    out = []
    for s in range(steps):
        cdf = mixer.predict(quantize(probs[s][order]), counts[s][order], prev[s][order])
        out.append(cdf[np.argsort(order)])
        mixer.update(symbols[s][order])
    return out


def _digest(mixer) -> str:
    h = hashlib.sha256()
    for v in mixer.tables():
        h.update(np.ascontiguousarray(v).astype(np.int64).tobytes())
    return h.hexdigest()


def test_the_order_of_the_streams_changes_nothing():
    """Learning sums integer steps (np.add.at) and averages per cell: exact in any order, so a
    twin's result cannot depend on how a library orders a scatter."""
    a, b = M.TreeMixer(3, match=True, orders=1, words=1), M.TreeMixer(3, match=True, orders=1, words=1)
    out_a = _run(a, np.arange(8))
    out_b = _run(b, np.array([5, 2, 7, 0, 3, 6, 1, 4]))
    assert all((x == y).all() for x, y in zip(out_a, out_b))
    assert _digest(a) == _digest(b)


def test_state_round_trips():
    a = M.TreeMixer(3, match=True, orders=1, words=1)
    _run(a, np.arange(8), steps=10)
    b = M.TreeMixer(3, match=True, orders=1, words=1)
    b.by_byte += 5                                     # a stale row that the checkpoint resets
    b.load(a.state())
    assert _digest(a) == _digest(b)
    assert 0 < len(a.state()["byte_rows"]) < len(a.by_byte)   # the byte set's learned rows only
    assert 0 < len(a.state()["shape_rows"]) < len(a.by_shape)
    bad = dict(a.state(), byte_rows=a.state()["byte_rows"] + len(a.by_byte))
    with pytest.raises(ValueError, match="byte_rows"):
        b.load(bad)
    bad = dict(a.state(), by_shape=a.state()["by_shape"][1:])
    with pytest.raises(ValueError, match="by_shape has shape"):
        b.load(bad)
    assert all((x == y).all() for x, y in zip(_run(a, np.arange(8), 5), _run(b, np.arange(8), 5)))


def test_a_weight_rows_first_updates_step_larger_then_as_before_then_smaller(monkeypatch):
    """paq's decaying rate: a row's first update moves its weights 4x as far as a plain step;
    after EARLY updates of that row its step is the plain one again, and it shrinks from there
    to LATE_FLOOR / 64 of it (a row that has learned averages out the noise of the many)."""
    T = M.TreeMixer

    def first_step(gain, done):
        monkeypatch.setattr(T, "EARLY_GAIN", gain)
        m = T(3, match=True)
        for updates in m._updates():
            updates[:] = done
        before = [t.copy() for t in m._weights()]
        _run(m, np.arange(8), steps=1)
        return np.concatenate([(t - b).ravel() for t, b in zip(m._weights(), before)])
    plain, early, late = first_step(0, 0), first_step(192, 0), first_step(192, T.EARLY)
    learned = first_step(192, T.EARLY + 64 * T.LATE_DECAY)
    assert (late == plain).all() and np.abs(plain).sum() > 0
    assert 3.9 < np.abs(early).sum() / np.abs(plain).sum() < 4.1
    assert 0.11 < np.abs(learned).sum() / np.abs(plain).sum() < 0.14      # LATE_FLOOR = 8: 1/8
    u = np.array([0, T.EARLY // 2, T.EARLY, T.EARLY + T.LATE_DECAY, T.EARLY + 56 * T.LATE_DECAY, 10**9])
    assert T.step_scale(u, 192, 8).tolist() == [256, 160, 64, 63, 8, 8]
    assert T.step_scale(u, 0, 16).tolist() == [64, 64, 64, 63, 16, 16]   # the final mixer's


def test_the_shape_set_is_chosen_by_the_match_run_and_the_kinds_of_the_two_bytes_before():
    """The third weight set's row: log2 of the match model's run (its row's largest count: the
    last row, with `match`), the kind of the byte two before, the kind of the byte before."""
    counts = np.zeros((3, 4, VOCAB), dtype=np.uint8)
    counts[0, 3, ord("e")] = 5                       # a guess right 5 times in a row: log2 bucket 3
    counts[1, 3, 7] = 255                            # the longest runs: bucket 8
    counts[2, 2, 9] = 200                            # not the match row: no run
    prev = np.array([[ord("a"), ord("."), 1], [ord(" "), ord("Z"), 2], [ord("7"), ord("\n"), 3]])
    kinds = M.KINDS
    for match, runs in ((True, [3, 8, 0]), (False, [0, 0, 0])):
        mixer = M.TreeMixer(4, match=match)
        mixer._context(counts, prev)
        assert mixer._shape.tolist() == [(r * kinds + M._KIND[b]) * kinds + M._KIND[a]
                                         for r, (a, b, _) in zip(runs, prev.tolist())]
        assert mixer._prev.tolist() == [ord("a"), ord(" "), ord("7")]
    assert M._KIND[ord(".")] == 6 and M._KIND[ord("a")] == 2 and M.SHAPES == 9 * 9 * 9
    # the hashed APMs read the two and the three bytes before, newest lowest
    assert mixer._contexts.tolist() == [[ord("a") | ord(".") << 8, ord(" ") | ord("Z") << 8, ord("7") | 10 << 8],
                                        [ord("a") | ord(".") << 8 | 1 << 16, ord(" ") | ord("Z") << 8 | 2 << 16,
                                         ord("7") | 10 << 8 | 3 << 16]]
    rows = M.hashed_rows(mixer._contexts[1], np.arange(M.NODES)[None, :], 14)
    assert rows.shape == (3, M.NODES) and 0 <= rows.min() and rows.max() < 1 << 14
    assert len(np.unique(rows)) > 3 * M.NODES * 0.9                  # the nodes spread over the rows


def test_the_reach_set_is_chosen_by_the_longest_order_that_saw_the_node_and_the_word_rows_that_did():
    """The fourth weight set's row at a node: the longest byte order (of `orders` rows, shortest
    first) whose counts lie below the node, whether that row saw one side only, and how many of
    the word rows after them saw it; the same from the numpy definition, Alice's compiled path and
    the whole tree."""
    counts = np.zeros((2, 5, VOCAB), dtype=np.uint8)       # orders 1-3, two word rows
    counts[0, 0, [ord("a"), ord("q")]] = 9                 # order 1 saw "a" and "q"
    counts[0, 1, ord("a")] = 3                             # order 2 saw "a" only
    counts[0, 3, ord("a")] = 1                             # the second word row saw "a"
    counts[1, 4, ord("q")] = 2                             # stream 1: a word row alone
    n0, n1 = M.count_splits(counts)
    got, longest = M.reach(n0, n1, 3, 2)                   # (2, NODES) each
    root, a_leaf_parent = 0, (ord("a") + 256 >> 1) - 1
    # stream 0 at the root: order 2 is the longest that saw it, one-sided ("a" and nothing right
    # of the root), the second word row saw it: (2 * 2 + 1) * 3 + 1; at "a"'s last node order 2
    # saw "a" only on one side as well
    assert got[0, root] == (2 * 2 + 1) * 3 + 1 and got[0, a_leaf_parent] == (2 * 2 + 1) * 3 + 1
    assert got[1, root] == 0 * 3 + 1                       # no byte order, one word row
    # the longest order's KT input: order 2's 3 "a"s left of the root, nothing where none saw it
    assert longest[0, root] == M.stretch(M.kt_split(np.array(3), np.array(0))) and longest[1, root] == 0
    assert [a.tolist() for a in M.reach(np.zeros((1, 5, 3)), np.zeros((1, 5, 3)), 3, 2)] == [[[0, 0, 0]]] * 2
    assert got.max() < M.reaches(3, 2) == 4 * 2 * 3
    cdf = quantize(np.full((2, VOCAB), 1 / VOCAB, dtype=np.float32))
    prev = np.zeros((2, 3), dtype=np.int64)
    symbols = np.array([ord("a"), ord("q")])
    whole, path = M.TreeMixer(5, orders=3, words=2), M.TreeMixer(5, orders=3, words=2)
    whole.predict(cdf, counts, prev)
    assert (whole._reach == got).all() and (whole._longest == longest).all()
    path.path(cdf, counts, prev, symbols)
    nodes, _ = M.path(symbols)
    on_path = np.arange(2)[:, None], nodes
    assert (path._reach == got[on_path]).all() and (path._inputs[..., -2] == longest[on_path]).all()


def test_learn_moves_a_cell_by_the_mean_of_its_targets():
    table = np.array([1000, 1000], dtype=np.int64)
    M.learn(table, np.array([0, 0, 0, 1]), np.array([65535, 65535, 0, 65535]), 7)
    assert table.tolist() == [1000 + (((2 * 64535 - 1000) // 3 + 64) >> 7), 1000 + ((64535 + 64) >> 7)]
    assert math.isclose(table[0], 1000 + (2 * 64535 - 1000) / 3 / 128, abs_tol=0.5)


def test_a_cell_comes_as_close_to_one_as_to_zero():
    """Steps rounded to the nearest: floored, a cell learning 1s stopped 127 short of 65535
    (P(bit 0) never below 1/516) while one learning 0s went down to 0."""
    table = np.array([30000, 30000], dtype=np.int64)
    for _ in range(3000):
        M.learn(table, np.array([0, 1]), np.array([65535, 0]), 7)
    assert table.tolist() == [65535 - 63, 64]


def test_the_weight_digest_covers_the_tree_mixer():
    """On Alice's side the GPT never depends on the mixer (she knows every byte), so only a
    digest that includes the mixer's state can catch a twin whose mixer went astray."""
    from shared.core.config import preset
    from shared.core.engine import Twin
    from shared.texts import mission_log
    from tests.helpers import PassThrough
    data = mission_log(3000)
    a, b = Twin(preset("tiny"), len(data), data), Twin(preset("tiny"), len(data), data)
    assert a.digest() == b.digest()
    for step in range(4):
        if step == 2:
            b.tree.by_byte[7, 0] += 1                  # one weight, one unit
        ra, rb = a.advance(PassThrough()), b.advance(PassThrough())
    assert ra.digest is not None and rb.digest is not None     # tiny compares every 4 steps
    assert a.model.digest() == b.model.digest() and ra.digest != rb.digest


def _positions(seed, steps=40, n=8, K=3):
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 40, (steps, n, K, VOCAB)).astype(np.uint8)
    counts[:, :, 1, 128:] = 0                          # one-sided rows: the deterministic inputs
    probs = rng.dirichlet(np.full(VOCAB, 0.3), (steps, n)).astype(np.float32)
    return counts, probs, rng.integers(0, VOCAB, (steps, n)), rng.integers(0, VOCAB, (steps, n, 3))


def _as_decoder(symbols):
    """A `decide` for `walk` that answers with the bits of known bytes, depth by depth."""
    _, bits = M.path(symbols)
    depth = iter(range(8))
    return lambda p16: bits[:, next(depth)]


def test_alices_path_and_bobs_walk_give_the_whole_trees_probabilities_and_learn_the_same():
    """`path` (Alice: the 8 nodes on each byte's path, at once), `walk` (Bob: a depth at a time,
    the next node chosen by the bit just decoded) and `predict` (the whole tree, for a watcher):
    the same 16-bit P(bit 1) at every node of every coded byte's path, and the same state after
    each update, since a node depends only on its ancestors."""
    counts, probs, symbols, prev = _positions(5)
    whole, path, walk = M.TreeMixer(3, match=True, orders=1, words=1), M.TreeMixer(3, match=True, orders=1, words=1), M.TreeMixer(3, match=True, orders=1, words=1)
    i = np.arange(len(prev[0]))[:, None]
    for s in range(len(symbols)):
        cdf = quantize(probs[s])
        shown = whole.predict(cdf, counts[s], prev[s])
        nodes, bits = M.path(symbols[s])
        p_whole, bits_whole = whole.path(cdf, counts[s], prev[s], symbols[s])    # read from the tree
        p_path, bits_path = path.path(cdf, counts[s], prev[s], symbols[s])
        found, p_walk, bits_walk = walk.walk(cdf, counts[s], prev[s], _as_decoder(symbols[s]))
        assert (found == symbols[s]).all() and (bits_walk == bits).all() and (bits_path == bits).all()
        assert (p_path == p_whole).all() and (p_walk == p_whole).all(), s
        assert (M.split_to_cdf(whole._whole) == shown).all()
        assert whole.update(symbols[s]) == path.update(symbols[s]) == walk.update(symbols[s])
        assert _digest(whole) == _digest(path) == _digest(walk), s


def test_a_walk_after_predict_reads_the_whole_tree():
    """A watched Bob: `predict` first, then `walk` takes its nodes, and learns the same."""
    counts, probs, symbols, prev = _positions(6, steps=12)
    a, b = M.TreeMixer(3, match=True, orders=1, words=1), M.TreeMixer(3, match=True, orders=1, words=1)
    for s in range(len(symbols)):
        cdf = quantize(probs[s])
        a.predict(cdf, counts[s], prev[s])
        got_a = a.walk(cdf, counts[s], prev[s], _as_decoder(symbols[s]))
        got_b = b.walk(cdf, counts[s], prev[s], _as_decoder(symbols[s]))
        assert all((x == y).all() for x, y in zip(got_a, got_b))
        assert a.update(symbols[s]) == b.update(symbols[s])
        assert _digest(a) == _digest(b), s


@pytest.mark.parametrize("levels", [1, 2, 4, 8])
def test_the_walk_gives_the_same_whatever_the_subtree_it_computes_at_once(levels, monkeypatch):
    counts, probs, symbols, prev = _positions(7, steps=6)
    a, b = M.TreeMixer(3, match=True, orders=1, words=1), M.TreeMixer(3, match=True, orders=1, words=1)
    monkeypatch.setattr(b, "WALK", levels)
    for s in range(len(symbols)):
        cdf = quantize(probs[s])
        got_a = a.walk(cdf, counts[s], prev[s], _as_decoder(symbols[s]))
        got_b = b.walk(cdf, counts[s], prev[s], _as_decoder(symbols[s]))
        assert all((x == y).all() for x, y in zip(got_a, got_b))
        a.update(symbols[s]), b.update(symbols[s])
        assert _digest(a) == _digest(b), s
