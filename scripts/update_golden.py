"""Regenerate tests/golden.json. Only on purpose: say why in the commit message.

Golden values are tied to the numeric profile and the library build (torch, MKL, numpy),
which the fingerprint inside the container records.
"""
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from shared import numeric  # noqa: E402

numeric.activate("portable")
from shared.codec import compress  # noqa: E402
from shared.config import preset  # noqa: E402
from shared.texts import mission_log  # noqa: E402

INPUT_BYTES, PRESET = 20_000, "tiny"
blob, stats = compress(mission_log(INPUT_BYTES), preset(PRESET))
golden = {"input": "shared/texts/mission_log.txt, first bytes", "input_bytes": INPUT_BYTES, "preset": PRESET,
          "profile": "portable", "container_sha256": hashlib.sha256(blob).hexdigest(),
          "final_digest": stats["final_digest"], "fingerprint": numeric.fingerprint()}
(ROOT / "tests" / "golden.json").write_text(json.dumps(golden, indent=2) + "\n")
print(json.dumps(golden, indent=2))
