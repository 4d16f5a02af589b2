"""The DONE gap (issue 19, finding 5): Bob keeps a receipt and lingers, so an Alice who never
saw DONE learns on her restart that Mars has the file, exits 0 and clears her checkpoints."""
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from shared.coding.codec import compress
from shared.core.config import preset
from receiver.stream import KEEP_RECEIPTS, write_receipt
from shared.texts import mission_log
from tests.helpers import CACHE, ROOT, child_env, finish, hello, kill_all, listen, send, spawn, wait_for_spool


def test_an_alice_who_missed_done_gets_a_receipt_on_restart(tmp_path):
    data = mission_log(2000)                                 # 8 steps on the tiny preset: checkpoints at 4 and 8
    _, expected = compress(data, preset("tiny"))             # the coded length Bob's spool will reach
    bob, ep, out = listen(tmp_path, "--linger", "60")
    src, state = tmp_path / "in.bin", tmp_path / "earth"
    src.write_bytes(data)
    alice = spawn("sender", "send", str(src), "--connect", ep, "--preset", "tiny", "--state-dir", str(state),
                  "--checkpoint-every", "4")
    try:
        wait_for_spool(bob, tmp_path, expected["payload_bytes"])
        alice.send_signal(signal.SIGSTOP)                     # her END is out; Bob's DONE will not be read
        deadline = time.monotonic() + 120
        while not out.exists():
            assert time.monotonic() < deadline, "Bob did not publish"
            time.sleep(0.05)
        alice.send_signal(signal.SIGKILL)
        alice.wait(30)
        assert any(state.iterdir()), "Alice's checkpoints are still there"
        started = time.monotonic()
        rc, lines = send(tmp_path, ep, data, "--state-dir", str(state))
        assert rc == 0, lines
        stream_id = hashlib.sha256(data).hexdigest()[:16]
        assert lines[-1] == (f"alice: Mars already has stream {stream_id!r} ({len(data):,} bytes, SHA-256 ok); "
                             f"nothing to send, checkpoints cleared")
        assert not any(state.iterdir())
        rc, bob_lines = finish(bob)
        assert time.monotonic() - started < 40                # Bob's linger ended with Alice's acknowledgement
    finally:
        kill_all(alice, bob)
    assert rc == 0, bob_lines
    assert out.read_bytes() == data
    receipt = json.loads((Path(CACHE) / "marslink" / "mars" / "receipts" /
                          (hashlib.sha256(stream_id.encode() + hashlib.sha256(data).digest()).hexdigest()[:24]
                           + ".json")).read_text())
    assert (receipt["stream_id"], receipt["length"], receipt["sha256"], receipt["out"]) == \
        (stream_id, len(data), hashlib.sha256(data).hexdigest(), str(out))
    assert abs(receipt["time"] - time.time()) < 300


def test_demo_with_faults_in_both_directions_ends_verified_on_both_sides(tmp_path):
    """30% loss both ways: DONEs and their acknowledgements get lost too; Bob lingers and
    repeats DONE (also on every resent END) until Earth has it."""
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "scripts/demo.py", "--no-tmux", "--preset", "tiny", "--bytes", "3000",
                        "--delay-s", "0.1", "--bandwidth-bps", "0", "--out", str(out), "--no-report",
                        "--fault-direction", "both", "--loss", "0.3", "--seed", "3"],
                       cwd=ROOT, env=child_env(), capture_output=True, timeout=240)
    text = r.stdout.decode()
    assert r.returncode == 0, text[-3000:] + r.stderr.decode()[-2000:]
    assert re.search(r"^\[earth\] VERIFIED", text, re.M) and re.search(r"^\[mars\] VERIFIED", text, re.M)
    assert (out / "received.txt").read_bytes() == next(out.glob("input-*")).read_bytes()


def test_pruning_touches_only_receipts_and_never_says_a_kept_receipt_is_missing(tmp_path):
    """Round nine: the newest KEEP_RECEIPTS entries of receipts/ were kept whatever they were, so
    the user's own files there were deleted, and a folder among them made every delivery say
    "delivered, but no receipt was kept (… Is a directory)" of a receipt that was kept."""
    folder = tmp_path / "receipts"
    (folder / "a-folder").mkdir(parents=True)
    (folder / "notes.txt").write_text("mine\n")
    for i in range(KEEP_RECEIPTS + 5):                     # older receipts, oldest first
        old = folder / f"{i:024x}.json"
        old.write_text("{}")
        os.utime(old, (1_000_000 + i, 1_000_000 + i))
    os.utime(folder / "a-folder", (1, 1))                   # older than every receipt
    os.utime(folder / "notes.txt", (2, 2))
    path = write_receipt(str(tmp_path), hello("s9"), "ab" * 16, str(tmp_path / "out.txt"))
    assert json.loads(Path(path).read_text())["stream_id"] == "s9"
    kept = sorted(p.name for p in folder.iterdir())
    assert kept == sorted(["a-folder", "notes.txt", Path(path).name] +
                          [f"{i:024x}.json" for i in range(6, KEEP_RECEIPTS + 5)])
