"""Live link vs file mode on the same input (part of `make bench`).

    .venv/bin/python scripts/bench_link.py [--preset default] [--input FILE]

Runs `alice compress` once, then `bob listen` + `alice send` over TCP loopback, each side a
separate OS process, and compares the codec's own clocks (stats "seconds": from the start of
coding to the verified end, torch start-up excluded; the report's sizing of the trained state
comes after that clock stops). Writes bench-results/link.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from scripts.common import child_env, free_endpoint  # noqa: E402


def run(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=child_env(), **kw)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--input", default=str(ROOT / "shared" / "texts" / "mission_log.txt"))
    ap.add_argument("--out", default=str(ROOT / "bench-results"))
    args = ap.parse_args()
    Path(args.out).mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="marslink-bench-link-"))
    try:
        measure(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure(args, tmp: Path):
    size = Path(args.input).stat().st_size

    p = run("sender", "compress", args.input, str(tmp / "c.mrs"), "--preset", args.preset, "-q",
            "--stats-json", str(tmp / "file.json"))
    assert p.wait() == 0, "file-mode compression failed"
    file_s = json.loads((tmp / "file.json").read_text())["seconds"]

    ep = free_endpoint()
    bob = run("receiver", "listen", "--bind", ep, "--out", str(tmp / "got"), "--preset", args.preset, "-q",
              "--stats-json", str(tmp / "bob.json"), stderr=subprocess.PIPE, text=True)
    time.sleep(4)                                   # let Bob import torch and bind first
    alice = run("sender", "send", args.input, "--connect", ep, "--preset", args.preset, "-q",
                "--state-dir", str(tmp / "state"), "--stats-json", str(tmp / "alice.json"))
    assert alice.wait() == 0 and bob.wait() == 0, "stream failed"
    assert (tmp / "got").read_bytes() == Path(args.input).read_bytes()
    alice_stats = json.loads((tmp / "alice.json").read_text())
    link_s = alice_stats["seconds"]
    result = {"input": args.input, "input_bytes": size, "preset": args.preset,
              "file_mode_compress_seconds": round(file_s, 2), "stream_seconds_to_verified_done": round(link_s, 2),
              "stream_over_file_ratio": round(link_s / file_s, 3),
              "file_mode_bytes_per_second": round(size / file_s), "stream_bytes_per_second": round(size / link_s)}
    (Path(args.out) / "link.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
