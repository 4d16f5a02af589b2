"""The command-line options alice and bob share, declared once.

Each `add_*` function adds one group to an argparse parser; `run_config` and `link_settings`
turn the parsed options into what the engine and the link take. Every value is checked while
the command line is parsed, by the same type function on both sides and against the same
limits the receiver applies to a peer's HELLO (config.INT_RANGES, frames' stream-id rules),
so a run one side would start the other side never refuses later. A bad value is one line:
`alice send: error: argument --seed: ...`, exit 2, before torch loads.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import math
import os
import re
import sys

from protocol import link
from protocol.relay import SimulatedLink
from protocol.frames import MAX_STREAM_ID_CHARS, PROTOCOL_VERSION, FrameError, Hello
from ..core import numeric
from ..core.config import INT_RANGES, PRESETS, RunConfig, preset
from ..core.errors import ProfileError
from .checkpoint import CHECKPOINT_EVERY
from ..coding.container import DEFAULT_SEGMENT, FORMAT_VERSION, MAX_SEGMENT, MIN_SEGMENT
from .files import STDIO
from .parallel import MAX_JOBS

MAX_SECONDS = 30 * 24 * 3600     # longest timeout or interval: a month (longer is a typo)
MAX_WINDOW = 4096                # frames in flight: Bob may buffer this many messages of up to 1 MiB
MAX_CHECKPOINT_EVERY = 1 << 30   # steps between checkpoints


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `prog: error: what; see 'prog --help'`, exit 2."""

    def error(self, message: str):
        named = self._dashed_file()
        if named:                          # argparse took the file for an option it does not know
            message = (f"{named!r} is read as an option; a file name that begins with '-' goes after '--' "
                       f"(e.g. {self.prog} -- {named} ...) or as ./{named}")
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")

    def _get_option_tuples(self, option_string):
        """A prefix (`--forc` for `--force`) stands for an option the help shows, never for one
        it hides: the tests' fault injectors are reached by their whole names only."""
        return [t for t in super()._get_option_tuples(option_string) if t[0].help != argparse.SUPPRESS]

    def parse_known_args(self, args=None, namespace=None):
        self._given = list(sys.argv[1:] if args is None else args)     # a subcommand's parser: its own part
        return super().parse_known_args(args, namespace)

    def _dashed_file(self) -> str | None:
        """An argument that begins with '-', is none of this command's options and names a file."""
        for arg in getattr(self, "_given", ()):
            if arg == "--":
                return None
            if (arg.startswith("-") and len(arg) > 1 and arg.split("=", 1)[0] not in self._option_string_actions
                    and os.path.lexists(arg)):
                return arg
        return None


def add_version_option(p: argparse.ArgumentParser) -> None:
    """--version: the release, and the two numbers a file or a peer must match to be read
    (without loading torch)."""
    try:
        release = f"marslink {importlib.metadata.version('marslink')}"
    except importlib.metadata.PackageNotFoundError:      # a source tree run with `python -m`, not installed
        release = "marslink, not installed"
    p.add_argument("--version", action="version", help="show the version and exit",
                   version=f"%(prog)s ({release}): container format {FORMAT_VERSION}, wire protocol {PROTOCOL_VERSION}")


# -- value types: each refuses with a message that says what it wants -------------------------

def whole(text: str) -> int | None:
    """`text` as a whole number written in ASCII digits, or None. int() alone also takes '2_0',
    ' 2' and other scripts' digits ('١٢'), which no other option nor a peer reads the same way."""
    return int(text, 10) if re.fullmatch(r"[+-]?[0-9]{1,4000}", text) else None


def decimal(text: str) -> float:
    """`text` as a number written in ASCII, or NaN (which no range admits): as whole()."""
    try:
        return float(text) if text.isascii() and "_" not in text and text == text.strip() else math.nan
    except ValueError:
        return math.nan


def integer(low: int, high: int, what: str):
    """argparse type: a whole number in low..high."""
    def parse(text: str) -> int:
        value = whole(text)
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not {what} (a whole number in {low}..{high})")
        return value
    parse.__name__ = what          # argparse names the type in some messages
    return parse


def number(low: float, high: float, what: str, above_low: bool = False):
    """argparse type: a finite number in low..high (above low, if `above_low`); NaN never passes."""
    def parse(text: str) -> float:
        value = decimal(text)
        if not ((low < value) if above_low else (low <= value)) or not value <= high:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not {what}")
        return value
    parse.__name__ = what
    return parse


seconds = number(0, MAX_SECONDS, f"a positive number of seconds (at most {MAX_SECONDS:,})", above_low=True)
fraction = number(0, 1, "a probability (a number from 0 to 1)")
SILENCE = number(2 * link.HEARTBEAT_S, MAX_SECONDS, f"a silence timeout from {2 * link.HEARTBEAT_S:g} s, twice the "
                 f"heartbeat (shorter, a peer who is there seems lost), to {MAX_SECONDS:,} s")
LINGER = number(0, MAX_SECONDS, f"a number of seconds from 0 (do not linger) to {MAX_SECONDS:,}")


def threads(text: str) -> int:
    """argparse type: a thread count numeric.resolve accepts (its range is the one source)."""
    try:
        value = whole(text)
        if value is None:
            raise ValueError(text)
        numeric.resolve("portable", value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a thread count (a whole number)") from None
    except ProfileError as e:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a thread count: {e}") from None
    return value


def stream_id(text: str) -> str:
    """argparse type: a name a HELLO frame can carry (frames.py's rules are the one source)."""
    try:
        Hello(text, {}, {}, 0, bytes(32))
    except FrameError:
        raise argparse.ArgumentTypeError(
            f"{text[:80]!r} is not a stream id: 1 to {MAX_STREAM_ID_CHARS} printable characters (no control, "
            f"format or line-separator characters; text, not bytes)") from None
    return text


def path_name(what: str):
    """argparse type: a file or folder name, never empty. An empty one (an unset shell variable,
    `--stats-json "$OUT"`) would otherwise read as "not given" and be silently ignored."""
    def parse(text: str) -> str:
        if not text:
            raise argparse.ArgumentTypeError(f"an empty name is not {what}; give a path")
        return text
    parse.__name__ = what
    return parse


def output_file(text: str) -> str:
    """argparse type for `bob listen --out`: a file, not stdout. Bob keeps the stream beside the
    output while it arrives and publishes it by renaming; stdout would get bytes before the
    final SHA-256 check, breaking 'nothing written until verified'."""
    if text == STDIO:
        raise argparse.ArgumentTypeError("'-' (standard output) is not supported: Bob publishes the "
                                         "verified result by renaming a file; give a file name, then read it")
    return text


SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}    # binary, as xz and zstd read them


def segment_size(text: str) -> int:
    """argparse type for --segment: bytes, with an optional K, M or G suffix (KiB, MiB, GiB)."""
    number, unit = text.strip(), ""
    if number[-1:].upper() in SIZE_UNITS and number[-1:].isalpha():
        number, unit = number[:-1], number[-1].upper()
    fits = number.isascii() and number.isdigit() and len(number.lstrip("0")) <= 12   # int() takes 4,300 digits at most
    value = int(number, 10) * SIZE_UNITS[unit] if fits else None
    if value is None or not MIN_SEGMENT <= value <= MAX_SEGMENT:
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r} is not a segment size: give {MIN_SEGMENT >> 10}K to {MAX_SEGMENT >> 30}G, "
            f"e.g. 4M (K, M, G: KiB, MiB, GiB)")
    return value


def endpoint(text: str) -> str:
    """argparse type: a ZeroMQ endpoint with its transport (zmq would refuse anything else only later)."""
    transport, sep, rest = text.partition("://")
    if not sep or transport not in ("tcp", "ipc") or not rest or not text.isprintable():
        raise argparse.ArgumentTypeError(f"{text[:80]!r} is not an endpoint such as tcp://127.0.0.1:5602")
    return text


def cluster_address(text: str) -> str:
    """argparse type for --cluster: a Dask scheduler's tcp://HOST:PORT."""
    host, _, port = text[len("tcp://"):].rpartition(":") if text.startswith("tcp://") else ("", "", "")
    if (not host or not text.isprintable() or any(c in host for c in " /@?#") or not port.isascii()
            or not port.isdigit() or len(port.lstrip("0")) > 5 or not 1 <= int(port) <= 65535):
        raise argparse.ArgumentTypeError(f"{text[:80]!r} is not a Dask scheduler address: give tcp://HOST:PORT, "
                                         f"e.g. tcp://127.0.0.1:8786")
    return text


SEED = integer(*INT_RANGES["seed"], "a seed")
JOBS = integer(1, MAX_JOBS, "a number of worker processes")
STEPS = integer(1, MAX_CHECKPOINT_EVERY, "a step count")
WINDOW = integer(1, MAX_WINDOW, "a window")
COUNT = integer(0, 2**63 - 1, "a count")
PORT = integer(1, 65535, "a port")
LAN_PORT = 5555                  # bob listen --lan, unless --port


# -- option groups --------------------------------------------------------------------------

def add_model_options(p: argparse.ArgumentParser, peer: str | None) -> None:
    """--preset --seed: what both sides must agree on (peer None: a file, whose header carries
    them to `bob decompress`); --profile --threads: speed only."""
    agree = f"{peer} must match" if peer else "written into the file's header, which bob decompress reads"
    other = peer or "bob decompress"
    p.add_argument("--preset", default="default", choices=sorted(PRESETS),
                   help=f"speed/ratio trade-off (default: %(default)s); {agree}")
    add_numeric_options(p, f"numeric profile (default: portable; speed only: {other} may differ)",
                        f"intra-op threads (speed only: {other} may differ)")
    p.add_argument("--seed", type=SEED, default=None,
                   help=f"model seed (default: the preset's); {agree}")


def add_numeric_options(p: argparse.ArgumentParser, profile_help: str, threads_help: str) -> None:
    p.add_argument("--profile", default=None, choices=sorted(numeric.PROFILES), help=profile_help)
    p.add_argument("--threads", type=threads, default=None, help=threads_help)


def add_report_options(p: argparse.ArgumentParser, progress_every: bool = True) -> None:
    """--stats-json, -q, and (file mode) --progress-every."""
    p.add_argument("--stats-json", type=path_name("a file name"), metavar="PATH", help="write run statistics as JSON (replaced if it exists)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    if progress_every:
        p.add_argument("--progress-every", type=seconds, default=None, metavar="S",
                       help="when stderr is not a terminal (a log), print a plain progress line every S seconds")


def add_parallel_options(p: argparse.ArgumentParser, compress: bool) -> None:
    """--jobs / --cluster (and, compressing, --segment): who codes the segments. Never a bit."""
    if compress:
        p.add_argument("--segment", type=segment_size, default=DEFAULT_SEGMENT, metavar="SIZE",
                       help=f"code the input in independent segments of SIZE bytes, K/M/G suffixes "
                            f"(default: {DEFAULT_SEGMENT >> 20}M); the receiver reads it from the file")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--jobs", type=JOBS, default=None, metavar="N",
                       help="worker processes, one thread each (default: every core this process may use, "
                            "as memory allows); the output never depends on N")
    where.add_argument("--cluster", type=cluster_address, default=None, metavar="tcp://HOST:PORT",
                       help="code the segments on a Dask scheduler's workers instead (docs/cluster.md)")


def add_state_option(p: argparse.ArgumentParser, planet: str, keeps: str) -> None:
    """--state-dir: where a side keeps what survives a restart (checkpoint.default_state_dir)."""
    p.add_argument("--state-dir", type=path_name("a folder name"), default=None, metavar="DIR",
                   help=f"where {planet.capitalize()} keeps {keeps} (default: ~/.cache/marslink/{planet})")


def add_force_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--force", action="store_true", help="replace the output if it exists")


def add_link_options(p: argparse.ArgumentParser, role: str) -> None:
    """The link's tunables (defaults from protocol/link.py), encryption, checkpoints.
    role: 'connect' (Alice) or 'bind' (Bob)."""
    handshake = link.SENDER_HANDSHAKE_S if role == "connect" else link.RECEIVER_HANDSHAKE_S
    waits_for = "the receiver to appear" if role == "connect" else "a sender"
    p.add_argument("--timeout", type=SILENCE, default=link.TIMEOUT_S,
                   help="seconds of peer silence before giving up (default %(default)g)")
    p.add_argument("--handshake-timeout", type=seconds, default=handshake,
                   help=f"seconds to wait for {waits_for} (default %(default)g)")
    p.add_argument("--window", type=WINDOW, default=link.WINDOW,
                   help="frames in flight (credit; default %(default)s)")
    p.add_argument("--checkpoint-every", type=STEPS, default=CHECKPOINT_EVERY, help="steps between checkpoints (default %(default)s)")
    if role == "bind":
        p.add_argument("--linger", type=LINGER, default=link.RECEIPT_LINGER_S, metavar="S",
                       help="after delivering, answer a returning sender with DONE for up to S seconds "
                            "(default %(default)g; 0: do not linger)")
    p.add_argument("--fault-kill-step", type=COUNT, default=None, help=argparse.SUPPRESS)   # tests: SIGKILL after step N
    p.add_argument("--insecure", action="store_true", help="allow plain text to or on a non-loopback address")
    me, peer_key = ("Earth's", "--server-key") if role == "connect" else ("Mars's", "--allow")
    p.add_argument("--curve-secret", metavar="PATH", help=f"encrypt (CurveZMQ) with {me} secret key, "
                   f"e.g. keys/{'earth' if role == 'connect' else 'mars'}.key_secret")
    if role == "connect":
        p.add_argument(peer_key, metavar="PATH", help="Mars's public key for encryption, e.g. keys/mars.key")
        p.add_argument("--server-key-text", metavar="KEY", help="Mars's public key as text, with --code: "
                       "what 'bob listen --lan' prints (instead of key files)")
        p.add_argument("--code", metavar="CODE", help="the one-time code 'bob listen --lan' prints: it admits "
                       "this Earth (with --server-key-text)")
    else:
        p.add_argument(peer_key, metavar="DIR", help="with --curve-secret: admit only senders whose public key "
                       "(NAME.key) is in DIR")
        p.add_argument("--lan", action="store_true", help="one command on each laptop: listen on every interface "
                       "(--port), encrypted with Mars's own keys (made once in his state folder), and print the "
                       "line Earth types (with a one-time code that admits that Earth); instead of --bind")
        p.add_argument("--port", type=PORT, default=LAN_PORT, help="with --lan: the port (default %(default)s)")


def add_keygen_command(sub, planet: str, stem: str) -> None:
    k = sub.add_parser("keygen", help=f"make {planet}'s CurveZMQ key pair in DIR: NAME.key (public), NAME.key_secret")
    k.add_argument("dir")
    k.add_argument("--name", default=stem, help="file name stem (default: %(default)s)")


# -- parsed options -> what the engine and the link take ---------------------------------------

def run_config(args) -> RunConfig:
    """The preset, with --seed applied: the one place the override happens."""
    config = preset(args.preset)
    return config if args.seed is None else dataclasses.replace(config, seed=args.seed)


def link_settings(args, curve=None, **extra) -> link.LinkSettings:
    return link.LinkSettings(window=args.window, timeout_s=args.timeout, handshake_timeout_s=args.handshake_timeout,
                             curve=curve, **extra)


# -- the simulated deep-space link (scripts/relay.py runs it, scripts/demo.py starts it) -----

BITS_PER_SECOND = number(0, 1e12, "a bandwidth in bits per second (0 = unlimited)")
DELAY = number(0, MAX_SECONDS, f"a delay in seconds (0 to {MAX_SECONDS:,})")
MINUTES = number(0, 24 * 60, "a light time in minutes (0 to 1440)")
SCALE = number(0, 1e9, "a time scale (a positive number)", above_low=True)
PROBABILITY = number(0, 0.999, "a probability below 1 (a number from 0 to 0.999)")
LIGHT_MINUTES = 12.0             # Earth-Mars is 3 to 22 light-minutes
TIME_SCALE = 600.0               # 12 light-minutes at scale 600: 1.2 s


def add_simulated_link_options(p: argparse.ArgumentParser) -> None:
    """The simulated path's settings, one option each; `simulated_link(args)` makes the object."""
    g = p.add_argument_group("simulated link")
    g.add_argument("--light-minutes", type=MINUTES, default=LIGHT_MINUTES,
                   help="one-way light time; Earth-Mars is 3 to 22 minutes (default %(default)g)")
    g.add_argument("--time-scale", type=SCALE, default=TIME_SCALE,
                   help="divide the light time by this (default %(default)g)")
    g.add_argument("--delay-s", type=DELAY, default=None, help="one-way delay in seconds (overrides the two above)")
    g.add_argument("--bandwidth-bps", type=BITS_PER_SECOND, default=0.0, help="bits per second each way (0 = unlimited)")
    g.add_argument("--back-bandwidth-bps", type=BITS_PER_SECOND, default=None,
                   help="Mars->Earth bandwidth (default: the same)")
    g.add_argument("--loss", type=PROBABILITY, default=0.0, help="probability a message is lost")
    g.add_argument("--dup", type=PROBABILITY, default=0.0, help="probability a message is delivered twice")
    g.add_argument("--reorder", type=PROBABILITY, default=0.0, help="probability a message is held back and overtaken")
    g.add_argument("--fault-direction", choices=("up", "both"), default="up",
                   help="up: faults on Earth->Mars only (default); both: also on ACKs, heartbeats and DONE")
    g.add_argument("--seed", type=SEED, default=0, help="seed of the fault decisions")


def simulated_link(args) -> SimulatedLink:
    kw = dict(bandwidth_bps=args.bandwidth_bps, back_bandwidth_bps=args.back_bandwidth_bps, loss=args.loss,
              dup=args.dup, reorder=args.reorder, seed=args.seed, fault_direction=args.fault_direction)
    if args.delay_s is not None:
        return SimulatedLink(delay_s=args.delay_s, **kw)
    return SimulatedLink.from_light(args.light_minutes, args.time_scale, **kw)


def add_relay_display_options(p: argparse.ArgumentParser) -> None:
    """How the relay shows its counters: a live table on a terminal, else a line every few seconds."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--plain", action="store_true", help="plain status lines even on a terminal")
    g.add_argument("-q", "--quiet", action="store_true", help="no status output")
    p.add_argument("--status-every", type=seconds, default=2.0, help="plain mode: seconds between status lines")


def simulated_link_argv(path: SimulatedLink) -> list[str]:
    """The options above that give `path` again (the demo starts the relay with them)."""
    argv = ["--delay-s", repr(path.delay_s)] if path.light_minutes is None else \
        ["--light-minutes", repr(path.light_minutes), "--time-scale", repr(path.time_scale)]
    argv += ["--bandwidth-bps", repr(path.bandwidth_bps), "--loss", repr(path.loss), "--dup", repr(path.dup),
             "--reorder", repr(path.reorder), "--fault-direction", path.fault_direction, "--seed", str(path.seed)]
    if path.back_bandwidth_bps is not None:
        argv += ["--back-bandwidth-bps", repr(path.back_bandwidth_bps)]
    return argv
