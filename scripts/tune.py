"""Experiment harness for the presets: bits/byte and speed of one RunConfig, in one process.

Two modes:
  real      the real thing: shared.codec.compress (and with --decode, decompress), real
            arithmetic coder, token-by-token prediction. Gives honest bytes/s for one core.
  estimate  bits/byte only, ~3x cheaper: each step's bits come from the training forward pass
            on the window (before the update), which is the same prediction the coder uses up
            to float rounding (|difference| < 0.001 bits/byte). Use it to sweep ratio knobs,
            then confirm the winners in `real` mode. GPT-only configurations: it refuses a
            preset with n-gram or match contexts (every preset today), whose counts it does
            not model.

Examples (run from the repository root):
  .venv/bin/python scripts/tune.py --preset default --bytes 200000
  .venv/bin/python scripts/tune.py --preset default --set model.n_embd=96 train.lr=3e-3 \
      'model.orders=()' model.words=0 model.match=0 --mode estimate --bytes 1115394   # GPT alone
  .venv/bin/python scripts/tune.py --preset default --decode --bytes 100000     # decode speed too
  .venv/bin/python scripts/tune.py --preset default --file shared/texts/mission_log.txt

Prototypes of engine changes (estimate mode only; they are not in the engine):
  --schedule warmup:N     linear learning-rate warmup over the first N steps
  --schedule cosine:F     lr decays along a cosine to F*lr at the end of the file
  --schedule inv:K        lr * 1/sqrt(1 + step/K)
  --tied                  output layer shares the token embedding's weights (wte[:256])
  --replay N              after each step, N extra steps, each on `streams` (or --replay-rows)
                          windows drawn at random from the history both sides already have
                          (also in real mode: a Twin subclass, coded and decoded for real)
  --mix K                 add K such history windows to every step's own batch (one step)
Every run prints one JSON line (and appends it to --log if given).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
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
    from shared.config import ModelConfig, TrainConfig  # noqa: F401
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
    from shared.model import GPT
    return sum(p.numel() for p in GPT(cfg.model, cfg.seed).parameters())


def lr_factor(schedule: str | None, step: int, n_steps: int) -> float:
    if not schedule:
        return 1.0
    kind, _, arg = schedule.partition(":")
    a = float(arg) if arg else 0.0
    if kind == "warmup":
        return min(1.0, (step + 1) / a)
    if kind == "cosine":
        return a + (1 - a) * 0.5 * (1 + math.cos(math.pi * step / max(1, n_steps)))
    if kind == "inv":
        return 1.0 / math.sqrt(1.0 + step / a)
    raise SystemExit(f"unknown schedule {schedule!r}")


def tie_embeddings(model):
    """Prototype: lm_head uses wte.weight[:256] (the PAD row stays input-only)."""
    import torch.nn as nn
    import torch.nn.functional as F

    class TiedHead(nn.Module):
        def __init__(self, wte):
            super().__init__()
            self._wte = [wte]          # a list: not registered as a submodule (no double parameters)

        def forward(self, x):
            return F.linear(x, self._wte[0].weight[:256])
    model.lm_head = TiedHead(model.wte)
    return model


def replay_twin_class(replay: int):
    """Prototype of the replay engine change as a Twin subclass, for real (coded, decoded) runs.

    After the usual step on the chunk just coded, take `replay` more optimizer steps, each on
    `streams` windows of context+chunk tokens drawn from the history both sides already have.
    The draws come from PCG64([seed, step]): no generator state to keep, checkpoint-safe.
    Both sides keep the history here (a (streams, width) array filled as chunks are coded).
    """
    import numpy as np
    import torch
    from shared.config import PAD
    from shared.engine import Twin
    from shared.model import loss_on

    class ReplayTwin(Twin):
        def __init__(self, config, length, data=None, sink=None):
            super().__init__(config, length, data, sink)
            self.history = np.full((config.streams, self.layout.n_steps * config.model.chunk), PAD,
                                   dtype=np.int64)

        def _learn(self, t0):
            C, T = self.config.model.context, self.config.model.chunk
            self.history[:, t0:t0 + T] = self.window[:, C:]
            loss = super()._learn(t0)
            if replay and t0 > 0:
                W = C + T
                known = np.minimum(self.layout.lens, t0)
                cand = np.flatnonzero(known > 0)
                tc = self.config.train
                for r in range(replay):
                    rng = np.random.Generator(np.random.PCG64([self.config.seed, self.step, r]))
                    k = self.config.streams
                    b = cand[rng.integers(0, len(cand), k)]
                    ends = rng.integers(1, known[b] + 1)
                    ws = np.full((k, W), PAD, dtype=np.int64)
                    for i in range(k):
                        seg = self.history[b[i], max(ends[i] - W, 0):ends[i]]
                        ws[i, W - len(seg):] = seg
                    ts = ws[:, 1:].copy()
                    ts[(ends[:, None] - W + 1 + np.arange(W - 1)[None, :]) < 0] = -1
                    rl = loss_on(self.model, torch.from_numpy(ws[:, :-1].copy()), torch.from_numpy(ts))
                    self.opt.zero_grad(set_to_none=True)
                    rl.backward()
                    if tc.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip, foreach=False)
                    self.opt.step()
            return loss

    return ReplayTwin


def estimate(data: bytes, cfg, schedule: str | None = None, report_every: int = 0, tied: bool = False,
             replay: int = 0, replay_mode: str = "random", replay_rows: int = 0, mix: int = 0):
    """Bits from the (pre-update) training forward on every chunk, then the same update as _learn."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from shared.config import VOCAB
    from shared.engine import Twin

    from shared.model import make_optimizer
    twin = Twin(cfg, len(data), data)
    if tied:
        tie_embeddings(twin.model)
        twin.opt = make_optimizer(twin.model, cfg.train)
    C, T = cfg.model.context, cfg.model.chunk
    tc = cfg.train
    rng = np.random.Generator(np.random.PCG64(cfg.seed + 99))
    from shared.config import PAD
    layout = twin.layout
    width = layout.n_steps * T
    rows = layout.rows(data, 0, width)              # (streams, width), PAD past each row's end

    def window(start, stop):
        out = np.full((cfg.streams, stop - start), PAD, dtype=np.int64)
        lo = max(start, 0)
        out[:, lo - start:] = rows[:, lo:stop]
        return out

    def valid(start, stop):
        pos = np.arange(start, stop)
        return (pos[None, :] >= 0) & (pos[None, :] < layout.lens[:, None])
    W = C + T                                       # a training window: W tokens, W-1 targets

    def history(k, t0, rng):
        """k windows drawn uniformly from what both sides already know (positions < t0 of every row)."""
        known = np.minimum(layout.lens, t0)
        cand = np.flatnonzero(known > 0)
        b = cand[rng.integers(0, len(cand), k)]
        ends = rng.integers(1, known[b] + 1)        # exclusive end of the window
        ws = np.full((k, W), PAD, dtype=np.int64)
        ts = np.full((k, W - 1), -1, dtype=np.int64)
        for i in range(k):
            lo = ends[i] - W
            seg = rows[b[i], max(lo, 0):ends[i]]
            ws[i, W - len(seg):] = seg
        ts[:] = ws[:, 1:]
        pos = ends[:, None] - W + 1 + np.arange(W - 1)[None, :]
        ts[pos < 0] = -1
        return ws, ts

    def train_on(inp, tgt):
        loss = F.cross_entropy(twin.model(torch.from_numpy(inp)).reshape(-1, VOCAB),
                               torch.from_numpy(tgt).reshape(-1), ignore_index=-1)
        twin.opt.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(twin.model.parameters(), tc.grad_clip, foreach=False)
        twin.opt.step()

    base_lr = [g["lr"] for g in twin.opt.param_groups]
    bits_total, curve = 0.0, []
    for step in range(twin.n_steps):
        t0 = step * T
        win = window(t0 - C, t0 + T)
        targets = win[:, 1:].copy()
        inputs = win[:, :-1]
        mask = valid(t0 - C + 1, t0 + T)
        # coded positions: the chunk's T tokens, i.e. targets at columns C-1 .. C+T-2
        coded = np.zeros_like(mask)
        coded[:, C - 1:] = mask[:, C - 1:]
        # the very first token of every stream is predicted from PAD context too
        if not tc.loss_on_context:
            mask[:, :C - 1] = False
        x = torch.from_numpy(inputs)
        logits = twin.model(x)
        logp = F.log_softmax(logits.float(), -1)
        y = torch.from_numpy(np.where(coded, targets, 0))
        lp = logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)
        chunk_bits = float(-(lp.detach()[torch.from_numpy(coded)]).sum()) / math.log(2)
        # the first token of the stream (position 0) is coded from the all-PAD window
        bits_total += chunk_bits
        yt = torch.from_numpy(np.where(mask, targets, -1))
        f = lr_factor(schedule, step, twin.n_steps)
        for g, lr in zip(twin.opt.param_groups, base_lr):
            g["lr"] = lr * f
        if mix and step > 0:
            hw, ht = history(mix, t0, np.random.Generator(np.random.PCG64([cfg.seed, step, 99])))
            logits = twin.model(torch.from_numpy(np.concatenate([inputs, hw[:, :-1]])))
            yt = torch.from_numpy(np.concatenate([np.where(mask, targets, -1), ht]))
        for k in range(tc.steps_per_chunk):
            if k:
                logits = twin.model(x)
            loss = F.cross_entropy(logits.reshape(-1, VOCAB), yt.reshape(-1), ignore_index=-1)
            twin.opt.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(twin.model.parameters(), tc.grad_clip, foreach=False)
            twin.opt.step()
        for r in range(replay if step > 0 else 0):
            if replay_mode == "chunk":
                s0 = int(rng.integers(0, step)) * T          # an earlier chunk of every row, same shape
                w = window(s0 - C, s0 + T)
                rt = w[:, 1:].copy()
                rt[~valid(s0 - C + 1, s0 + T)] = -1
            else:
                w, rt = history(replay_rows or cfg.streams, t0,
                                np.random.Generator(np.random.PCG64([cfg.seed, step, r])))
            train_on(w[:, :-1], rt)
        if report_every and (step + 1) % report_every == 0:
            done = min(len(data), int(layout.lens.clip(max=t0 + T).sum()))
            curve.append((done, bits_total / done))
            print(f"  step {step + 1}/{twin.n_steps}: {bits_total / done:.4f} bits/byte", file=sys.stderr)
    return {"ideal_bits": bits_total, "bits_per_byte_ideal": bits_total / len(data), "steps": twin.n_steps,
            "curve": curve}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file", default=str(DEFAULT_FILE))
    ap.add_argument("--bytes", type=int, default=200_000, help="first N bytes of the file (0 = all)")
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="overrides: model.n_embd=96 train.lr=3e-3 streams=32 ...")
    ap.add_argument("--mode", choices=("real", "estimate"), default="real")
    ap.add_argument("--decode", action="store_true", help="real mode: also decompress and time it")
    ap.add_argument("--profile", default="portable", choices=("portable", "native"))
    ap.add_argument("--schedule", default=None, help="estimate mode: lr schedule prototype")
    ap.add_argument("--tied", action="store_true", help="estimate mode: tied embeddings prototype")
    ap.add_argument("--replay", type=int, default=0, help="estimate mode: replay steps per step prototype")
    ap.add_argument("--replay-mode", choices=("random", "chunk"), default="random",
                    help="replay windows: random (row, position) each, or one earlier chunk of every row")
    ap.add_argument("--replay-rows", type=int, default=0, help="windows per replay step (default: streams)")
    ap.add_argument("--mix", type=int, default=0, help="estimate mode: add N random history windows to each step's batch")
    ap.add_argument("--report-every", type=int, default=0, help="estimate mode: print bpb every N steps")
    ap.add_argument("--log", default=None, help="append the JSON result line to this file")
    ap.add_argument("--tag", default="")
    args = ap.parse_args(argv)

    from shared import numeric
    numeric.activate(args.profile)
    from shared.config import preset

    data = Path(args.file).read_bytes()[args.offset:]
    if args.bytes:
        data = data[:args.bytes]
    cfg = apply_overrides(preset(args.preset), args.set)
    out = {"tag": args.tag, "file": Path(args.file).name, "bytes": len(data), "mode": args.mode,
           "profile": args.profile, "preset": args.preset, "set": args.set, "schedule": args.schedule, "tied": args.tied, "replay": args.replay,
           "replay_mode": args.replay_mode, "replay_rows": args.replay_rows, "mix": args.mix,
           "params": n_params(cfg), "config": cfg.to_dict()}
    started = time.perf_counter()
    if args.mode == "estimate":
        if cfg.model.n_contexts:   # its forward pass has no n-gram counts: it would measure another model
            raise SystemExit(f"tune.py: --mode estimate models the GPT alone, but preset {args.preset!r} also "
                             f"mixes {cfg.model.n_contexts} n-gram/match contexts; use --mode real "
                             f"(or --set 'model.orders=()' model.words=0 model.match=0)")
        out.update(estimate(data, cfg, args.schedule, args.report_every, args.tied, args.replay,
                            args.replay_mode, args.replay_rows, args.mix))
        out["seconds"] = time.perf_counter() - started
        out["bytes_per_second_estimate_mode"] = len(data) / out["seconds"]
    else:
        if args.schedule or args.tied or args.mix:
            raise SystemExit("--schedule, --tied and --mix are prototypes for --mode estimate only")
        import shared.codec
        if args.replay:        # the prototype, end to end: Alice and Bob both run ReplayTwin
            shared.codec.Twin = replay_twin_class(args.replay)
        from shared.codec import compress, decompress
        from shared.container import parse
        blob, stats = compress(data, cfg)
        out.update({"compressed_bytes": len(blob), "bits_per_byte": len(blob) * 8 / len(data),
                    "bits_per_byte_ideal": stats["ideal_bits"] / len(data),
                    "compress_bytes_per_second": stats["bytes_per_second"], "compress_seconds": stats["seconds"],
                    "stored_chunks": stats.get("stored_chunks"), "steps": stats["steps"]})
        if args.decode:
            back, dstats = decompress(parse(blob))
            assert back == data
            out.update({"decompress_bytes_per_second": dstats["bytes_per_second"],
                        "decompress_seconds": dstats["seconds"]})
    out.pop("config")
    line = json.dumps(out)
    print(line)
    if args.log:
        with open(args.log, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
