"""Per-step measurements a live run records on both sides, for dashboards and the report.

Torch-free: it only reads what the engine hands the `on_step` callbacks. Both sides record the
same things from their own twin, so Alice's and Bob's curves must come out identical (they are
computed from bit-identical probabilities); the report overlays them to show it.
"""
from __future__ import annotations

import math



def bits_per_byte(coded_bytes: int, input_bytes: int) -> str:
    """'2.039 bits/byte' for the summary lines; an empty input has no such ratio (not 8.000)."""
    return f"{coded_bytes * 8 / input_bytes:.3f} bits/byte" if input_bytes else "an empty input"


def _num(x: float | None, digits: int = 6):
    """A JSON-safe number: NaN/inf become null."""
    if x is None or not math.isfinite(x):
        return None
    return round(float(x), digits)


EARNED = (("network", "network alone"), ("counts", "counts alone"), ("mixture", "mixture before SSE"),
          ("final", "after SSE"))


def earned(stats: dict) -> list[tuple[str, float | None]]:
    """What earned the bits, from a run's stats: (label, bits/byte) for each part of the
    prediction (None where the preset has no such part), then what was sent, header included."""
    n = stats.get("input_bytes") or 0
    parts = stats.get("bits_by_part") or {}
    rows = [(label, parts[key] / n if n and parts.get(key) is not None else None) for key, label in EARNED]
    sent = stats.get("compressed_bytes", stats.get("payload_bytes"))
    rows.append(("sent", sent * 8 / n if n and sent is not None else None))
    return rows


def earned_line(stats: dict) -> str:
    """One line for dashboards and logs: 'network alone 4.13 · counts alone 2.52 · ... bits/byte'."""
    return " · ".join(f"{label} {'-' if v is None else f'{v:.3f}'}" for label, v in earned(stats)) + " bits/byte"


class Telemetry:
    """Call `record(twin, report, payload_bytes)` after every step; `stats()` gives JSON lists and
    the sizes of the twin's trained state (ledger.state_sizes), measured when it is called: at the end.

    A resumed sender may code some steps again: a step recorded twice keeps its latest values
    (they are the same numbers, since the twin rewound to a bit-identical state).
    """

    def __init__(self):
        self.rows: dict[int, tuple] = {}     # step -> (tokens_done, chunk_tokens, chunk_bits, loss, payload)
        self.digests: dict[int, str] = {}    # sync step -> weight digest
        self.parameters: int | None = None
        self.payload_bytes = 0               # coded bytes sent (Alice) / received (Bob) so far
        self.extra: dict = {}                # side-specific live numbers (Bob: syncs_checked, ...)
        self.twin = None                     # the twin last recorded: its state is sized once, in stats()

    MAX_ROWS = 4096                          # beyond this, every other step is dropped: memory stays flat

    def record(self, twin, report, payload_bytes: int, **extra) -> None:
        self.extra.update(extra)
        self.twin = twin
        if self.parameters is None:
            self.parameters = int(sum(p.numel() for p in twin.model.parameters()))
        self.payload_bytes = int(payload_bytes)
        self.rows[report.step] = (report.tokens_done, report.chunk_tokens, report.chunk_bits, report.loss,
                                  self.payload_bytes)
        if len(self.rows) > self.MAX_ROWS:       # a long stream: keep an evenly thinned curve
            self.rows = {s: r for i, (s, r) in enumerate(sorted(self.rows.items())) if i % 2 == 0 or
                         s == report.step}
        if report.digest is not None:
            self.digests[report.step] = report.digest
            if len(self.digests) > self.MAX_ROWS:
                del self.digests[min(self.digests)]

    def stats(self) -> dict:
        steps = sorted(self.rows)
        rows = [(s, *self.rows[s]) for s in steps]
        from .ledger import state_sizes   # start-up: numpy loads only after the CLI pinned the profile
        state = state_sizes(self.twin) if self.twin is not None else None
        return {
            # bits per byte of each step's chunk: -log2 p of the true bytes, averaged (the coding loss)
            "curve": [[s, _num(bits / n if n else math.nan)] for s, _, n, bits, _, _ in rows],
            # the training loss after the step (nats, over the training window)
            "loss_curve": [[s, _num(loss)] for s, _, _, _, loss, _ in rows],
            # [step, tokens coded so far, coded payload bytes so far]
            "wire_curve": [[s, done, payload] for s, done, _, _, _, payload in rows],
            "sync_digests": [[s, self.digests[s]] for s in sorted(self.digests)],
            "parameters": self.parameters,
            # the trained state at the end, row by row, raw and gzip -9: the report's ledger
            "state": state,
        }

