"""The show: dashboards drawn from state, and the demo driven headless under tmux (and without it)."""
import io
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from rich.console import Console

from protocol.relay import SimulatedLink
from shared.show.dashboard import Dashboard, plain_line, render
from shared.texts import mission_log
from tests.helpers import ROOT, expect_error, free_endpoint, run_cli, sigint_at_default


def fake_twin(step: int, n_steps: int = 8, chunk: int = 16, streams: int = 4, length: int = 500):
    """What the dashboard reads from a twin: layout sizes and the bits so far."""
    model = SimpleNamespace(parameters=lambda: [SimpleNamespace(numel=lambda: 10)])
    return SimpleNamespace(layout=SimpleNamespace(length=length, streams=streams), n_steps=n_steps,
                           ideal_bits=100.0 * step, config=SimpleNamespace(model=SimpleNamespace(chunk=chunk)),
                           model=model)


def fake_report(step: int, chunk: int = 16, streams: int = 4):
    """A step report as the engine gives it: the chunk just coded and each token's cost."""
    text = (b"Sol 1.\nA dust devil passed two kilometres east.\n" * 20)
    tokens = np.array([list(text[(step - 1) * chunk:step * chunk])] * streams)
    bits = np.linspace(0.2, 9.0, streams * chunk).reshape(streams, chunk)
    return SimpleNamespace(step=step, tokens_done=64 * step, chunk_tokens=64, chunk_bits=300.0, loss=4.2,
                           digest="0123456789abcdef" * 4 if step % 2 == 0 else None, tokens=tokens, bits=bits)


def feed(dash, steps=3):
    link = SimpleNamespace(stats=SimpleNamespace(frames_sent=7, frames_resent=1, in_flight=2, acked_seq=5, bytes_sent=900))
    for s in range(1, steps + 1):
        twin, report = fake_twin(s), fake_report(s)
        dash.telemetry.record(twin, report, 40 * s)
        dash.on_step(twin, report, link)


def test_link_info_parsing():
    assert SimulatedLink.from_text("delay=1.2s,bw=16k,loss=0.05,light=12min,scale=600") == \
        SimulatedLink(delay_s=1.2, bandwidth_bps=16000.0, loss=0.05, light_minutes=12.0, time_scale=600.0)
    path = SimulatedLink.from_light(12, 600, bandwidth_bps=8000, dup=0.02, seed=3, fault_direction="both")
    assert SimulatedLink.from_text(path.to_text()) == path                  # what the demo passes on
    assert SimulatedLink.from_dict(path.to_dict()) == path                  # what the JSON states carry
    assert path.describe() == "light delay 1.20 s one-way (12 light-min / 600) | 8 kbit/s | dup 2% both ways"
    for bad, why in (("delay", "'delay' is not key=value"), ("delay=nan", "--delay-s must be a number >= 0"),
                     ("bw=-5", "--bandwidth-bps must be a number >= 0"), ("loss=1", "--loss must be in [0, 1)"),
                     ("speed=3", "unknown key 'speed'")):
        with pytest.raises(ValueError, match=__import__("re").escape(why)):
            SimulatedLink.from_text(bad)


def test_link_info_time_scale_is_checked_and_may_be_left_out():
    """A tester's case: `--link-info light=12` (no scale) crashed describe() formatting None, and
    scale=nan, -1 or 0 passed unchecked into the line every dashboard shows."""
    assert SimulatedLink.from_text("light=12").describe() == "light delay 0.00 s one-way (12 light-min)"
    for value in ("nan", "-1", "0", "inf", "-inf", "1e999"):
        with pytest.raises(ValueError) as e:
            SimulatedLink.from_text(f"light=12,scale={value}")
        assert str(e.value) == f"link info 'scale={value}': '{value}' is not a time scale (a positive number)"
    for value in (math.nan, -1.0, 0.0, math.inf):     # the JSON states and the relay's own object too
        with pytest.raises(ValueError, match=f"^--time-scale must be a positive number, not {value}$"):
            SimulatedLink(light_minutes=12.0, time_scale=value)
        with pytest.raises(ValueError, match=f"^--time-scale must be a positive number, not {value}$"):
            SimulatedLink.from_light(12, value)


def test_alice_refuses_a_bad_link_info_scale_in_one_line_and_shows_one_left_out(tmp_path):
    (tmp_path / "in.txt").write_bytes(b"Sol 1. All quiet.\n")
    common = ["sender", "send", str(tmp_path / "in.txt"), "--connect", free_endpoint(), "--preset", "tiny",
              "--plain", "--state-dir", str(tmp_path / "state"), "--handshake-timeout", "0.5"]
    r = run_cli(*common, "--link-info", "light=12,scale=nan", timeout=120)
    expect_error(r, "alice: error: link info 'scale=nan': 'nan' is not a time scale (a positive number)")
    r = run_cli(*common, "--link-info", "light=12", timeout=120)     # nobody listens: the handshake times out
    assert r.returncode == 2 and len(r.stderr.decode().strip().splitlines()) == 1, r.stderr.decode()
    assert r.stderr.decode().startswith("alice: error: no answer from Mars")
    assert r.stdout.decode().splitlines()[0].endswith("; link: light delay 0.00 s one-way (12 light-min)")


def test_auto_display_on_a_terminal_that_cannot_show_the_dashboard_is_plain(monkeypatch):
    """An ASCII or Latin-1 terminal cannot show its glyphs; on TERM=dumb rich draws no live view,
    so a dashboard showed nothing until the end (a tester's finding)."""
    class Terminal(io.TextIOWrapper):
        def isatty(self):
            return True

    monkeypatch.setenv("TERM", "xterm-256color")
    assert Dashboard("earth", "tcp://127.0.0.1:1", "auto", file=Terminal(io.BytesIO(), encoding="utf-8")).mode == "dashboard"
    for encoding in ("ascii", "latin-1"):
        assert Dashboard("earth", "tcp://127.0.0.1:1", "auto", file=Terminal(io.BytesIO(), encoding=encoding)).mode == "plain"
    for term in ("dumb", "unknown"):
        monkeypatch.setenv("TERM", term)
        assert Dashboard("earth", "tcp://127.0.0.1:1", "auto", file=Terminal(io.BytesIO(), encoding="utf-8")).mode == "plain"


def test_plain_and_json_modes_and_dashboard_render():
    out = io.StringIO()
    dash = Dashboard("earth", "tcp://127.0.0.1:1", "plain", path=SimulatedLink(delay_s=1.2, bandwidth_bps=16000), every=1, file=out)
    with dash:
        feed(dash)
        dash.finish({"input_bytes": 500, "compressed_bytes": 250, "payload_bytes": 250, "final_digest": "f" * 64,
                     "seconds": 1.0, "frames_sent": 9, "frames_resent": 1})
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[earth] sender (Alice) on tcp://127.0.0.1:1; link: light delay 1.20 s one-way")
    assert lines[1].startswith("[earth] step 1/8")
    assert "weights@2 0123456789ab" in lines[2]
    assert lines[-1].startswith("[earth] VERIFIED: SHA-256 ok") and "ffffffffffff" in lines[-1]
    assert "\x1b[" not in out.getvalue()

    out = io.StringIO()
    dash = Dashboard("mars", "tcp://127.0.0.1:2", "json", file=out)
    with dash:
        feed(dash, 2)
    states = [json.loads(line) for line in out.getvalue().splitlines()]
    last = states[-1]
    assert last["role"] == "mars" and last["step"] == 2 and last["digest"].startswith("0123")
    assert bytes(b for b, _ in last["text"]).startswith(b"Sol 1.\nA dust")

    for role in ("earth", "mars"):
        d = Dashboard(role, "tcp://x:1", "quiet", path=SimulatedLink(delay_s=1.2, bandwidth_bps=16000))
        feed(d, 4)
        d.result = {"input_bytes": 500, "compressed_bytes": 250, "final_digest": "e" * 64, "syncs_checked": 3}
        c = Console(width=100, height=40, record=True, file=io.StringIO(), color_system="truecolor")
        c.print(render(d.state(), 100, 40))
        text = c.export_text()
        assert ("EARTH" if role == "earth" else "MARS") in text
        assert "step 4  0123456789ab" in text and "✔ VERIFIED" in text and "eeeeeeeeeeeeeeee" in text
        assert "raw 256 B: 0.1 s" in text and "coded 160 B: 0.1 s" in text          # 8n/bandwidth, measured n
        assert len(text.splitlines()) <= 40
        assert "Sol 1." in text
        assert plain_line(d.state()).startswith(f"[{role}] VERIFIED")


def _digest_in(text: str) -> str:
    m = re.search(r"final digest ([0-9a-f]{16})", text)
    assert m, text
    return m.group(1)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed: the two-pane demo needs it (apt install tmux); the no-tmux fallback is covered by test_demo_without_tmux_two_columns_plain")
def test_demo_headless_under_tmux(tmp_path):
    """Not on a terminal, as `make demo` in CI: headless without being asked, and it says so
    (round nine: a silent minute, then the panes). Bob's receipts stay in the demo's folder."""
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "scripts/demo.py", "--preset", "tiny", "--bytes", "2000",
                        "--delay-s", "0.2", "--bandwidth-bps", "200000", "--out", str(out), "--size", "200x50",
                        "--timeout", "150"], cwd=ROOT, capture_output=True, timeout=200)
    stdout = r.stdout.decode()
    assert r.returncode == 0, stdout[-3000:] + r.stderr.decode()[-2000:]
    earth, mars = (out / "earth.txt").read_text(), (out / "mars.txt").read_text()
    assert "EARTH" in earth and "MARS" in mars
    assert "✔ VERIFIED" in earth and "✔ VERIFIED" in mars
    digest = json.loads((out / "bob.json").read_text())["final_digest"]
    assert json.loads((out / "alice.json").read_text())["final_digest"] == digest
    assert _digest_in(earth) == _digest_in(mars) == digest[:16]          # the same number on both screens
    assert "SHA-256 ok" in mars
    data = next(out.glob("input-*")).read_bytes()
    assert len(data) == 2000 and (out / "received.txt").read_bytes() == data   # byte-exact
    assert "===== earth pane =====" in stdout and "===== mars pane =====" in stdout
    assert r.stderr.decode().startswith("demo: not on a terminal, so Earth and Mars run in tmux in the background; "
                                        "their panes are printed when they finish\n")
    assert len(list((out / "mars-state" / "receipts").glob("*.json"))) == 1     # not in the user's ~/.cache
    assert "Earth -> Mars" in (out / "relay.txt").read_text()
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / "report.html").exists()
    assert json.loads((out / "conductor.json").read_text())["ok"] is True
    # the ledger's trained state: measured by each side from its own twin, the same rows on both
    report = json.loads((out / "report.json").read_text())
    names = [r["name"] for r in report["state"]]
    assert "n-gram count tables" in names and "match model" in names and report["state_equal"] is True
    assert json.loads((out / "alice.json").read_text())["state"] == json.loads((out / "bob.json").read_text())["state"]


def test_demo_without_tmux_two_columns_plain(tmp_path):
    """--no-tmux, not on a terminal: both sides' plain lines, the verified end, the report."""
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "scripts/demo.py", "--no-tmux", "--preset", "tiny", "--bytes", "1000",
                        "--delay-s", "0.1", "--bandwidth-bps", "0", "--out", str(out), "--no-report"],
                       cwd=ROOT, capture_output=True, timeout=150)
    text = r.stdout.decode()
    assert r.returncode == 0, text[-3000:] + r.stderr.decode()[-2000:]
    assert re.search(r"^\[earth\] VERIFIED", text, re.M) and re.search(r"^\[mars\] VERIFIED", text, re.M)
    assert (out / "received.txt").read_bytes() == next(out.glob("input-*")).read_bytes()
    assert "byte-exact" in text
    assert len(list((out / "mars-state" / "receipts").glob("*.json"))) == 1     # not in the user's ~/.cache


def _when_mars_holds_bytes(out, proc, timeout=120):
    """Wait until Bob has spooled some of Alice's stream (so he would wait for her to return)."""
    spool = out / "received.txt.partial" / "stream.bin"
    deadline = time.monotonic() + timeout
    while not (spool.exists() and spool.stat().st_size > 0):
        assert proc.poll() is None and time.monotonic() < deadline, "the demo ended before Mars received a byte"
        time.sleep(0.2)


SLOW_LINK = ("--preset", "tiny", "--bytes", "20000", "--delay-s", "0.1", "--bandwidth-bps", "1500", "--no-report",
             "--timeout", "300")
STOPPED_TOO = "Earth was interrupted, so Mars was stopped too; `make demo` runs the demo again"


def test_demo_without_tmux_ctrl_c_to_earth_stops_mars_too(tmp_path):
    """Earth stopped mid-stream (Ctrl-C in her process alone): Mars, who would wait minutes for her
    to come back, is stopped as well (SIGTERM), and the demo ends at once saying so."""
    out = tmp_path / "demo"
    demo = subprocess.Popen([sys.executable, "scripts/demo.py", "--no-tmux", *SLOW_LINK, "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=sigint_at_default)
    try:
        _when_mars_holds_bytes(out, demo)
        alice = subprocess.run(["pgrep", "-P", str(demo.pid), "-f", " -m sender send "], capture_output=True, text=True)
        assert alice.stdout.split(), alice
        os.kill(int(alice.stdout.split()[0]), signal.SIGINT)
        stdout, stderr = demo.communicate(timeout=90)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 1, stdout.decode()[-2000:] + stderr.decode()[-2000:]
    panel = " ".join(stdout.decode().replace("│", " ").split())       # the result panel, unwrapped
    assert " ".join(STOPPED_TOO.split()) in panel, panel[-1000:]
    res = json.loads((out / "conductor.json").read_text())
    assert (res["alice_rc"], res["bob_rc"], res["stopped"]) == (130, 143, STOPPED_TOO)     # Mars: SIGTERM
    assert not (out / "received.txt").exists()


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed: the two-pane demo needs it (apt install tmux)")
def test_demo_under_tmux_ctrl_c_in_earths_pane_stops_mars_too(tmp_path):
    """The same, typed into Earth's tmux pane: the conductor types Ctrl-C into Mars's."""
    out = tmp_path / "demo"
    demo = subprocess.Popen([sys.executable, "scripts/demo.py", "--headless", *SLOW_LINK, "--out", str(out),
                             "--size", "200x50"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=sigint_at_default)
    try:
        _when_mars_holds_bytes(out, demo)
        earth = json.loads((out / "panes.json").read_text())["alice"]
        subprocess.run(["tmux", "-L", f"marslink-demo-{demo.pid}", "send-keys", "-t", earth, "C-c"], check=True)
        stdout, stderr = demo.communicate(timeout=90)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 1, stdout.decode()[-2000:] + stderr.decode()[-2000:]
    res = json.loads((out / "conductor.json").read_text())
    assert (res["alice_rc"], res["bob_rc"], res["stopped"]) == (130, 130, STOPPED_TOO)
    assert "so Mars was stopped too" in " ".join((out / "relay.txt").read_text().replace("│", " ").split())


def test_a_second_demo_in_the_same_folder_is_refused_while_the_first_runs(tmp_path):
    """Two `make demo` at once: the second would clear the first one's state under its feet. It
    is refused in one line, and the first runs on; once the first has ended, the folder is free."""
    out = tmp_path / "demo"
    first = subprocess.Popen([sys.executable, "scripts/demo.py", "--no-tmux", *SLOW_LINK, "--out", str(out)],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _when_mars_holds_bytes(out, first)
        held = (out / "received.txt.partial" / "stream.bin").stat().st_size
        r = demo_cli("--no-tmux", "--preset", "tiny", "--bytes", "2000", "--out", out)
        expect_error(r, f"demo: error: another demo (process {first.pid}) is running in {str(out)!r}; "
                        f"wait for it to end, or give another --out")
        assert (out / "received.txt.partial" / "stream.bin").stat().st_size >= held     # untouched
        assert first.poll() is None
    finally:
        os.killpg(first.pid, signal.SIGTERM)
        first.communicate(timeout=60)
    r = demo_cli("--no-tmux", "--preset", "tiny", "--bytes", "500", "--delay-s", "0", "--bandwidth-bps", "0",
                 "--no-report", "--out", out)
    assert r.returncode == 0, r.stdout.decode()[-2000:] + r.stderr.decode()[-2000:]


# -- the demo's command line and its --out folder: refused in one line, nothing touched -----------

def demo_cli(*args, timeout=120, shell_suffix=""):
    """`python scripts/demo.py ARGS` as a user runs it (through a shell, for `>&-` and the like)."""
    cmd = " ".join(map(shlex.quote, [sys.executable, "scripts/demo.py", *map(str, args)])) + shell_suffix
    return subprocess.run(["bash", "-c", cmd], cwd=ROOT, capture_output=True, timeout=timeout)


def snapshot(folder) -> dict:
    """Every file under `folder` (relative path -> bytes), to show that nothing was touched."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def user_folder(tmp_path):
    """A tester's documents folder whose names happen to be the demo's (its finding: all lost)."""
    docs = tmp_path / "mydocs"
    (docs / "earth-state").mkdir(parents=True)
    (docs / "report.html").write_text("precious\n")
    (docs / "received.txt").write_text("thesis\n")
    (docs / "earth-state" / "important.txt").write_text("keep\n")
    return docs


HELP = "; see 'python scripts/demo.py --help'"


@pytest.mark.parametrize("option,value,message", [
    ("--size", "abc", "argument --size: 'abc' is not a window size: give COLSxROWS, e.g. 220x56 "
                      "(columns 80..1000, rows 24..500)"),
    ("--size", "10x10", "argument --size: '10x10' is not a window size: give COLSxROWS, e.g. 220x56 "
                        "(columns 80..1000, rows 24..500)"),
    ("--timeout", "nan", "argument --timeout: 'nan' is not a positive number of seconds (at most 2,592,000)"),
    ("--timeout", "-1", "argument --timeout: '-1' is not a positive number of seconds (at most 2,592,000)"),
    ("--bytes", "-5", "argument --bytes: '-5' is not a byte count (a whole number in 1..1073741824)"),
    ("--bytes", "0", "argument --bytes: '0' is not a byte count (a whole number in 1..1073741824)"),
    ("--preset", "nope", "argument --preset: invalid choice: 'nope' (choose from 'bulk', 'default', 'fast', "
                         "'neural', 'strong', 'tiny')"),
])
def test_demo_refuses_a_bad_option_in_one_line_before_touching_its_folder(tmp_path, option, value, message):
    """A tester's findings: `--size abc` was a ValueError traceback after the folder was cleared, and
    `--timeout nan` killed both sides at once ("alice exit -9, bob exit -9")."""
    docs = user_folder(tmp_path)
    before = snapshot(docs)
    r = demo_cli("--headless", "--preset", "tiny", "--bytes", "2000", "--out", docs, option, value)
    assert (r.returncode, r.stdout) == (2, b""), r.stdout.decode()[-2000:] + r.stderr.decode()[-2000:]
    assert r.stderr.decode() == f"demo: error: {message}{HELP}\n"
    assert snapshot(docs) == before


def test_demo_never_clears_a_folder_it_did_not_make(tmp_path):
    """A tester's finding: `--out mydocs` deleted report.html, received.txt and earth-state/ there
    before anything was checked. A folder the demo did not make is refused unless it is empty."""
    docs = user_folder(tmp_path)
    before = snapshot(docs)
    r = demo_cli("--no-tmux", "--preset", "tiny", "--bytes", "2000", "--timeout", "1", "--out", docs)
    assert (r.returncode, r.stdout) == (2, b""), r.stdout.decode()[-2000:] + r.stderr.decode()[-2000:]
    assert r.stderr.decode() == (f"demo: error: --out '{docs}' holds files the demo did not write; "
                                 f"choose a new or empty folder, or remove it\n")
    assert snapshot(docs) == before
    r = demo_cli("--no-tmux", "--preset", "tiny", "--bytes", "2000", "--timeout", "1", "--out", docs / "report.html")
    assert (r.returncode, r.stdout) == (2, b"")
    assert r.stderr.decode() == (f"demo: error: --out '{docs / 'report.html'}' is a file, not a folder; "
                                 f"choose a new or empty folder\n")
    assert snapshot(docs) == before


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed: without it --screenshot is refused "
                                                         "for that alone")
def test_demo_checks_its_screenshot_before_the_run_and_before_touching_its_folder(tmp_path):
    """Round seven: --screenshot was first looked at after the whole run: a missing folder or a
    name such as victim.txt came out as "demo: screenshot failed: ..." and exit 0, and with
    --no-tmux it was ignored without a word. Each is now one line before the run, --out not made."""
    out, victim = tmp_path / "demo", tmp_path / "victim.txt"
    victim.write_text("notes\n")
    run = ("--headless", "--preset", "tiny", "--bytes", "2000", "--timeout", "1", "--no-report", "--out", out)
    for shot, says in ((tmp_path / "missing" / "x.png", f"--screenshot folder {str(tmp_path / 'missing')!r} does "
                                                        f"not exist; create it first"),
                       (victim, f"--screenshot {str(victim)!r} is a PNG picture; give a name ending in .png")):
        r = demo_cli(*run, "--screenshot", shot)
        expect_error(r, f"demo: error: {says}", tmp_path, ["victim.txt"])
        assert r.stdout == b""
    r = demo_cli(*run[1:], "--no-tmux", "--screenshot", tmp_path / "x.png")
    expect_error(r, "demo: error: --screenshot draws the tmux panes, so it needs tmux (installed, and no --no-tmux)",
                 tmp_path, ["victim.txt"])
    assert victim.read_text() == "notes\n"


def test_demo_refuses_an_endless_input_and_a_closed_stdout_in_one_line(tmp_path):
    """A tester's findings: `--input /dev/zero` read without limit; `>&-` was an AttributeError."""
    out = tmp_path / "demo"
    r = demo_cli("--no-tmux", "--preset", "tiny", "--bytes", "2000", "--input", "/dev/zero", "--out", out)
    assert (r.returncode, r.stdout) == (2, b"")
    assert r.stderr.decode() == ("demo: error: input '/dev/zero' never ends; give a file, or a finite part of it "
                                 "(e.g. head -c 1M /dev/zero > part.bin)\n")
    r = demo_cli("--no-tmux", "--preset", "tiny", "--bytes", "2000", "--out", out, shell_suffix=" >&-")
    assert r.returncode == 2
    assert r.stderr.decode() == ("demo: error: standard output is closed; run the demo on a terminal, or into "
                                 "a file or a pipe\n")
    assert not out.exists()


def plan_for(*args):
    from scripts import demo
    return demo.make_plan(demo.parser().parse_args(["--preset", "tiny", *map(str, args)]))


def test_demo_reuses_its_own_folder_run_after_run_and_takes_an_empty_one(tmp_path, monkeypatch):
    """The demo marks the folder it writes; the next run clears its own results there and nothing
    else. An empty folder is taken; the default folder of a run from before the mark is adopted
    only if it holds nothing but the demo's results."""
    from scripts import demo
    out = tmp_path / "empty"
    out.mkdir()
    plan = plan_for("--bytes", "100", "--out", out)
    assert sorted(p.name for p in out.iterdir()) == [".marslink-demo", ".marslink-demo-running", "input-mission_log.txt"]
    assert Path(plan["input"]).read_bytes() == mission_log(100)
    (out / "report.html").write_text("last run's\n")
    (out / "earth-state").mkdir()
    (out / "earth-state" / "checkpoint").write_text("last run's\n")
    (out / "input-old.txt").write_text("last run's\n")
    (out / "notes.txt").write_text("mine\n")                # not a name the demo writes: kept
    plan_for("--bytes", "200", "--out", out)
    assert sorted(p.name for p in out.iterdir()) == [".marslink-demo", ".marslink-demo-running", "input-mission_log.txt",
                                                      "notes.txt"]
    assert (out / "input-mission_log.txt").read_bytes() == mission_log(200)

    legacy = tmp_path / "demo-out"
    legacy.mkdir()
    (legacy / "report.html").write_text("an old run's\n")
    (legacy / "input-mission_log.txt").write_text("an old run's\n")
    monkeypatch.setattr(demo, "DEFAULT_OUT", legacy)
    plan_for("--bytes", "100")
    assert sorted(p.name for p in legacy.iterdir()) == [".marslink-demo", ".marslink-demo-running", "input-mission_log.txt"]
    (legacy / ".marslink-demo").unlink()
    (legacy / "notes.txt").write_text("mine\n")
    before = snapshot(legacy)
    with pytest.raises(demo.DemoError, match="holds files the demo did not write"):
        plan_for("--bytes", "100")
    assert snapshot(legacy) == before


def test_demo_writes_its_own_small_files_never_through_a_link(tmp_path):
    """A symbolic link planted where the demo keeps its marker or its running record is refused,
    and the file it points at is left as it was."""
    from scripts import demo
    out = tmp_path / "out"
    plan_for("--bytes", "100", "--out", out)
    victim = tmp_path / "victim.txt"
    for name in (".marslink-demo-running", ".marslink-demo"):
        victim.write_text("precious\n")
        (out / name).unlink()
        (out / name).symlink_to(victim)
        with pytest.raises(demo.DemoError, match="cannot clear the last run's results in"):
            plan_for("--bytes", "100", "--out", out)
        assert victim.read_text() == "precious\n"
        (out / name).unlink()
        (out / name).write_text("")


def test_demo_reads_no_more_of_its_input_than_it_sends(tmp_path):
    """`--input` was read whole (read_bytes) before --bytes cut it: a pipe is read only as far
    as it is sent, and a file larger than alice takes is refused by its size, unread."""
    from scripts import demo
    r, w = os.pipe()
    accepted = []

    def writer():
        block = b"x" * 65536
        try:
            for _ in range(512):                             # 32 MiB, if the reader took it all
                accepted.append(os.write(w, block))
        except BrokenPipeError:
            pass
        finally:
            os.close(w)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        plan = plan_for("--input", f"/dev/fd/{r}", "--bytes", "100", "--out", tmp_path / "demo")
    finally:
        os.close(r)
    t.join(10)
    assert plan["bytes"] == 100 and sum(accepted) < 4 << 20
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(demo.MAX_LENGTH + 1)                    # sparse: no disk, no time
    with pytest.raises(demo.DemoError) as e:
        demo.read_input_head(str(big), None)
    assert str(e.value) == (f"input '{big}' is larger than 1,073,741,824 bytes, the most marslink sends in one "
                            f"file; send a part of it with --bytes N")
    assert demo.read_input_head(str(big), 100) == bytes(100)


def test_a_live_run_on_an_ascii_output_ends_verified_with_its_statistics(tmp_path):
    """Round eight: on standard output in ASCII (PYTHONIOENCODING=ascii, a C locale), both sides
    failed with UnicodeEncodeError at their last line, the VERIFIED line's '·', after the data was
    delivered: exit 1 and no statistics. A sender's stream id in another script killed Bob the
    same way when he greeted it. What such an output cannot show is written as \\xNN."""
    from tests.helpers import assert_verified, run_pair
    data = mission_log(3000)
    r = run_pair(tmp_path, data, env={"PYTHONIOENCODING": "ascii"}, alice_args=("--plain", "--stream-id", "flux-é"),
                 bob_args=("--plain", "--linger", "0"))
    assert_verified(r, data)
    assert "bob: receiving stream 'flux-\\xe9' (3,000 bytes)" in r["bob_err"]


def test_lecture_on_an_ascii_output_draws_and_ends_well(tmp_path):
    """Round eight: lecture.py stopped with a traceback at its first panel title on an ASCII or
    Latin-1 output."""
    for encoding in ("ascii", "latin-1"):
        r = subprocess.run([sys.executable, str(ROOT / "scripts" / "lecture.py"), "--bytes", "20", "--delay", "0"],
                           cwd=ROOT, env={**os.environ, "PYTHONIOENCODING": encoding}, capture_output=True, timeout=300)
        assert (r.returncode, r.stderr) == (0, b""), r.stderr.decode()
        r.stdout.decode(encoding)                                    # all of it in that encoding
