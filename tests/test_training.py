"""How the twins learn: the learning-rate schedule is a function of the step alone, so both
sides (and a twin resumed from a checkpoint) follow it without any scheduler state."""
import math
from dataclasses import replace

import pytest

from shared.coding.codec import compress, decompress
from shared.coding.container import parse
from shared.core.config import preset
from shared.core.engine import Twin
from shared.core.errors import FormatError
from shared.core.model import CountMixer
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


def test_the_count_mixer_learns_in_its_own_group_on_the_same_schedule():
    config, data = decaying(4), mission_log(6000)
    twin = run_twin(config, data)
    gpt, mixer = twin.opt.param_groups
    assert {id(p) for p in mixer["params"]} == {id(p) for p in twin.model.mixer.parameters()}
    assert len(gpt["params"]) + len(mixer["params"]) == len(list(twin.model.parameters()))
    assert mixer["lr"] == CountMixer.LR_SCALE * gpt["lr"] and mixer["betas"][0] == CountMixer.BETA1
    assert len(run_twin(preset("bulk"), data[:2000]).opt.param_groups) == 1     # no counts, no group


def test_a_checkpoint_with_another_builds_optimizer_is_refused_plainly():
    config, data = preset("tiny"), mission_log(6000)
    first = run_twin(config, data, 4)
    state = first.state_dict()
    state["optimizer"]["param_groups"] = state["optimizer"]["param_groups"][:1]   # one group: an older build
    with pytest.raises(FormatError, match=r"checkpoint does not fit this build's optimizer .*; remove it"):
        Twin(config, len(data), data).load_state_dict(state, data)
