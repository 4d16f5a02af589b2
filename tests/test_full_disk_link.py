"""A full disk on Mars during a live stream: Bob's state folder (beside --out) sits on a small
tmpfs that holds his first checkpoint but not the second. Bob stops with one line naming the
checkpoint and what to do, Earth hears the same reason at once (an ERROR frame, not a 150 s
wait), nothing is published, and Bob's last checkpoint stays whole; once space is freed, one
restart of both ends byte-exact, resumed from that checkpoint."""
import io
import json
import subprocess

from shared.core.config import preset
from shared.core.pinned import torch
from shared.texts import mission_log
from tests.helpers import free_endpoint, leftovers, run_twin, spawn, tmpfs

DATA = mission_log(5000)                     # 20 steps on the tiny preset: checkpoints at 8 and 16
COMMON = ["--preset", "tiny", "--timeout", "10", "--checkpoint-every", "8", "-q"]


def checkpoint_bytes() -> int:
    """Roughly what one of Bob's checkpoints takes: the twin's state after a few steps."""
    buf = io.BytesIO()
    torch.save(run_twin(preset("tiny"), DATA, steps=2).state_dict(), buf)
    return len(buf.getvalue())


def run_both(tmp_path, out):
    ep = free_endpoint()
    bob = spawn("receiver", "listen", "--bind", ep, "--out", str(out), "--stats-json", str(tmp_path / "bob.json"),
                *COMMON)
    alice = spawn("sender", "send", str(tmp_path / "in.txt"), "--connect", ep, "--state-dir",
                  str(tmp_path / "earth"), *COMMON)
    a_err = alice.communicate(timeout=180)[1].decode()
    b_err = bob.communicate(timeout=60)[1].decode()
    return alice.returncode, a_err, bob.returncode, b_err


def test_full_disk_on_mars_stops_both_with_the_reason_and_resumes(tmp_path):
    (tmp_path / "in.txt").write_bytes(DATA)
    one = checkpoint_bytes()
    size = len(DATA) + 64 * 1024 + one * 4 // 3                     # one checkpoint fits, not two at once
    with tmpfs(tmp_path / "mars", f"{size // 1024}k") as disk:
        out = disk / "out.txt"
        a_rc, a_err, b_rc, b_err = run_both(tmp_path, out)
        message = (f"cannot write checkpoint {str(disk / 'out.txt.partial' / 'checkpoint.pt')!r}: no space left "
                   f"on device; free some space or choose another folder, then run again to resume")
        assert (b_rc, b_err.strip()) == (2, f"bob: error: {message}")
        assert a_rc == 2 and len(a_err.strip().splitlines()) == 1 and a_err.strip().endswith(message), a_err
        assert leftovers(disk) == ["out.txt.partial"]                   # nothing published
        assert "checkpoint.pt" in leftovers(disk / "out.txt.partial")   # the last good one, whole
        assert not [n for n in leftovers(disk / "out.txt.partial") if n.startswith(".")]   # no temporary file

        subprocess.run(["mount", "-o", f"remount,size={4 * one // 1024}k", str(disk)], check=True, timeout=30)   # room freed
        a_rc, a_err, b_rc, b_err = run_both(tmp_path, out)
        assert (a_rc, b_rc) == (0, 0), a_err + b_err
        assert out.read_bytes() == DATA
        assert leftovers(disk) == ["out.txt"]
        assert json.loads((tmp_path / "bob.json").read_text())["resumed_from_step"] == 8
