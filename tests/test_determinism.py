"""Bit-exact lockstep across processes and environments, and loud failure when it breaks."""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared.coding.codec import compress, decompress
from shared.coding.container import parse
from shared.core.config import preset
from shared.core.errors import ChecksumError, DivergenceError, FormatError, ProfileError
from shared.core.fingerprint import compare, fingerprint
from shared.texts import mission_log

HERE = Path(__file__).resolve().parent
GOLDEN = json.loads((HERE / "golden.json").read_text())


def golden_input() -> bytes:
    return mission_log(GOLDEN["input_bytes"])


def test_two_processes_have_identical_per_step_digests(tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(mission_log(8000))
    tracer = [sys.executable, str(HERE / "trace_steps.py")]
    enc = subprocess.run(tracer + ["encode", src, tmp_path / "c.mrs", tmp_path / "enc.json"], capture_output=True)
    assert enc.returncode == 0, enc.stderr.decode()
    dec = subprocess.run(tracer + ["decode", tmp_path / "c.mrs", tmp_path / "out", tmp_path / "dec.json"],
                         capture_output=True)
    assert dec.returncode == 0, dec.stderr.decode()
    a = json.loads((tmp_path / "enc.json").read_text())
    b = json.loads((tmp_path / "dec.json").read_text())
    assert len(a) == len(b) > 10
    assert a == b
    assert len(set(a)) == len(a)                     # the weights really change every step
    assert (tmp_path / "out").read_bytes() == src.read_bytes()


def test_golden_digests_in_this_process():
    blob, stats = compress(golden_input(), preset(GOLDEN["preset"]))
    assert hashlib.sha256(blob).hexdigest() == GOLDEN["container_sha256"]
    assert stats["final_digest"] == GOLDEN["final_digest"]
    blob2, _ = compress(golden_input(), preset(GOLDEN["preset"]))
    assert blob2 == blob


@pytest.mark.parametrize("name", sorted(GOLDEN["presets"]))
def test_golden_digests_of_the_shipped_presets(name):
    """The presets exercise what tiny does not: bigger count tables, hashed contexts beside the
    counts (replay of older history: tests/test_ngram.py)."""
    blob, stats = compress(mission_log(GOLDEN["presets_input_bytes"]), preset(name))
    assert hashlib.sha256(blob).hexdigest() == GOLDEN["presets"][name]["container_sha256"]
    assert stats["final_digest"] == GOLDEN["presets"][name]["final_digest"]


# The caller's environment must not matter: no thread count, kernel level (ATEN_CPU_CAPABILITY:
# these now really run, tests/test_portable.py checks each), MKL branch or oneDNN setting decides a bit.
# `make test` runs the clean one and the one that sets everything at once (threads, kernel level,
# MKL branch, oneDNN); the two in between are in `make test-slow` (20 s of CPU each).
HOSTILE_ENVIRONMENTS = [
    {},
    pytest.param({"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}, marks=pytest.mark.slow),
    pytest.param({"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AUTO"}, marks=pytest.mark.slow),
    {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AVX2", "OMP_NUM_THREADS": "3", "ONEDNN_MAX_CPU_ISA": "ALL"},
]


@pytest.mark.parametrize("env", HOSTILE_ENVIRONMENTS, ids=lambda e: ",".join(e) or "clean")
def test_golden_digests_in_fresh_process_whatever_the_environment(tmp_path, cli, env):
    src = tmp_path / "golden.txt"
    src.write_bytes(golden_input())
    r = cli("sender", "compress", str(src), str(tmp_path / "g.mrs"), "--preset", GOLDEN["preset"],
            "--stats-json", str(tmp_path / "s.json"), "-q", env=env)
    assert r.returncode == 0, r.stderr.decode()
    assert hashlib.sha256((tmp_path / "g.mrs").read_bytes()).hexdigest() == GOLDEN["container_sha256"]
    assert json.loads((tmp_path / "s.json").read_text())["final_digest"] == GOLDEN["final_digest"]


MKL_BRANCH_PROBE = """
import dataclasses, json, sys
from shared.core import numeric
numeric.PROFILES["portable"] = dataclasses.replace(numeric.PROFILES["portable"], mkl_cbwr=sys.argv[1])
numeric.activate("portable")
from shared.coding.codec import compress
from shared.core.config import preset
from shared.core.fingerprint import fingerprint
from shared.texts import mission_log
blob, stats = compress(mission_log(int(sys.argv[2])), preset(sys.argv[3]))
print(json.dumps({"canary": fingerprint()["canary"], "final_digest": stats["final_digest"]}))
"""


@pytest.mark.parametrize("branch", ["COMPATIBLE", pytest.param("SSE4_2", marks=pytest.mark.slow), "AVX2"])
def test_no_bit_depends_on_mkls_code_branch(branch):
    """MKL's branches compute different GEMM and sqrt bits (and its COMPATIBLE branch differed
    between an AMD and an Intel CPU): shared/core/exact.py keeps every one of them out of the model."""
    r = subprocess.run([sys.executable, "-c", MKL_BRANCH_PROBE, branch, str(GOLDEN["input_bytes"]), GOLDEN["preset"]],
                       capture_output=True, cwd=HERE.parent)
    assert r.returncode == 0, r.stderr.decode()
    got = json.loads(r.stdout)
    assert got == {"canary": GOLDEN["fingerprint"]["canary"], "final_digest": GOLDEN["final_digest"]}


def test_decoder_with_other_thread_count_and_profile_decodes(tmp_path, cli):
    """Threads and MKL's branch change no bit any more, so they are not in the fingerprint."""
    data = mission_log(2000)
    blob, _ = compress(data, preset("tiny"))
    (tmp_path / "c.mrs").write_bytes(blob)
    r = cli("receiver", "decompress", str(tmp_path / "c.mrs"), str(tmp_path / "out"), "--threads", "2",
            "--profile", "native")
    assert r.returncode == 0, r.stderr.decode()
    assert (tmp_path / "out").read_bytes() == data


def test_fingerprint_mismatch_names_the_field():
    fp = fingerprint()
    with pytest.raises(ProfileError, match=r"^numeric profile mismatch in 'arithmetic': peer has '0', "
                                           r"this machine has '1'; both sides need a marslink build with the "
                                           r"same arithmetic$"):
        compare(fp, dict(fp, arithmetic="0"))
    with pytest.raises(ProfileError, match="mismatch in 'canary'"):
        compare(fp, dict(fp, canary="0" * 16))


def test_one_changed_weight_is_caught_at_the_next_sync_step():
    blob, _ = compress(mission_log(6000), preset("tiny"))  # tiny: a digest every 4 steps

    def perturb(twin, report):
        if report.step == 6:
            with numeric_torch().no_grad():
                next(twin.model.parameters()).view(-1)[0] += 1e-6
    with pytest.raises(DivergenceError, match=r"^weights diverged at step 8: file digest [0-9a-f]{8}, ours [0-9a-f]{16}"):
        decompress(parse(blob), perturb)


def numeric_torch():
    import torch
    return torch


def test_corruption_that_slips_past_the_crc_is_still_caught():
    """Flip a payload bit and forge the CRC: decoding must fail loudly, never return wrong data."""
    data = mission_log(6000)
    blob, _ = compress(data, preset("tiny"))
    c = parse(blob)
    for bit in (8 * 10 + 3, 8 * (len(c.payload) // 2), 8 * (len(c.payload) - 3)):
        payload = bytearray(c.payload)
        payload[bit // 8] ^= 1 << (bit % 8)
        forged = type(c)(dict(c.header), c.digests, bytes(payload))
        with pytest.raises((DivergenceError, ChecksumError, FormatError)):
            decompress(parse(forged.to_bytes()))
