"""Generate shared/texts/mission_log.txt: the built-in demo text (no network needed).

A deterministic, English-like log of a Mars mission, with the mix of repetition and novelty
that makes online learning visible: names, numbers and phrases recur, sentences vary. It is
generated once and committed, so golden digests never depend on this script's randomness.
Run: python scripts/make_mission_log.py (the built-in text again, byte for byte), or
python scripts/make_mission_log.py --bytes N --out FILE for a text of another length.
"""
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from scripts.common import ScriptParser, positive_count  # noqa: E402

BUILT_IN = Path(__file__).resolve().parent.parent / "shared" / "texts" / "mission_log.txt"
BUILT_IN_BYTES = 120_000          # the golden values and the demo depend on these exact bytes

CREW = ["Commander Okafor", "Dr. Lindqvist", "Engineer Tanaka", "Pilot Moreau", "Dr. Haddad", "Specialist Rivera"]
PLACES = ["Jezero crater", "the northern dune field", "Hab Module 2", "the greenhouse", "the airlock",
          "Olympus ridge", "the ice cliff at Arcadia", "the rover garage", "Valles Marineris rim", "the landing pad"]
THINGS = ["the oxygen generator", "the water reclaimer", "rover Perseverance II", "the main antenna",
          "the solar array", "the drill rig", "the spectrometer", "the battery bank", "the seed trays",
          "the dust filters", "the comms laser", "the pressure seals"]
VERBS = ["inspected", "repaired", "recalibrated", "cleaned", "tested", "replaced a fuse in",
         "logged readings from", "restarted", "upgraded the firmware of", "photographed"]
WEATHER = ["Clear skies, light dust.", "A dust devil passed two kilometres east.", "Haze thickening at dusk.",
           "Wind from the west at 14 m/s.", "Frost on the panels this morning.", "Global dust storm warning lifted."]
NOTES = ["All systems nominal.", "Morale is good.", "Earth relay delayed by conjunction.",
         "We watched Phobos cross the sun.", "Potatoes in tray 4 have sprouted.", "Water reserve at 92 percent.",
         "Message from Houston received and decoded without error.", "The model on both ends agrees, digest for digest."]


def sentence(r: random.Random) -> str:
    kind = r.randrange(6)
    who, what, where = r.choice(CREW), r.choice(THINGS), r.choice(PLACES)
    if kind == 0:
        return f"{who} {r.choice(VERBS)} {what} in {where}."
    if kind == 1:
        return f"Temperature at {where}: {r.randint(-95, -5)} C at {r.randint(0, 23):02d}:{r.randint(0, 59):02d}."
    if kind == 2:
        return r.choice(WEATHER)
    if kind == 3:
        return f"{who} reports that {what} is {r.choice(['stable', 'drifting', 'back online', 'running hot', 'fine'])}."
    if kind == 4:
        return f"Drove {r.randint(1, 40) / 10:.1f} km toward {where}; {r.randint(2, 30)} samples collected."
    return r.choice(NOTES)


def mission_log(size: int, seed: int = 2026) -> str:
    r = random.Random(seed)
    out, sol, total = [], 1, 0
    while total < size:
        lines = [sentence(r) for _ in range(r.randint(3, 7))]
        out.append(f"Sol {sol}.\n" + "\n".join(lines) + "\n\n")
        total += len(out[-1])
        sol += 1
    return "".join(out)[:size]


def main(argv: list[str] | None = None) -> int:
    ap = ScriptParser("make_mission_log", description="Write the built-in demo text, or one of another length.")
    ap.add_argument("--bytes", type=positive_count, default=BUILT_IN_BYTES, help=f"length (default {BUILT_IN_BYTES:,})")
    ap.add_argument("--out", help="file to write (default: the built-in text, at its own length only)")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else BUILT_IN
    if out.resolve() == BUILT_IN and args.bytes != BUILT_IN_BYTES:
        ap.error(f"the built-in text is {BUILT_IN_BYTES:,} bytes and the golden values depend on it; "
                 f"give --out FILE to write {args.bytes:,} bytes elsewhere")
    if out.is_dir():
        ap.error(f"--out {str(out)!r} is a folder; give a file name")
    from shared.app.files import write_atomic           # whole or not at all: the built-in text is golden
    from shared.core.errors import MarslinkError
    try:
        write_atomic(str(out), mission_log(args.bytes).encode("ascii"), force=True)
    except MarslinkError as e:
        raise SystemExit(f"make_mission_log: error: {e}") from None
    print(f"wrote {out} ({args.bytes:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
