"""What a configuration may cost, whatever a file header or a HELLO says (issue 25 A3, A4): the
limits in shared/core/config.py count real memory and real work per step (config.cost), the
presets stay far inside them, and a crafted container is refused at once or within a step."""
import dataclasses
import subprocess
import sys

import pytest

from shared.coding.codec import compress, decompress
from shared.coding.container import Container, parse
from shared.core.config import (INDIRECT_KIND, MATCH_ROWS, MATCH_SPAN, MAX_LENGTH, MAX_MEMORY, MAX_STEP_WORK,
                                MAX_SYNC_EVERY, PRESETS, TREE_ONLY, TREE_ONLY_ORDERS, RunConfig, cost)
from shared.core.errors import ConfigMismatch, NotANumber, UsageError
from shared.core.layout import n_steps, sync_steps
from shared.texts import mission_log
from tests.helpers import ROOT, child_env

TINY = PRESETS["tiny"]
# a bigger preset someone may well add: 2 layers x 256 wide x 64+64 context on 32 streams, with
# strong's hashed contexts (2**16 vectors of 256: 200 MB with Adam's moments)
FUTURE = dataclasses.replace(PRESETS["strong"], streams=32, model=dataclasses.replace(
    PRESETS["strong"].model, n_layer=2, n_head=8, n_embd=256, context=64, chunk=64))
# the peak memory of the process, printed as its last line on the way out
MAXRSS = ("import atexit, sys; from scripts.common import peak_rss; "
          "atexit.register(lambda: print('maxrss', peak_rss(), file=sys.stderr))")


def model(config, **kw):
    return dataclasses.replace(config, model=dataclasses.replace(config.model, **kw))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_far_inside_the_limits(name):
    memory, work = cost(PRESETS[name])
    assert memory <= MAX_MEMORY // 5 and work <= MAX_STEP_WORK // 50


def test_a_bigger_future_preset_stays_inside_the_limits():
    memory, work = cost(FUTURE)
    assert FUTURE.problem() is None
    assert memory <= MAX_MEMORY // 2 and work <= MAX_STEP_WORK // 4


MEASURE = """
import json, sys
from shared.core import numeric
numeric.activate("portable")
from shared.texts import mission_log
from shared.core.config import RunConfig
from shared.core.engine import Twin
from tests.helpers import PassThrough, peak_rss
config = RunConfig.from_dict(json.loads(sys.argv[1]))
before = peak_rss()
data = bytes(range(256)) * (config.streams * config.model.chunk * 3 // 256 + 1)
twin = Twin(config, len(data), data)
for _ in range(2):
    twin.advance(PassThrough())
print(peak_rss() - before)
"""


@pytest.mark.parametrize("shape", [
    dict(n_layer=2, n_head=2, n_embd=512, context=16, chunk=8),                   # weights and Adam state
    dict(n_layer=2, n_head=8, n_embd=32, context=384, chunk=8, orders=(), words=0, match=0),   # attention
    dict(n_layer=1, n_head=2, n_embd=64, context=16, chunk=8, hashed=(2, 3, 4, 6), hash_bits=18),   # hashed contexts
])
def test_the_memory_estimate_covers_what_a_twin_really_takes(shape):
    config = model(dataclasses.replace(TINY, streams=4), **shape)
    r = subprocess.run([sys.executable, "-c", MEASURE, config.to_json()], cwd=ROOT, env=child_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    grown = int(r.stdout.split()[-1])
    assert grown <= cost(config)[0], (grown, cost(config)[0])


@pytest.fixture(scope="module")
def real():
    """A real tiny container: its fingerprint and step-0 digest are what an attacker copies."""
    blob, _ = compress(b"Sol 1. All quiet.\n" * 40, TINY)
    return parse(blob)


def crafted(real, config: RunConfig, length: int, payload: bytes, digests=None) -> bytes:
    config_dict = config.to_dict()
    n_sync = len(sync_steps(n_steps(length, config.streams, config.model.chunk), config.sync_every)) \
        if config.problem() is None else 1
    digests = digests or [real.digests[0]] + ["00000000"] * (n_sync - 1)
    return Container(header={"config": config_dict, "fingerprint": real.header["fingerprint"], "length": length,
                             "sha256": "0" * 64, "sync_every": config.sync_every},
                     digests=digests, payload=payload).to_bytes()


def decompress_process(tmp_path, blob: bytes):
    """`bob decompress` in its own process; returns (exit code, stderr lines, peak bytes of memory)."""
    (tmp_path / "crafted.mrs").write_bytes(blob)
    r = subprocess.run([sys.executable, "-c", f"{MAXRSS}; import runpy; runpy.run_module('receiver', "
                        f"run_name='__main__', alter_sys=True)", "decompress", str(tmp_path / "crafted.mrs"),
                        str(tmp_path / "out"), "-q"], cwd=ROOT, env=child_env(), capture_output=True,
                       timeout=300)
    lines = r.stderr.decode().strip().splitlines()
    assert lines[-1].startswith("maxrss "), lines
    assert not (tmp_path / "out").exists()
    return r.returncode, lines[:-1], int(lines[-1].split()[1])


def test_64_layers_over_an_8192_byte_context_are_refused_before_anything_is_built(tmp_path, real):
    """Issue 25 A4: this 2.6 KB header took 8.9 GB (a causal mask per layer) before a refusal."""
    config = model(TINY, n_layer=64, n_head=1, context=8192 - 16)
    memory, _ = cost(config)
    rc, lines, peak = decompress_process(tmp_path, crafted(real, config, 1000, b"\0\1"))
    assert rc == 2 and lines == [f"bob: error: run configuration refused: memory (bytes) = {memory:,} exceeds "
                                 f"this build's limit of {MAX_MEMORY:,}"]
    assert peak < 1 << 30


def test_a_configuration_that_only_costs_time_is_refused_too(tmp_path, real):
    """Inside the memory limit, minutes per step: 64 layers predicting 1024 positions one by one."""
    config = model(dataclasses.replace(TINY, streams=1), n_layer=64, n_head=1, context=16, chunk=1024)
    memory, work = cost(config)
    assert memory <= MAX_MEMORY
    rc, lines, _ = decompress_process(tmp_path, crafted(real, config, 1000, b"\0\1"))
    assert rc == 2 and lines == [f"bob: error: run configuration refused: work per step (multiply-adds) = "
                                 f"{work:,} exceeds this build's limit of {MAX_STEP_WORK:,}"]


def test_a_sync_interval_beyond_the_limit_is_refused(tmp_path, real):
    """Issue 25 A3: sync_every = 2**20 put the first digest check a million steps away."""
    config = dataclasses.replace(TINY, sync_every=1 << 20)
    rc, lines, _ = decompress_process(tmp_path, crafted(real, config, 1000, b"\0\1", digests=["00000000"] * 2))
    assert rc == 2 and lines == [f"bob: error: run configuration refused: sync_every = {1 << 20} is outside "
                                 f"1..{MAX_SYNC_EVERY}"]


def test_a_gib_announced_with_two_bytes_of_payload_stops_in_the_first_step(tmp_path, real):
    """Issue 25 A3: this header (1 GiB declared, 2 bytes coded, its step-0 digest copied from a real
    file) kept Bob busy for about 48 hours. The decoder now stops as soon as it has read more than
    its look-ahead past the payload, and Bob's memory stays small."""
    config = dataclasses.replace(TINY, sync_every=MAX_SYNC_EVERY)
    rc, lines, peak = decompress_process(tmp_path, crafted(real, config, MAX_LENGTH, b"\0\1"))
    steps = n_steps(MAX_LENGTH, config.streams, config.model.chunk)
    assert rc == 2 and lines == [f"bob: error: payload ended in step 1 of {steps:,}, {MAX_LENGTH:,} bytes before "
                                 f"the end: the file is truncated or corrupted; nothing was written"]
    assert peak < 1 << 30


# Configurations inside every range that the twin could not build (a tester's crafted headers):
# every structure row the tree mixer's alone and nothing else, so the network's count mixer had
# no row (a reshape of 0 elements); replay history shorter than the chunk it keeps (a broadcast).
NO_NETWORK_ROW = model(TINY, orders=(), words=0, match=0, structure=INDIRECT_KIND, tree=1)
SHORT_REPLAY = dataclasses.replace(TINY, train=dataclasses.replace(TINY.train, replay=2, replay_span=1))


@pytest.mark.parametrize("config, why", [
    (NO_NETWORK_ROW, f"model.structure = {INDIRECT_KIND} with model.tree = 1 leaves the network no count row to "
                     "read; it needs an order other than 5 in model.orders, model.words, model.match "
                     f"or a structure bit outside {TREE_ONLY}"),
    (SHORT_REPLAY, f"train.replay_span = 1 is below model.context + model.chunk = {TINY.model.context + TINY.model.chunk}, "
                   "the window each train.replay step trains on"),
], ids=["tree-only-structure", "short-replay-span"])
def test_a_configuration_the_twin_cannot_build_is_refused_by_name(tmp_path, real, config, why):
    rc, lines, _ = decompress_process(tmp_path, crafted(real, config, 1000, b"\0\1"))
    assert rc == 2 and lines == [f"bob: error: run configuration refused: {why}"]


def test_every_network_without_a_count_row_is_refused_and_its_neighbours_are_not():
    for rows in range(1, 16):                       # every non-empty set of the tree-only structure rows
        structure = sum(1 << (8 + i) for i in range(4) if rows >> i & 1)
        assert structure & ~TREE_ONLY == 0
        config = model(NO_NETWORK_ROW, structure=structure)
        assert "leaves the network no count row" in config.problem()
        assert model(config, tree=0).problem() is None                  # without the tree mixer, the network reads them
        for other in (dict(match=8), dict(words=1), dict(orders=(1,)), dict(structure=structure | 1)):
            assert model(config, **other).problem() is None
        assert "leaves the network no count row" in model(config, orders=TREE_ONLY_ORDERS).problem()
        assert model(config, orders=TREE_ONLY_ORDERS, tree=0).problem() is None
    assert model(NO_NETWORK_ROW, structure=0).problem() is None         # no counts at all: no count mixer either


def test_replay_needs_a_window_of_history_and_one_just_long_enough_round_trips():
    block = TINY.model.block_size
    for span in (1, TINY.model.chunk - 1, TINY.model.chunk, block - 1):
        config = dataclasses.replace(TINY, train=dataclasses.replace(TINY.train, replay=1, replay_span=span))
        assert config.problem().startswith(f"train.replay_span = {span} is below model.context + model.chunk")
        assert dataclasses.replace(config, train=dataclasses.replace(config.train, replay=0)).problem() is None
    config = dataclasses.replace(TINY, train=dataclasses.replace(TINY.train, replay=1, replay_span=block))
    data = b"Sol 2. Dust on the panels, power at 81%.\n" * 24          # 4 steps: replay runs from the second
    blob, stats = compress(data, config)
    out, dstats = decompress(parse(blob))
    assert out == data and dstats["final_digest"] == stats["final_digest"]
    _, plain = compress(data, dataclasses.replace(config, train=dataclasses.replace(config.train, replay=0)))
    assert plain["final_digest"] != stats["final_digest"]             # replay really trained on something


def test_a_one_byte_context_with_the_tree_mixer_round_trips_when_streams_end_unevenly():
    """`model.context = 1` passes the checks; the tree mixer's first position then has no byte two
    before, and once some streams had ended it built that column for every stream, not the
    active ones (a ValueError, reached by a crafted header). 16 streams, 100 bytes: uneven rows."""
    config = model(TINY, context=1)
    assert config.problem() is None
    data = mission_log(100)
    blob, stats = compress(data, config)
    out, dstats = decompress(parse(blob))
    assert out == data and dstats["final_digest"] == stats["final_digest"]


def test_validate_refuses_everything_from_dict_refuses():
    """Issue 25: config.validate raised only when the problem mentioned orders or n-gram, so a
    configuration the receiver refuses (from_dict) could still be used to compress."""
    refused = [dataclasses.replace(TINY, sync_every=MAX_SYNC_EVERY + 1), dataclasses.replace(TINY, seed=-1),
               dataclasses.replace(TINY, streams=200), model(TINY, n_embd=33),
               model(TINY, n_layer=64, n_head=1, context=8000), model(TINY, table_bits=30),
               dataclasses.replace(TINY, train=dataclasses.replace(TINY.train, lr=float("nan"))),
               NO_NETWORK_ROW, SHORT_REPLAY]
    for config in refused:
        with pytest.raises(ConfigMismatch) as theirs:
            RunConfig.from_dict(config.to_dict())
        with pytest.raises(UsageError) as ours:
            config.validate()
        assert str(ours.value) == str(theirs.value)
    for config in [*PRESETS.values(), FUTURE]:
        assert config.validate() is config


def test_the_match_model_sizes_the_estimate_counts_are_the_model_s_own():
    from shared.core.ngram import MatchModel
    assert (MATCH_SPAN, MATCH_ROWS) == (MatchModel.SPAN, 1 << MatchModel.BITS)


def test_a_training_that_blows_up_is_refused_where_it_is_coded(tmp_path, real):
    """eps = 0 passes the ranges, and Adam's first step divides 0 by 0: the predictions become NaN,
    whose cast to integer frequencies differs by CPU (x86-64 and ARM64 disagree). Alice refuses to
    code it and Bob to decode it, at the same step, in one line (no numpy warnings)."""
    config = dataclasses.replace(TINY, train=dataclasses.replace(TINY.train, eps=0.0))
    assert config.problem() is None
    with pytest.raises(NotANumber, match=r"^the model's prediction is not a number at step 2: "):
        compress(mission_log(3000), config)
    rc, lines, _ = decompress_process(tmp_path, crafted(real, config, 3000, bytes(range(256)) * 8))
    assert rc == 2 and lines == ["bob: error: the model's prediction is not a number at step 2: this configuration's "
                                 "training blew up (its learning rate or eps), and no two machines would code it "
                                 "alike (nothing was written)"]
