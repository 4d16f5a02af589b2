"""Run one side in its own OS process and log every step's weight digest (used by tests)."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from shared.core import numeric  # noqa: E402

numeric.activate("portable")
from shared.coding.codec import compress, decompress  # noqa: E402
from shared.coding.container import parse  # noqa: E402
from shared.core.config import preset  # noqa: E402

mode, src, dst, log = sys.argv[1:5]
digests = []


def hook(twin, report):
    digests.append(twin.digest())


if mode == "encode":
    blob, _ = compress(Path(src).read_bytes(), preset("tiny"), hook)
    Path(dst).write_bytes(blob)
else:
    data, _ = decompress(parse(Path(src).read_bytes()), hook)
    Path(dst).write_bytes(data)
Path(log).write_text(json.dumps(digests))
