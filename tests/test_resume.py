"""Crash and resume: SIGKILL either side at random moments; the stream still ends byte-exact."""
import json
import random
import signal
import time

import pytest

from shared.texts import mission_log
from tests.helpers import free_endpoint, spawn


@pytest.mark.slow   # random moments; test_kill.py kills each side at step 1 and later in make test, 2 and 3 in test-slow
def test_sigkill_both_sides_repeatedly_and_still_end_byte_exact(tmp_path):
    # ~18 KB coded (the random tail is stored, not compressed): six kills ~1 KB of progress
    # apart stay well before the end, where a killed Alice could miss Mars's DONE
    data = mission_log(100_000) + random.Random(7).randbytes(10_000)
    src, out, state = tmp_path / "in.txt", tmp_path / "out.txt", tmp_path / "earth-state"
    src.write_bytes(data)
    ep = free_endpoint()
    common = ["--preset", "tiny", "--timeout", "3", "--handshake-timeout", "90", "--checkpoint-every", "8", "-q"]
    bob_cmd = ["receiver", "listen", "--bind", ep, "--out", str(out), "--stats-json", str(tmp_path / "bob.json"),
               *common]
    alice_cmd = ["sender", "send", str(src), "--connect", ep, "--state-dir", str(state),
                 "--stats-json", str(tmp_path / "alice.json"), *common]
    rng = random.Random(2026)
    procs = {"bob": spawn(*bob_cmd), "alice": spawn(*alice_cmd)}
    commands = {"bob": bob_cmd, "alice": alice_cmd}
    kills = []
    spool = tmp_path / "out.txt.partial" / "stream.bin"

    def held():
        return spool.stat().st_size if spool.exists() else 0

    for victim in ["bob", "alice"] * 3:                      # 6 kills: Bob, then Alice, in turn
        start, deadline = held(), time.time() + 120
        while held() < start + 1000 and time.time() < deadline and procs[victim].poll() is None:
            time.sleep(0.05)                                 # let the stream make real progress first
        time.sleep(rng.uniform(0.0, 1.0))                    # then strike at a random moment
        if procs[victim].poll() is not None:
            break                                            # the stream already finished
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait()
        kills.append(victim)
        procs[victim] = spawn(*commands[victim])
    results = {name: p.communicate(timeout=400) for name, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, f"{name}: {results[name][1].decode()} | other: {[r[1].decode()[-800:] for r in results.values()]}"
    assert len(kills) >= 5, f"the stream finished after only {len(kills)} kills; make it longer"
    assert out.read_bytes() == data
    alice = json.loads((tmp_path / "alice.json").read_text())
    bob = json.loads((tmp_path / "bob.json").read_text())
    assert alice["final_digest"] == bob["final_digest"]
    assert alice["resumes"] >= 1
    assert not (tmp_path / "out.txt.partial").exists()       # Bob's spool is gone once verified
    print(f"\nkills={kills} resumes={alice['resumes']} frames_resent={alice['frames_resent']} "
          f"bytes_resent_after_resume={alice['bytes_resent_after_resume']} of {alice['compressed_bytes']} "
          f"resent_bytes_seen_by_bob={bob['resent_bytes']} sender_reconnects_seen_by_bob={bob['sender_reconnects']}")
