"""Live dashboards for Earth (Alice) and Mars (Bob), and their plain-text log mode.

Torch-free at import: a `Dashboard` is fed through the stream callbacks (`on_hello`,
`on_step(twin, report, link)`) and reads only what they hand it, plus the `Telemetry` the
stream records into (coded bytes so far). Everything it shows is measured on this side or is
a link setting the caller states with `--link-info` (what the relay was started with).

The state is a plain JSON-able dict (`Dashboard.state()`), drawn by `render(state)`:

  dashboard   a rich Live view (only on a terminal): progress, bits, loss, the weight digest at
              the latest sync step (the same 12 hex on both screens = lockstep), link settings
              and counters, transfer times over the configured link, and the text itself:
              Earth colours each byte by its surprisal, Mars shows it as it is decoded;
  plain       one line every N steps, no ANSI (when stdout is not a terminal, or --plain);
  json        one JSON state per line (the demo's two-column view draws both sides from these);
  quiet       nothing.
"""
from __future__ import annotations

import io
import json
import math
import os
import sys
import time
from collections import deque

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from protocol.relay import SimulatedLink
from ..app.options import integer
from ..core.errors import UsageError
from ..core.layout import n_steps
from .telemetry import Telemetry, bits_per_byte, earned_line

ROLES = {
    "earth": {"name": "EARTH", "what": "sender (Alice)", "colour": "bright_blue", "peer": "Mars"},
    "mars": {"name": "MARS", "what": "receiver (Bob)", "colour": "red3", "peer": "Earth"},
}
MODES = ("auto", "dashboard", "plain", "json", "quiet")
TEXT_WINDOW = 600          # bytes of stream 0 kept for display
RECENT_STEPS = 20          # "recent" bits per byte: over this many steps
# surprisal bands (bits): colour of a byte on Earth's screen
HEAT = ((1.0, "green3", "<1"), (3.0, "yellow", "1-3"), (6.0, "dark_orange", "3-6"), (math.inf, "red1", ">=6"))


def heat(bits: float | None) -> str:
    if bits is None or not math.isfinite(bits):
        return "grey50"
    for limit, colour, _ in HEAT:
        if bits < limit:
            return colour
    return HEAT[-1][1]


# --- link settings shown on the dashboards ---------------------------------------------------

def fmt_s(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {s % 60:04.1f} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def link_line(info: dict | None) -> str:
    """The simulated link as configured (a SimulatedLink's dict, as the JSON state carries it)."""
    return SimulatedLink.from_dict(info).describe() if info else "direct (no simulated link)"


def transfer_times(state: dict) -> tuple[float, float] | None:
    """(raw seconds, coded seconds) for the bytes done so far over the configured bandwidth."""
    bw = (state["link_info"] or {}).get("bandwidth_bps")
    if not bw:
        return None
    return state["tokens_done"] * 8 / bw, state["payload_bytes"] * 8 / bw


# --- the dashboard object (fed by the stream callbacks) --------------------------------------

GLYPHS = "━┃┏┓┗┛─│╭╮╰╯⏎·▌✔✘■…"     # what the live view draws: its bars, boxes and marks


def _can_draw(file) -> bool:
    """Whether `file`'s encoding shows GLYPHS: a terminal in ASCII or Latin-1 would fail at the
    live view's first frame, mid-transfer. "auto" then picks plain lines; an explicit
    --dashboard is refused before any work."""
    try:
        GLYPHS.encode(getattr(file, "encoding", None) or "utf-8")
        return True
    except (UnicodeEncodeError, LookupError):
        return False


def _animates() -> bool:
    """Whether the terminal redraws in place: rich draws no live view for TERM=dumb (or unknown),
    so a dashboard there would show nothing until the end."""
    return os.environ.get("TERM", "").lower() not in ("dumb", "unknown")


class Dashboard:
    def __init__(self, role: str, endpoint: str, mode: str = "auto", total_bytes: int | None = None,
                 path: SimulatedLink | None = None, every: int | None = None, file=None, telemetry=None,
                 out_path: str | None = None):
        if role not in ROLES:
            raise ValueError(f"role must be one of {list(ROLES)}")
        self.file = file or sys.stdout
        if mode == "auto":
            tty = getattr(self.file, "isatty", lambda: False)()
            mode = "dashboard" if tty and _can_draw(self.file) and _animates() else "plain"
        elif mode == "dashboard" and not _can_draw(self.file):
            raise UsageError(f"the live dashboard draws characters that this terminal's encoding "
                             f"({self.file.encoding}) cannot show; run in a UTF-8 locale (e.g. LANG=C.UTF-8) "
                             f"or with --plain")
        if mode not in MODES:
            raise ValueError(f"display mode must be one of {MODES}")
        if telemetry is None:
            telemetry = Telemetry()
        self.role, self.endpoint, self.mode = role, endpoint, mode
        self.telemetry, self.every, self.out_path = telemetry, every, out_path
        self.link_info = path.to_dict() if path is not None else None
        self.started = time.monotonic()
        self.phase = "connecting" if role == "earth" else "listening"
        self.total_bytes, self.n_steps, self.streams = total_bytes, None, None
        self.step = self.tokens_done = 0
        self.ideal_bits, self.loss = 0.0, None
        self.recent: deque = deque(maxlen=RECENT_STEPS)      # (chunk_bits, chunk_tokens)
        self.digest_step, self.digest = None, None
        self.link_stats: dict = {}
        self.wire_bytes = None
        self.result: dict | None = None
        self.error: str | None = None
        self._s0: deque = deque()         # (step, [(byte, bits), ...]) of stream 0, newest last
        self._s0_fresh = 0
        self._last_draw = 0.0
        self._dirty = False
        self._last_plain_step = -1
        self._live = None
        self._console = None

    # -- callbacks
    def start(self) -> "Dashboard":
        if self.mode == "dashboard":
            self._console = Console(file=self.file)
            self._live = Live(console=self._console, auto_refresh=False, transient=False,
                              vertical_overflow="crop", get_renderable=self._renderable)
            self._live.start(refresh=True)
        elif self.mode == "plain":
            self._print(f"[{self.role}] {ROLES[self.role]['what']} on {self.endpoint}"
                        + (f"; link: {link_line(self.link_info)}" if self.link_info else ""))
        elif self.mode == "json":
            self._emit()
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        if isinstance(exc, BrokenPipeError):       # our own output is gone: nothing more to draw
            self._live = None
            return
        if exc is not None and self.result is None and self.error is None:
            self.fail(str(exc) or ("interrupted" if isinstance(exc, KeyboardInterrupt) else type(exc).__name__))
        self.stop()

    def on_hello(self, hello) -> None:
        cfg = hello.config
        self.total_bytes = hello.total_length
        try:
            streams, chunk = int(cfg["streams"]), int(cfg["model"]["chunk"])
            self.n_steps, self.streams = n_steps(self.total_bytes, streams, chunk), streams
        except (KeyError, TypeError, ValueError):
            pass
        self.phase = "receiving"
        if self.mode == "plain":
            self._print(f"[{self.role}] Earth says hello: {self.total_bytes:,} bytes, stream {hello.stream_id}")
        self._draw(force=True)

    def on_step(self, twin, report, link) -> None:
        self.phase = "sending" if self.role == "earth" else "receiving"
        self.n_steps, self.streams = twin.n_steps, twin.layout.streams
        self.total_bytes = twin.layout.length
        self.step, self.tokens_done, self.ideal_bits = report.step, report.tokens_done, twin.ideal_bits
        self.loss = report.loss
        if report.chunk_tokens:
            self.recent.append((report.chunk_bits, report.chunk_tokens))
        if report.digest is not None:
            self.digest_step, self.digest = report.step, report.digest
        stats = getattr(link, "stats", None)
        if stats is not None:
            self.link_stats = {k: v for k, v in vars(stats).items() if isinstance(v, (int, float))}
            if "bytes_sent" in self.link_stats:
                self.wire_bytes = self.link_stats["bytes_sent"]
        self._remember_text(twin, report)
        self._draw(final=report.step >= twin.n_steps)

    def finish(self, result: dict) -> None:
        """The verified end: show it, stop the live view."""
        self.result, self.phase = dict(result), "verified"
        # the final counters, from the stream's own statistics (the last step came before END/DONE)
        for k in ("frames_sent", "frames_resent", "frames_received", "duplicates", "out_of_order"):
            if k in result:
                self.link_stats[k] = result[k]
        if self.role == "earth":
            self.link_stats["in_flight"] = 0
            self.wire_bytes = result.get("wire_bytes", self.wire_bytes)
            self.link_stats.pop("acked_seq", None)
        if "payload_bytes" in result:
            self.telemetry.payload_bytes = result["payload_bytes"]
        if "syncs_checked" in result:
            self.telemetry.extra["syncs_checked"] = result["syncs_checked"]
        self.step = self.result.get("steps", self.step)
        self.tokens_done = self.result.get("input_bytes", self.tokens_done)
        self._draw(force=True, final=True)
        self.stop()

    def fail(self, message: str) -> None:
        self.error, self.phase = message, "failed"
        self._draw(force=True, final=True)
        self.stop()

    def stop(self) -> None:
        if self.mode == "json" and self._dirty:
            self._emit()
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
            self._live = None

    # -- state
    def _remember_text(self, twin, report) -> None:
        """Keep stream 0's newest bytes and their surprisal (a resumed sender may repeat steps)."""
        tokens, bits = report.tokens[0], report.bits[0]
        pairs = [(int(b), float(x)) for b, x in zip(tokens.tolist(), bits.tolist()) if not math.isnan(x)]
        while self._s0 and self._s0[-1][0] >= report.step:
            self._s0.pop()
        self._s0.append((report.step, pairs))
        while sum(len(p) for _, p in self._s0) - len(self._s0[0][1]) >= TEXT_WINDOW:
            self._s0.popleft()
        self._s0_fresh = len(pairs)

    def state(self) -> dict:
        text = [[b, round(x, 3)] for _, pairs in self._s0 for b, x in pairs][-TEXT_WINDOW:]
        recent_tokens = sum(n for _, n in self.recent)
        return {
            "role": self.role, "endpoint": self.endpoint, "phase": self.phase,
            "elapsed": time.monotonic() - self.started,
            "total_bytes": self.total_bytes, "n_steps": self.n_steps, "streams": self.streams,
            "step": self.step, "tokens_done": self.tokens_done,
            "payload_bytes": self.telemetry.payload_bytes, "wire_bytes": self.wire_bytes,
            "ideal_bits": self.ideal_bits,
            "bpb_recent": sum(b for b, _ in self.recent) / recent_tokens if recent_tokens else None,
            "recent_steps": len(self.recent),
            "loss": None if self.loss is None or not math.isfinite(self.loss) else self.loss,
            "digest_step": self.digest_step, "digest": self.digest,
            "link": self.link_stats, "link_info": self.link_info,
            "extra": dict(self.telemetry.extra),
            "text": text, "text_fresh": min(self._s0_fresh, len(text)),
            "result": self.result, "error": self.error, "out_path": self.out_path,
        }

    # -- output
    def _print(self, line: str) -> None:
        print(line, file=self.file, flush=True)

    def _emit(self) -> None:
        self._print(json.dumps(self.state(), separators=(",", ":")))
        self._dirty = False

    def _renderable(self):
        return render(self.state(), self._console.size.width, self._console.size.height)

    def _draw(self, force: bool = False, final: bool = False) -> None:
        now = time.monotonic()
        self._dirty = True
        if self.mode == "dashboard" and self._live is not None:
            if force or final or now - self._last_draw >= 0.125:
                self._last_draw = now
                self._live.refresh()
        elif self.mode == "json":
            if force or final or now - self._last_draw >= 0.2:
                self._last_draw = now
                self._emit()
        elif self.mode == "plain":
            if self.result is not None or self.error is not None:
                self._print(plain_line(self.state()))
                return
            every = self.every or max(1, -(-(self.n_steps or 20) // 20))
            if self.step and self.step != self._last_plain_step and (self.step % every == 0 or final):
                self._last_plain_step = self.step
                self._print(plain_line(self.state()))


# --- drawing (from a state dict, so the demo can draw a child process's state) ---------------

def _short(d: str | None, n: int = 12) -> str:
    return d[:n] if d else "-" * n


def plain_line(s: dict) -> str:
    """One line, no ANSI: the log mode."""
    who = f"[{s['role']}]"
    if s.get("error"):
        return f"{who} FAILED: {s['error']}"
    r = s.get("result")
    if r:
        n, coded = r.get("input_bytes", 0), r.get("compressed_bytes", 0)
        extra = f", {r['syncs_checked']} digests matched Earth's" if "syncs_checked" in r else ""
        earned = f"; what earned the bits: {earned_line(r)}" if r.get("bits_by_part") else ""
        return (f"{who} VERIFIED: SHA-256 ok{extra}; {n:,} bytes as {coded:,} coded bytes ({bits_per_byte(coded, n)}); "
                f"final digest {_short(r.get('final_digest'))}; {r.get('seconds', s['elapsed']):.1f} s{earned}")
    total = s["total_bytes"] or 0
    pct = 100 * s["tokens_done"] / total if total else 0.0
    done = s["tokens_done"]
    bpb = s["ideal_bits"] / done if done else 0.0
    recent = f"{s['bpb_recent']:.3f}" if s["bpb_recent"] is not None else "-"
    loss = f"{s['loss']:.3f}" if s["loss"] is not None else "-"
    link = s["link"]
    if s["role"] == "earth":
        ln = f"in flight {link.get('in_flight', 0)}, resent {link.get('frames_resent', 0)}"
    else:
        ln = (f"frames {link.get('frames_received', 0)}, dup {link.get('duplicates', 0)}, "
              f"out of order {link.get('out_of_order', 0)}")
    return (f"{who} step {s['step']}/{s['n_steps'] or '?'} ({pct:.0f}%) | {done:,}/{total:,} B | "
            f"coded {s['payload_bytes']:,} B {'sent' if s['role'] == 'earth' else 'received'} | {bpb:.3f} bits/byte (last {s['recent_steps']} steps {recent}) | "
            f"loss {loss} | weights@{s['digest_step'] if s['digest_step'] is not None else '-'} "
            f"{_short(s['digest'])} | {ln} | {s['elapsed']:.1f} s")


def _bar(frac: float, width: int, colour: str):
    frac = min(max(frac, 0.0), 1.0)
    full = int(frac * width)
    t = Text("━" * full, style=colour)
    t.append("━" * (width - full), style="grey23")
    return t


def _text_lines(pairs: list, fresh: int, width: int, height: int, role: str):
    """Wrap stream 0's bytes into at most `height` lines of `width` cells; keep the newest."""
    lines: list[list[tuple[str, str]]] = [[]]
    n = len(pairs)
    for i, (b, bits) in enumerate(pairs):
        new = i >= n - fresh
        if role == "earth":
            style = heat(bits) + (" bold" if new else "")
        else:
            style = "bold bright_white on grey30" if new else "grey85"
        if b == 10:
            lines[-1].append(("⏎", style + " dim") if role == "earth" else (" ", style))
            lines.append([])
            continue
        ch = chr(b) if 32 <= b < 127 else "·"
        if len(lines[-1]) >= width:
            lines.append([])
        lines[-1].append((ch, style))
    if role == "mars" and n:
        lines[-1].append(("▌", "bright_white blink"))
    lines = lines[-height:]
    out = Text(no_wrap=True, overflow="crop")
    for k, line in enumerate(lines):
        for ch, style in line:
            out.append(ch, style=style)
        if k < len(lines) - 1:
            out.append("\n")
    return out


def _height(renderable, width: int) -> int:
    """Lines `renderable` takes at this width (so the text panel can fill what is left)."""
    c = Console(width=width, file=io.StringIO(), color_system=None)
    return len(c.render_lines(renderable, c.options, pad=False))


def render(s: dict, width: int = 100, height: int = 40):
    """The dashboard for one side, as a rich renderable."""
    role = ROLES[s["role"]]
    colour = role["colour"]
    total = s["total_bytes"] or 0
    done = s["tokens_done"]
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True, width=10)
    grid.add_column(overflow="fold")

    frac = done / total if total else 0.0
    prog = Text()
    prog.append_text(_bar(frac, max(10, min(40, width - 52)), colour))
    prog.append(f" step {s['step']}/{s['n_steps'] or '?'}  {100 * frac:3.0f}%  {fmt_s(s['elapsed'])}")
    grid.add_row("progress", prog)
    grid.add_row("text", f"{done:,} / {total:,} bytes " + ("coded" if s["role"] == "earth" else "decoded"))

    coded = s["payload_bytes"]
    wire = Text(f"{coded:,} B = {coded * 8:,} bits", style="bold")
    if s["role"] == "earth":
        wire.append(" sent")
        if s["wire_bytes"] is not None:
            wire.append(f"  (socket: {s['wire_bytes']:,} B incl. framing, heartbeats, resends)", style="grey62")
    else:
        wire.append(" received")
    grid.add_row("on wire", wire)

    bpb = Text()
    if done:
        bpb.append(f"{s['ideal_bits'] / done:.3f}", style="bold")
        bpb.append(" overall")
    else:
        bpb.append("-")
    if s["bpb_recent"] is not None:
        bpb.append(f" | {s['bpb_recent']:.3f}", style="bold")
        bpb.append(f" last {s['recent_steps']} steps")
    if s["loss"] is not None:
        bpb.append(f" | loss {s['loss']:.3f} nats")
    grid.add_row("bits/byte", bpb)

    w = Text()
    if s["digest"]:
        w.append(f"step {s['digest_step']}  ")
        w.append(_short(s["digest"]), style="bold black on bright_white")
    else:
        w.append("-")
    checked = s["extra"].get("syncs_checked")
    if s["role"] == "mars" and checked is not None:
        w.append(f"  {checked} digests matched Earth's", style="green3")
    grid.add_row("weights", w)

    info = s["link_info"]
    grid.add_row("link", link_line(info))
    ls = s["link"]
    if s["role"] == "earth":
        counters = (f"frames sent {ls.get('frames_sent', 0):,} | in flight {ls.get('in_flight', 0)} | "
                    f"retransmitted {ls.get('frames_resent', 0):,}"
                    + (f" | acked seq {ls['acked_seq']:,}" if "acked_seq" in ls else ""))
    else:
        counters = (f"frames received {ls.get('frames_received', 0):,} | duplicates dropped "
                    f"{ls.get('duplicates', 0):,} | out of order {ls.get('out_of_order', 0):,}")
    grid.add_row("", Text(counters, style="grey70"))
    tt = transfer_times(s)
    if tt is not None:
        raw_s, coded_s = tt
        light = info["delay_s"] if info else 0.0
        t = Text(f"raw {done:,} B: {fmt_s(raw_s)}  vs  ")
        t.append(f"coded {coded:,} B: {fmt_s(coded_s)}", style="bold green3")
        if light:
            t.append(f"  (+{light:.1f} s light)")
        if coded_s > 0:
            t.append(f"  {raw_s / coded_s:.2f}x less link time", style="bold")
        grid.add_row("over link", t)

    title = Text.assemble((f" {role['name']} ", f"bold white on {colour}"), f" {role['what']} ",
                          (s["endpoint"], "grey70"), " ")
    phase = s["phase"]
    subtitle = Text(f" {phase} ", style="bold green3" if phase == "verified" else
                    "bold red" if phase == "failed" else "grey70")
    parts = [Panel(grid, title=title, title_align="left", subtitle=subtitle, subtitle_align="right",
                   border_style=colour, box=box.ROUNDED, width=width)]

    footer = None
    if s.get("result"):
        r = s["result"]
        t = Text()
        t.append("✔ VERIFIED ", style="bold black on green3")
        if s["role"] == "earth":
            t.append("  Mars decoded every byte: SHA-256 ok, final weights equal\n")
        else:
            t.append(f"  SHA-256 ok, {r.get('syncs_checked', 0)} weight digests matched Earth's"
                     + (f", written to {s['out_path']}" if s.get("out_path") else "") + "\n")
        n, c = r.get("input_bytes", 0), r.get("compressed_bytes", 0)
        t.append(f"{n:,} bytes as {c:,} coded bytes ({bits_per_byte(c, n)}) "
                 f"in {fmt_s(r.get('seconds', s['elapsed']))}\n")
        if r.get("bits_by_part"):
            t.append("what earned the bits: ", style="bold")
            t.append(earned_line(r) + "\n")
        t.append("final digest ")
        t.append(_short(r.get("final_digest"), 16), style="bold black on bright_white")
        footer = Panel(t, border_style="green3", box=box.HEAVY, width=width)
    elif s.get("error"):
        footer = Panel(Text("✘ FAILED  " + s["error"], style="bold red"), border_style="red", box=box.HEAVY,
                       width=width)

    used = _height(parts[0], width) + (_height(footer, width) if footer is not None else 0)
    text_h = max(3, height - used - 5)       # 2 lines of slack for whatever was printed above
    inner = max(10, width - 4)
    if s["role"] == "earth":
        legend = Text.assemble(" stream 0", f" of {s['streams']}" if s["streams"] else "", " as sent · surprisal ")
        for _, c, label in HEAT:
            legend.append("■", style=c)
            legend.append(f"{label} ")
        legend.append("bits ")
    else:
        legend = Text.assemble(" stream 0", f" of {s['streams']}" if s["streams"] else "", " as decoded ")
    body = _text_lines(s["text"], s["text_fresh"], inner, text_h, s["role"]) if s["text"] else \
        Text("waiting for the first chunk…" if phase not in ("failed",) else "", style="grey50")
    parts.append(Panel(body, title=legend, title_align="left", border_style="grey42", box=box.ROUNDED,
                       width=width, height=min(text_h, max(1, len(body.plain.split("\n")))) + 2))
    if footer is not None:
        parts.append(footer)
    return Group(*parts)


# --- command-line glue (alice send / bob listen) ----------------------------------------------

def add_display_options(p) -> None:
    """--dashboard / --plain / --display, --log-every, --link-info on an argparse parser."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--display", choices=MODES[:-1], default="auto",
                   help="live rich dashboard, plain log lines, or JSON state lines "
                        "(default: a dashboard if stdout is a terminal, plain lines otherwise)")
    g.add_argument("--dashboard", dest="display", action="store_const", const="dashboard",
                   help="same as --display dashboard")
    g.add_argument("--plain", dest="display", action="store_const", const="plain",
                   help="same as --display plain: one line every --log-every steps, no colours")
    p.add_argument("--log-every", type=integer(1, 1 << 30, "a step count"), default=None, metavar="N",
                   help="plain mode: a line every N steps (default: about 20 lines per run)")
    p.add_argument("--link-info", default=None, metavar="K=V,...",
                   help="link settings to show, as configured on the relay, e.g. 'delay=1.2,bw=16000,loss=0.05'")


def dashboard_for(args, role: str, endpoint: str, total_bytes: int | None = None, file=None,
                  out_path: str | None = None) -> Dashboard:
    try:
        text = getattr(args, "link_info", None)
        path = SimulatedLink.from_text(text) if text else None
    except ValueError as e:
        raise UsageError(str(e)) from None
    mode = "quiet" if getattr(args, "quiet", False) else getattr(args, "display", "auto")
    return Dashboard(role, endpoint, mode, total_bytes=total_bytes, path=path,
                     every=getattr(args, "log_every", None), file=file, out_path=out_path)
