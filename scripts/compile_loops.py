"""Compile the twins' loops (numba) into numba's cache once, so that the first demo and the first
test start at full speed: `make setup` runs this after installing.

It codes and decodes 3 KB of the built-in text with `default`, which reaches every compiled
loop (shared/core/kernels.py, shared/coding/compiled.py); numba keeps them in the __pycache__
folders beside those files (or, where those cannot be written, in its user cache). About ten
seconds on a laptop; later runs load the loops in a fraction of a second.

  usage: .venv/bin/python scripts/compile_loops.py
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from shared.core import numeric  # noqa: E402  (before torch: it pins the profile)


def main(argv: list[str] | None = None) -> int:
    from scripts.common import ScriptParser
    ScriptParser("compile_loops", description="Compile the twins' loops into numba's cache (make setup runs "
                 "this). It takes no arguments.").parse_args(argv)
    numeric.activate()
    from shared.coding.codec import compress, decompress
    from shared.coding.container import parse
    from shared.core import kernels
    from shared.core.config import preset
    from shared.texts import mission_log

    if not kernels.ENABLED:
        print("compile_loops: numba is not available (or MARSLINK_KERNELS=numpy); the numpy definitions run")
        return 0
    started = time.perf_counter()
    data = mission_log(3000)
    blob, _ = compress(data, preset("default"))
    if decompress(parse(blob))[0] != data:
        print("compile_loops: the round trip differs; run `make test`", file=sys.stderr)
        return 1
    print(f"compile_loops: the twins' loops are compiled and cached ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
