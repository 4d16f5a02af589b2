"""End-of-run report: a real PNG and a self-contained HTML page carrying the plotted numbers, and
a ledger that counts the whole program and the whole trained state of a real twin."""
import base64
import gzip
import html
import json
import os
import re
import shutil
import subprocess
import sys

from pathlib import Path

import matplotlib
import matplotlib.image as mpimg
import numpy as np
import pytest

import shared.core
from shared.core.config import preset
from shared.core.engine import Twin
from shared.show.report import build, summarize
from shared.show.telemetry import Telemetry
from shared.texts import mission_log
from tests.helpers import ROOT, PassThrough

matplotlib.use("Agg")

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


def bob_of(alice: dict) -> dict:
    """Bob's statistics of the run `alice` describes: the same numbers, his own clock."""
    return {**alice, "seconds": alice["seconds"] + 0.25}


def recorded_twin(n_bytes: int = 2000):
    """A real tiny twin run to the end with telemetry recording it, as both stream ends do."""
    data = mission_log(n_bytes)
    twin, telemetry = Twin(preset("tiny"), len(data), data), Telemetry()
    while not twin.finished:
        telemetry.record(twin, twin.advance(PassThrough()), 0)
    return twin, telemetry.stats()


@pytest.fixture(scope="module")
def twin_run():
    return recorded_twin()


@pytest.fixture(scope="module")
def built(tmp_path_factory, twin_run):
    d = tmp_path_factory.mktemp("report")
    src = d / "input.txt"
    src.write_bytes(mission_log(6000))
    alice = fake_stats(6000)
    alice["state"] = twin_run[1]["state"]
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
    assert json.loads(html.unescape(series)) == alice["curve"]
    for name in ("gzip -9", "bzip2 -9", "xz -9e"):
        assert name in page
    assert "area under the loss curve" in page and "the program (core + coder)" in page
    for row in s["state"]:                                                           # every state row, both sizes
        assert f"{row['raw_bytes']:,} bytes raw, gzip -9 to {row['gzip_bytes']:,}" in page
    assert f"<td>= sending the trained state instead</td><td>{s['state_bits']:,}</td>" in page
    assert "Alice and Bob stayed in lockstep" in page


def test_ledger_numbers_add_up(built):
    d, s, alice = built
    assert s["coder_overhead_bits"] == pytest.approx(s["payload_bits"] - s["ideal_bits"])
    assert s["payload_bits"] == alice["payload_bytes"] * 8
    assert s["state_equal"] and s["state_bits"] == sum(r["gzip_bytes"] for r in s["state"]) * 8
    assert s["curves_equal"] and s["digests_equal"]
    data = mission_log(6000)
    assert abs(s["compressors"]["gzip -9"] - len(gzip.compress(data, 9))) < 40   # the real tool, same ballpark
    assert s["program"]["gzip_bytes"] > 1000
    saved = json.loads((d / "out" / "report.json").read_text())
    assert saved["payload_bytes"] == s["payload_bytes"]


def test_disagreement_is_reported(tmp_path):
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
    (tmp_path / "b.json").write_text(json.dumps(bob_of(alice)))
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
    other = tmp_path / "other.txt"                    # a stale input beside the stats (demo-out/ keeps them)
    other.write_bytes(mission_log(2000))
    wrong = subprocess.run([sys.executable, "-m", "shared.show.report", "--alice", str(tmp_path / "a.json"), "--bob",
                            str(tmp_path / "b.json"), "--input", str(other), "--out", str(tmp_path / "r3")],
                           cwd=ROOT, capture_output=True, timeout=60)
    assert wrong.returncode == 2 and wrong.stderr.decode().splitlines() == [
        f"report: error: input {str(other)!r} has 2,000 bytes, but Alice's statistics are of 6,000; "
        f"give the input that was sent"]
    assert not (tmp_path / "r3").exists()


def run_report(*args):
    return subprocess.run([sys.executable, "-m", "shared.show.report", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


GIVE = "give the --stats-json file {} wrote"


@pytest.mark.parametrize("who, content, says", [
    ("alice", "[1, 2]", " holds a list, not an object of statistics; " + GIVE.format("Alice's run")),
    ("bob", "[]", " holds a list, not an object of statistics; " + GIVE.format("Bob's run")),
    ("alice", {"payload_bytes": "12"}, ": 'payload_bytes' is \"12\", not a whole number of at most 10^15; "
                                       + GIVE.format("Alice's run")),
    ("bob", {"input_bytes": "6000"}, ": 'input_bytes' is \"6000\", not a whole number of at most 10^15; "
                                     + GIVE.format("Bob's run")),
    # round nine: numbers a float cannot hold were tracebacks (OverflowError), or broke the plot
    ("alice", {"ideal_bits": 10 ** 400}, ": 'ideal_bits' is " + str(10 ** 400)[:40] + ", not a number of at most "
                                         "10^15; " + GIVE.format("Alice's run")),
    ("alice", {"seconds": -1e308}, ": 'seconds' is -1e+308, not a number of at most 10^15; "
                                   + GIVE.format("Alice's run")),
    ("alice", '{"ideal_bits": ' + "9" * 5000 + "}", " holds a number too long to be statistics; "
                                                   + GIVE.format("Alice's run")),
    ("alice", {"curve": [[1, "x"]]}, ": 'curve' is [[1, \"x\"]], not a list of [step, bits/byte] rows; "
                                     + GIVE.format("Alice's run")),
    ("bob", {"state": [{"name": 1}]}, ": 'state' is [{\"name\": 1}], not a list of rows with name, raw_bytes, "
                                      "gzip_bytes, arrays and note; " + GIVE.format("Bob's run")),
    ("alice", {"payload_bytes": None}, " has no 'payload_bytes'; " + GIVE.format("Alice's run")),   # was "'payload_bytes'"
    ("bob", "", " is not JSON (Expecting value: line 1 column 1); " + GIVE.format("Bob's run")),
    ("relay", {"settings": {"delay_s": "slow"}}, ": 'settings' is {\"delay_s\": \"slow\"}, not an object of settings "
                                                 "(delay_s, bandwidth_bps, loss, dup, reorder: numbers); "
                                                 + GIVE.format("the relay")),
    ("relay", {"earth_to_mars": {"messages": 10 ** 400}}, ": 'earth_to_mars' is {\"messages\": " + str(10 ** 400)[:27]
                                                         + ", not an object of counts; " + GIVE.format("the relay")),
    ("relay", {"earth_to_mars": {"messages": None}}, ": 'earth_to_mars' is {\"messages\": null}, not an object of "
                                                     "counts; " + GIVE.format("the relay")),
])
def test_statistics_of_the_wrong_shape_are_one_line_naming_the_file(tmp_path, built, who, content, says):
    """A JSON list, or a field of the wrong type, was a TypeError traceback; a missing field or
    a file that is not JSON said `report: error: 'payload_bytes'` or `Expecting value: ...`,
    naming no file. Now: the option, the file, what is wrong; exit 2, no report folder."""
    d, _, alice = built
    files = {w: tmp_path / f"{w}.json" for w in ("alice", "bob", "relay")}
    files["alice"].write_text(json.dumps(alice))
    files["bob"].write_text(json.dumps(bob_of(alice)))
    files["relay"].write_text("{}")
    files[who].write_text(content if isinstance(content, str) else
                          json.dumps({**({"alice": alice, "bob": bob_of(alice)}.get(who, {})), **content}))
    r = run_report("--alice", files["alice"], "--bob", files["bob"], "--relay", files["relay"],
                   "--input", d / "input.txt", "--out", tmp_path / "r")
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == f"report: error: --{who} {str(files[who])!r}{says}\n"
    assert not (tmp_path / "r").exists()


def test_an_endless_or_missing_input_and_an_out_that_is_a_file_are_one_line(tmp_path, built):
    d, _, alice = built
    (tmp_path / "a.json").write_text(json.dumps(alice))
    (tmp_path / "b.json").write_text(json.dumps(bob_of(alice)))
    out = tmp_path / "r"
    os.mkfifo(tmp_path / "fifo")
    for args, says in (
            (["--alice", "/dev/zero"], "--alice '/dev/zero' is not a regular file; give the --stats-json file "
                                       "Alice's run wrote"),
            (["--bob", tmp_path / "fifo"], f"--bob {str(tmp_path / 'fifo')!r} is not a regular file; give the "
                                           f"--stats-json file Bob's run wrote"),   # it waited for a writer, silently
            (["--input", "/dev/zero"], "--input '/dev/zero' is not a regular file; give the input file that was sent"),
            (["--input", tmp_path / "gone.txt"], f"--input {str(tmp_path / 'gone.txt')!r} is not found; give the "
                                                 f"input file that was sent"),
            (["--out", tmp_path / "a.json"], f"--out {str(tmp_path / 'a.json')!r} is a file, not a folder; give a "
                                             f"folder (it is created if missing)")):
        given = {"--alice": tmp_path / "a.json", "--bob": tmp_path / "b.json", "--input": d / "input.txt",
                 "--out": out, **dict([args])}
        r = run_report(*(x for kv in given.items() for x in kv))
        assert (r.returncode, r.stdout, r.stderr) == (2, "", f"report: error: {says}\n")
        assert not out.exists()
    assert json.loads((tmp_path / "a.json").read_text()) == alice


# --- the ledger counts what both twins run -----------------------------------------------------

def test_program_is_every_module_of_the_core_and_the_coder(built):
    _, s, _ = built
    core = sorted(f"shared/core/{p.name}" for p in (ROOT / "shared" / "core").glob("*.py"))
    assert len(core) >= 12 and "shared/core/ngram.py" in core and "shared/core/exact.py" in core
    assert s["program"]["files"] == core + ["shared/coding/coder.py"]
    blob = b"".join((ROOT / f).read_bytes() for f in s["program"]["files"])
    assert s["program"]["bytes"] == len(blob) and s["program"]["gzip_bytes"] == len(gzip.compress(blob, 9, mtime=0))


def test_a_new_core_module_changes_the_program_size(built, tmp_path, monkeypatch):
    """The report is not touched: the copy of the core it scans gains a module, the number moves."""
    d, s, alice = built
    copy = tmp_path / "core"
    shutil.copytree(ROOT / "shared" / "core", copy, ignore=shutil.ignore_patterns("__pycache__"))
    module = b'"""A module added to the core after the report was written."""\nANSWER = 42\n'
    (copy / "added.py").write_bytes(module)
    monkeypatch.setattr(shared.core, "__path__", [str(copy)])
    again = summarize(alice, alice, str(d / "input.txt"))
    assert "added.py" in again["program"]["files"]
    assert again["program"]["bytes"] == s["program"]["bytes"] + len(module)
    assert again["program"]["gzip_bytes"] > s["program"]["gzip_bytes"]


def _gzip(arrays) -> int:
    return len(gzip.compress(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays), 9, mtime=0))


def test_state_rows_are_the_twins_state_sized_independently(twin_run):
    twin, stats = twin_run
    rows = {r["name"]: r for r in stats["state"]}
    assert list(rows) == ["GPT parameters", "AdamW moments", "n-gram count tables", "match model", "recent tokens"]
    params = [p.detach().numpy() for p in twin.model.parameters()]
    moments = [twin.opt.state[p][k].numpy() for k in ("exp_avg", "exp_avg_sq") for p in twin.model.parameters()]
    counts, match = twin.counts, twin.counts.match
    assert {"table", "check", "history", "word", "prev"} <= set(rows["n-gram count tables"]["arrays"])
    assert {"ring", "where", "written", "place", "run"} <= set(rows["match model"]["arrays"])
    expected = {"GPT parameters": params, "AdamW moments": moments,
                "n-gram count tables": [getattr(counts, k) for k in rows["n-gram count tables"]["arrays"]],
                "match model": [getattr(match, k) for k in rows["match model"]["arrays"]],
                "recent tokens": [twin.window, twin.count_window] + ([twin.past] if twin.past is not None else [])}
    assert rows["GPT parameters"]["raw_bytes"] == 4 * sum(p.numel() for p in twin.model.parameters())
    assert rows["AdamW moments"]["raw_bytes"] == 2 * rows["GPT parameters"]["raw_bytes"]
    assert rows["n-gram count tables"]["raw_bytes"] >= counts.table.nbytes + counts.check.nbytes > 0
    for name, arrays in expected.items():
        assert rows[name]["raw_bytes"] == sum(a.nbytes for a in arrays), name
        assert rows[name]["gzip_bytes"] == _gzip(arrays), name


@pytest.fixture(scope="module")
def file_run(tmp_path_factory):
    """A segmented file, as a user makes one: alice compress (3 segments of 1 KiB) and bob
    decompress, each writing --stats-json, as separate processes."""
    from tests.helpers import run_cli
    d = tmp_path_factory.mktemp("file-report")
    src, mrs, out = d / "in.txt", d / "in.mrs", d / "out.txt"
    src.write_bytes(mission_log(2200))
    for args in (("sender", "compress", src, mrs, "--preset", "tiny", "--segment", "1K", "--stats-json", d / "a.json"),
                 ("receiver", "decompress", mrs, out, "--stats-json", d / "b.json")):
        r = run_cli(*map(str, args), "--jobs", "1", "-q")
        assert r.returncode == 0, r.stderr.decode()
    assert (d / "out.txt").read_bytes() == (d / "in.txt").read_bytes()
    return d, json.loads((d / "a.json").read_text()), json.loads((d / "b.json").read_text())


def test_a_segmented_files_report_compares_each_twin_and_counts_the_program_once(file_run):
    d, alice, bob = file_run
    s = build(alice, bob, str(d / "in.txt"), str(d / "rep"))
    size = (d / "in.mrs").stat().st_size
    assert (s["mode"], s["segments"], s["segment_size"], s["segment_digests_equal"]) == ("file", 3, 1024, True)
    assert s["curves_equal"] is None and s["compressed_bytes"] == size
    page = (d / "rep" / "report.html").read_text()
    assert "Bob decoded Alice's file in lockstep" in page
    assert "disagree" not in page
    ledger = {row[0]: row for row in re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td></tr>",
                                                  page.split('id="ledger"')[1].split("</table>")[0])}
    bits = {k: int(v[1].replace(",", "")) for k, v in ledger.items() if v[1] not in ("n/a",) and "." not in v[1]}
    assert bits["= coded payload"] + bits["+ container header"] == bits["= the file"] == size * 8
    assert bits["+ container header"] == alice["header_bytes"] * 8
    program = [k for k in ledger if k.startswith("the program")]
    assert len(program) == 1 and "counted once, though 3 twins ran it" in ledger[program[0]][2]
    table = page.split('id="segments"')[1].split("</table>")[0]
    rows = re.findall(r"<tr><td>(\d+)</td><td>([\d,]+)</td><td>([\d,]+)</td>", table)
    assert [(int(a), int(b.replace(",", ""))) for a, b, _ in rows] == [(0, 1024), (1, 1024), (2, 152)]
    assert sum(int(c.replace(",", "")) for _, _, c in rows) == alice["payload_bytes"]
    assert table.count("<td>yes</td>") == 3
    assert (d / "rep" / "report.png").read_bytes()[:8] == PNG_SIGNATURE


def test_a_segment_whose_twin_ended_elsewhere_is_reported_as_a_disagreement(file_run, tmp_path):
    d, alice, bob = file_run
    bob = json.loads(json.dumps(bob))
    bob["segment_stats"][1]["final_digest"] = "00" * 32
    s = build(alice, bob, str(d / "in.txt"), str(tmp_path / "rep"))
    assert s["digests_equal"] and s["segment_digests_equal"] is False
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "Alice and Bob disagree" in page
    assert page.split('id="segments"')[1].split("</table>")[0].count("<td>NO</td>") == 1


def test_a_report_that_fails_halfway_leaves_the_previous_one_whole(file_run, tmp_path, monkeypatch):
    """The three files are renamed into place only once all three are written: a disk that fills
    while the last one is written keeps the earlier report (all three files, unchanged) and
    leaves no hidden parts."""
    d, alice, bob = file_run
    out = tmp_path / "rep"
    build(alice, bob, str(d / "in.txt"), str(out))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["report.html", "report.json", "report.png"]

    write_text = Path.write_text

    def full_at_the_json(self, *args, **kwargs):
        if self.name.endswith("json"):
            raise OSError(28, "No space left on device")
        return write_text(self, *args, **kwargs)
    monkeypatch.setattr(Path, "write_text", full_at_the_json)
    other = json.loads(json.dumps(alice))
    other["compressed_bytes"] += 1
    other["payload_bytes"] += 1
    with pytest.raises(OSError):
        build(other, bob, str(d / "in.txt"), str(out))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_the_two_sides_statistics_each_on_its_side(tmp_path, built):
    """Round eight: one statistics file given as both sides, or Bob's as Alice's, was compared
    with itself and certified "lockstep: identical loss curves and final weights"."""
    d, _, alice = built
    live = {"alice": {**alice, "frames_sent": 30, "verified_by_receiver": True},
            "bob": {**bob_of(alice), "frames_received": 30}}
    files = {}
    for name, stats in {**live, "file": {k: v for k, v in alice.items() if k != "curve"}}.items():
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(stats))
    (tmp_path / "copy.json").write_text(json.dumps(live["alice"]))
    for a, b, says in (
            ("alice", "alice", "--alice and --bob hold the same statistics ({b!r}); give Bob's to --bob"),
            ("alice", "copy", "--alice and --bob hold the same statistics ({b!r}); give Bob's to --bob"),
            ("bob", "bob", "--alice and --bob hold the same statistics ({b!r}); give Bob's to --bob"),
            ("bob", "alice", "--alice {a!r} holds Bob's (bob listen) statistics; " + GIVE.format("Alice's run")),
            ("alice", "file", "one of --alice and --bob is a file's statistics (compress, decompress), the other a "
                              "live stream's; give the two sides of one run")):
        a_path, b_path = files.get(a, tmp_path / f"{a}.json"), files.get(b, tmp_path / f"{b}.json")
        r = run_report("--alice", a_path, "--bob", b_path, "--input", d / "input.txt", "--out", tmp_path / "r")
        assert (r.returncode, r.stdout) == (2, "")
        assert r.stderr == "report: error: " + says.format(a=str(a_path), b=str(b_path)) + "\n"
        assert not (tmp_path / "r").exists()
    r = run_report("--alice", files["alice"], "--bob", files["bob"], "--input", d / "input.txt", "--out", tmp_path / "r")
    assert r.returncode == 0, r.stderr


def test_matplotlib_settings_and_names_that_are_not_text_do_not_stop_the_report(tmp_path, built):
    """Round eight: MPLBACKEND=bogus stopped the report with matplotlib's own list of backends and
    left an empty folder; a config folder matplotlib cannot write printed two lines of warning; an
    input name that is not UTF-8 was a traceback from the figure's title; a non-ASCII --out on an
    ASCII output was a traceback after the report was written."""
    d, _, alice = built
    (tmp_path / "a.json").write_text(json.dumps(alice))
    (tmp_path / "b.json").write_text(json.dumps(bob_of(alice)))
    (tmp_path / "file").write_text("")
    odd = os.fsencode(tmp_path) + b"/input\xff.txt"
    with open(odd, "wb") as f:
        f.write((d / "input.txt").read_bytes())
    out = tmp_path / "rép"
    r = subprocess.run([sys.executable, "-m", "shared.show.report", "--alice", tmp_path / "a.json", "--bob",
                        tmp_path / "b.json", "--input", odd, "--out", out], cwd=ROOT, capture_output=True, timeout=120,
                       env={**os.environ, "MPLBACKEND": "bogus", "MPLCONFIGDIR": str(tmp_path / "file"),
                            "PYTHONIOENCODING": "ascii"})
    assert (r.returncode, r.stderr) == (0, b""), r.stderr.decode()
    assert r.stdout.decode("ascii").startswith(f"report: {tmp_path}/r\\xe9p/report.html and ")
    assert json.loads((out / "report.json").read_text())["input"] == "input\\xff.txt"
