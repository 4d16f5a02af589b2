#!/usr/bin/env python3
"""`make demo`: Earth and Mars over a simulated deep-space link, side by side.

With tmux (the default when it is installed): a tmux session with Earth (Alice's dashboard)
and Mars (Bob's dashboard) in two panes and the relay (the simulated link) in a small pane
below, attached when run from a terminal. Without tmux, or with --no-tmux: both dashboards in
two columns in this terminal (Alice and Bob run as subprocesses and report their state as JSON
lines). Either way the run ends with both sides showing the verified result, and a report
(PNG + HTML) in --out (default demo-out/).

    make demo
    make demo ARGS="--input notes.txt --loss 0.05 --light-minutes 20"
    python scripts/demo.py --headless --preset tiny --bytes 6000     # tests: capture both panes

Everything runs on this machine: Bob binds on loopback, the relay listens on loopback and
forwards to Bob, Alice connects to the relay.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.style import Style
from rich.table import Table
from rich.text import Text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from protocol import link  # noqa: E402
from scripts.common import child_env, free_endpoint, stop  # noqa: E402
from shared.app.files import check_folder, check_output, escape_what_cannot_be_shown, read_head  # noqa: E402
from shared.app.options import (Parser, add_simulated_link_options, integer, path_name, seconds,  # noqa: E402
                                simulated_link, simulated_link_argv)
from shared.core.config import MAX_LENGTH, PRESETS  # noqa: E402
from shared.core.errors import MarslinkError, UsageError  # noqa: E402
from shared.show.dashboard import plain_line, render  # noqa: E402
from shared.show.report import build  # noqa: E402
from shared.texts import mission_log  # noqa: E402
PY = sys.executable
DEFAULT_BYTES = 40_000
DEFAULT_OUT = ROOT / "demo-out"
ALICE_HANDSHAKE_S = 300.0      # Alice starts beside Bob, who may still be importing torch in his pane
MARKER = ".marslink-demo"      # in --out: the demo made this folder, so it may clear its old results there
RUNNING = ".marslink-demo-running"   # in --out: {"pid", "tmux"} of the demo that uses it now
RESULTS = ("alice.json", "bob.json", "relay.json", "alice.rc", "bob.rc", "conductor.json", "conductor.rc",
           "received.txt", "alice.err", "bob.err", "relay.log", "earth.txt", "mars.txt", "relay.txt",
           "report.png", "report.html", "report.json", "plan.json", "tmux.conf", "panes.json")
RESULT_FOLDERS = ("received.txt.partial", "earth-state", "mars-state")
COLUMNS, ROWS = (80, 1000), (24, 500)     # the smallest window the three panes fit in, and a sane largest


class DemoError(Exception):
    """Bad input the demo refuses in one line (`demo: error: ...`, exit 2) before it writes anything."""


class DemoParser(Parser):
    """One-line option errors under the demo's own name, as its other errors are."""

    def error(self, message: str):
        self.exit(2, f"demo: error: {message}; see 'python scripts/demo.py --help'\n")


def window_size(text: str) -> tuple[int, int]:
    """argparse type for --size: COLSxROWS, big enough for the three panes."""
    cols, _, rows = text.lower().partition("x")
    try:
        size = int(cols, 10), int(rows, 10)
    except ValueError:
        size = None
    if size is None or not (COLUMNS[0] <= size[0] <= COLUMNS[1] and ROWS[0] <= size[1] <= ROWS[1]):
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r} is not a window size: give COLSxROWS, e.g. 220x56 "
            f"(columns {COLUMNS[0]}..{COLUMNS[1]}, rows {ROWS[0]}..{ROWS[1]})")
    return size


def parser() -> argparse.ArgumentParser:
    ap = DemoParser(prog="demo.py", description="marslink demo: Earth and Mars over a simulated link")
    ap.add_argument("--input", type=path_name("a file name"), default=None,
                    help="file to send (default: the built-in mission log)")
    ap.add_argument("--bytes", type=integer(1, MAX_LENGTH, "a byte count"), default=None,
                    help=f"send only the first N bytes (default: {DEFAULT_BYTES:,} of the built-in text, all of --input)")
    ap.add_argument("--preset", default="default", choices=sorted(PRESETS),
                    help="model preset for both sides (default %(default)s)")
    add_simulated_link_options(ap)
    ap.set_defaults(bandwidth_bps=16_000.0, seed=1)      # the demo's link: slow enough to watch
    ap.add_argument("--out", type=path_name("a folder name"), default=None,
                    help="folder for results and the report, new or empty, or one the demo made before "
                         "(default demo-out/)")
    ap.add_argument("--no-tmux", action="store_true", help="two columns in this terminal instead of tmux panes")
    ap.add_argument("--headless", action="store_true",
                    help="run the tmux session detached, wait, capture both panes, exit non-zero on failure "
                         "(the default when not run from a terminal)")
    ap.add_argument("--size", type=window_size, default=window_size("220x56"),
                    help="headless tmux window size COLSxROWS (default 220x56)")
    ap.add_argument("--screenshot", type=path_name("a file name"), default=None, metavar="PNG",
                    help="headless: also render the captured panes to a PNG")
    ap.add_argument("--no-report", action="store_true", help="skip the end-of-run report")
    ap.add_argument("--timeout", type=seconds, default=1800.0,
                    help="give up after this many seconds (default %(default)g)")
    ap.add_argument("--conduct", default=None, help=argparse.SUPPRESS)   # internal: the tmux relay pane
    return ap


# --- the plan: every path, endpoint and command line, written once ---------------------------

def read_input_head(path: str, n: int | None) -> bytes:
    """The first `n` bytes of `path`, or all of it up to what alice takes: a big file or an
    endless pipe costs only what is sent, and an endless device is refused, as alice refuses it."""
    too_big = DemoError(f"input {path!r} is larger than {MAX_LENGTH:,} bytes, the most marslink sends in "
                        f"one file; send a part of it with --bytes N")
    if n is None and os.path.isfile(path) and os.path.getsize(path) > MAX_LENGTH:
        raise too_big
    try:
        data = read_head(path, MAX_LENGTH + 1 if n is None else n)
    except MarslinkError as e:
        raise DemoError(str(e)) from None
    if len(data) > MAX_LENGTH:
        raise too_big
    return data


def read_data(args) -> tuple[bytes, str]:
    """What the demo sends, and the name it is sent under."""
    if args.input:
        data, name = read_input_head(args.input, args.bytes), os.path.basename(args.input)
    else:
        data, name = mission_log()[:DEFAULT_BYTES if args.bytes is None else args.bytes], "mission_log.txt"
    if not data:
        raise DemoError("nothing to send (empty input)")
    return data, name


def _a_result(name: str) -> bool:
    return name in RESULTS or name in RESULT_FOLDERS or name.startswith("input-")


def claim_out(out: Path, default: bool) -> None:
    """Make `out` the demo's folder and clear what an earlier run left there. A folder the demo
    did not make (no MARKER) is refused unless it is empty, and nothing in it is touched: the
    demo's names (report.html, received.txt, ...) are common ones. The default folder from before
    the marker is adopted if it holds nothing but the demo's results."""
    if out.exists() and not out.is_dir():
        raise DemoError(f"--out {str(out)!r} is a file, not a folder; choose a new or empty folder")
    try:
        names = os.listdir(out) if out.is_dir() else []
    except OSError as e:
        raise DemoError(f"cannot read --out folder {str(out)!r}: {e.strerror or e}; "
                        f"choose another folder") from None
    if names and MARKER not in names and not (default and all(_a_result(name) for name in names)):
        raise DemoError(f"--out {str(out)!r} holds files the demo did not write; "
                        f"choose a new or empty folder, or remove it")
    try:
        check_folder(str(out), "--out folder ")
    except MarslinkError as e:
        raise DemoError(str(e)) from None
    try:
        with _open_own(out / MARKER) as f:
            f.truncate()
            f.write("scripts/demo.py made this folder: each run replaces the results it wrote here.\n")
        take_over(out)
        for name in filter(_a_result, names):
            old = out / name
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    except OSError as e:
        raise DemoError(f"cannot clear the last run's results in {str(out)!r}: "
                        f"{e.strerror or e}; remove the folder, or choose another") from None


def _open_own(path: Path):
    """One of the demo's own small files, for reading and writing: never through a symbolic link
    (one planted there would have the demo write into whatever it points at)."""
    return os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644), "r+")


def tmux_name() -> str:
    """This demo's tmux server (`tmux -L NAME`): one per demo, so a user's own sessions are never touched."""
    return f"marslink-demo-{os.getpid()}"


def take_over(out: Path) -> None:
    """Record this demo as the one using `out`, after checking that no other still does: a
    second `make demo` would clear the first one's state under its feet. The check and the
    record are one step under a lock, so two demos started at once cannot both pass."""
    import fcntl
    with _open_own(out / RUNNING) as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        try:
            info = json.loads(f.read())
            pid, sock = int(info["pid"]), str(info["tmux"])
        except (ValueError, KeyError, TypeError):
            pid, sock = None, None
        if pid is not None and pid != os.getpid():
            try:
                os.kill(pid, 0)
                alive = True
            except ProcessLookupError:
                alive = False
            except PermissionError:
                alive = True
            if alive:
                raise DemoError(f"another demo (process {pid}) is running in {str(out)!r}; "
                                f"wait for it to end, or give another --out")
            if shutil.which("tmux") and subprocess.run(["tmux", "-L", sock, "has-session"],
                                                       capture_output=True).returncode == 0:
                raise DemoError(f"another demo is still open in {str(out)!r}: `tmux -L {sock} attach` "
                                f"to see it (Enter in its bottom pane closes it), or give another --out")
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "tmux": tmux_name()}) + "\n")


def make_plan(args) -> dict:
    """Check the input and the link, then claim --out: nothing is written before all of it passes."""
    out = Path(args.out or DEFAULT_OUT).resolve()
    data, name = read_data(args)
    path = simulated_link(args)
    delay = path.delay_s
    claim_out(out, default=args.out is None)
    src = out / ("input-" + name)
    try:
        src.write_bytes(data)
    except OSError as e:
        raise DemoError(f"cannot write {str(src)!r}: {e.strerror or e}; choose another --out folder") from None
    relay_ep, bob_ep = free_endpoint(), free_endpoint()
    # The link's timers (protocol/link.py's defaults) stretched by the simulated round trip, and
    # twice the window: a long light time keeps more frames in flight.
    timeout = link.TIMEOUT_S + 4 * delay
    retransmit = link.RETRANSMIT_S + 2 * delay
    window = 2 * link.WINDOW
    link_info = path.to_text()
    common = ["--preset", args.preset, "--timeout", f"{timeout:g}", "--window", str(window), "--link-info", link_info]
    bob = [PY, "-m", "receiver", "listen", "--bind", bob_ep, "--out", str(out / "received.txt"),
           "--stats-json", str(out / "bob.json"), "--state-dir", str(out / "mars-state"),   # his receipts: not in ~
           "--handshake-timeout", f"{link.RECEIVER_HANDSHAKE_S:g}", *common]
    alice = [PY, "-m", "sender", "send", str(src), "--connect", relay_ep, "--stats-json", str(out / "alice.json"),
             "--state-dir", str(out / "earth-state"), "--handshake-timeout", f"{ALICE_HANDSHAKE_S:g}",
             "--retransmit", f"{retransmit:g}", *common]
    relay = [PY, "-m", "scripts.relay", "--listen", relay_ep, "--forward", bob_ep, *simulated_link_argv(path),
             "--stats-json", str(out / "relay.json")]
    return {"out": str(out), "input": str(src), "input_name": name, "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), "delay": delay, "link_info": link_info,
            "bandwidth_bps": path.bandwidth_bps, "preset": args.preset, "timeout": args.timeout,
            "alice": alice, "bob": bob, "relay": relay, "report": not args.no_report,
            "headless": bool(args.headless)}


# --- after the run: check, report, summarise ---------------------------------------------------

def verify_and_report(plan: dict, alice_rc, bob_rc, stopped: str | None = None) -> dict:
    out = Path(plan["out"])
    res = {"alice_rc": alice_rc, "bob_rc": bob_rc, "byte_exact": False, "digests_equal": False}
    if stopped:
        res["stopped"] = stopped
    received = out / "received.txt"
    if received.exists():
        res["byte_exact"] = received.read_bytes() == Path(plan["input"]).read_bytes()
    stats = {}
    for who in ("alice", "bob", "relay"):
        p = out / f"{who}.json"
        if p.exists():
            try:
                stats[who] = json.loads(p.read_text())
            except ValueError:
                pass
    if "alice" in stats and "bob" in stats:
        res["final_digest"] = stats["bob"]["final_digest"]
        res["digests_equal"] = stats["alice"]["final_digest"] == stats["bob"]["final_digest"]
        res["payload_bytes"] = stats["alice"]["payload_bytes"]
        if plan["report"]:
            try:
                s = build(stats["alice"], stats["bob"], plan["input"], plan["out"], stats.get("relay"))
                res["report"] = s["files"]
                res["compressors"] = s["compressors"]
                res["curves_equal"] = s["curves_equal"]
            except Exception as e:            # the demo's verdict does not depend on the picture
                res["report_error"] = f"{type(e).__name__}: {e}"
    res["ok"] = alice_rc == 0 and bob_rc == 0 and res["byte_exact"] and res["digests_equal"]
    (out / "conductor.json").write_text(json.dumps(res, indent=2) + "\n")
    return res


def summary(plan: dict, res: dict):
    t = Text()
    if res["ok"]:
        t.append(" ✔ VERIFIED ", style="bold black on green3")
        t.append(f"  Mars's file is byte-exact: {plan['bytes']:,} bytes, SHA-256 {plan['sha256'][:16]}…; "
                 f"final weights equal on both sides: {res['final_digest'][:16]}\n")
    else:
        t.append(" ✘ FAILED ", style="bold white on red")
        t.append(f"  alice exit {res['alice_rc']}, bob exit {res['bob_rc']}, byte-exact {res['byte_exact']}, "
                 f"digests equal {res['digests_equal']}\n")
        if res.get("stopped"):
            t.append(res["stopped"] + "\n")
    if "payload_bytes" in res:
        n, c = plan["bytes"], res["payload_bytes"]
        t.append(f"coded {c:,} bytes for {n:,} ({c * 8 / n:.3f} bits/byte)")
        if plan["bandwidth_bps"]:
            bw = plan["bandwidth_bps"]
            t.append(f"; at {bw:,.0f} bit/s: raw {n * 8 / bw:.1f} s, coded {c * 8 / bw:.1f} s, "
                     f"+ {plan['delay']:.1f} s light")
        if res.get("compressors"):
            t.append("; " + ", ".join(f"{k} {v:,} B" for k, v in res["compressors"].items()))
        t.append("\n")
    if res.get("report"):
        t.append(f"report: {res['report']['html']}  (+ report.png)")
    elif res.get("report_error"):
        t.append(f"report failed: {res['report_error']}", style="red")
    return Panel(t, border_style="green3" if res["ok"] else "red", title="demo result", title_align="left")


# --- tmux -------------------------------------------------------------------------------------

class Tmux:
    def __init__(self, name: str):
        self.sock, self.session = name, "demo"
        # not ours to inherit: an enclosing tmux, and a fixed COLUMNS/LINES (each pane has its own size)
        self.env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE", "COLUMNS", "LINES")}

    def __call__(self, *args, check=True, capture=True) -> str:
        r = subprocess.run(["tmux", "-L", self.sock, *args], env=self.env, capture_output=capture, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)}: {(r.stderr or '').strip()}")
        return r.stdout if capture else ""

    def kill(self):
        subprocess.run(["tmux", "-L", self.sock, "kill-server"], env=self.env, capture_output=True)


def pane_cmd(cmd: list[str], rc_file: str | None, hold: bool = True) -> str:
    line = f"cd {shlex.quote(str(ROOT))} && {shlex.join(cmd)}"
    if rc_file:
        line += f"; echo $? > {shlex.quote(rc_file)}"
    if hold:
        line += "; exec sleep 2147483647"    # keep the pane (and its final screen) without a dead-pane banner
    return line


TMUX_CONF = """\
set -g remain-on-exit on
set -g pane-border-status top
set -g pane-border-format " #{pane_title} "
set -g pane-active-border-style fg=yellow
set -g status-style bg=colour236,fg=colour250
set -g status-left " marslink demo "
set -g status-left-length 20
set -g status-right " Ctrl-b d: detach | Enter in the bottom pane: close "
set -g status-right-length 60
set -g default-terminal "tmux-256color"
set -g history-limit 5000
"""


def run_tmux(args, plan: dict) -> int:
    out = Path(plan["out"])
    name = tmux_name()
    tmux = Tmux(name)
    conf = out / "tmux.conf"
    conf.write_text(TMUX_CONF)
    (out / "plan.json").write_text(json.dumps(plan, indent=2))
    interactive = not plan["headless"]
    if interactive:
        cols, rows = shutil.get_terminal_size((200, 50))
    else:
        cols, rows = args.size
    earth = pane_cmd(plan["alice"], str(out / "alice.rc"))
    mars = pane_cmd(plan["bob"], str(out / "bob.rc"))
    conductor = pane_cmd([PY, str(ROOT / "scripts" / "demo.py"), "--conduct", str(out / "plan.json")],
                         str(out / "conductor.rc"), hold=args.headless)
    tmux("-f", str(conf), "new-session", "-d", "-s", "demo", "-x", str(cols), "-y", str(rows), "-n", "marslink", mars)
    try:
        mars_pane = tmux("display-message", "-p", "-t", "demo", "#{pane_id}").strip()
        tmux("select-pane", "-t", mars_pane, "-T", "MARS  (Bob, receiver)")
        side = ["-h", "-b"] if cols >= 150 else ["-v", "-b"]      # Earth left of (or above) Mars
        earth_pane = tmux("split-window", *side, "-t", mars_pane, "-P", "-F", "#{pane_id}", earth).strip()
        tmux("select-pane", "-t", earth_pane, "-T", "EARTH  (Alice, sender)")
        (out / "panes.json").write_text(json.dumps({"alice": earth_pane, "bob": mars_pane}))   # for the conductor
        relay_pane = tmux("split-window", "-v", "-f", "-l", "14", "-t", mars_pane, "-P", "-F", "#{pane_id}",
                          conductor).strip()
        tmux("select-pane", "-t", relay_pane, "-T", "LINK  (relay: the simulated deep-space link)")
        tmux("select-pane", "-t", relay_pane)           # Enter there closes the demo at the end
        if interactive:
            subprocess.run(["tmux", "-L", name, "attach", "-t", "demo"], env=tmux.env)
            res_path = out / "conductor.json"
            if (out / "conductor.rc").exists() and res_path.exists():
                res = json.loads(res_path.read_text())
                Console().print(summary(plan, res))
                return 0 if res["ok"] else 1
            print(f"demo: still running in the background; `tmux -L {name} attach` to watch it again")
            return 0
        return wait_and_capture(tmux, plan, {"earth": earth_pane, "mars": mars_pane, "relay": relay_pane}, args)
    finally:
        if not interactive or (out / "conductor.rc").exists():
            tmux.kill()


def wait_and_capture(tmux: Tmux, plan: dict, panes: dict, args) -> int:
    out = Path(plan["out"])
    deadline = time.monotonic() + plan["timeout"]
    while not (out / "conductor.rc").exists():
        if time.monotonic() > deadline:
            print("demo: timed out", file=sys.stderr)
            break
        time.sleep(0.5)
    time.sleep(0.5)                  # let the last frames reach the panes
    captures, shot_failed = {}, False
    for who, pane in panes.items():
        text = tmux("capture-pane", "-p", "-t", pane)
        captures[who] = text
        (out / f"{who}.txt").write_text(text)
        if args.screenshot:
            captures[who + "_ansi"] = tmux("capture-pane", "-p", "-e", "-t", pane)
    for who in ("earth", "mars", "relay"):
        print(f"===== {who} pane =====")
        print(captures[who].rstrip())
    if args.screenshot:
        try:
            screenshot(captures, args.screenshot)
            print(f"demo: screenshot {args.screenshot}")
        except Exception as e:
            print(f"demo: screenshot failed: {e}", file=sys.stderr)
            shot_failed = True
    res_path = out / "conductor.json"
    if not res_path.exists():
        print("demo: no result (the run did not finish)", file=sys.stderr)
        return 1
    res = json.loads(res_path.read_text())
    Console(width=120).print(summary(plan, res))
    return 0 if res["ok"] and not shot_failed else 1


def check_screenshot(path: str | None, use_tmux: bool) -> None:
    """--screenshot, before the run rather than after it: it draws the tmux panes, into a PNG."""
    if path is None:
        return
    if not use_tmux:
        raise UsageError("--screenshot draws the tmux panes, so it needs tmux (installed, and no --no-tmux)")
    if not path.lower().endswith(".png"):
        raise UsageError(f"--screenshot {path!r} is a PNG picture; give a name ending in .png")
    check_output(path, force=True, stream_ok=False, label="--screenshot")


def screenshot(captures: dict, path: str) -> None:
    """Draw the captured panes (with their colours) into a PNG, the way they looked."""
    import matplotlib  # optional: the `report` extra
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def lines_of(ansi: str):
        return [Text.from_ansi(line) for line in ansi.rstrip("\n").split("\n")]

    def trim(lines):
        while lines and not lines[-1].plain.strip():
            lines.pop()
        return lines

    earth, mars, relay = (trim(lines_of(captures[k + "_ansi"])) for k in ("earth", "mars", "relay"))
    left_w = max((len(t.plain) for t in earth), default=80)
    right_w = max((len(t.plain) for t in mars), default=80)
    top_h = max(len(earth), len(mars))
    rows = top_h + 1 + len(relay)
    cols = left_w + 2 + right_w
    cw, ch = 0.0725, 0.155                     # inches per character cell
    fontsize = cw * 72 / 0.602                 # DejaVu Sans Mono advances 0.602 em per glyph
    fig = plt.figure(figsize=((cols + 2) * cw, (rows + 2) * ch), dpi=110)
    fig.patch.set_facecolor("#101216")
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(-1.5, cols + 0.5)
    ax.set_ylim(rows + 1, -1)
    ax.axis("off")

    def colour(c, default):
        if c is None or c.is_default:
            return default
        r, g, b = c.get_truecolor()
        return (r / 255, g / 255, b / 255)

    def draw(lines, x0, y0):
        for y, t in enumerate(lines):
            for span_text, style in _segments(t):
                fg = colour(style.color if style is not None else None, "#d8d8d8")
                bg = colour(style.bgcolor if style is not None else None, None)
                x = x0 + span_text[0]
                s = span_text[1]
                if style is not None and style.dim:
                    fg = tuple(0.6 * v for v in fg) if isinstance(fg, tuple) else "#8a8a8a"
                if bg is not None:
                    ax.add_patch(plt.Rectangle((x - 0.5, y0 + y - 0.5), len(s), 1.0, color=bg, lw=0))
                ax.text(x - 0.5, y0 + y, s, color=fg, fontsize=fontsize, family="DejaVu Sans Mono", va="center",
                        ha="left",
                        fontweight="bold" if style is not None and style.bold else "normal")

    draw(earth, 0, 0)
    draw(mars, left_w + 2, 0)
    draw(relay, 0, top_h + 1)
    fig.savefig(path, facecolor=fig.get_facecolor())
    plt.close(fig)


def _segments(text):
    """(start column, string) and style runs of a rich Text."""
    plain = text.plain
    styles = [None] * len(plain)
    for span in text.spans:
        st = span.style
        if isinstance(st, str):
            st = Style.parse(st)
        for i in range(span.start, min(span.end, len(plain))):
            styles[i] = st if styles[i] is None else styles[i] + st
    i = 0
    while i < len(plain):
        j = i
        while j < len(plain) and styles[j] == styles[i]:
            j += 1
        yield (i, plain[i:j]), styles[i]
        i = j


# --- the conductor: runs in the tmux bottom pane ----------------------------------------------

def stop_the_other(rcs: dict, interrupt) -> str | None:
    """Once one side has ended without success (Ctrl-C in its pane, an error), the other would
    wait for it to come back (up to its handshake timeout, minutes): in the demo nobody will run
    it again, so the other is stopped too (`interrupt(who)`: Ctrl-C typed into its tmux pane, or
    SIGTERM, which a SIGINT ignored since the demo's start cannot mask). Returns what was done."""
    for who, other in (("alice", "bob"), ("bob", "alice")):
        if rcs.get(who) not in (None, 0) and other not in rcs:
            interrupt(other)
            name, other_name = ("Earth", "Mars") if who == "alice" else ("Mars", "Earth")
            rc = rcs[who]
            how = ("was interrupted" if rc in (130, 143, -signal.SIGINT, -signal.SIGTERM)
                   else f"was killed (signal {-rc})" if rc < 0 else f"failed (exit {rc})")
            return f"{name} {how}, so {other_name} was stopped too; `make demo` runs the demo again"
    return None


def _ctrl_c_in_pane(out: Path):
    """interrupt(who) for the conductor: Ctrl-C typed into that side's tmux pane."""
    def interrupt(who: str) -> None:
        sock = os.environ.get("TMUX", "").split(",")[0]
        try:
            pane = json.loads((out / "panes.json").read_text())[who]
        except (OSError, ValueError, KeyError):
            return
        if sock:
            subprocess.run(["tmux", "-S", sock, "send-keys", "-t", pane, "C-c"], capture_output=True)
    return interrupt


def conduct(plan_path: str) -> int:
    plan = json.loads(Path(plan_path).read_text())
    out = Path(plan["out"])
    relay = subprocess.Popen(plan["relay"], cwd=ROOT)
    deadline = time.monotonic() + plan["timeout"]
    rcs, stopped = {}, None
    try:
        while len(rcs) < 2 and time.monotonic() < deadline:
            for who in ("alice", "bob"):
                p = out / f"{who}.rc"
                if who not in rcs and p.exists() and p.read_text().strip():
                    rcs[who] = int(p.read_text().strip())
            if stopped is None:
                stopped = stop_the_other(rcs, _ctrl_c_in_pane(out))
            if relay.poll() is not None:
                break
            time.sleep(0.3)
        time.sleep(0.5)
    finally:
        stop(relay)
    res = verify_and_report(plan, rcs.get("alice"), rcs.get("bob"), stopped)
    console = Console()
    console.print(summary(plan, res))
    if not plan["headless"] and _isatty(sys.stdin):
        console.print("[bold]Press Enter to close the demo[/] (Ctrl-b d detaches and leaves it running)")
        try:
            input()
        except (EOFError, KeyboardInterrupt):
            pass
        (out / "conductor.rc").write_text("0\n" if res["ok"] else "1\n")
        sock = os.environ.get("TMUX", "").split(",")[0]
        if sock:
            subprocess.run(["tmux", "-S", sock, "kill-server"], capture_output=True)
    return 0 if res["ok"] else 1


# --- without tmux: both dashboards in two columns of this terminal ---------------------------

def run_columns(args, plan: dict) -> int:
    out = Path(plan["out"])
    console = Console()
    tty = console.is_terminal and not console.is_dumb_terminal    # TERM=dumb: rich draws no live view there
    env = child_env()
    procs, states, relay_line = {}, {}, {"text": ""}
    lock = threading.Lock()

    def reader(who, stream):
        for raw in stream:
            line = raw.decode("utf-8", "replace").strip()
            if who == "relay":
                with lock:
                    relay_line["text"] = line
                continue
            try:
                st = json.loads(line)
            except ValueError:
                continue
            with lock:
                states[who] = st

    errs = {who: open(out / f"{who}.err", "wb") for who in ("alice", "bob")}
    relay_cmd = plan["relay"] + ["--plain", "--status-every", "1"]
    procs["bob"] = subprocess.Popen(plan["bob"] + ["--display", "json"], cwd=ROOT, env=env,
                                    stdout=subprocess.PIPE, stderr=errs["bob"])
    procs["relay"] = subprocess.Popen(relay_cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT)
    procs["alice"] = subprocess.Popen(plan["alice"] + ["--display", "json"], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=errs["alice"])
    threads = [threading.Thread(target=reader, args=(w, p.stdout), daemon=True) for w, p in procs.items()]
    for t in threads:
        t.start()

    def view():
        w, h = console.size.width, console.size.height
        col = max(40, (w - 1) // 2)
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=col)
        grid.add_column(width=col)
        with lock:
            a, b, rl = states.get("alice"), states.get("bob"), relay_line["text"]
        waiting = Text("starting…", style="grey50")
        grid.add_row(render(a, col, h - 2) if a else waiting, render(b, col, h - 2) if b else waiting)
        return Group(grid, Text(rl, style="grey62", overflow="ellipsis", no_wrap=True))

    deadline = time.monotonic() + plan["timeout"]
    last_plain = {}
    live = Live(view(), console=console, auto_refresh=False, transient=False) if tty else None
    if live:
        live.start(refresh=True)
    stopped = None
    try:
        while any(procs[w].poll() is None for w in ("alice", "bob")) and time.monotonic() < deadline:
            time.sleep(0.25)
            if stopped is None:
                rcs = {w: procs[w].poll() for w in ("alice", "bob") if procs[w].poll() is not None}
                stopped = stop_the_other(rcs, lambda who: procs[who].send_signal(signal.SIGTERM))
            if live:
                live.update(view(), refresh=True)
            else:
                with lock:
                    snapshot = dict(states)
                for who, st in snapshot.items():
                    every = max(1, -(-(st.get("n_steps") or 20) // 10))
                    key = (st.get("step"), st.get("phase"))
                    if key != last_plain.get(who) and (st.get("step", 0) % every == 0 or st.get("result")
                                                       or st.get("error")):
                        last_plain[who] = key
                        print(plain_line(st), flush=True)
        for w in ("alice", "bob"):
            if procs[w].poll() is None:
                procs[w].kill()
            procs[w].wait()
        for t in threads[:1] + threads[2:]:
            t.join(timeout=5)
        time.sleep(0.3)
    finally:
        for who in ("alice", "bob", "relay"):        # still running only if this run was cut short
            stop(procs[who])
        if live:
            live.update(view(), refresh=True)
            live.stop()
        for f in errs.values():
            f.close()
    if not tty:
        for who in ("alice", "bob"):
            st = states.get(who)
            if st and (st.get("result") or st.get("error")) and last_plain.get(who) != (st.get("step"), st.get("phase")):
                print(plain_line(st), flush=True)
    res = verify_and_report(plan, procs["alice"].returncode, procs["bob"].returncode, stopped)
    if not res["ok"]:
        for who in ("alice", "bob"):
            tail = (out / f"{who}.err").read_text(errors="replace").strip().splitlines()[-3:]
            if tail:
                print(f"{who}: " + " | ".join(tail), file=sys.stderr)
    console.print(summary(plan, res))
    return 0 if res["ok"] else 1


def _isatty(stream) -> bool:
    return stream is not None and stream.isatty()          # None: Python started with it closed


def main(argv: list[str] | None = None) -> int:
    escape_what_cannot_be_shown()
    args = parser().parse_args(argv)
    if args.conduct:
        return conduct(args.conduct)
    use_tmux = not args.no_tmux and shutil.which("tmux") is not None
    try:
        if sys.stdout is None:
            raise DemoError("standard output is closed; run the demo on a terminal, or into a file or a pipe")
        check_screenshot(args.screenshot, use_tmux)
        plan = make_plan(args)
    except (DemoError, MarslinkError) as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 2
    # Not on a terminal (make demo in CI, tests): nobody can attach or press Enter; run to the end.
    plan["headless"] = bool(args.headless) or not (_isatty(sys.stdin) and _isatty(sys.stdout))
    if plan["headless"] and not args.headless and use_tmux:      # else a silent minute, then the panes
        print("demo: not on a terminal, so Earth and Mars run in tmux in the background; their panes are "
              "printed when they finish", file=sys.stderr, flush=True)
    if args.headless and not use_tmux:
        if not args.no_tmux:
            print("demo: tmux is not installed; running both sides in this terminal instead", file=sys.stderr)
    try:
        return run_tmux(args, plan) if use_tmux else run_columns(args, plan)
    except BrokenPipeError:          # the reader has seen enough (`| head`): stop quietly, as a pipe's writer does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141


if __name__ == "__main__":
    sys.exit(main())
