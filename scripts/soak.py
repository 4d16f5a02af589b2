"""Soak benchmark (not part of `make test`): one long live stream over a lossy loopback link,
watching both processes' memory.

    .venv/bin/python scripts/soak.py --mbytes 20 --preset tiny

Passes when the output is byte-exact and each side's resident memory grows less than 10% from
the first quarter of the run to the last. Writes bench-results/soak.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from scripts.common import child_env, free_endpoint  # noqa: E402
from scripts.make_mission_log import mission_log  # noqa: E402


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def soak_input(n: int) -> bytes:
    """Varied text with a little random binary mixed in (exercises the stored escape)."""
    text = mission_log(n, seed=7).encode()
    rng = __import__("random").Random(3)
    blocks = bytearray(text)
    for _ in range(max(1, n // 2_000_000)):
        at = rng.randrange(0, max(1, n - 20_000))
        blocks[at:at + 16_384] = rng.randbytes(16_384)
    return bytes(blocks[:n])


def quarter_growth(samples: list[tuple[float, int]]) -> float:
    k = max(1, len(samples) // 4)
    first = sum(v for _, v in samples[:k]) / k
    last = sum(v for _, v in samples[-k:]) / k
    return (last - first) / first


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mbytes", type=float, default=20.0)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--loss", type=float, default=0.02, help="drop, duplicate and reorder probability each")
    ap.add_argument("--out", default=str(ROOT / "bench-results"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    work = out / "soak-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    src, dst = work / "in.bin", work / "out.bin"
    src.write_bytes(soak_input(int(args.mbytes * 1_000_000)))
    ep = free_endpoint()
    env = child_env()
    py = sys.executable
    common = ["--preset", args.preset, "--timeout", "60", "-q"]
    bob = subprocess.Popen([py, "-m", "receiver", "listen", "--bind", ep, "--out", str(dst),
                            "--stats-json", str(work / "bob.json"), *common], env=env)
    alice = subprocess.Popen([py, "-m", "sender", "send", str(src), "--connect", ep, "--state-dir", str(work / "state"),
                              "--stats-json", str(work / "alice.json"), "--fault-drop", str(args.loss),
                              "--fault-dup", str(args.loss), "--fault-reorder", str(args.loss), *common], env=env)
    started = time.time()
    series = {"alice": [], "bob": []}
    while alice.poll() is None or bob.poll() is None:
        spool = Path(str(dst) + ".partial") / "stream.bin"
        held = spool.stat().st_size if spool.exists() else 0
        for name, p in (("alice", alice), ("bob", bob)):
            kb = rss_kb(p.pid) if p.poll() is None else None
            if kb and held > 0:                  # measure the stream, not the start-up (imports)
                series[name].append((round(time.time() - started, 1), kb))
        print(f"\r{time.time() - started:7.0f} s  coded bytes received {held:,}  "
              f"RSS alice {series['alice'][-1][1] if series['alice'] else 0:,} kB "
              f"bob {series['bob'][-1][1] if series['bob'] else 0:,} kB", end="", file=sys.stderr, flush=True)
        time.sleep(2.0)
    print(file=sys.stderr)
    ok = alice.returncode == 0 and bob.returncode == 0 and dst.read_bytes() == src.read_bytes()
    a = json.loads((work / "alice.json").read_text()) if ok else {}
    b = json.loads((work / "bob.json").read_text()) if ok else {}
    result = {
        "ok": ok, "input_bytes": src.stat().st_size, "seconds": round(time.time() - started, 1),
        "preset": args.preset, "fault_probability_each": args.loss,
        "frames_sent": a.get("frames_sent"), "frames_resent": a.get("frames_resent"),
        "duplicates_dropped_by_bob": b.get("duplicates"), "out_of_order_buffered_by_bob": b.get("out_of_order"),
        "bits_per_byte": (a["compressed_bytes"] * 8 / a["input_bytes"]) if a else None,
        "rss_kb": {k: {"first_quarter_mean": None, "last_quarter_mean": None} for k in series},
        "growth_first_to_last_quarter": {k: round(quarter_growth(v), 4) for k, v in series.items() if v},
        "peak_rss_kb": {k: max(x for _, x in v) for k, v in series.items() if v},
        "samples": series,
    }
    for k, v in series.items():
        q = max(1, len(v) // 4)
        result["rss_kb"][k] = {"first_quarter_mean": sum(x for _, x in v[:q]) // q,
                               "last_quarter_mean": sum(x for _, x in v[-q:]) // q}
    (out / "soak.json").write_text(json.dumps(result, indent=1))
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=1))
    flat = all(g < 0.10 for g in result["growth_first_to_last_quarter"].values())
    sys.exit(0 if ok and flat else 1)


if __name__ == "__main__":
    main()
