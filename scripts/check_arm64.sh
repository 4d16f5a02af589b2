#!/bin/sh
# Prove that the twins' bits do not depend on the CPU: run marslink on ARM64 (aarch64 Python and
# torch under qemu user emulation, ../shared/tools/arm64/) with NEON and with SVE256 kernels, and
#   1. the golden computation (tests/golden.json) gives the golden bits;
#   2. a file compressed natively (x86-64) decodes byte-exact under emulation;
#   3. a file compressed under emulation decodes byte-exact natively, and is the same file.
# Not part of `make test`: emulation is 20-50x slower (10-30 minutes per emulated CPU on a 2-core
# machine, more when it is busy; docs/portability.md has measured times). Needs
# ../shared/tools/arm64/setup.sh run once.
#   usage: scripts/check_arm64.sh            PYTHON=... for the native Python (default .venv/bin/python)
#                                            ARM_PYTHON=... for the emulated one; CPUS="neon sve256"
#                                            PRESET=... for the files of steps 2 and 3 (default tiny;
#                                            PRESET=neural covers its hashed contexts, a 2**18-row table)
#                                            INPUT=FILE: steps 2 and 3 code its first BYTES bytes instead
#                                            of the mission log's (markup, code, binaries)
#                                            KERNELS=numpy: the emulated side runs the numpy definitions
#                                            instead of the compiled loops (shared/core/kernels.py)
# The compiled loops need numba under emulation too: its aarch64 wheels (the version the native side
# has) are fetched once into $ARM_LIBS (default ~/.cache/arm64-emu/site-numba), from the package index.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$root/.venv/bin/python}
ARM=${ARM_PYTHON:-$root/../shared/tools/arm64/python.sh}
CPUS=${CPUS:-neon sve256}
BYTES=${BYTES:-4000}
PRESET=${PRESET:-tiny}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$root"
[ -x "$ARM" ] || { echo "check_arm64: no emulated Python at $ARM (run ../shared/tools/arm64/setup.sh as root)"; exit 2; }
KERNELS=${KERNELS:-numba}
ARM_LIBS=${ARM_LIBS:-${ARM_DIR:-$HOME/.cache/arm64-emu}/site-numba}
NUMBA=$("$PY" -c 'import numba; print(numba.__version__)' 2>/dev/null) || { echo "check_arm64: no numba in $PY (run make setup)"; exit 2; }
if [ "$KERNELS" = numba ] && [ ! -f "$ARM_LIBS/numba-$NUMBA.dist-info/METADATA" ]; then
  echo "check_arm64: fetching numba $NUMBA for aarch64 into $ARM_LIBS (once)"
  plat="--platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux_2_28_aarch64
    --python-version 3.11 --implementation cp --abi cp311 --only-binary=:all:"
  "$PY" -m pip download -q --no-deps $plat -d "$ARM_LIBS.wheels" "numba==$NUMBA" \
      "$("$PY" -c 'import llvmlite; print("llvmlite==" + llvmlite.__version__)')" \
    && "$PY" -m pip install -q --no-deps --no-index --upgrade $plat --target "$ARM_LIBS" "$ARM_LIBS".wheels/*.whl \
    || { echo "check_arm64: could not fetch numba for aarch64; KERNELS=numpy checks the definitions alone"; exit 2; }
fi

native() { PYTHONPATH="$root" "$PY" "$@"; }
arm() {   # $1: neon or sve256, then the arguments; stderr shown only on failure
  cpu=$1; shift
  rc=0
  if [ "$cpu" = sve256 ]; then
    QEMU_CPU=max,sve-default-vector-length=32 MARSLINK_KERNELS=$KERNELS EXTRA_PYTHONPATH="$root:$ARM_LIBS" \
      "$ARM" "$@" 2>"$work/err" || rc=$?
  else
    MARSLINK_KERNELS=$KERNELS EXTRA_PYTHONPATH="$root:$ARM_LIBS" "$ARM" "$@" 2>"$work/err" || rc=$?
  fi
  [ $rc = 0 ] || grep -v MIDR_EL1 "$work/err" >&2
  return $rc
}
clock() { date +%s; }

GOLDEN='
import hashlib, json, sys, time
from shared.core import numeric
numeric.activate()
import torch
from shared.coding.codec import compress
from shared.core.config import preset
from shared.core.fingerprint import fingerprint
from shared.texts import mission_log
golden = json.load(open("tests/golden.json"))
start = time.time()
blob, stats = compress(mission_log(golden["input_bytes"]), preset(golden["preset"]))
got = {"container_sha256": hashlib.sha256(blob).hexdigest(), "final_digest": stats["final_digest"],
       "canary": fingerprint()["canary"]}
want = {k: golden[k] for k in ("container_sha256", "final_digest")}
want["canary"] = golden["fingerprint"]["canary"]
n = golden["input_bytes"]
from shared.core import kernels
loops = "compiled loops" if kernels.ENABLED else "numpy definitions"
print(f"  {torch.__version__} on {torch.backends.cpu.get_cpu_capability()}, {loops}: golden run of {n:,} bytes",
      f"in {time.time() - start:.0f} s:", "golden bits" if got == want else f"DIFFERENT {got}")
sys.exit(got != want)
'

if [ -n "${INPUT:-}" ]; then
  [ -f "$INPUT" ] || { echo "check_arm64: INPUT=$INPUT is not a file"; exit 2; }
  head -c "$BYTES" "$INPUT" > "$work/in.txt"
else
  native -c 'from shared.texts import mission_log; import sys; sys.stdout.buffer.write(mission_log('"$BYTES"'))' > "$work/in.txt"
fi
native -m sender compress "$work/in.txt" "$work/x86.mrs" --preset "$PRESET" -q 2>/dev/null
echo "native: $(native -c 'import torch; print(torch.__version__, "on", torch.backends.cpu.get_cpu_capability())'), $(wc -c < "$work/in.txt") bytes${INPUT:+ of $INPUT} -> $(wc -c < "$work/x86.mrs") bytes ($PRESET)"
failed=0
for cpu in $CPUS; do
  echo "aarch64 $cpu:"
  t=$(clock)
  arm "$cpu" -c "$GOLDEN" || failed=1
  echo "  (with the torch import: $(( $(clock) - t )) s)"
  t=$(clock)
  if arm "$cpu" -m receiver decompress "$work/x86.mrs" "$work/out-$cpu.txt" >/dev/null && cmp -s "$work/in.txt" "$work/out-$cpu.txt"; then
    echo "  x86-64 file decoded under emulation: byte-exact ($(( $(clock) - t )) s)"
  else
    echo "  x86-64 file decoded under emulation: FAILED"; failed=1
  fi
  t=$(clock)
  if arm "$cpu" -m sender compress "$work/in.txt" "$work/$cpu.mrs" --preset "$PRESET" -q >/dev/null \
      && native -m receiver decompress "$work/$cpu.mrs" "$work/back-$cpu.txt" 2>/dev/null && cmp -s "$work/in.txt" "$work/back-$cpu.txt"; then
    same=$(cmp -s "$work/x86.mrs" "$work/$cpu.mrs" && echo "the same file as x86-64's" || echo "NOT the same file as x86-64's")
    echo "  compressed under emulation, decoded natively: byte-exact, $same ($(( $(clock) - t )) s)"
    cmp -s "$work/x86.mrs" "$work/$cpu.mrs" || failed=1
  else
    echo "  compressed under emulation, decoded natively: FAILED"; failed=1
  fi
done
[ $failed = 0 ] && echo "check_arm64: all passed" || echo "check_arm64: FAILED"
exit $failed
