"""What earned the bits: every run says what its bytes would have cost under the network alone,
the counts alone, the mixture before SSE and after it, computed in the same pass."""
import json
import math

import pytest

from shared.coding.codec import compress
from shared.core.config import preset
from shared.show.telemetry import earned, earned_line
from shared.texts import mission_log
from tests.helpers import run_cli

PARTS = {"network", "counts", "mixture", "final"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """alice compress and bob decompress of one text, both with --stats-json."""
    d = tmp_path_factory.mktemp("earned")
    (d / "in.txt").write_bytes(mission_log(4000))
    a = run_cli("sender", "compress", str(d / "in.txt"), str(d / "c.mrs"), "--preset", "tiny",
                "--stats-json", str(d / "alice.json"), "-q")
    assert a.returncode == 0, a.stderr.decode()
    b = run_cli("receiver", "decompress", str(d / "c.mrs"), str(d / "out.txt"), "--stats-json", str(d / "bob.json"))
    assert b.returncode == 0, b.stderr.decode()
    return json.loads((d / "alice.json").read_text()), json.loads((d / "bob.json").read_text())


def test_the_stats_say_what_each_part_would_have_cost(runs):
    alice, _ = runs
    parts = alice["bits_by_part"]
    assert set(parts) == PARTS
    assert parts["final"] == alice["ideal_bits"]            # what was coded is the last stage
    n = alice["input_bytes"]
    for name in PARTS:
        assert 0 < parts[name] / n < 8.5, (name, parts[name] / n)
    # on a repetitive text the counts know far more than a GPT trained on 4,000 bytes
    assert parts["counts"] < parts["network"]
    # the payload is the coded bits plus the coder's flags and final bits
    assert abs(alice["payload_bytes"] * 8 - parts["final"]) < 0.02 * parts["final"] + 64


def test_bob_computes_the_same_figures_from_his_own_twin(runs):
    alice, bob = runs
    assert bob["bits_by_part"] == alice["bits_by_part"]


def test_a_preset_without_counts_says_so():
    _, stats = compress(mission_log(1500), preset("bulk"))
    parts = stats["bits_by_part"]
    assert parts["counts"] is None and parts["mixture"] is None and parts["network"] > 0
    rows = dict(earned({**stats, "compressed_bytes": 100}))
    assert rows["counts alone"] is None and math.isclose(rows["sent"], 800 / 1500)
    assert "counts alone -" in earned_line(stats)


def test_the_dashboard_log_line_shows_them(tmp_path):
    """The plain (log) display's final line, as `alice send --plain` and the demo print it."""
    from shared.show.dashboard import plain_line
    _, stats = compress(mission_log(1500), preset("tiny"))
    line = plain_line({"role": "earth", "result": {**stats, "compressed_bytes": 700}, "elapsed": 1.0})
    assert "what earned the bits: network alone " in line and "after SSE " in line
    assert line.endswith(f"sent {700 * 8 / 1500:.3f} bits/byte")
