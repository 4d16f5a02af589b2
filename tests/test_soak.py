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


@pytest.mark.parametrize("mbytes, says", [
    ("nan", "'nan' is not a positive number"),                # was a ValueError traceback
    ("0", "'0' is not a positive number"),                    # was a ZeroDivisionError traceback
    ("-1", "'-1' is not a positive number"),
    ("inf", "'inf' is not a positive number"),
    ("1e-7", "1e-07 million bytes is less than one byte"),
])
def test_soak_refuses_a_length_that_is_not_one_in_one_line(tmp_path, mbytes, says):
    r = subprocess.run([sys.executable, "scripts/soak.py", "--mbytes", mbytes, "--out", str(tmp_path / "out")],
                       cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == f"soak: error: argument --mbytes: {says}; see 'python scripts/soak.py --help'\n"
    assert not (tmp_path / "out").exists()                  # nothing made: no half-built work folder


def test_soak_refuses_an_out_that_is_a_file(tmp_path):
    out = tmp_path / "results"
    out.write_text("mine\n")
    r = subprocess.run([sys.executable, "scripts/soak.py", "--out", str(out)], cwd=ROOT, env=child_env(),
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == f"soak: error: --out {str(out)!r} is a file, not a folder; give a folder (it is created if missing)\n"
    assert out.read_text() == "mine\n"


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
