"""scripts/soak.py: a live stream through the fault-injecting relay, memory watched on both sides."""
import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT, child_env


def test_soak_refuses_a_bad_probability_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "scripts/soak.py", "--loss", "1.5", "--out", str(tmp_path)], cwd=ROOT,
                       env=child_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr == "soak: error: --loss must be in [0, 1)\n"
    assert not (tmp_path / "soak-work").exists()


@pytest.mark.slow
def test_soak_through_the_relay_is_byte_exact_and_the_relay_did_its_faults(tmp_path):
    r = subprocess.run([sys.executable, "scripts/soak.py", "--mbytes", "0.03", "--loss", "0.05", "--out",
                        str(tmp_path)], cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    result = json.loads((tmp_path / "soak.json").read_text())
    assert result["ok"] is True and result["input_bytes"] == 30_000
    assert (tmp_path / "soak-work" / "out.bin").read_bytes() == (tmp_path / "soak-work" / "in.bin").read_bytes()
    faults = result["relay_earth_to_mars"]
    assert faults["messages"] > 0 and faults["dropped"] + faults["duplicated"] + faults["reordered"] > 0
    assert set(result["growth_first_to_last_quarter"]) == {"alice", "bob"}
