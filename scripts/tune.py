"""Experiment harness for the presets: bits/byte and speed of one RunConfig, in one process.

It runs the real thing: shared.coding.codec.compress (and with --decode, decompress), the real
arithmetic coder and token-by-token prediction, so it gives honest bytes/s for one core.
Sweeps and what they found are in docs/results.md.

Examples (run from the repository root):
  .venv/bin/python scripts/tune.py --preset default --bytes 200000
  .venv/bin/python scripts/tune.py --preset default --set model.n_embd=64 train.lr=3e-3
  .venv/bin/python scripts/tune.py --preset default --decode --bytes 100000     # decode speed too
  .venv/bin/python scripts/tune.py --preset default --file shared/texts/mission_log.txt
Every run prints one JSON line (and appends it to --log if given). The default --file is
../shared/corpora/tinyshakespeare.txt, the workspace's corpora beside the repository (not in a
clone): elsewhere, give --file.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from scripts.common import ScriptParser, count  # noqa: E402
from shared.app.files import check_output, read_input, storage_error  # noqa: E402
from shared.app.options import path_name  # noqa: E402
from shared.core import numeric  # noqa: E402  (torch-free: it pins the profile torch will load with)
from shared.core.config import MAX_LENGTH, ModelConfig, RunConfig, TrainConfig, preset  # noqa: E402
from shared.core.errors import MarslinkError, UsageError  # noqa: E402

# Not in the repository: the workspace's corpora folder beside it (docs/results.md measures on it).
DEFAULT_FILE = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"


def parse_value(v: str):
    if "," in v or v == "()":       # model.orders=1,2,3,4,6
        return tuple(int(x) for x in v.strip("()").split(",") if x)
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def _keys() -> dict[str, tuple[str, str]]:
    """Every key --set takes: 'streams' or 'model.n_embd' -> (section, field). RunConfig's own
    model and train are sections, not values: `--set model=3` would replace the whole model."""
    keys = {f.name: ("", f.name) for f in dataclasses.fields(RunConfig) if f.name not in ("model", "train")}
    for section, cls in (("model", ModelConfig), ("train", TrainConfig)):
        keys.update({f"{section}.{f.name}": (section, f.name) for f in dataclasses.fields(cls)})
    return keys


def apply_overrides(cfg, sets: list[str]):
    """`cfg` with each KEY=VALUE of --set applied, then validated as a peer's would be. Anything
    wrong (no '=', an unknown key, a malformed value, a refused configuration) is one UsageError
    line; tune.py and where_bits.py both take --set through here."""
    keys = _keys()
    for item in sets:
        key, sep, text = item.partition("=")
        if not sep or key not in keys:
            what = "is not KEY=VALUE" if not sep else f"has an unknown key {key!r}"
            raise UsageError(f"--set {item[:80]!r} {what}; keys: {', '.join(keys)}")
        try:
            value = parse_value(text)
        except ValueError:
            raise UsageError(f"--set {item[:80]!r}: {text[:40]!r} is not a value; give a number, true or false, "
                             f"or whole numbers with commas (model.orders=1,2,3)") from None
        section, name = keys[key]
        if section:
            cfg = replace(cfg, **{section: replace(getattr(cfg, section), **{name: value})})
        else:
            cfg = replace(cfg, **{name: value})
    return cfg.validate()


def read_file(path: str, default: bool) -> bytes:
    """--file, read whole (to marslink's input limit: an endless /dev/zero is refused). The
    default corpus lives outside the repository, so a fresh clone is told where it comes from."""
    if default and not os.path.exists(path):
        raise UsageError(f"the default --file {path} is missing: it is tinyshakespeare from the workspace's "
                         f"shared/corpora/ folder beside the repository, not part of a clone; pass --file FILE "
                         f"(e.g. --file shared/texts/mission_log.txt)")
    return read_input(path, MAX_LENGTH)


def check_log(path: str) -> None:
    """--log is appended to after the run: find out now, not after minutes of coding, that it
    cannot be (nothing is created here)."""
    if os.path.isfile(path):
        try:
            with open(path, "a"):
                pass
        except OSError as e:
            raise storage_error("log ", path, e) from None
    else:
        check_output(path, force=True)


def n_params(cfg) -> int:
    from shared.core.model import GPT  # after activate(): the profile is pinned first
    return sum(p.numel() for p in GPT(cfg.model, cfg.seed).parameters())


def main(argv=None):
    ap = ScriptParser("tune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file", default=None, help=f"the input (default: {DEFAULT_FILE}, outside the repository)")
    ap.add_argument("--bytes", type=count, default=200_000, help="first N bytes of the file (0 = all)")
    ap.add_argument("--offset", type=count, default=0, help="skip this many bytes of the file first")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="overrides: model.n_embd=96 train.lr=3e-3 streams=32 ...")
    ap.add_argument("--decode", action="store_true", help="also decompress, check and time it")
    ap.add_argument("--profile", default="portable", choices=("portable", "native"))
    ap.add_argument("--log", type=path_name("a file name"), default=None,
                    help="append the JSON result line to this file")
    ap.add_argument("--tag", default="")
    args = ap.parse_args(argv)
    path = str(DEFAULT_FILE) if args.file is None else args.file
    try:                                    # every refusal before the run, none after it
        cfg = apply_overrides(preset(args.preset), args.set)
        if args.log:
            check_log(args.log)
        whole = read_file(path, args.file is None)
    except MarslinkError as e:
        print(f"tune: error: {e}", file=sys.stderr)
        return 2
    data = whole[args.offset:]
    if args.bytes:
        data = data[:args.bytes]
    if not data:
        where = f"--offset {args.offset:,} is at or past its end" if whole else "it is empty"
        print(f"tune: error: nothing to code: {path} has {len(whole):,} bytes and {where}; give a smaller "
              f"--offset or another --file", file=sys.stderr)
        return 2

    numeric.activate(args.profile)
    # after activate(): the profile is pinned first (numpy too reads its BLAS thread count at import)
    from shared.coding.codec import compress, decompress
    from shared.coding.container import parse

    out = {"tag": args.tag, "file": Path(path).name, "bytes": len(data), "profile": args.profile,
           "preset": args.preset, "set": args.set, "params": n_params(cfg)}
    blob, stats = compress(data, cfg)
    out.update({"compressed_bytes": len(blob), "bits_per_byte": len(blob) * 8 / len(data),
                "bits_per_byte_ideal": stats["ideal_bits"] / len(data),
                "compress_bytes_per_second": stats["bytes_per_second"], "compress_seconds": stats["seconds"],
                "stored_chunks": stats.get("stored_chunks"), "steps": stats["steps"]})
    if args.decode:
        back, dstats = decompress(parse(blob))
        if back != data:
            raise SystemExit("tune: error: the round trip did not give the input back")
        out.update({"decompress_bytes_per_second": dstats["bytes_per_second"],
                    "decompress_seconds": dstats["seconds"]})
    line = json.dumps(out)
    print(line)
    if args.log:
        try:
            with open(args.log, "a") as f:
                f.write(line + "\n")
        except OSError as e:
            print(f"tune: error: {storage_error('log ', args.log, e, 'add the line above to it')}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
