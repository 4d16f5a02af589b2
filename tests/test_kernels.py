"""The compiled loops (shared/core/kernels.py, shared/coding/compiled.py) against the numpy and
Python code that defines them: the same integers and the same float bits, on random inputs, on
the edges (empty rows, evictions, rescaling, infinities, one-byte rows) and on whole runs, so that a
twin with numba and a twin without it stay in lockstep."""
import contextlib
import hashlib
import json

import numpy as np
import pytest

from shared.coding import compiled
from shared.coding.codec import compress, decompress
from shared.coding.coder import ArithmeticDecoder, ArithmeticEncoder, ByteSource
from shared.coding.container import parse
from shared.core import exact, kernels, mixer as M, portable
from shared.core.config import VOCAB, preset
from shared.core.ngram import ContextCounts, trust_index
from shared.core.pinned import torch
from shared.core.quantize import quantize
from shared.texts import mission_log
from tests.helpers import run_cli
from tests.test_determinism import GOLDEN, golden_input


@contextlib.contextmanager
def definition():
    """Run the numpy and Python definitions instead of the compiled loops."""
    saved = kernels.ENABLED, compiled.ENABLED
    kernels.ENABLED = compiled.ENABLED = False
    try:
        yield
    finally:
        kernels.ENABLED, compiled.ENABLED = saved


def both(f):
    """f() with the compiled loops, then with the definition."""
    out = f()
    with definition():
        return out, f()


def same_bits(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind == "f":
        a, b = a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}")
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)


def test_the_compiled_loops_are_what_runs():
    """numba is a dependency (pyproject.toml): the suite tests the loops users run."""
    assert kernels.ENABLED and compiled.ENABLED


# --- the byte-tree mixer -----------------------------------------------------------------------
def _mixer_run(alice: bool, steps=40, n=12, K=5):
    rng = np.random.default_rng(3)
    m = M.TreeMixer(K, match=True, orders=2, words=2)
    T = M.TreeMixer                 # rows early, plain and late in their steps, some at the floor
    m._all_updates[:] = rng.integers(0, T.EARLY + 70 * T.LATE_DECAY, m._all_updates.shape)
    seen = []
    for _ in range(steps):
        counts = rng.integers(0, 4, (n, K, VOCAB)).astype(np.uint8)
        counts[:, :, rng.integers(0, VOCAB, 3)] = 0                  # empty nodes
        counts[rng.integers(0, n), 1] = 0                              # an empty row
        counts[:, -1] = 0
        counts[np.arange(n), -1, rng.integers(0, VOCAB, n)] = rng.integers(0, 255, n)   # the match row
        cdf = quantize(rng.dirichlet(np.full(VOCAB, 0.3), n).astype(np.float32))
        prev = rng.integers(0, VOCAB, (n, 3))
        symbols = rng.integers(0, VOCAB, n)
        symbols[:3] = [0, 255, 97]
        if alice:
            p16, bits = m.path(cdf, counts, prev, symbols)
        else:                      # Bob: the decoder hands back the bits of the same symbols
            depth = iter(range(8))
            decide = lambda p: (symbols >> (7 - next(depth))) & 1  # noqa: E731
            got, p16, bits = m.walk(cdf, counts, prev, decide)
            assert (got == symbols).all()
        seen.append((p16, bits, m.update(symbols)))
    return seen, [t.copy() for t in m.tables()]


@pytest.mark.parametrize("alice", [True, False], ids=["path", "walk"])
def test_the_tree_mixer_gives_the_same_probabilities_and_learns_the_same(alice):
    (seen, tables), (seen0, tables0) = both(lambda: _mixer_run(alice))
    for (p, b, cost), (p0, b0, cost0) in zip(seen, seen0):
        assert same_bits(p, p0) and same_bits(b, b0) and cost == cost0
    assert all(same_bits(t, t0) for t, t0 in zip(tables, tables0))


# --- the count tables --------------------------------------------------------------------------
def _count_run(data: np.ndarray, table_bits: int):
    c = ContextCounts((1, 2, 3, 4, 6), table_bits, data.shape[1], 2, 8, 4096, 4095)
    looked = []
    for t, row in enumerate(data):
        rows = np.ones(len(row), dtype=bool)
        if t % 7 == 3:
            rows[::3] = False                         # some streams have ended
        looked.append(c.lookup())
        c.update(rows if t % 7 == 3 else np.flatnonzero(rows), row[rows])
    idx = trust_index(np.stack(looked), 16, (0, 2, 3, 5, 9, 18))
    return looked, c.table.copy(), c.check.copy(), c.total.copy(), c.top.copy(), idx


def _markup(rng) -> bytes:
    """HTML-ish lines: tags opened and closed, nested deeper than the stack of open elements
    (TAG_STACK) and closed out of order, elements never closed ("<br>", "<IMG>"), self-closing
    tags, comments, attributes, brackets, indentation, UTF-8."""
    out = []
    for i in range(400):
        tag = ["p", "div", "a", "li", "td"][rng.integers(5)]
        inside = ["", "<br>", "<IMG src=x>", "<hr/>", "<!-- c -->", "</li>", "<b>"][rng.integers(7)]
        line = f'{"  " * rng.integers(4)}<{tag} class="c{rng.integers(9)}">({i}) {inside}[é 中{i % 7}] {{x}}</{tag}>\n'
        out.append("<ul>" * 20 + line if i % 4 == 0 else line + "</ul>" * 20 if i % 4 == 3 else line)
    return "".join(out).encode()


@pytest.mark.parametrize("kind", ["text", "markup", "records", "bytes", "one byte", "one byte, 64 streams"])
def test_the_count_tables_and_contexts_count_claim_rescale_and_look_up_the_same(kind):
    """Small tables (2**10 rows): contexts push each other out; a repeated byte passes the
    count limit (on 64 streams, by so much that a row is rescaled twice in one update); markup
    moves the nest and word states, records the record length, repeats the match model."""
    rng = np.random.default_rng(1)
    if kind in ("text", "markup"):
        raw = mission_log(16 * 400) if kind == "text" else _markup(rng)[:16 * 400]
        data = np.frombuffer(raw, dtype=np.uint8).reshape(16, 400).T.astype(np.int64)
    elif kind == "records":
        row = rng.integers(0, 256, 12)
        data = np.stack([np.where(np.arange(12) < 4, rng.integers(0, 256, 12), row) for _ in range(34 * 16)])
        data = data.reshape(16, -1).T[:400]
    elif kind == "bytes":
        data = rng.integers(0, 256, (400, 16))
    else:
        data = np.full((400, 64 if "64" in kind else 16), 7)
    out, out0 = both(lambda: _count_run(data, 10))
    for got, want in zip(out, out0):
        assert all(same_bits(a, b) for a, b in zip(got, want)) if isinstance(got, list) else same_bits(got, want)
    assert out[4].max() > 200 if kind.startswith("one byte") else True    # the count limit was reached


# --- the network's sums, grids and mixes -------------------------------------------------------
def _floats(rng, shape, scale=1.0):
    x = (rng.standard_normal(shape) * scale).astype(np.float32)
    x.reshape(-1)[::7] = 0.0
    x.reshape(-1)[1::11] = -0.0
    return x


@pytest.mark.parametrize("n", [1, 2, 3, 5, 16, 17, 256, 300])
def test_tree_sum_is_the_same_tree(n):
    rng = np.random.default_rng(n)
    x = _floats(rng, (4, n, 6), 1e3)
    for axis in (0, 1, 2, -1):
        for keep in (False, True):
            for a in (x, x.astype(np.float64), np.swapaxes(x, 0, 2)):
                got, want = both(lambda: portable.tree_sum(a, axis, keep))
                assert same_bits(got, want), (n, axis, keep, a.dtype)


def test_the_fixed_point_grid_is_the_same():
    rng = np.random.default_rng(2)
    for shape in ((1, 1), (5, 33), (3, 4, 7)):
        x = _floats(rng, shape, 50)
        for axis in (-1, -2):
            for a in (x, np.swapaxes(x, -1, -2)):
                for bits in (10, 26):
                    got, want = both(lambda: exact._grid(a, axis, bits))
                    assert same_bits(got, want)
    x = _floats(rng, (5, 6))
    x[0] = np.float32(3e-41) * np.arange(6)     # subnormals: the exponent from the bits
    x[2] = 0.0
    x[3, :2] = np.finfo(np.float32).max
    assert same_bits(*both(lambda: exact._grid(x, -1, 20)))
    x[1, 2] = np.inf                     # not finite: the compiled loop leaves it to the definition
    assert same_bits(*both(lambda: exact._grid(x, -1, 20)))


@pytest.mark.parametrize("R", [1, 3, 16, 19])
def test_the_count_mix_and_its_gradient_are_the_same(R):
    """The evidence is table[count], read where it is used, from rows picked out of order."""
    rng = np.random.default_rng(R)
    base = torch.from_numpy(rng.integers(0, 256, (6, 9, 21, 256)).astype(np.uint8))
    base[:, :, :, ::5] = 0                                   # unseen bytes, as most are
    counts = base[:, 1:]                                     # a view with gaps, as training passes it
    rows = rng.permutation(21)[:R].astype(np.int64)
    table = _floats(rng, (256,), 3)
    w = torch.from_numpy(_floats(rng, (6, 8, R))).requires_grad_(True)
    g = torch.from_numpy(_floats(rng, (6, 8, 256)))

    def run():
        w.grad = None
        out = portable.mix(w, counts, rows, table)
        out.backward(g)
        with torch.no_grad():
            step = portable.mix(w[:, 0], counts[:, 0], rows, table)   # the coding path: one position
        return out.detach().numpy(), w.grad.numpy().copy(), step.numpy()
    for got, want in zip(*both(run)):
        assert same_bits(got, want)


def test_exp_softmax_and_gelu_are_the_same():
    """exp's compiled loop rounds with 1.5 * 2**23 and scales by a table of powers of two; the
    definition uses np.rint and np.ldexp: the same float32 results, subnormals, infinities,
    NaN and the clipped ends included."""
    rng = np.random.default_rng(6)
    x = np.concatenate([_floats(rng, (40000,), s) for s in (0.1, 1, 10, 40)]
                       + [rng.uniform(-110, 95, 40000).astype(np.float32),
                          np.array([-np.inf, np.inf, np.nan, -104, 89, -103.9, 88.7, -87.5, -88, -89,
                                    -100, -150, 100, 0.5 / 1.442695, 1.5 / 1.442695], np.float32)])
    with np.errstate(invalid="ignore"):          # the definition casts NaN's exponent to int32
        assert same_bits(*both(lambda: portable.exp(x)))
    rows = _floats(rng, (300, 77), 8)
    rows[4, 9] = -np.inf
    assert same_bits(*both(lambda: portable.softmax_np(rows)))
    for got, want in zip(*both(lambda: portable.gelu_np(x[np.isfinite(x)]))):
        assert same_bits(got, want)


@pytest.mark.parametrize("n", [32, 5, 33])
def test_layer_norm_is_the_same(n):
    rng = np.random.default_rng(4)
    x, w, b = _floats(rng, (7, 5, n), 4), _floats(rng, (n,)), _floats(rng, (n,))
    x[0, 0], b[:3] = -0.0, -0.0                      # a row of -0: its padded sums give +0
    for got, want in zip(*both(lambda: portable.layer_norm_np(x, w, b, 1e-5))):
        assert same_bits(got, want)


def test_the_embedding_gradient_adds_each_rows_terms_in_the_same_order():
    """A row read many times (the PAD token, a common context) takes its gradients one add at a
    time in the order of the indices, in float64, as np.bincount adds them; so do rows read once."""
    rng = np.random.default_rng(8)
    for rows, dim, n in ((257, 32, 960), (40, 5, 3000), (1, 3, 7)):
        idx = torch.from_numpy(rng.integers(0, rows, (n // 3, 3)))
        idx[0, :] = 0
        w = torch.from_numpy(_floats(rng, (rows, dim))).requires_grad_(True)
        g = torch.from_numpy(_floats(rng, (n // 3, 3, dim), 1e4))

        def run():
            w.grad = None
            out = portable.embedding(idx, w)
            out.backward(g)
            with torch.no_grad():
                read = portable.embedding(idx, w)                    # the coding path
            return out.detach().numpy(), w.grad.numpy().copy(), read.numpy()
        for got, want in zip(*both(run)):
            assert same_bits(got, want)


def test_the_hashed_contexts_rows_are_the_same():
    """HashedContexts.ids: every order's hash over the tokens before each position, the PAD
    token (256) among them, over a window (training) and one token with the ones before it
    carried on (coding)."""
    from shared.core.model import HashedContexts
    h = HashedContexts(preset("neural").model)
    rng = np.random.default_rng(9)
    idx = torch.from_numpy(rng.integers(0, 257, (6, 11)))
    before = torch.from_numpy(rng.integers(0, 257, (6, h.span)))
    for args in ((idx,), (idx, before), (idx[:, :1], before)):
        got, want = both(lambda: h.ids(*args).numpy())
        assert same_bits(got, want) and got.shape == args[0].shape + (len(h.orders),)
        assert got.min() >= 0 and got.max() < 1 << h.bits


# --- the coder -----------------------------------------------------------------------------------
def _decisions(rng, n):
    p = rng.integers(1, 1 << 16, n)
    p[::13] = 1
    p[5::17] = (1 << 16) - 1                    # the extremes: 16 bits for the unlikely side
    bits = (rng.random(n) < p / 65536.0).astype(np.int64)
    bits[::29] ^= 1                              # and sometimes it happens
    return p, bits


def test_the_binary_loops_write_and_read_the_same_bits():
    rng = np.random.default_rng(8)
    p, bits = _decisions(rng, 20000)

    def encode():
        enc = ArithmeticEncoder()
        for a in range(0, len(p), 512):
            enc.encode_bits(p[a:a + 512].tolist(), bits[a:a + 512].tolist())
            enc.encode(3, 9, 100)                # a symbol between: the definition's own loop
        return enc.finish()
    stream, stream0 = both(encode)
    assert stream == stream0

    def decode(trickle: bool):
        """With `trickle`, the source holds one byte at a time: every missing byte is asked for."""
        chunks = iter([stream[i:i + 1] for i in range(len(stream))])

        def refill(src):
            more = next(chunks, None)
            if more is None:
                return False
            src.feed(more)
            return True
        src = ByteSource(b"", refill=refill) if trickle else ByteSource(stream)
        dec = ArithmeticDecoder(src)
        got = []
        for a in range(0, len(p), 512):
            got += dec.decode_bits(p[a:a + 512].tolist())
            assert dec.decode_row([0, 3, 9, 100]) == 1
        return got, src.consumed, src.past_end
    for trickle in (False, True):
        got, got0 = both(lambda: decode(trickle))
        assert got == got0 and got[0] == bits.tolist()


class _Limited(ByteSource):
    """A source that refuses the third byte past its end, as the file decoder's does."""
    def __init__(self, data):
        super().__init__(data)
        self.past_end_limit = 2

    def next_byte(self):
        byte = super().next_byte()
        if self.past_end > self.past_end_limit:
            raise EOFError(f"read {self.past_end} bytes past the end at byte {self.consumed}")
        return byte


def test_the_compiled_decoder_reads_past_the_end_no_further_than_the_source_allows():
    rng = np.random.default_rng(9)
    p, _ = _decisions(rng, 4000)

    def decode():
        dec = ArithmeticDecoder(_Limited(bytes(range(40))))      # far fewer bytes than decisions need
        with pytest.raises(EOFError) as e:
            for a in range(0, len(p), 64):
                dec.decode_bits(p[a:a + 64].tolist())
        return str(e.value), dec.low, dec.high
    got, want = both(decode)
    assert got[0] == want[0] == "read 3 bytes past the end at byte 40"


# --- Bob's walk and its decoder in one loop (compiled.walk_tree) -------------------------------------
def _tree_inputs(steps=30, n=12, K=5):
    """What a twin's tree mixer sees at `steps` positions: (cdf, counts, prev, symbols) each."""
    rng = np.random.default_rng(4)
    out = []
    for _ in range(steps):
        counts = rng.integers(0, 4, (n, K, VOCAB)).astype(np.uint8)
        counts[:, :, rng.integers(0, VOCAB, 3)] = 0
        counts[:, -1] = 0
        counts[np.arange(n), -1, rng.integers(0, VOCAB, n)] = rng.integers(0, 255, n)
        cdf = quantize(rng.dirichlet(np.full(VOCAB, 0.3), n).astype(np.float32))
        out.append((cdf, counts, rng.integers(0, VOCAB, (n, 3)), rng.integers(0, VOCAB, n)))
    return out


def _tree_stream(inputs, K=5) -> bytes:
    """Alice's coding of `inputs`: each position's 8 decisions per stream, depth by depth."""
    m, enc = M.TreeMixer(K, match=True, orders=2, words=2), ArithmeticEncoder()
    for cdf, counts, prev, symbols in inputs:
        p16, bits = m.path(cdf, counts, prev, symbols)
        enc.encode_bits(p16.T.ravel().tolist(), bits.T.ravel().tolist())
        m.update(symbols)
    return enc.finish()


def _tree_decode(inputs, source, K=5):
    m, dec = M.TreeMixer(K, match=True, orders=2, words=2), ArithmeticDecoder(source)
    seen = []
    for cdf, counts, prev, _ in inputs:
        got, p16, bits = m.walk(cdf, counts, prev, dec.decode_bit_array, dec.decode_tree)
        seen.append((got, p16, bits, m.update(got)))
    return seen, [t.copy() for t in m.tables()], source.consumed


def _trickle(stream: bytes) -> ByteSource:
    """A source that holds one byte at a time, as a live link may: every missing byte is asked
    for, in the middle of a walk."""
    chunks = iter([stream[i:i + 1] for i in range(len(stream))])

    def refill(src):
        more = next(chunks, None)
        if more is not None:
            src.feed(more)
        return more is not None
    return ByteSource(b"", refill=refill)


@pytest.mark.parametrize("trickle", [False, True], ids=["whole", "a byte at a time"])
def test_bobs_walk_and_decoding_in_one_loop_give_the_bytes_and_state_of_the_definition(trickle):
    inputs = _tree_inputs()
    stream = _tree_stream(inputs)
    source = (lambda: _trickle(stream)) if trickle else (lambda: ByteSource(stream))
    (seen, tables, used), (seen0, tables0, used0) = both(lambda: _tree_decode(inputs, source()))
    for (got, p, b, cost), (got0, p0, b0, cost0), (*_, symbols) in zip(seen, seen0, inputs):
        assert (got == symbols).all() and (got0 == symbols).all()
        assert same_bits(p, p0) and same_bits(b, b0) and cost == cost0
    assert all(same_bits(t, t0) for t, t0 in zip(tables, tables0)) and used == used0


def test_bobs_one_loop_stops_past_the_end_where_the_definition_does():
    inputs = _tree_inputs()
    stream = _tree_stream(inputs)[:60]                            # a payload cut short

    def decode():
        source = _Limited(stream)
        with pytest.raises(EOFError) as e:
            _tree_decode(inputs, source)
        return str(e.value)
    got, want = both(decode)
    assert got == want == "read 3 bytes past the end at byte 60"


def test_a_loop_compiled_with_a_helper_from_another_file_is_compiled_again_when_that_file_changes(tmp_path):
    """numba's cache looks at the loop's own file only; `compiled(..., depends=...)` adds the
    helper's file, or Bob's loop (compiled.walk_tree) would keep a node_at that changed."""
    (tmp_path / "helper.py").write_text("from shared.core.kernels import inline\n"
                                        "@inline\ndef f(x):\n    return x + 1\n")
    (tmp_path / "loop.py").write_text("import helper\nfrom shared.core.kernels import compiled\n"
                                      "def _g(x):\n    return helper.f(x)\n"
                                      "g = compiled(_g, depends=(helper.__file__,))\n")
    import os
    import subprocess
    import sys

    def run():
        env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{kernels.__file__.rsplit('/shared/', 1)[0]}"}
        return subprocess.run([sys.executable, "-c", "import loop; print(loop.g(1))"], env=env,
                              capture_output=True, text=True, check=True).stdout.strip()
    assert run() == "2" and run() == "2"                        # compiled, then loaded from the cache
    (tmp_path / "helper.py").write_text("from shared.core.kernels import inline\n"
                                        "@inline\ndef f(x):\n    return x + 10\n")
    assert run() == "11"


@pytest.mark.parametrize("damage", ["index cut short", "data cut short", "data replaced by other bytes"])
def test_a_damaged_cache_file_is_compiled_again_not_a_traceback(tmp_path, damage):
    """Round eight: one numba cache file cut short (a full disk, a copy interrupted) stopped every
    later run with a 70-110 line traceback (EOFError, UnpicklingError). The loop is compiled
    again, silently, and the cache written anew, so the run after it loads it."""
    (tmp_path / "loop.py").write_text("from shared.core.kernels import compiled\n"
                                      "def _g(x):\n    return x * 3\n"
                                      "g = compiled(_g)\n")
    import os
    import subprocess
    import sys

    def run():
        env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{kernels.__file__.rsplit('/shared/', 1)[0]}"}
        env.pop("NUMBA_CACHE_DIR", None)
        r = subprocess.run([sys.executable, "-c", "import loop; print(loop.g(2))"], env=env, capture_output=True,
                           text=True)
        return r.returncode, r.stdout.strip(), r.stderr
    assert run() == (0, "6", "")
    cache = tmp_path / "__pycache__"
    [index] = cache.glob("loop._g-*.nbi")
    [data] = cache.glob("loop._g-*.nbc")
    sound = {index: index.read_bytes(), data: data.read_bytes()}
    victim = index if damage.startswith("index") else data
    victim.write_bytes(sound[victim][:len(sound[victim]) // 3] if "short" in damage else bytes(len(sound[victim])))
    assert run() == (0, "6", "")
    assert {path: path.read_bytes() for path in sound} == sound      # written anew: the same loop, the same files
    assert run() == (0, "6", "")


# --- whole runs: a twin with the loops and a twin without them -----------------------------------
def test_without_the_compiled_loops_the_golden_file_is_the_same(tmp_path, cli):
    src = tmp_path / "golden.txt"
    src.write_bytes(golden_input())
    r = cli("sender", "compress", str(src), str(tmp_path / "g.mrs"), "--preset", GOLDEN["preset"], "-q",
            env={"MARSLINK_KERNELS": "numpy"})
    assert r.returncode == 0, r.stderr.decode()
    assert hashlib.sha256((tmp_path / "g.mrs").read_bytes()).hexdigest() == GOLDEN["container_sha256"]


def test_a_file_from_a_twin_with_the_loops_decodes_without_them(tmp_path, cli):
    data = mission_log(6000)
    blob, stats = compress(data, preset("default"))
    (tmp_path / "c.mrs").write_bytes(blob)
    r = cli("receiver", "decompress", str(tmp_path / "c.mrs"), str(tmp_path / "out"),
            "--stats-json", str(tmp_path / "d.json"), env={"MARSLINK_KERNELS": "numpy"})
    assert r.returncode == 0, r.stderr.decode()
    assert (tmp_path / "out").read_bytes() == data
    assert json.loads((tmp_path / "d.json").read_text())["final_digest"] == stats["final_digest"]
    with definition():
        blob0, _ = compress(data[:3000], preset("default"))
    assert decompress(parse(blob0))[0] == data[:3000]


# --- numba settings it refuses or cannot parse (round seven) --------------------------------------
NUMBA_SETTINGS = [
    ({"NUMBA_DISABLE_JIT": "1"}, []),
    ({"NUMBA_NUM_THREADS": "0"}, ["marslink: numba refused its settings (Number of threads specified must be > 0.); "
                                  "running the uncompiled loops (the same bits, slower)"]),
    ({"NUMBA_OPT": "garbage"}, ["marslink: Environment variable 'NUMBA_OPT' is defined but its associated value "
                                "'garbage' could not be parsed; numba uses its default"]),
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A few KB compressed by a plain `alice compress`: the bytes every setting below must give."""
    d = tmp_path_factory.mktemp("tiny")
    (d / "in.txt").write_bytes(mission_log(3000))
    r = run_cli("sender", "compress", str(d / "in.txt"), str(d / "c.mrs"), "--preset", "tiny", "-q")
    assert r.returncode == 0, r.stderr.decode()
    return d


@pytest.mark.parametrize("env,lines", NUMBA_SETTINGS, ids=[next(iter(e)) for e, _ in NUMBA_SETTINGS])
def test_numba_settings_it_refuses_or_cannot_parse_give_the_same_bytes(tmp_path, cli, tiny_run, env, lines):
    """Round seven: NUMBA_NUM_THREADS=0 was a traceback (numba refuses it on import), NUMBA_OPT=garbage
    a warning of a dozen lines, and NUMBA_DISABLE_JIT=1 a TypeError traceback (numba's loops run as
    plain Python). Two are one line now, none stops the run, and all give a plain run's bytes."""
    r = cli("sender", "compress", str(tiny_run / "in.txt"), str(tmp_path / "c.mrs"), "--preset", "tiny", "-q", env=env)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stderr.decode().splitlines() == lines
    assert (tmp_path / "c.mrs").read_bytes() == (tiny_run / "c.mrs").read_bytes()
