"""A kill at any step, of either side, ends byte-exact after ONE restart of the killed side
(issue 19, finding 2). The victim dies by SIGKILL at the end of a chosen step (the hidden
--fault-kill-step hook), so "step 1" means step 1, not roughly there; Bob's first
checkpoint comes at step 16, so steps 1-3 are the kills that used to lose the stream."""
import json
import random
import time

import pytest

from shared.core.pinned import torch
from shared.texts import mission_log
from tests.helpers import finish, free_endpoint, kill_all, spawn

DATA = mission_log(8000)                     # 32 steps on the tiny preset
SHORT = mission_log(4000)                    # 16 steps: a kill at step 12 leaves 4 to code
MID = mission_log(6000)                      # 24 steps: a kill at step 20 leaves 4 to code
COMMON = ["--preset", "tiny", "--timeout", "3", "--handshake-timeout", "90", "-q"]
LATER = random.Random(19).randrange(5, 30)   # "a random later step", fixed per run of the suite


def kill_and_restart(tmp_path, victim: str, step: int):
    src, out, ep = tmp_path / "in.txt", tmp_path / "out.txt", free_endpoint()
    src.write_bytes(DATA)
    commands = {"bob": ["receiver", "listen", "--bind", ep, "--out", str(out), *COMMON],
                "alice": ["sender", "send", str(src), "--connect", ep, "--state-dir", str(tmp_path / "earth"),
                          *COMMON]}
    procs = {who: spawn(*cmd, *(["--fault-kill-step", str(step)] if who == victim else []))
             for who, cmd in commands.items()}
    try:
        assert procs[victim].wait(120) == -9, finish(procs[victim])[1]   # died by SIGKILL at that step
        procs[victim] = spawn(*commands[victim])                       # one restart, no hook
        results = {who: finish(p, 240) for who, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    for who, (rc, lines) in results.items():
        assert rc == 0, f"{who} after killing {victim} at step {step}: {lines[-3:]} | {results}"
    assert out.read_bytes() == DATA
    assert not (tmp_path / "out.txt.partial").exists()
    assert not any((tmp_path / "earth").iterdir()), "Earth's checkpoints are cleared once Mars verified"


# `make test` kills at the first step and a later one; steps 2 and 3 are in `make test-slow`
STEPS = (1, pytest.param(2, marks=pytest.mark.slow), pytest.param(3, marks=pytest.mark.slow), LATER)


@pytest.mark.parametrize("step", STEPS)
def test_kill_bob_at_a_step_then_restart_him_once(tmp_path, step):
    kill_and_restart(tmp_path, "bob", step)


@pytest.mark.parametrize("step", STEPS)
def test_kill_alice_at_a_step_then_restart_her_once(tmp_path, step):
    kill_and_restart(tmp_path, "alice", step)


def resume_as_advised(path, alice_cmd, bob):
    """Remove the damaged file `path`, as the error said, and start Alice again: she and the same
    Bob both end with exit 0. Returns the new Alice (for the caller's cleanup)."""
    path.unlink()
    alice = spawn(*alice_cmd)
    results = {"alice": finish(alice, 240), "bob": finish(bob, 240)}
    assert results["alice"][0] == 0 and results["bob"][0] == 0, results
    return alice


def damage_bobs_spool_then_follow_his_advice(tmp_path, name: str, damage, why: str):
    """Kill Bob at step 12 (his checkpoint is from step 8), `damage` his spool's file `name` while he
    is down, restart him: Alice hears the one-line reason (`why`), exit 2; removing the file, as
    advised, lets the next Alice resume to a byte-exact end with the same Bob."""
    src, out, ep = tmp_path / "in.txt", tmp_path / "out.txt", free_endpoint()
    src.write_bytes(SHORT)
    bob_cmd = ["receiver", "listen", "--bind", ep, "--out", str(out), "--checkpoint-every", "8", *COMMON]
    alice_cmd = ["sender", "send", str(src), "--connect", ep, "--state-dir", str(tmp_path / "earth"), *COMMON]
    bob, alice = spawn(*bob_cmd, "--fault-kill-step", "12"), spawn(*alice_cmd)
    try:
        assert bob.wait(120) == -9
        path = tmp_path / "out.txt.partial" / name
        assert (tmp_path / "out.txt.partial" / "stream.bin").stat().st_size > 0
        damage(path)                                              # damaged while Bob was down
        bob = spawn(*bob_cmd)
        rc, lines = finish(alice, 120)
        assert rc == 2 and lines[-1] == (f"alice: error: Mars stopped the stream (refused): "
                                         f"{why.format(path=path)}; remove it to start over"), lines[-3:]
        alice = resume_as_advised(path, alice_cmd, bob)          # Bob is still listening
    finally:
        kill_all(alice, bob)
    assert out.read_bytes() == SHORT


def test_removing_an_unreadable_checkpoint_as_bob_advises_leads_to_a_working_resume(tmp_path):
    damage_bobs_spool_then_follow_his_advice(tmp_path, "checkpoint.pt",
                                             lambda path: path.write_bytes(b"not a checkpoint"),
                                             "checkpoint {path} is unreadable (UnpicklingError)")


def without(key):
    """Damage: the checkpoint still loads, but lacks `key`."""
    def damage(path):
        state = torch.load(path, weights_only=True)
        del state[key]
        torch.save(state, path)
    return damage


def retyped(key, value):
    """Damage: the checkpoint still loads, but its `key` holds `value`."""
    def damage(path):
        torch.save({**torch.load(path, weights_only=True), key: value}, path)
    return damage


# a field of the wrong type takes the same path as a missing one: make test-slow
@pytest.mark.parametrize("name, damage, why", [
    ("checkpoint.pt", without("twin"), "checkpoint {path} is malformed (no 'twin')"),
    pytest.param("checkpoint.pt", retyped("decoder", "0"),
                 "checkpoint {path} is malformed ('decoder' is not a list of 6 integers)", marks=pytest.mark.slow),
    ("meta.json", lambda p: p.write_text("[1]"), "{path} is malformed (not a JSON object)"),
], ids=["checkpoint-without-twin", "checkpoint-with-wrong-types", "meta-json-not-an-object"])
def test_removing_a_malformed_spool_file_as_bob_advises_leads_to_a_working_resume(tmp_path, name, damage, why):
    damage_bobs_spool_then_follow_his_advice(tmp_path, name, damage, why)


@pytest.mark.parametrize("damage, why", [({}, "no 'twin'"), pytest.param([1], "not a dict", marks=pytest.mark.slow)],
                         ids=["empty-dict", "list"])   # a list: the same path as a dict without the field
def test_removing_a_malformed_checkpoint_as_alice_advises_leads_to_a_working_resume(tmp_path, damage, why):
    src, out, ep = tmp_path / "in.txt", tmp_path / "out.txt", free_endpoint()
    src.write_bytes(MID)
    bob_cmd = ["receiver", "listen", "--bind", ep, "--out", str(out), *COMMON]
    alice_cmd = ["sender", "send", str(src), "--connect", ep, "--state-dir", str(tmp_path / "earth"),
                 "--checkpoint-every", "8", *COMMON]
    bob, alice = spawn(*bob_cmd), spawn(*alice_cmd, "--fault-kill-step", "20")
    try:
        assert alice.wait(120) == -9
        *older, ckpt = sorted((tmp_path / "earth").glob("*/ckpt-*.pt"))      # steps 8 and 16
        assert older, "Alice kept an older checkpoint to resume from"
        torch.save(damage, ckpt)                                  # damaged while Alice was down
        alice = spawn(*alice_cmd)
        rc, lines = finish(alice, 120)
        assert rc == 2 and lines == [f"alice: error: checkpoint {ckpt} is malformed ({why}); remove it to "
                                     f"start over"], lines[-3:]
        alice = resume_as_advised(ckpt, alice_cmd, bob)          # Bob is still waiting
    finally:
        kill_all(alice, bob)
    assert out.read_bytes() == MID
    assert not any((tmp_path / "earth").iterdir()), "Earth's checkpoints are cleared once Mars verified"


def test_a_checkpoint_damaged_while_alice_waits_for_bob_is_one_line_and_resumes_as_advised(tmp_path):
    """Alice's other way back: she stays up while Bob is down, and rewinds to her newest checkpoint
    when he returns. Damaged in between, it is the same one line as at a restart; Bob hears it and
    stops too, keeping what he had, and removing the file as advised lets both, started again,
    resume to a byte-exact end."""
    src, out, ep = tmp_path / "in.txt", tmp_path / "out.txt", free_endpoint()
    src.write_bytes(MID)
    bob_cmd = ["receiver", "listen", "--bind", ep, "--out", str(out), *COMMON]
    alice_cmd = ["sender", "send", str(src), "--connect", ep, "--state-dir", str(tmp_path / "earth"),
                 "--checkpoint-every", "4", *COMMON]
    bob, alice = spawn(*bob_cmd, "--fault-kill-step", "20"), spawn(*alice_cmd)
    try:
        assert bob.wait(120) == -9
        # Alice codes on without Bob (the 4 steps left fit in her window) until her last step's
        # checkpoint (step 24) is written; then she only waits for him and knocks: no newer one comes
        deadline = time.monotonic() + 120
        while not list((tmp_path / "earth").glob(f"*/ckpt-{24:09d}.pt")):
            assert alice.poll() is None, finish(alice)[1]
            assert time.monotonic() < deadline, "Alice did not checkpoint her last step within 120 s"
            time.sleep(0.05)
        seen = sorted((tmp_path / "earth").glob("*/ckpt-*.pt"))
        assert alice.poll() is None and seen
        ckpt = seen[-1]
        ckpt.write_bytes(b"not a checkpoint")                     # damaged while Alice waited
        bob = spawn(*bob_cmd)
        rc, lines = finish(alice, 120)
        assert rc == 2 and lines[-1] == (f"alice: error: checkpoint {ckpt} is unreadable (UnpicklingError); "
                                         f"remove it to start over"), lines[-3:]
        rc, lines = finish(bob, 60)                                # Mars hears why, and stops too
        assert rc == 2 and lines[-1] == (f"bob: error: Earth stopped the stream (sender-failed): checkpoint "
                                         f"{ckpt} is unreadable (UnpicklingError); remove it to start over")
        assert (tmp_path / "out.txt.partial").exists()              # what Bob had is kept for the resume
        bob = spawn(*bob_cmd)
        alice = resume_as_advised(ckpt, alice_cmd, bob)
    finally:
        kill_all(alice, bob)
    assert out.read_bytes() == MID
    assert not any((tmp_path / "earth").iterdir()), "Earth's checkpoints are cleared once Mars verified"


def test_a_restarted_alice_codes_on_from_her_checkpoint_not_from_the_start(tmp_path):
    """A new Alice process used to code again from step 0 (a fresh twin was never rewound) and
    only skipped sending what Bob held: byte-exact, but a kill at 90% cost 90% again. She now
    loads her newest checkpoint that Bob's resume point covers (steps 8 and 16 are on disk)."""
    src, out, ep, stats = tmp_path / "in.txt", tmp_path / "out.txt", free_endpoint(), tmp_path / "alice.json"
    src.write_bytes(MID)
    bob = spawn("receiver", "listen", "--bind", ep, "--out", str(out), *COMMON)
    alice_cmd = ["sender", "send", str(src), "--connect", ep, "--state-dir", str(tmp_path / "earth"),
                 "--checkpoint-every", "8", *COMMON]
    alice = spawn(*alice_cmd, "--fault-kill-step", "20")
    try:
        assert alice.wait(120) == -9
        alice = spawn(*alice_cmd, "--stats-json", str(stats))
        results = {"alice": finish(alice, 240), "bob": finish(bob, 240)}
        assert results["alice"][0] == 0 and results["bob"][0] == 0, results
    finally:
        kill_all(alice, bob)
    assert out.read_bytes() == MID
    report = json.loads(stats.read_text())
    assert report["resumes"] == 1 and report["resumed_from_step"] == 16, report


def test_a_partial_stream_met_with_another_seed_is_named_as_such_and_resumes_as_it_was(tmp_path):
    """Both sides started again on a partial stream, with another seed: Bob's refusal named it
    "another input" and advised removing it. It is this input, coded otherwise: started as they
    were, both resume it to a byte-exact end."""
    src, out, ep = tmp_path / "in.txt", tmp_path / "out.txt", free_endpoint()
    src.write_bytes(MID)
    bob_cmd = ["receiver", "listen", "--bind", ep, "--out", str(out), *COMMON]
    alice_cmd = ["sender", "send", str(src), "--connect", ep, "--state-dir", str(tmp_path / "earth"), *COMMON]
    bob, alice = spawn(*bob_cmd, "--fault-kill-step", "20"), spawn(*alice_cmd)
    try:
        assert bob.wait(120) == -9
        alice.kill()
        alice.wait(60)
        bob, alice = spawn(*bob_cmd, "--seed", "5"), spawn(*alice_cmd, "--seed", "5")
        rc, lines = finish(alice, 120)
        assert rc == 2 and lines[-1] == (
            f"alice: error: Mars stopped the stream (refused): {out}.partial holds this stream, coded with preset "
            f"'tiny' and another seed or option than Earth's now; start both sides as they were to resume it, "
            f"or remove it to start over"), lines[-3:]
        bob.kill()
        bob.wait(60)
        bob, alice = spawn(*bob_cmd), spawn(*alice_cmd)
        results = {"alice": finish(alice, 240), "bob": finish(bob, 240)}
        assert results["alice"][0] == 0 and results["bob"][0] == 0, results
    finally:
        kill_all(alice, bob)
    assert out.read_bytes() == MID


def test_a_bob_killed_and_started_again_is_found_at_once_not_after_alices_silence_timeout(tmp_path):
    """A new Bob dropped the frames of the Alice his predecessor served, so she noticed only after
    her silence timeout (30 s by default) and a demo stood still. He now answers ERROR say-hello,
    and she knocks again at once: with a 300 s timeout, she still resumes within the test's 120 s."""
    src, out, ep, stats = tmp_path / "in.txt", tmp_path / "out.txt", free_endpoint(), tmp_path / "alice.json"
    src.write_bytes(SHORT)
    slow = ["--preset", "tiny", "--timeout", "300", "--handshake-timeout", "90", "-q"]
    bob_cmd = ["receiver", "listen", "--bind", ep, "--out", str(out), *slow]
    alice = spawn("sender", "send", str(src), "--connect", ep, "--state-dir", str(tmp_path / "earth"),
                  "--stats-json", str(stats), *slow)
    bob = spawn(*bob_cmd, "--fault-kill-step", "12")
    try:
        assert bob.wait(120) == -9
        bob = spawn(*bob_cmd)
        results = {"alice": finish(alice, 120), "bob": finish(bob, 120)}
    finally:
        kill_all(alice, bob)
    assert results["alice"][0] == 0 and results["bob"][0] == 0, results
    assert out.read_bytes() == SHORT
    assert json.loads(stats.read_text())["resumes"] == 1
