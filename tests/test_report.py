"""End-of-run report: a real PNG and a self-contained HTML page carrying the plotted numbers."""
import base64
import json
import re
import subprocess
import sys

import pytest

from shared.texts import mission_log
from tests.helpers import ROOT

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def fake_stats(n_bytes: int, steps: int = 12) -> dict:
    """Stats as the stream functions write them (the numbers are made up but consistent)."""
    per = n_bytes / steps
    curve = [[s, round(8.0 - 0.3 * s, 6)] for s in range(1, steps + 1)]
    bits = [per * v for _, v in curve]
    payload, wire = 0, []
    for s, b in zip(range(1, steps + 1), bits):
        payload += int(b / 8)
        wire.append([s, round(per * s), payload])
    return {"input_bytes": n_bytes, "payload_bytes": payload + 1, "compressed_bytes": payload + 1,
            "ideal_bits": sum(bits), "steps": steps, "preset": "tiny", "final_digest": "ab" * 32,
            "curve": curve, "loss_curve": [[s, round(5.5 - 0.2 * s, 6)] for s in range(1, steps + 1)],
            "wire_curve": wire, "parameters": 30208, "seconds": 3.5, "frames_resent": 2, "wire_bytes": payload + 900,
            "syncs_checked": 4, "duplicates": 1, "out_of_order": 3}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from shared.show.report import build
    d = tmp_path_factory.mktemp("report")
    src = d / "input.txt"
    src.write_bytes(mission_log(6000))
    alice = fake_stats(6000)
    bob = json.loads(json.dumps(alice))
    relay = {"settings": {"delay_s": 1.2, "bandwidth_bps": 16000, "loss": 0.1, "dup": 0, "reorder": 0, "seed": 1,
                          "fault_direction": "up"},
             "earth_to_mars": {"messages": 40, "dropped": 4, "duplicated": 0, "reordered": 0},
             "mars_to_earth": {"messages": 50, "dropped": 0, "duplicated": 0, "reordered": 0}}
    s = build(alice, bob, str(src), str(d / "out"), relay)
    return d, s, alice


def test_png_is_valid_and_readable(built):
    d, s, _ = built
    raw = (d / "out" / "report.png").read_bytes()
    assert raw[:8] == PNG_SIGNATURE
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    img = mpimg.imread(str(d / "out" / "report.png"))
    assert img.ndim == 3 and img.shape[0] > 400 and img.shape[1] > 600


def test_html_is_self_contained_with_the_plotted_series(built):
    d, s, alice = built
    page = (d / "out" / "report.html").read_text()
    png = (d / "out" / "report.png").read_bytes()
    assert f'src="data:image/png;base64,{base64.b64encode(png).decode()}"' in page    # embedded, not linked
    assert not re.search(r'(src|href)="(?!data:)', page)                             # nothing external
    for step, bpb in alice["curve"]:                                                 # the curve, as a table
        assert f"<td>{step}</td>" in page and f"<td>{bpb}</td>" in page
    series = re.search(r'data-series="([^"]*)"', page).group(1)
    import html
    assert json.loads(html.unescape(series)) == alice["curve"]
    for name in ("gzip -9", "bzip2 -9", "xz -9e"):
        assert name in page
    assert "area under the loss curve" in page and "parameters x 32 bits" in page
    assert "Alice and Bob stayed in lockstep" in page


def test_ledger_numbers_add_up(built):
    d, s, alice = built
    assert s["coder_overhead_bits"] == pytest.approx(s["payload_bits"] - s["ideal_bits"])
    assert s["payload_bits"] == alice["payload_bytes"] * 8
    assert s["weights_bits"] == 30208 * 32
    assert s["curves_equal"] and s["digests_equal"]
    data = mission_log(6000)
    import gzip
    assert abs(s["compressors"]["gzip -9"] - len(gzip.compress(data, 9))) < 40   # the real tool, same ballpark
    assert s["program"]["core_gzip_bytes"] > 1000
    saved = json.loads((d / "out" / "report.json").read_text())
    assert saved["payload_bytes"] == s["payload_bytes"]


def test_disagreement_is_reported(tmp_path):
    from shared.show.report import build
    src = tmp_path / "in.txt"
    src.write_bytes(b"x" * 600)
    alice = fake_stats(600)
    bob = json.loads(json.dumps(alice))
    bob["curve"][3][1] += 0.5
    s = build(alice, bob, str(src), str(tmp_path / "out"))
    assert not s["curves_equal"]
    assert "Alice and Bob disagree" in (tmp_path / "out" / "report.html").read_text()


def test_cli(tmp_path, built):
    d, _, alice = built
    (tmp_path / "a.json").write_text(json.dumps(alice))
    (tmp_path / "b.json").write_text(json.dumps(alice))
    r = subprocess.run([sys.executable, "-m", "shared.show.report", "--alice", str(tmp_path / "a.json"), "--bob",
                        str(tmp_path / "b.json"), "--input", str(d / "input.txt"), "--out", str(tmp_path / "r")],
                       cwd=ROOT, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    assert "digests equal" in r.stdout.decode()
    assert (tmp_path / "r" / "report.png").read_bytes()[:8] == PNG_SIGNATURE
    bad = subprocess.run([sys.executable, "-m", "shared.show.report", "--alice", str(tmp_path / "missing.json"), "--bob",
                          str(tmp_path / "b.json"), "--input", str(d / "input.txt"), "--out", str(tmp_path / "r2")],
                         cwd=ROOT, capture_output=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.decode().startswith("report: error:")
