"""The network's own memory of contexts (model.HashedContexts): which rows a token reads, that
coding reads the rows training reads, that a step moves only the rows it read, and that a run
with it round-trips and resumes bit for bit."""
from dataclasses import replace

import numpy as np
import pytest

from shared.coding.codec import compress, decompress
from shared.coding.container import parse
from shared.core.config import PAD, ModelConfig, TrainConfig, cost, preset
from shared.core.engine import Twin
from shared.core.errors import UsageError
from shared.core.model import GPT, HashedContexts, loss_on, make_optimizer
from shared.core.pinned import torch
from shared.texts import mission_log
from tests.helpers import PassThrough, run_twin

CFG = ModelConfig(n_layer=1, n_head=2, n_embd=16, context=12, chunk=4, hashed=(1, 2, 4), hash_bits=10)


def reference_row(tokens: list[int], k: int, bits: int) -> int:
    """The row of the context of the k tokens ending at tokens[-1], spelled out in Python."""
    h = k
    for j in range(k):
        back = tokens[-1 - j] if j < len(tokens) else PAD
        h = (h * HashedContexts.MUL + back + 1) % 2**32
    return (h * HashedContexts.MUL % 2**32) >> (32 - bits)


def small(hash_bits=10) -> object:
    config = preset("neural")
    return replace(config, streams=4, model=replace(config.model, n_embd=32, context=8, chunk=4, hash_bits=hash_bits))


def test_a_token_reads_the_rows_of_the_k_bytes_ending_at_it():
    table = HashedContexts(CFG)
    seq = list(b"to be or not to be")
    ids = table.ids(torch.tensor([seq]))[0].numpy()                      # (S, orders)
    for s in range(len(seq)):
        assert [int(v) for v in ids[s]] == [reference_row(seq[:s + 1], k, 10) for k in CFG.hashed]
    # the same four bytes give the same row for order 4, and order 1 depends on the byte alone
    assert ids[16, 2] == ids[3, 2] and ids[17, 0] == ids[4, 0] and ids[16, 2] != ids[15, 2]
    assert 0 <= ids.min() and ids.max() < 1 << 10


def test_coding_reads_the_rows_training_reads():
    """prime + extend (the coding path) and forward (training) give the same probabilities at
    every position but for the float rounding of a prefix pass, with a table whose rows all
    differ: a row read at the wrong position would move them by far more."""
    model = GPT(CFG, seed=3)
    with torch.no_grad():
        model.hashed.weight.copy_(torch.from_numpy(np.random.default_rng(0).standard_normal((1 << 10, 16)).astype("f4")))
    x = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (3, CFG.block_size)))
    with torch.no_grad():
        whole = torch.softmax(model(x), -1)
        probs = [model.prime(x[:, :CFG.context])]
        for t in range(CFG.chunk - 1):
            probs.append(model.extend(x[:, CFG.context + t]))
    got = torch.stack(probs, 1).log()
    want = whole[:, CFG.context - 1:CFG.block_size - 1].log()
    assert (got - want).abs().max() < 1e-4
    with torch.no_grad():                                                 # and the rows matter
        model.hashed.weight.zero_()
        assert (torch.softmax(model(x), -1)[:, CFG.context - 1:CFG.block_size - 1].log() - want).abs().amax(-1).min() > 1e-2


def test_a_step_moves_only_the_rows_it_read_by_their_gradient():
    model = GPT(CFG, seed=5)
    opt = make_optimizer(model, TrainConfig())
    x = torch.from_numpy(np.random.default_rng(2).integers(0, 64, (2, CFG.block_size)))
    ids = model.hashed.ids(x[:, :-1])
    outs, forward = [], model.hashed.forward

    def spy(idx):                      # keep what the table added, to get the loss's gradient there
        out = forward(idx)
        out.retain_grad()
        outs.append(out)
        return out
    model.hashed.forward = spy
    loss_on(model, x[:, :-1], x[:, 1:]).backward()
    rows, grad = model.hashed.read[0], model.hashed.read[1].grad
    want = np.zeros((1 << 10, CFG.n_embd))                           # each row: the sum over where it was read
    for k in range(len(CFG.hashed)):
        np.add.at(want, ids[..., k].numpy(), outs[0].grad.numpy().astype("f8"))
    assert torch.equal(rows, torch.unique(ids))
    assert np.allclose(grad.numpy(), want[rows.numpy()], rtol=1e-5, atol=1e-9) and grad.abs().sum() > 0
    read = rows
    opt.step()
    table, state = model.hashed.weight.detach(), opt.state[model.hashed.weight]
    moved = torch.nonzero(table.abs().sum(1)).flatten()
    assert torch.equal(moved, read)                                      # every row read moved, no other
    unread = torch.ones(1 << 10, dtype=torch.bool)
    unread[read] = False
    assert not state["exp_avg"][unread].any() and not state["exp_avg_sq"][unread].any()
    assert state["step"] == 1 and model.hashed.read is None


def test_a_run_with_hashed_contexts_round_trips_and_resumes_bit_for_bit():
    config, data = small(), mission_log(3000)
    blob, stats = compress(data, config)
    out, dstats = decompress(parse(blob))
    assert out == data and dstats["final_digest"] == stats["final_digest"]
    whole = run_twin(config, data)
    first = run_twin(config, data, whole.n_steps // 2)
    state = first.state_dict()
    assert len(state["optimizer"]["param_groups"]) == 2                  # the table steps in its own group
    second = Twin(config, len(data), data)
    second.load_state_dict(state, data)
    while not second.finished:
        second.advance(PassThrough())
    assert second.digest() == whole.digest() == stats["final_digest"]
    assert stats["final_digest"] != compress(data, replace(config, model=replace(config.model, hashed=())))[1]["final_digest"]


@pytest.mark.parametrize("hashed, message", [
    ((2, 2), r"model.hashed must be increasing whole numbers in 1..8, not \(2, 2\)"),
    ((0, 3), r"model.hashed must be increasing whole numbers in 1..8, not \(0, 3\)"),
    ((3, 9), r"model.hashed must be increasing whole numbers in 1..8, not \(3, 9\)"),
])
def test_a_bad_hashed_configuration_is_refused_by_name(hashed, message):
    config = small()
    with pytest.raises(UsageError, match=message):
        replace(config, model=replace(config.model, hashed=hashed)).validate()
    with pytest.raises(UsageError, match=r"model.hash_bits = 23 is outside 8..22"):
        replace(config, model=replace(config.model, hash_bits=23)).validate()


def test_the_table_and_its_moments_are_counted_in_the_cost():
    config = preset("neural")
    without = replace(config, model=replace(config.model, hashed=()))
    assert cost(config)[0] - cost(without)[0] >= 12 * (1 << config.model.hash_bits) * config.model.n_embd
