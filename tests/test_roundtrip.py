"""File mode: exact round trips of every kind of input, and the coder's overhead."""
import hashlib
import json
import os
import struct
import zlib
from dataclasses import replace

import numpy as np
import pytest

from shared.coding.codec import compress, decompress
from shared.coding.container import FORMAT_VERSION, HEADER_DICTIONARY, parse
from shared.core.config import preset
from shared.texts import mission_log

CASES = {
    "empty": b"",
    "one_byte": b"x",
    "all_256_byte_values": bytes(range(256)),
    "random_binary": np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes(),
    "utf8_multibyte": ("Marte, 火星, Марс, المريخ, मंगल, 🚀🔴 — Ǻlice → Bøb. " * 20).encode("utf-8"),
    "zeros": bytes(5000),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_exact_round_trip(name):
    data = CASES[name]
    blob, stats = compress(data, preset("tiny"))
    out, dstats = decompress(parse(blob))
    assert out == data
    assert stats["final_digest"] == dstats["final_digest"]
    assert stats["input_bytes"] == len(data) and stats["compressed_bytes"] == len(blob)


def test_text_round_trip_and_coder_overhead():
    data = mission_log(12_000)
    blob, stats = compress(data, preset("tiny"))
    out, dstats = decompress(parse(blob))
    assert out == data
    assert dstats["final_digest"] == stats["final_digest"]
    ideal = stats["ideal_bits"]
    # The arithmetic coder wastes almost nothing: payload within 0.1% + 64 bytes of sum(-log2 p),
    # and cannot beat it by more than its final interval (under 1 bit: it ends wider than a
    # quarter) and integer rounding (under 2**-15 bits a binary decision, either way).
    assert stats["payload_bytes"] * 8 >= ideal - 1 - 8 * len(data) * 2 ** -15
    assert stats["payload_bytes"] * 8 <= ideal * 1.001 + 64 * 8
    # The container adds the header (config, fingerprint, checksums, sync digests) on top.
    assert stats["compressed_bytes"] == stats["payload_bytes"] + stats["header_bytes"]
    assert stats["header_bytes"] < 2048
    assert stats["compressed_bytes"] < len(data) / 2       # it learned something


def test_compression_is_deterministic_in_one_process():
    data = mission_log(6000)
    a, _ = compress(data, preset("tiny"))
    b, _ = compress(data, preset("tiny"))
    assert hashlib.sha256(a).hexdigest() == hashlib.sha256(b).hexdigest()


def test_every_preset_round_trips():
    data = mission_log(3000) + os.urandom(500)
    for name in ("fast", "default", "strong"):
        blob, _ = compress(data, preset(name))
        assert decompress(parse(blob))[0] == data


def test_incompressible_input_barely_expands():
    """Random bytes: the stored-chunk escape caps the payload near 8 bits per byte."""
    data = np.random.default_rng(7).integers(0, 256, 8_000, dtype=np.uint8).tobytes()
    blob, stats = compress(data, preset("default"))
    assert decompress(parse(blob))[0] == data
    assert stats["stored_chunks"] > 0
    assert stats["payload_bytes"] <= len(data) * 1.005


@pytest.mark.parametrize("name", ["default", "strong", "tiny"])
def test_the_header_is_a_few_references_to_its_dictionary(name):
    """Most of a header is the run configuration: deflated against the presets' blank headers it
    costs well under half of what plain deflate makes of it (about 130 bytes instead of 440)."""
    blob, stats = compress(b"Earth calling Mars. " * 40, preset(name))
    (deflated,) = struct.unpack_from("<I", blob, 5)
    plain = len(zlib.compress(json.dumps(parse(blob).header, sort_keys=True, separators=(",", ":")).encode(), 9))
    assert deflated < 160 and deflated * 2 < plain
    assert stats["header_bytes"] == 13 + deflated + len(parse(blob).digests) * 4


def test_a_configuration_that_is_no_preset_still_round_trips():
    data = mission_log(2000)
    blob, _ = compress(data, replace(preset("tiny"), seed=99, sync_every=8))
    c = parse(blob)
    assert c.config.seed == 99 and decompress(c)[0] == data


def test_the_header_dictionary_is_pinned_to_the_format_version():
    """The dictionary is built from the presets: changing one changes what a version-N header
    inflates to, so it must come with a new FORMAT_VERSION (and a new pin here)."""
    assert (FORMAT_VERSION, zlib.adler32(HEADER_DICTIONARY)) == (27, 1878956720)
