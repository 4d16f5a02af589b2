"""End-of-run report: a PNG and a self-contained HTML page from Alice's and Bob's stats.

    python -m shared.show.report --alice alice.json --bob bob.json --input FILE --out DIR [--relay relay.json]

What it shows, all measured:

  * Alice's and Bob's per-step bits/byte (the coding loss) and training loss, overlaid: they are
    computed by two processes from their own models and must be identical;
  * cumulative coded bits against the raw size and against gzip -9, bzip2 -9 and xz -9e run on
    the same input (their final sizes: they are not streaming the same way);
  * the description-length ledger: coded size = area under the loss curve (sum of -log2 p, the
    "ideal bits") + arithmetic-coder overhead; beside it the program both sides already hold
    (every module of the lockstep core + the coder, gzip -9; never sent) and what sending the
    trained state instead would cost, row by row, raw and gzip -9 (shared/show/ledger.py; the
    state is measured from each side's twin at the end of its run and comes in its stats).

The same page comes from file mode's stats (`alice compress` / `bob decompress --stats-json`,
segmented or not): there are no per-step curves, so it compares each segment's twin instead,
adds the container header (config, sync digests, segment table) to the ledger, and counts the
program once however many twins ran it.

Torch-free; matplotlib (the `report` extra) draws the PNG.
"""
from __future__ import annotations

import base64
import gzip
import html
import json
import logging
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .ledger import PROGRAM, ROOT, STATE_COMPRESSOR, program_size
from .telemetry import earned

SOURCE_DIRS = ("shared", "sender", "receiver", "protocol")
STATE_COLOURS = ("#8c564b", "#e377c2", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a")
COMPRESSORS = (   # -n: gzip leaves the file name out, so the size is the data's alone
    ("gzip -9", ["gzip", "-9", "-c", "-n"]), ("bzip2 -9", ["bzip2", "-9", "-c"]), ("xz -9e", ["xz", "-9e", "-c"]))


def compressor_sizes(path: str) -> dict[str, int]:
    """Sizes of the input compressed by the classic tools (run as programs on the file itself)."""
    out = {}
    for name, cmd in COMPRESSORS:
        if shutil.which(cmd[0]) is None:
            continue
        r = subprocess.run([*cmd, path], capture_output=True, check=True)
        out[name] = len(r.stdout)
    return out


def source_size(root: Path = ROOT) -> dict:
    """All of marslink's Python source (CLIs, link, dashboards too), raw and gzip -9."""
    files = sorted(p for d in SOURCE_DIRS for p in (root / d).rglob("*.py"))
    blob = b"".join(p.read_bytes() for p in files)
    return {"files": len(files), "bytes": len(blob), "gzip_bytes": len(gzip.compress(blob, 9, mtime=0))}


def _series(stats: dict, key: str) -> dict[int, float | None]:
    return {int(row[0]): row[1] for row in stats.get(key, [])}


def is_file_mode(stats: dict) -> bool:
    """Stats of `alice compress` / `bob decompress` (a container, no link): no per-step curves."""
    return "compressed_bytes" in stats and "curve" not in stats


def segment_rows(stats: dict) -> list[dict]:
    """File mode's per-segment rows; an older or one-twin stats file is one segment, the whole."""
    return stats.get("segment_stats") or [{"segment": 0, "input_bytes": stats.get("input_bytes"),
                                           "payload_bytes": stats.get("payload_bytes"),
                                           "final_digest": stats.get("final_digest")}]


def segment_bpb(row: dict) -> float | None:
    """A segment's coded bits per byte of its input (its payload only: the header is the file's)."""
    return row["payload_bytes"] * 8 / row["input_bytes"] if row.get("input_bytes") else None


def summarize(alice: dict, bob: dict, input_path: str, relay: dict | None = None) -> dict:
    from ..app.files import shown            # the app layer's, loaded only for a report
    data = Path(input_path).read_bytes()
    n = len(data)
    for who, stats in (("Alice", alice), ("Bob", bob)):       # another file's numbers would be wrong ones
        if stats.get("input_bytes") not in (None, n):
            raise ValueError(f"input {input_path!r} has {n:,} bytes, but {who}'s statistics are of "
                             f"{stats['input_bytes']:,}; give the input that was sent")
    payload = int(alice["payload_bytes"])
    ideal = float(alice["ideal_bits"])
    params = alice.get("parameters") or bob.get("parameters")
    file_mode = is_file_mode(alice) and is_file_mode(bob)
    segs_a, segs_b = (segment_rows(x) for x in (alice, bob))
    return {
        "mode": "file" if file_mode else "link",
        # file mode: the container around the payload, and the twins (one per segment) compared
        "compressed_bytes": alice.get("compressed_bytes"), "header_bytes": alice.get("header_bytes"),
        "segments": len(segs_a) if file_mode else None, "segment_size": alice.get("segment_size"),
        "workers": alice.get("workers"),
        "segment_digests_equal": ([a.get("final_digest") for a in segs_a] == [b.get("final_digest") for b in segs_b]
                                  if file_mode else None),
        "input": shown(os.path.basename(input_path)), "input_bytes": n,   # a name not in UTF-8: its bytes as \xNN
        "alice_input_bytes": alice.get("input_bytes"), "bob_output_bytes": bob.get("input_bytes"),
        "payload_bytes": payload, "payload_bits": payload * 8, "ideal_bits": ideal,
        "coder_overhead_bits": payload * 8 - ideal,
        "bits_per_byte": payload * 8 / n if n else 0.0,
        "earned": earned(alice),
        "wire_bytes": alice.get("wire_bytes"),
        "steps": alice.get("steps"), "preset": alice.get("preset"),
        "final_digest_alice": alice.get("final_digest"), "final_digest_bob": bob.get("final_digest"),
        "digests_equal": alice.get("final_digest") == bob.get("final_digest"),
        "curves_equal": None if file_mode else alice.get("curve") == bob.get("curve") and bool(alice.get("curve")),
        "loss_curves_equal": None if file_mode else alice.get("loss_curve") == bob.get("loss_curve"),
        "syncs_checked": bob.get("syncs_checked"),
        "seconds_alice": alice.get("seconds"), "seconds_bob": bob.get("seconds"),
        "frames_resent": alice.get("frames_resent"), "duplicates": bob.get("duplicates"),
        "out_of_order": bob.get("out_of_order"),
        "parameters": params,
        # both twins size their own state: identical twins, identical rows
        "state": alice.get("state") or bob.get("state"), "state_equal": alice.get("state") == bob.get("state"),
        "state_bits": sum(r["gzip_bytes"] for r in alice["state"]) * 8 if alice.get("state") else None,
        "program": program_size(), "source": source_size(), "compressors": compressor_sizes(input_path),
        "relay": relay,
    }


def in_lockstep(s: dict) -> bool:
    """Did Bob follow Alice? Link: identical curves and final weights. File: every segment's
    twin ended with Alice's weights (and so the whole's digest)."""
    if s["mode"] == "file":
        return s["digests_equal"] and s["segment_digests_equal"]
    return s["digests_equal"] and s["curves_equal"] and s["loss_curves_equal"]


# --- the picture ----------------------------------------------------------------------------

def plot(alice: dict, bob: dict, s: dict, path: str) -> None:
    # The report draws a PNG with Agg whatever the user's matplotlib settings say: MPLBACKEND
    # names nothing it uses (a bad one stopped the import), and a config folder matplotlib
    # cannot write (a read-only HOME) is its own business, not two lines of warning here.
    os.environ.pop("MPLBACKEND", None)
    logging.getLogger("matplotlib").setLevel(logging.ERROR)
    import matplotlib  # optional: the `report` extra
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(13, 8.4), dpi=110)
    gs = fig.add_gridspec(2, 2, height_ratios=[1, 1], hspace=0.38, wspace=0.22)
    ax1, ax2 = fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[0, 1])
    bottom = gs[1, :].subgridspec(1, 2, width_ratios=[1.25, 1], wspace=0.04)
    ax3, ax4 = fig.add_subplot(bottom[0]), fig.add_subplot(bottom[1])
    fig.suptitle(f"marslink: {s['input']} ({s['input_bytes']:,} bytes, preset {s['preset']}) - "
                 f"{s['bits_per_byte']:.3f} bits/byte, final digests "
                 f"{'equal' if s['digests_equal'] else 'DIFFER'} ({(s['final_digest_bob'] or '')[:12]})",
                 fontsize=12, fontweight="bold")
    n = s["input_bytes"]
    if s["mode"] == "file":
        _segment_panels(ax1, ax2, alice, bob, s)
    else:
        _curve_panels(ax1, ax2, alice, bob, s)
    markers = {"gzip -9": "o", "bzip2 -9": "s", "xz -9e": "^"}
    ax2.plot([0, n], [0, n * 8 / 1000], color="grey", lw=1.2, ls="--", label="raw (8 bits/byte)")
    for name, size in s["compressors"].items():
        ax2.plot([n], [size * 8 / 1000], markers.get(name, "x"), ms=8, label=f"{name}: {size:,} B (whole file)")
    ax2.set_xlabel("bytes of input coded")
    ax2.set_ylabel("kbit")
    ax2.legend(fontsize=8, loc="upper left")
    ax2.grid(alpha=0.3)

    # 3. description-length ledger (kbit)
    rows = []
    stream = [(s["ideal_bits"], "area under the loss curve", "#1f77b4"),
              (max(s["coder_overhead_bits"], 0), "coder overhead", "#ff7f0e")]
    if s["mode"] == "file":
        stream.append((s["header_bytes"] * 8, "container header (config, digests, segment table)", "#2ca02c"))
    rows.append(("marslink file" if s["mode"] == "file" else "marslink stream", stream))
    rows.append(("+ program (never sent)", [(bits, None, colour) for bits, _, colour in stream] +
                 [(s["program"]["gzip_bytes"] * 8, f"the program ({PROGRAM}), gzip -9", "#9467bd")]))
    if s["state"]:
        rows.append((f"send state ({STATE_COMPRESSOR})",
                     [(r["gzip_bytes"] * 8, r["name"], colour) for r, colour in zip(s["state"], STATE_COLOURS)]))
    for name, size in s["compressors"].items():
        rows.append((name, [(size * 8, None, "#7f7f7f")]))
    rows.append(("raw", [(n * 8, None, "#c7c7c7")]))
    # The trained state is 100x the stream: on one linear axis the stream's bar is invisible.
    # So two panels: the left at the scale of what crosses a link (stream, compressors, raw),
    # where a longer bar runs off the edge with its total printed there, the right whole.
    near = 1.2 * max(sum(b for b, _, _ in parts) for name, parts in rows if name != "+ program (never sent)"
                     and not name.startswith("send state")) / 1000
    _ledger(ax3, rows, near)
    _ledger(ax4, rows, None)
    ax3.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=9)
    ax4.set_yticks(range(len(rows)), [""] * len(rows))
    ax3.set_title("Description length at the stream's scale (kbit)", fontsize=10)
    ax4.set_title("The same, whole: what crossed the link, what did not (kbit)", fontsize=10)
    ax4.legend(fontsize=7, loc="lower right")
    fig.subplots_adjust(left=0.13, right=0.97, top=0.9, bottom=0.07)
    fig.savefig(path)
    plt.close(fig)


def _curve_panels(ax1, ax2, alice: dict, bob: dict, s: dict) -> None:
    """Link mode: both sides' per-step curves (1), and the bits on the link as they went (2)."""
    for stats, who, style in ((alice, "Alice (Earth)", dict(lw=2.4, color="#1f77b4")),
                              (bob, "Bob (Mars)", dict(lw=1.2, ls="--", color="#d62728"))):
        c = sorted(_series(stats, "curve").items())
        ax1.plot([k for k, v in c if v is not None], [v for k, v in c if v is not None],
                 label=f"{who}: coded bits/byte", **style)
    for stats, who, style in ((alice, "Alice", dict(lw=1.6, color="#2ca02c", alpha=0.8)),
                              (bob, "Bob", dict(lw=1.0, ls=":", color="#000000"))):
        c = sorted(_series(stats, "loss_curve").items())
        ax1.plot([k for k, v in c if v is not None], [v / math.log(2) for k, v in c if v is not None],
                 label=f"{who}: training loss (bits)", **style)
    ax1.set_xlabel("step")
    ax1.set_ylabel("bits per byte")
    ax1.set_title("Alice and Bob: one loss curve, computed twice"
                  + (" (identical)" if in_lockstep(s) else " (DIFFERENT)"), fontsize=10)
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    wa = alice.get("wire_curve", [])
    ax2.plot([0] + [r[1] for r in wa], [0] + [r[2] * 8 / 1000 for r in wa], lw=2.4, color="#1f77b4",
             label="marslink: coded bits sent")
    ax2.set_title("Cumulative bits on the link vs raw and classic compressors", fontsize=10)


def _segment_panels(ax1, ax2, alice: dict, bob: dict, s: dict) -> None:
    """File mode: each segment's twin, Alice's bits/byte against Bob's (1), and the file as it
    grows, header first, then segment after segment (2)."""
    segs_a, segs_b = segment_rows(alice), segment_rows(bob)
    x = list(range(len(segs_a)))
    bpb = [segment_bpb(r) or 0.0 for r in segs_a]
    ax1.bar(x, bpb, color="#1f77b4", label="Alice: coded bits/byte of the segment")
    same = [a.get("final_digest") == b.get("final_digest") for a, b in zip(segs_a, segs_b)]
    ax1.plot([i for i, ok in zip(x, same) if ok], [v for v, ok in zip(bpb, same) if ok], "o", color="#2ca02c",
             label="Bob: the same final weights")
    if not all(same):
        ax1.plot([i for i, ok in zip(x, same) if not ok], [v for v, ok in zip(bpb, same) if not ok], "x", ms=10,
                 color="#d62728", label="Bob: other final weights")
    ax1.set_xticks(x)
    ax1.set_xlabel(f"segment ({s['segment_size']:,} bytes each)" if s.get("segment_size") else "segment")
    ax1.set_ylabel("bits per byte")
    ax1.set_title(f"{len(x)} twin(s), one per segment, each run by Alice and by Bob"
                  + (" (identical)" if in_lockstep(s) else " (DIFFERENT)"), fontsize=10)
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3, axis="y")
    done, bits = [0], [s["header_bytes"] * 8 / 1000]
    for r in segs_a:
        done.append(done[-1] + r["input_bytes"])
        bits.append(bits[-1] + r["payload_bytes"] * 8 / 1000)
    ax2.plot(done, bits, lw=2.4, color="#1f77b4", marker=".", label="marslink: the file (header, then segments)")
    ax2.set_title("The file segment by segment vs raw and classic compressors", fontsize=10)


def _ledger(ax, rows: list, xmax: float | None) -> None:
    """Stacked bars, one row per way of describing the data, each total printed at its end
    (at the right edge, with an arrow, when the bar runs past `xmax`)."""
    labelled = set()
    for i, (name, parts) in enumerate(rows):
        left = 0.0
        for bits, label, colour in parts:
            lab = label if label and label not in labelled else None
            if lab:
                labelled.add(lab)
            ax.barh(i, bits / 1000, left=left, color=colour, label=lab, edgecolor="white")
            left += bits / 1000
        if xmax is not None and left > xmax:
            ax.text(xmax, i, f"{left:,.1f} \u2192", va="center", ha="right", fontsize=8,
                    bbox=dict(facecolor="white", edgecolor="none", pad=1))
        else:
            ax.text(left, i, f" {left:,.1f}", va="center", fontsize=8)
    if xmax is not None:
        ax.set_xlim(0, xmax)
    else:
        ax.set_xlim(0, ax.get_xlim()[1] * 1.08)            # room for the largest total
    ax.invert_yaxis()
    ax.grid(alpha=0.3, axis="x")


# --- the page -------------------------------------------------------------------------------

def _table(headers: list[str], rows: list[list], attrs: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table {attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _f(x, digits: int = 1) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return f"{x:,}"


def page(alice: dict, bob: dict, s: dict, png: bytes) -> str:
    n = s["input_bytes"]
    file_mode = s["mode"] == "file"
    if file_mode:
        segs = s["segments"]
        sent_row = ["the file alice compress wrote (header included)",
                    f"{s['compressed_bytes']:,} bytes ({s['compressed_bytes'] * 8 / n:.3f} bits/byte), "
                    f"of which the header {s['header_bytes']:,}" if n else _f(s["compressed_bytes"])]
        lockstep_rows = [
            ["segments (one twin each)", f"{segs} of {_f(s['segment_size'])} bytes, run by {s['workers'] or 'n/a'}"],
            ["every segment's final weights equal (Alice / Bob)", "yes" if s["segment_digests_equal"] else "NO"],
            ["per-step curves equal (bits/byte and loss)", "n/a: file mode keeps no per-step curves"]]
    else:
        sent_row = ["bytes written to the link by Alice (frames, heartbeats, resends)", _f(s["wire_bytes"])]
        lockstep_rows = [["per-step curves equal (bits/byte and loss)",
                          "yes" if s["curves_equal"] and s["loss_curves_equal"] else "NO"]]
    summary = _table(["", "value"], [
        ["input", f"{s['input']} ({n:,} bytes)"],
        ["coded payload", f"{s['payload_bytes']:,} bytes = {s['payload_bits']:,} bits ({s['bits_per_byte']:.3f} bits/byte)"],
        sent_row,
        ["steps / preset", f"{s['steps']} / {s['preset']}"],
        ["final weight digest, Alice", s["final_digest_alice"]],
        ["final weight digest, Bob", s["final_digest_bob"]],
        ["digests equal", "yes" if s["digests_equal"] else "NO"],
        *lockstep_rows,
        ["sync digests Bob checked against Alice's", _f(s["syncs_checked"])],
        ["trained-state sizes equal (each side measured its own twin)",
         ("yes" if s["state_equal"] else "NO") if s["state"] else "n/a"],
        ["frames Alice resent / duplicates Bob dropped / out of order", f"{_f(s['frames_resent'])} / "
                                                                          f"{_f(s['duplicates'])} / {_f(s['out_of_order'])}"],
        ["seconds (Alice / Bob)", f"{_f(s['seconds_alice'])} / {_f(s['seconds_bob'])}"],
    ], 'id="summary"')
    comp_rows = [["marslink (coded payload)", f"{s['payload_bytes']:,}", f"{s['bits_per_byte']:.3f}"]]
    if file_mode:
        comp_rows.append(["marslink (the whole file, header included)", f"{s['compressed_bytes']:,}",
                          f"{s['compressed_bytes'] * 8 / n:.3f}" if n else "n/a"])
    for name, size in s["compressors"].items():
        comp_rows.append([name, f"{size:,}", f"{size * 8 / n:.3f}" if n else "n/a"])
    comp_rows.append(["raw", f"{n:,}", "8.000"])
    comp = _table(["method", "bytes", "bits/byte"], comp_rows, 'id="compressors"')
    earned_table = _table(["what this run would have cost under", "bits/byte"],
                          [[label, "n/a (not in this preset)" if v is None else f"{v:.3f}"] for label, v in s["earned"]],
                          'id="earned"')
    p, src = s["program"], s["source"]
    ledger_rows = [
        ["area under the loss curve", _f(s["ideal_bits"]), "sum over every byte of -log2 p(byte), as both models predicted it"],
        ["+ arithmetic-coder overhead", _f(s["coder_overhead_bits"]), "payload x 8 - ideal bits (flags, rounding, final bits)"],
        ["= coded payload", f"{s['payload_bits']:,}",
         f"the {s['segments']} segment(s)' streams, end to end" if file_mode
         else "what crossed the link, apart from framing"],
    ]
    if file_mode:
        ledger_rows += [
            ["+ container header", f"{s['header_bytes'] * 8:,}",
             f"the preset and seed, the sync digests and the segment table ({s['segments']} row(s))"],
            ["= the file", f"{s['compressed_bytes'] * 8:,}", "what alice compress wrote"]]
    ledger_rows += [
        [f"the program ({PROGRAM})", f"{p['gzip_bytes'] * 8:,}",
         f"{len(p['files'])} files, {p['bytes']:,} bytes, gzip -9 to {p['gzip_bytes']:,}: every module of the "
         "lockstep core and the arithmetic coder; both sides have it, never sent (torch, numpy and Python "
         "itself not counted)" + (f"; counted once, though {s['segments']} twins ran it" if file_mode
                                  and s["segments"] > 1 else "")],
        ["all of marslink's source", f"{src['gzip_bytes'] * 8:,}",
         f"{src['files']} Python files, {src['bytes']:,} bytes, gzip -9 to {src['gzip_bytes']:,} "
         "(CLIs, link, dashboards too)"],
    ]
    for r in s["state"] or []:
        ledger_rows.append([f"sending the trained state instead: {r['name']}", f"{r['gzip_bytes'] * 8:,}",
                            f"{r['raw_bytes']:,} bytes raw, {STATE_COMPRESSOR} to {r['gzip_bytes']:,} "
                            f"({', '.join(r['arrays'])}); {r['note']}"])
    ledger_rows.append(["= sending the trained state instead", _f(s["state_bits"]),
                        f"the rows above, {STATE_COMPRESSOR}: what a receiver would need to continue without the "
                        "stream" if s["state"] else "n/a: the stats hold no state sizes"
                        + (f" (a receiver would need {s['segments']} twins' states, one per segment)"
                           if file_mode and s["segments"] > 1 else "")])
    ledger = _table(["item", "bits", "note"], ledger_rows, 'id="ledger"')
    program_list = _table(["file counted as the program"], [[f] for f in p["files"]], 'id="program-files"')
    ca, cb = _series(alice, "curve"), _series(bob, "curve")
    la, lb = _series(alice, "loss_curve"), _series(bob, "loss_curve")
    wire = {int(r[0]): r for r in alice.get("wire_curve", [])}
    curve_rows = []
    for step in sorted(set(ca) | set(cb)):
        w = wire.get(step)
        curve_rows.append([step, w[1] if w else "", ca.get(step), cb.get(step), la.get(step), lb.get(step),
                           w[2] * 8 if w else ""])
    series = {"alice_curve": alice.get("curve", []), "bob_curve": bob.get("curve", []),
              "alice_loss": alice.get("loss_curve", []), "bob_loss": bob.get("loss_curve", []),
              "wire_curve": alice.get("wire_curve", [])}
    curve = _table(["step", "bytes coded", "bits/byte (Alice)", "bits/byte (Bob)", "loss nats (Alice)",
                    "loss nats (Bob)", "cumulative coded bits"], curve_rows,
                   f'id="curve" data-series="{html.escape(json.dumps(alice.get("curve", [])))}"')
    relay = ""
    if s.get("relay"):
        r = s["relay"]
        st = r.get("settings", {})
        up, down = r.get("earth_to_mars", {}), r.get("mars_to_earth", {})
        relay = "<h2>Simulated link (relay)</h2>" + _table(["", "value"], [
            ["one-way delay", f"{st.get('delay_s', 0):.2f} s"],
            ["bandwidth", f"{st.get('bandwidth_bps', 0):,.0f} bit/s" if st.get("bandwidth_bps") else "unlimited"],
            ["raw input over it", f"{n * 8 / st['bandwidth_bps']:.1f} s + delay" if st.get("bandwidth_bps") else "n/a"],
            ["coded payload over it", f"{s['payload_bits'] / st['bandwidth_bps']:.1f} s + delay"
             if st.get("bandwidth_bps") else "n/a"],
            ["loss / dup / reorder", f"{st.get('loss', 0):.0%} / {st.get('dup', 0):.0%} / {st.get('reorder', 0):.0%} "
                                     f"({'Earth to Mars' if st.get('fault_direction') == 'up' else 'both ways'}, "
                                     f"seed {st.get('seed')})"],
            ["Earth to Mars: messages, lost, duplicated, reordered",
             f"{up.get('messages', 0):,}, {up.get('dropped', 0)}, {up.get('duplicated', 0)}, {up.get('reordered', 0)}"],
            ["Mars to Earth: messages, lost, duplicated, reordered",
             f"{down.get('messages', 0):,}, {down.get('dropped', 0)}, {down.get('duplicated', 0)}, "
             f"{down.get('reordered', 0)}"],
        ], 'id="relay"')
    if file_mode:
        seg_rows = [[a.get("segment"), _f(a.get("input_bytes")), _f(a.get("payload_bytes")),
                     _f(segment_bpb(a), 3),
                     (a.get("final_digest") or "")[:16],
                     "yes" if a.get("final_digest") == b.get("final_digest") else "NO"]
                    for a, b in zip(segment_rows(alice), segment_rows(bob))]
        per_step = (f"<h2>Segments</h2>" + _table(["segment", "bytes", "coded bytes", "bits/byte",
                                                   "final digest (Alice)", "Bob's equal"], seg_rows, 'id="segments"'))
    else:
        per_step = (f"<h2>Per-step curve</h2>\n<details><summary>{len(curve_rows)} steps (the plotted series)"
                    f"</summary>{curve}</details>")
    ok = in_lockstep(s)
    good = ("Bob decoded Alice's file in lockstep: every segment's twin ended with the same weights."
            if file_mode else "Alice and Bob stayed in lockstep: identical loss curves and final weights.")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>marslink report: {html.escape(s['input'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.92em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}
th {{ background: #f0f0f0; }}
td:nth-child(n+2) {{ font-variant-numeric: tabular-nums; }}
.ok {{ color: #0a0; font-weight: bold; }} .bad {{ color: #c00; font-weight: bold; }}
img {{ max-width: 100%; border: 1px solid #ddd; }}
details {{ margin-bottom: 2em; }}
</style></head><body>
<h1>marslink: {html.escape(s['input'])}</h1>
<p class="{'ok' if ok else 'bad'}">{good if ok else 'Alice and Bob disagree: see below.'}</p>
<img alt="loss curves, cumulative bits, description-length ledger" src="data:image/png;base64,{base64.b64encode(png).decode()}">
<h2>Summary</h2>{summary}
<h2>Against classic compressors</h2>{comp}
<h2>What earned the bits</h2>
<p>Each figure is the log-loss of the coded bytes under one part of the prediction, computed in the same pass.</p>{earned_table}
<h2>Description-length ledger</h2>{ledger}
<details><summary>the {len(p['files'])} files counted as the program ({PROGRAM})</summary>{program_list}</details>
{relay}
{per_step}
<script type="application/json" id="series">{html.escape(json.dumps(series))}</script>
</body></html>
"""


def build(alice: dict, bob: dict, input_path: str, out_dir: str, relay: dict | None = None) -> dict:
    """Write report.png, report.html and report.json into out_dir; return the summary. All three
    are written under hidden names first and renamed only once every one is complete, so a
    failure (a full disk, Ctrl-C) leaves the previous report, or none, never a mixed one."""
    s = summarize(alice, bob, input_path, relay)         # a refusal leaves no folder behind
    os.makedirs(out_dir, exist_ok=True)
    final = {kind: os.path.join(out_dir, f"report.{kind}") for kind in ("png", "html", "json")}
    partial = {kind: os.path.join(out_dir, f".report.partial.{kind}") for kind in final}
    try:
        plot(alice, bob, s, partial["png"])
        png = Path(partial["png"]).read_bytes()
        Path(partial["html"]).write_text(page(alice, bob, s, png), encoding="utf-8")
        Path(partial["json"]).write_text(json.dumps(s, indent=2, sort_keys=True) + "\n")
        for kind in final:
            os.replace(partial[kind], final[kind])
    finally:
        for path in partial.values():
            if os.path.lexists(path):
                os.unlink(path)
    s["files"] = final
    return s


# --- reading the statistics: every field the report computes with, checked before anything is drawn ---

STATS_LIMIT = 256 << 20          # bytes in one stats file (the curves keep at most 4096 rows); /dev/zero is refused


LARGEST = 1e15    # no count, size, time or bit total of a run comes near it; past it a plot's axis breaks


def _whole(v) -> bool:
    return type(v) is int and abs(v) <= LARGEST


def _number(v) -> bool:
    return type(v) in (int, float) and abs(v) <= LARGEST     # False for NaN too; never float() of a huge int


def _text(v) -> bool:
    return type(v) is str


def _maybe(check):
    """The field may also be null (the report shows n/a)."""
    return lambda v: v is None or check(v)


def _rows(*columns):
    """A list of rows, each a list that starts with these columns."""
    return lambda v: type(v) is list and all(type(r) is list and len(r) >= len(columns)
                                             and all(ok(x) for ok, x in zip(columns, r)) for r in v)


def _objects(**fields):
    """A list of objects, each with every one of these fields."""
    return lambda v: type(v) is list and all(type(r) is dict and all(k in r and ok(r[k]) for k, ok in fields.items())
                                             for r in v)


def _object(check):
    """An object whose fields, where present, each pass `check`."""
    return lambda v: type(v) is dict and all(check(x) for x in v.values())


WHOLE, NUMBER = (_maybe(_whole), "a whole number of at most 10^15"), (_maybe(_number), "a number of at most 10^15")
STATS_FIELDS = {     # Alice's and Bob's --stats-json: field -> (check, what it must be)
    **{k: WHOLE for k in ("input_bytes", "compressed_bytes", "header_bytes", "segment_size", "wire_bytes",
                          "syncs_checked", "frames_resent", "duplicates", "out_of_order", "parameters")},
    "payload_bytes": (_whole, WHOLE[1]), "ideal_bits": (_number, NUMBER[1]), "seconds": NUMBER,
    "final_digest": (_maybe(_text), "a string"),
    "curve": (_rows(_whole, _maybe(_number)), "a list of [step, bits/byte] rows"),
    "loss_curve": (_rows(_whole, _maybe(_number)), "a list of [step, loss] rows"),
    "wire_curve": (_rows(_whole, _whole, _whole), "a list of [step, bytes, coded bytes] rows"),
    "bits_by_part": (_maybe(_object(_maybe(_number))), "an object of numbers"),
    "state": (_maybe(_objects(name=_text, raw_bytes=_whole, gzip_bytes=_whole, note=_text,
                               arrays=lambda v: type(v) is list and all(map(_text, v)))),
              "a list of rows with name, raw_bytes, gzip_bytes, arrays and note"),
    "segment_stats": (_maybe(_objects(input_bytes=_whole, payload_bytes=_whole, final_digest=_maybe(_text))),
                      "a list of rows with input_bytes, payload_bytes and final_digest"),
}
RELAY_NUMBERS = ("delay_s", "bandwidth_bps", "loss", "dup", "reorder")      # settings the page computes with
RELAY_FIELDS = {     # the relay's --stats-json
    "settings": (lambda v: type(v) is dict and all(_number(v[k]) for k in RELAY_NUMBERS if k in v),
                 f"an object of settings ({', '.join(RELAY_NUMBERS)}: numbers)"),
    "earth_to_mars": (_object(_number), "an object of counts"),
    "mars_to_earth": (_object(_number), "an object of counts"),
}


def _give(whose: str) -> str:
    return f"give the --stats-json file {whose} wrote"


def load_stats(path: str, flag: str, whose: str, fields: dict, required: tuple = ()) -> dict:
    """One --stats-json file, read (to STATS_LIMIT) and checked field by field: whatever is wrong
    is one ValueError line that names the option, the file and the field."""
    from ..app.files import read_input        # only the command line needs it
    from ..core.errors import MarslinkError
    if not os.path.isfile(path):              # a FIFO nobody writes would be a silent wait; /dev/zero endless
        why = "not found" if not os.path.exists(path) else "not a regular file"
        raise ValueError(f"{flag} {path!r} is {why}; {_give(whose)}")
    try:
        stats = json.loads(read_input(path, STATS_LIMIT).decode("utf-8"))
    except MarslinkError as e:
        raise ValueError(f"{flag}: {e}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{flag} {path!r} is not text (UTF-8), so not statistics; {_give(whose)}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{flag} {path!r} is not JSON ({e.msg}: line {e.lineno} column {e.colno}); "
                         f"{_give(whose)}") from None
    except ValueError:                        # a number of more than 4,300 digits
        raise ValueError(f"{flag} {path!r} holds a number too long to be statistics; {_give(whose)}") from None
    except RecursionError:
        raise ValueError(f"{flag} {path!r} is JSON nested too deeply to be statistics; {_give(whose)}") from None
    if type(stats) is not dict:
        kind = {list: "a list", str: "a string", bool: "true or false", type(None): "null"}.get(type(stats), "a number")
        raise ValueError(f"{flag} {path!r} holds {kind}, not an object of statistics; {_give(whose)}")
    require(stats, required, path, flag, whose)
    for key, (ok, what) in fields.items():
        if key in stats and not ok(stats[key]):
            raise ValueError(f"{flag} {path!r}: {key!r} is {json.dumps(stats[key])[:40]}, not {what}; {_give(whose)}")
    return stats


def require(stats: dict, keys: tuple, path: str, flag: str, whose: str) -> None:
    for key in keys:
        if stats.get(key) is None:
            raise ValueError(f"{flag} {path!r} has no {key!r}; {_give(whose)}")


def load(args) -> tuple[dict, dict, dict | None]:
    """Alice's, Bob's and (if given) the relay's statistics, each checked. Alice's payload and
    ideal bits make the ledger; file mode's panels add her container's sizes."""
    alice = load_stats(args.alice, "--alice", "Alice's run", STATS_FIELDS, ("payload_bytes", "ideal_bits"))
    bob = load_stats(args.bob, "--bob", "Bob's run", STATS_FIELDS)
    # the two sides of one run, each on its own side: one file twice, or a side's file given as
    # the other's, would compare a run with itself and certify a lockstep nobody checked
    if alice == bob:
        raise ValueError(f"--alice and --bob hold the same statistics ({args.bob!r}); give Bob's to --bob")
    for flag, path, stats, whose, mark, side in (
            ("--alice", args.alice, alice, "Alice's run", "frames_received", "Bob's (bob listen)"),
            ("--bob", args.bob, bob, "Bob's run", "frames_sent", "Alice's (alice send)")):
        if mark in stats:                     # only the other side's live statistics carry it
            raise ValueError(f"{flag} {path!r} holds {side} statistics; {_give(whose)}")
    if is_file_mode(alice) != is_file_mode(bob):
        raise ValueError("one of --alice and --bob is a file's statistics (compress, decompress), the other a live "
                         "stream's; give the two sides of one run")
    if is_file_mode(alice):
        require(alice, ("compressed_bytes", "header_bytes") + (() if alice.get("segment_stats") else ("input_bytes",)),
                args.alice, "--alice", "Alice's run")
    relay = load_stats(args.relay, "--relay", "the relay", RELAY_FIELDS) if args.relay else None
    return alice, bob, relay


def main(argv: list[str] | None = None) -> int:
    from ..app.files import escape_what_cannot_be_shown
    from ..app.options import Parser          # one-line argparse errors, as every marslink command gives
    escape_what_cannot_be_shown()
    ap = Parser(prog="python -m shared.show.report", description="marslink end-of-run report")
    ap.add_argument("--alice", required=True, help="Alice's --stats-json")
    ap.add_argument("--bob", required=True, help="Bob's --stats-json")
    ap.add_argument("--input", required=True, help="the input file that was sent")
    ap.add_argument("--out", required=True, help="output folder (report.png, report.html, report.json)")
    ap.add_argument("--relay", default=None, help="the relay's --stats-json, if a relay was used")
    args = ap.parse_args(argv)
    try:
        alice, bob, relay = load(args)
        if not os.path.isfile(args.input):     # read whole here, and again by gzip, bzip2 and xz: a file
            why = "not found" if not os.path.exists(args.input) else "not a regular file"
            raise ValueError(f"--input {args.input!r} is {why}; give the input file that was sent")
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise ValueError(f"--out {args.out!r} is a file, not a folder; give a folder (it is created if missing)")
        s = build(alice, bob, args.input, args.out, relay)
    except ValueError as e:
        print(f"report: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        from ..app.files import storage_error
        reading = e.filename is not None and os.path.abspath(str(e.filename)) == os.path.abspath(args.input)
        print(f"report: error: cannot read --input {args.input!r}: {e.strerror}" if reading
              else f"report: error: {storage_error('the report into ', args.out, e)}", file=sys.stderr)
        return 2
    print(f"report: {s['files']['html']} and {s['files']['png']} "
          f"({s['bits_per_byte']:.3f} bits/byte; digests {'equal' if s['digests_equal'] else 'DIFFER'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
