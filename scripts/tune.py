"""Experiment harness for the presets: bits/byte and speed of one RunConfig, in one process.

It runs the real thing: shared.coding.codec.compress (and with --decode, decompress), the real
arithmetic coder and token-by-token prediction, so it gives honest bytes/s for one core.
Sweeps and what they found are in docs/results.md.

Examples (run from the repository root):
  .venv/bin/python scripts/tune.py --preset default --bytes 200000
  .venv/bin/python scripts/tune.py --preset default --set model.n_embd=64 train.lr=3e-3
  .venv/bin/python scripts/tune.py --preset default --decode --bytes 100000     # decode speed too
  .venv/bin/python scripts/tune.py --preset default --file shared/texts/mission_log.txt
Every run prints one JSON line (and appends it to --log if given).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from shared.core import numeric  # noqa: E402  (torch-free: it pins the profile torch will load with)
from shared.core.config import preset  # noqa: E402

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


def apply_overrides(cfg, sets: list[str]):
    for item in sets:
        key, _, value = item.partition("=")
        value = parse_value(value)
        if key.startswith("model."):
            cfg = replace(cfg, model=replace(cfg.model, **{key[6:]: value}))
        elif key.startswith("train."):
            cfg = replace(cfg, train=replace(cfg.train, **{key[6:]: value}))
        else:
            cfg = replace(cfg, **{key: value})
    return cfg.validate()


def n_params(cfg) -> int:
    from shared.core.model import GPT  # after activate(): the profile is pinned first
    return sum(p.numel() for p in GPT(cfg.model, cfg.seed).parameters())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file", default=str(DEFAULT_FILE))
    ap.add_argument("--bytes", type=int, default=200_000, help="first N bytes of the file (0 = all)")
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="overrides: model.n_embd=96 train.lr=3e-3 streams=32 ...")
    ap.add_argument("--decode", action="store_true", help="also decompress, check and time it")
    ap.add_argument("--profile", default="portable", choices=("portable", "native"))
    ap.add_argument("--log", default=None, help="append the JSON result line to this file")
    ap.add_argument("--tag", default="")
    args = ap.parse_args(argv)

    numeric.activate(args.profile)
    # after activate(): the profile is pinned first (numpy too reads its BLAS thread count at import)
    from shared.coding.codec import compress, decompress
    from shared.coding.container import parse

    data = Path(args.file).read_bytes()[args.offset:]
    if args.bytes:
        data = data[:args.bytes]
    cfg = apply_overrides(preset(args.preset), args.set)
    out = {"tag": args.tag, "file": Path(args.file).name, "bytes": len(data), "profile": args.profile,
           "preset": args.preset, "set": args.set, "params": n_params(cfg)}
    blob, stats = compress(data, cfg)
    out.update({"compressed_bytes": len(blob), "bits_per_byte": len(blob) * 8 / len(data),
                "bits_per_byte_ideal": stats["ideal_bits"] / len(data),
                "compress_bytes_per_second": stats["bytes_per_second"], "compress_seconds": stats["seconds"],
                "stored_chunks": stats.get("stored_chunks"), "steps": stats["steps"]})
    if args.decode:
        back, dstats = decompress(parse(blob))
        if back != data:
            raise SystemExit("tune.py: the round trip did not give the input back")
        out.update({"decompress_bytes_per_second": dstats["bytes_per_second"],
                    "decompress_seconds": dstats["seconds"]})
    line = json.dumps(out)
    print(line)
    if args.log:
        with open(args.log, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
