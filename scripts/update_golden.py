"""Regenerate tests/golden.json. Only on purpose: say why in the commit message.

Golden values are tied to the twins' arithmetic (shared/core/exact.py, shared/core/portable.py
and its ARITHMETIC_VERSION), not to the CPU or the library build: every CPU must reproduce them
(tests/test_portable.py, scripts/check_arm64.sh).
"""
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from shared.core import numeric  # noqa: E402

from scripts.common import ScriptParser  # noqa: E402

ScriptParser("update_golden", description="Regenerate tests/golden.json (only on purpose: say why in the "
             "commit message). It takes no arguments.").parse_args()
numeric.activate("portable")
from shared.coding.codec import compress  # noqa: E402
from shared.core.config import preset  # noqa: E402
from shared.core.fingerprint import fingerprint  # noqa: E402
from shared.texts import mission_log  # noqa: E402

INPUT_BYTES, PRESET, PRESETS_INPUT_BYTES = 20_000, "tiny", 6_000
blob, stats = compress(mission_log(INPUT_BYTES), preset(PRESET))
golden = {"input": "shared/texts/mission_log.txt, first bytes", "input_bytes": INPUT_BYTES, "preset": PRESET,
          "profile": "portable", "container_sha256": hashlib.sha256(blob).hexdigest(),
          "final_digest": stats["final_digest"], "fingerprint": fingerprint()}
# The shipped presets too (n-gram counts, hashed contexts), on a shorter input: in-process check only.
golden["presets_input_bytes"] = PRESETS_INPUT_BYTES
golden["presets"] = {}
for name in ("fast", "default", "strong", "neural"):
    blob, stats = compress(mission_log(PRESETS_INPUT_BYTES), preset(name))
    golden["presets"][name] = {"container_sha256": hashlib.sha256(blob).hexdigest(),
                               "final_digest": stats["final_digest"]}
(ROOT / "tests" / "golden.json").write_text(json.dumps(golden, indent=2) + "\n")
print(json.dumps(golden, indent=2))
