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
import math

from protocol import link
from protocol.frames import MAX_STREAM_ID_CHARS, FrameError, Hello
from ..core import numeric
from ..core.config import INT_RANGES, PRESETS, RunConfig, preset
from ..core.errors import ProfileError
from .files import STDIO

MAX_SECONDS = 30 * 24 * 3600     # longest timeout or interval: a month (longer is a typo)
MAX_WINDOW = 4096                # frames in flight: Bob may buffer this many messages of up to 1 MiB
MAX_CHECKPOINT_EVERY = 1 << 30   # steps between checkpoints


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `prog: error: what; see 'prog --help'`, exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


# -- value types: each refuses with a message that says what it wants -------------------------

def integer(low: int, high: int, what: str):
    """argparse type: a whole number in low..high."""
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not {what} (a whole number in {low}..{high})")
        return value
    parse.__name__ = what          # argparse names the type in some messages
    return parse


def number(low: float, high: float, what: str, above_low: bool = False):
    """argparse type: a finite number in low..high (above low, if `above_low`); NaN never passes."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not ((low < value) if above_low else (low <= value)) or not value <= high:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not {what}")
        return value
    parse.__name__ = what
    return parse


seconds = number(0, MAX_SECONDS, f"a positive number of seconds (at most {MAX_SECONDS:,})", above_low=True)
fraction = number(0, 1, "a probability (a number from 0 to 1)")
LINGER = number(0, MAX_SECONDS, f"a number of seconds from 0 (do not linger) to {MAX_SECONDS:,}")


def threads(text: str) -> int:
    """argparse type: a thread count numeric.resolve accepts (its range is the one source)."""
    try:
        value = int(text, 10)
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
            f"{text[:80]!r} is not a stream id: 1 to {MAX_STREAM_ID_CHARS} characters, "
            f"no control characters") from None
    return text


def output_file(text: str) -> str:
    """argparse type for `bob listen --out`: a file, not stdout. Bob keeps the stream beside the
    output while it arrives and publishes it by renaming; stdout would get bytes before the
    final SHA-256 check, breaking 'nothing written until verified'."""
    if text == STDIO:
        raise argparse.ArgumentTypeError("'-' (standard output) is not supported: Bob publishes the "
                                         "verified result by renaming a file; give a file name, then read it")
    return text


SEED = integer(*INT_RANGES["seed"], "a seed")
STEPS = integer(1, MAX_CHECKPOINT_EVERY, "a step count")
WINDOW = integer(1, MAX_WINDOW, "a window")
COUNT = integer(0, 2**63 - 1, "a count")


# -- option groups --------------------------------------------------------------------------

def add_model_options(p: argparse.ArgumentParser, peer: str) -> None:
    """--preset --seed: what both sides must agree on; --profile --threads: speed only."""
    p.add_argument("--preset", default="default", choices=sorted(PRESETS),
                   help=f"speed/ratio trade-off (default: %(default)s); {peer} must match")
    add_numeric_options(p, f"numeric profile (default: portable; speed only: {peer} may differ)",
                        f"intra-op threads (speed only: {peer} may differ)")
    p.add_argument("--seed", type=SEED, default=None,
                   help=f"model seed (default: the preset's); {peer} must match")


def add_numeric_options(p: argparse.ArgumentParser, profile_help: str, threads_help: str) -> None:
    p.add_argument("--profile", default=None, choices=sorted(numeric.PROFILES), help=profile_help)
    p.add_argument("--threads", type=threads, default=None, help=threads_help)


def add_report_options(p: argparse.ArgumentParser, progress_every: bool = True) -> None:
    """--stats-json, -q, and (file mode) --progress-every."""
    p.add_argument("--stats-json", metavar="PATH", help="write run statistics as JSON (replaced if it exists)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    if progress_every:
        p.add_argument("--progress-every", type=seconds, default=None, metavar="S",
                       help="when stderr is not a terminal (a log), print a plain progress line every S seconds")


def add_force_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--force", action="store_true", help="replace the output if it exists")


def add_link_options(p: argparse.ArgumentParser, role: str) -> None:
    """The link's tunables (defaults from protocol/link.py), encryption, checkpoints.
    role: 'connect' (Alice) or 'bind' (Bob)."""
    handshake = link.SENDER_HANDSHAKE_S if role == "connect" else link.RECEIVER_HANDSHAKE_S
    waits_for = "the receiver to appear" if role == "connect" else "a sender"
    p.add_argument("--timeout", type=seconds, default=link.TIMEOUT_S,
                   help="seconds of peer silence before giving up (default %(default)g)")
    p.add_argument("--handshake-timeout", type=seconds, default=handshake,
                   help=f"seconds to wait for {waits_for} (default %(default)g)")
    p.add_argument("--window", type=WINDOW, default=link.WINDOW,
                   help="frames in flight (credit; default %(default)s)")
    p.add_argument("--checkpoint-every", type=STEPS, default=16, help="steps between checkpoints (default %(default)s)")
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
    else:
        p.add_argument(peer_key, metavar="DIR", help="with --curve-secret: admit only senders whose public key "
                       "(NAME.key) is in DIR")


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
