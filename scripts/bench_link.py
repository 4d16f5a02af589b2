"""Live link vs file mode on the same input (part of `make bench`).

    .venv/bin/python scripts/bench_link.py [--preset default] [--input FILE]

Runs `alice compress` once, then `bob listen` + `alice send` over TCP loopback, each side a
separate OS process, and compares the codec's own clocks (stats "seconds": from the start of
coding to the verified end, torch start-up excluded; the report's sizing of the trained state
comes after that clock stops). Writes bench-results/link.json.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from scripts.common import ScriptParser, child_env, free_endpoint, out_folder  # noqa: E402
from shared.core.config import PRESETS  # noqa: E402


def run(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=child_env(), **kw)


def main(argv: list[str] | None = None):
    ap = ScriptParser("bench_link", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="default", choices=PRESETS)
    ap.add_argument("--input", default=str(ROOT / "shared" / "texts" / "mission_log.txt"))
    ap.add_argument("--out", default=str(ROOT / "bench-results"))
    args = ap.parse_args(argv)
    if not Path(args.input).is_file() or not os.access(args.input, os.R_OK):
        ap.error(f"--input {args.input!r} is not a file this user can read")
    out_folder(args.out, "bench_link")
    tmp = Path(tempfile.mkdtemp(prefix="marslink-bench-link-"))
    try:
        measure(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def finish(what: str, *procs) -> None:
    """Wait for `procs`; the first that fails ends the bench in one line, with its own last line."""
    for p in procs:
        err = p.communicate()[1]
        if p.returncode != 0:
            last = (err or "").strip().splitlines()[-1:] or [f"exit status {p.returncode}"]
            raise SystemExit(f"bench_link: error: {what} failed: {last[0]}")


def measure(args, tmp: Path):
    size = Path(args.input).stat().st_size

    p = run("sender", "compress", args.input, str(tmp / "c.mrs"), "--preset", args.preset, "-q",
            "--stats-json", str(tmp / "file.json"), stderr=subprocess.PIPE, text=True)
    finish("file-mode compression", p)
    file_s = json.loads((tmp / "file.json").read_text())["seconds"]

    ep = free_endpoint()
    bob = run("receiver", "listen", "--bind", ep, "--out", str(tmp / "got"), "--preset", args.preset, "-q",
              "--stats-json", str(tmp / "bob.json"), stderr=subprocess.PIPE, text=True)
    alice = None
    try:
        time.sleep(4)                               # let Bob import torch and bind first (Alice retries anyway)
        alice = run("sender", "send", args.input, "--connect", ep, "--preset", args.preset, "-q",
                    "--state-dir", str(tmp / "state"), "--stats-json", str(tmp / "alice.json"),
                    stderr=subprocess.PIPE, text=True)
        finish("the stream", alice, bob)
    finally:
        for proc in (alice, bob):                   # a failed side leaves no process behind
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    if (tmp / "got").read_bytes() != Path(args.input).read_bytes():
        raise SystemExit("bench_link: error: Bob's output differs from the input; run `make test`")
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
