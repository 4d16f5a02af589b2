"""How the twins learn: the learning-rate schedule is a function of the step alone, so both
sides (and a twin resumed from a checkpoint) follow it without any scheduler state."""
import math
from dataclasses import replace

from shared.coding.codec import compress, decompress
from shared.coding.container import parse
from shared.core.config import preset
from shared.core.engine import Twin
from shared.texts import mission_log
from tests.helpers import PassThrough, run_twin


def decaying(lr_decay: int):
    config = preset("tiny")
    return replace(config, train=replace(config.train, lr_decay=lr_decay))


def test_lr_falls_as_one_over_root_of_the_step():
    config = decaying(4)
    twin = run_twin(config, mission_log(6000))
    last_step = twin.n_steps - 1                          # the lr is set before each step's update
    assert twin.opt.param_groups[0]["lr"] == config.train.lr / math.sqrt(1 + last_step / 4)
    assert run_twin(preset("tiny"), mission_log(6000)).opt.param_groups[0]["lr"] == config.train.lr


def test_a_decaying_run_round_trips_and_resumes_on_the_same_schedule():
    config, data = decaying(4), mission_log(6000)
    blob, stats = compress(data, config)
    out, dstats = decompress(parse(blob))
    assert out == data and dstats["final_digest"] == stats["final_digest"]
    assert stats["final_digest"] != compress(data, preset("tiny"))[1]["final_digest"]
    whole = run_twin(config, data)
    first = run_twin(config, data, whole.n_steps // 2)
    second = Twin(config, len(data), data)
    second.load_state_dict(first.state_dict(), data)
    while not second.finished:
        second.advance(PassThrough())
    assert second.digest() == whole.digest() == stats["final_digest"]
