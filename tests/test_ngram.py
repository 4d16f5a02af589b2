"""The n-gram counts both twins keep: exact integer bookkeeping, checkpointed with the twin."""
from dataclasses import replace

import numpy as np
import pytest

from shared.coding.codec import compress, decompress
from shared.coding.container import parse
from shared.core.config import INDIRECT_KIND, TAG_STACK, ModelConfig, RunConfig, preset, table_bytes
from shared.core.engine import Twin
from shared.core.errors import ConfigMismatch, FormatError, UsageError
from shared.core.ngram import RESCALE, STRUCTURE, ContextCounts, MatchModel, Structure, count_limit, trust_index
from shared.texts import mission_log
from tests.helpers import PassThrough, run_twin


def feed(counts: ContextCounts, text: bytes, stream: int = 0):
    rows = np.zeros(len(counts.history), bool)
    rows[stream] = True
    for b in text:
        counts.update(rows, np.array([b]))


def test_counts_what_followed_each_context_and_nothing_else():
    c = ContextCounts((1, 2), table_bits=16, streams=2)
    feed(c, b"abab")                       # stream 0 only; order 2 is exact (2**16 rows)
    got = c.lookup()                       # contexts now: "b" and "ab"
    assert got.shape == (2, 2, 256)
    assert got[0, 0, ord("a")] == 1 and got[0, 0].sum() == 1          # "b" -> "a" once
    assert got[0, 1, ord("a")] == 1 and got[0, 1].sum() == 1          # "ab" -> "a" once
    # stream 1 has not started: its context is the start context, where stream 0 saw "a"
    assert got[1, 0, ord("a")] == 1 and got[1, 1, ord("a")] == 1 and got[1].sum() == 2
    feed(c, b"c")
    assert c.lookup()[0, 0].sum() == 0                                # "c" never seen before


def test_streams_share_tables_and_duplicates_in_one_update_all_count():
    c = ContextCounts((1,), table_bits=8, streams=4)
    rows = np.ones(4, bool)
    c.update(rows, np.array([7, 7, 7, 7]))          # all four streams enter context "\x07"
    c.update(rows, np.array([9, 9, 9, 8]))          # ... and count 3 x "9", 1 x "8" in it
    row = c.table[c.offset[0] + 7]
    assert row[9] == 3 and row[8] == 1 and row.sum() == 4


def test_a_full_row_is_rescaled_to_three_quarters_before_it_can_overflow():
    """One stream: a row may carry 254 into an update. The 256th "b" after "a" finds 255, so the
    row keeps 255 - 255 // 4 = 192 of it first and counts 193; three more "b" make 196."""
    c = ContextCounts((1,), table_bits=8, streams=1)
    assert c.limit == count_limit(1) == 254 and RESCALE == 2
    feed(c, b"ab" * 259)
    row = c.table[c.offset[0] + ord("a")]
    assert row[ord("b")] == 196 and row.sum() == 196
    assert c.top[c.offset[0] + ord("a")] == 196 and c.total[c.offset[0] + ord("a")] == 196


def test_a_row_that_every_stream_counts_at_once_never_passes_255():
    """64 streams add up to 64 to one count per update, so a row may carry at most 191 into
    one. The first update counts in context 0, the next ones in context 7: 64, 128, 192, then
    192 is rescaled to 144 before 64 more. From 255 one rescale leaves 192, still above the
    limit, so the row is rescaled again, to 144, and 208 follows."""
    c = ContextCounts((1,), table_bits=8, streams=64)
    rows = np.ones(64, bool)
    seen = []
    for _ in range(18):
        c.update(rows, np.full(64, 7))
        seen.append(int(c.table[c.offset[0] + 7, 7]))
    assert seen == [0, 64, 128, 192, 208, 220, 229, 236, 241, 245, 248, 250, 252, 253, 254, 255, 208, 220]
    assert (c.total == c.table.sum(axis=1)).all() and (c.top == c.table.max(axis=1)).all()


def test_each_rows_total_and_top_stay_those_of_its_counts():
    """Eviction and rescaling read the row sums and maxima kept beside the table; through claims,
    evictions, rescalings and many streams hitting one cell, they stay exactly the table's."""
    c = ContextCounts((1, 3), table_bits=8, streams=64)    # few rows: many claims and evictions
    rng = np.random.default_rng(2)
    rows = np.ones(64, bool)
    halved = False
    for step in range(400):
        symbols = rng.integers(0, 4, 64) if step % 4 else rng.integers(0, 256, 64)
        halved |= bool((c.top > c.limit).any())
        c.update(rows, symbols)
    assert halved and (c.total == c.table.sum(axis=1)).all() and (c.top == c.table.max(axis=1)).all()


def test_hashed_orders_stay_inside_their_own_rows():
    c = ContextCounts((1, 3, 6), table_bits=10, streams=3)
    rng = np.random.default_rng(0)
    for _ in range(300):
        c.update(np.ones(3, bool), rng.integers(0, 256, 3))
        lo = c.offset[None, :]
        hi = lo + np.array([1 << b for b in c.bits])[None, :]
        for rows in (c._slots, c._slots ^ c._pair):       # a home row and the other of its pair
            assert ((rows >= lo) & (rows < hi)).all()


@pytest.mark.parametrize("name", ["fast", "default", "strong", "tiny"])
def test_the_tables_a_twin_allocates_are_those_config_counts(name):
    """The memory estimate (config.table_bytes, which sizes workers and refuses configurations
    over MAX_TABLES) and the tables a twin allocates on a long input come from one rule,
    config.order_bits: order 3 at most 2**16 rows, orders 4 and 5 2**17 (format 23), the word rows
    2**16 (format 22)."""
    m = preset(name).model
    c = ContextCounts(m.orders, m.table_bits, 4, m.words, m.match, 1 << 16, m.structure)
    assert c.table.nbytes == table_bytes(m)
    if name in ("default", "strong"):
        assert c.bits[:len(m.orders)] == [8, 16, 16, 17, 17, 18] and c.bits[len(m.orders):][:m.words] == [18, 18]
        assert sorted(set(c.bits[len(m.orders) + m.words:])) == [15, 16]     # the indirect row 2**15


def test_colliding_contexts_keep_their_own_rows_and_an_unseen_one_reads_nothing():
    """Hashed rows carry a check byte and come in pairs: two contexts that share a home row both
    keep exact counts, a third reads zeros (not their counts), and taking a row evicts the emptier."""
    c = ContextCounts((3,), table_bits=8, streams=1)       # 2**24 contexts in 256 rows
    home = {}
    for ctx in range(1, 1 << 16):
        slot, check = (int(a[0, 0]) for a in c._compute_slots(np.array([ctx], np.uint64)))
        home.setdefault(slot, {})[check] = ctx
    a, b, third = next(list(v.values())[:3] for v in home.values() if len(v) >= 3)

    def count(ctx, symbol, times=1):
        for _ in range(times):
            c.history[:] = ctx
            c._slots, c._checks = c._compute_slots()
            c.update(np.ones(1, bool), np.array([symbol]))

    def seen(ctx):
        c.history[:] = ctx
        c._slots, c._checks = c._compute_slots()
        return {int(s): int(n) for s, n in enumerate(c.lookup()[0, 0]) if n}

    count(a, ord("x"), 2)
    count(b, ord("y"))
    assert seen(a) == {ord("x"): 2} and seen(b) == {ord("y"): 1} and seen(third) == {}
    count(third, ord("z"))                                  # evicts b, the emptier of the pair
    assert seen(a) == {ord("x"): 2} and seen(third) == {ord("z"): 1} and seen(b) == {}


def test_trust_index_is_exact_integers_and_buckets():
    counts = np.zeros((3, 2, 256), np.uint8)
    counts[1, 0, 5] = 4                                    # total 4, one byte owns it
    counts[2, 1, 5], counts[2, 1, 6] = 2, 1                # total 3, two bytes
    which = trust_index(counts, 16)
    # which = bucket * 4 + share level + order * 64; bucket = 1 + floor(log2 total), 0 when
    # unseen; level 3 when one byte owns the context, else floor(3 * top / total) capped at 2
    assert which.tolist() == [[0, 64], [3 * 4 + 3, 64], [0, 64 + 2 * 4 + 2]]


def test_counts_make_repetitive_text_much_cheaper():
    data = mission_log(8000)
    plain = replace(preset("tiny"), model=replace(preset("tiny").model, orders=(), words=0, match=0, structure=0))
    with_counts = preset("tiny")
    assert with_counts.model.orders, "the tiny preset (golden digests) exercises the n-gram path"
    blob_plain, _ = compress(data, plain)
    blob_counts, stats = compress(data, with_counts)
    assert decompress(parse(blob_counts))[0] == data
    assert len(blob_counts) < 0.8 * len(blob_plain)


def test_twin_checkpoint_mid_stream_resumes_bit_identically():
    data = mission_log(6000)
    config = preset("tiny")
    whole = run_twin(config, data)
    first = run_twin(config, data, whole.n_steps // 2)
    state = first.state_dict()
    second = Twin(config, len(data), None)              # Bob: only the bytes decoded so far
    decoded = bytearray(len(data))
    for b, offset, n in first.layout.pieces(0, first.step * config.model.chunk):
        decoded[offset:offset + n] = data[offset:offset + n]
    second.load_state_dict(state, bytes(decoded))
    second.data = data
    while not second.finished:
        second.advance(PassThrough())
    assert second.digest() == whole.digest() and second.ideal_bits == whole.ideal_bits
    assert np.array_equal(second.counts.table, whole.counts.table)
    assert config.model.match                            # the match model is rebuilt exactly too
    for name in ("ring", "where", "written", "place", "run"):
        assert np.array_equal(getattr(second.counts.match, name), getattr(whole.counts.match, name)), name
    damaged = bytearray(decoded)
    damaged[min(first.layout.row_len, first.step * config.model.chunk) - 1] ^= 1   # stream 0's newest byte
    with pytest.raises(FormatError, match="does not match the data coded so far"):
        Twin(config, len(data), None).load_state_dict(state, bytes(damaged))
    plain = Twin(replace(config, model=replace(config.model, orders=(), words=0, match=0, structure=0)), len(data), data)
    with pytest.raises(FormatError, match=r"configuration \(n-gram counts\)"):
        plain.load_state_dict(state)


@pytest.mark.parametrize("orders", [(3, 1), (2, 2), (0,), (9,), ("2",), tuple(range(1, 10))])
def test_bad_orders_are_refused_with_the_field_named(orders):
    d = RunConfig(model=ModelConfig(orders=(1,))).to_dict()
    d["model"]["orders"] = list(orders)
    with pytest.raises(ConfigMismatch, match=r"model.orders must be increasing whole numbers in 1\.\.8"):
        RunConfig.from_dict(d)
    with pytest.raises(UsageError, match="model.orders"):
        RunConfig(model=ModelConfig(orders=orders)).validate()


def test_orders_survive_the_json_round_trip_and_limit_streams():
    config = preset("tiny")
    assert RunConfig.from_dict(config.to_dict()) == config
    d = config.to_dict()
    d["streams"] = 500
    with pytest.raises(ConfigMismatch, match="streams = 500"):
        RunConfig.from_dict(d)


def test_replay_of_older_history_round_trips_and_resumes_identically():
    config = preset("tiny")
    config = replace(config, train=replace(config.train, replay=2, replay_span=64))
    data = mission_log(4000)                   # 16 steps: replay from the third, a full span of 64 by the fourth
    blob, stats = compress(data, config)
    out, dstats = decompress(parse(blob))
    assert out == data and dstats["final_digest"] == stats["final_digest"]
    plain, _ = compress(data, preset("tiny"))
    assert plain != blob                       # replay really trained on something
    whole = run_twin(config, data)
    first = run_twin(config, data, whole.n_steps // 2)
    second = Twin(config, len(data), data)
    second.load_state_dict(first.state_dict(), data)
    assert second.past_len == 64
    while not second.finished:
        second.advance(PassThrough())
    assert second.digest() == whole.digest()


def test_leave_one_out_counts_remove_exactly_the_target():
    c = ContextCounts((1, 2), table_bits=16, streams=1)
    feed(c, b"xaxaxb")
    tokens = np.array([[0, 0, 0, 0, 0, 0, 0, ord("x"), ord("a")]])    # predict "a" after "x"
    got = c.lookup_past(tokens)                                        # (1, 1, K, 256)
    assert got.shape == (1, 1, 2, 256)
    assert got[0, 0, 0, ord("a")] == 1 and got[0, 0, 0, ord("b")] == 1   # "x" -> a,a,b minus one a


def test_word_contexts_fold_case_and_remember_the_previous_word():
    c = ContextCounts((), table_bits=12, streams=2, words=2)
    feed(c, b"to be, or ", stream=0)
    feed(c, b"TO B", stream=1)                 # same word so far, case folded: "b" -> "e"
    got = c.lookup()
    assert got[1, 0, ord("e")] == 1 and got[1, 0].sum() == 1
    assert got[1, 1, ord("e")] == 1            # ... and also after the same previous word "to"
    feed(c, b"x", stream=1)                    # "bx": a word never seen
    assert c.lookup()[1, 0].sum() == 0
    before = c.lookup()[0].copy()              # stream 0 sits between words, after "or"
    feed(c, b"  ", stream=1)
    assert np.array_equal(c.lookup()[0], before)


def test_between_words_the_second_word_context_is_the_last_two_words():
    """After "green cat " the first word context knows only "cat"; the second knows "green cat",
    so it tells what starts the next word after that pair apart from after "big cat"."""
    c = ContextCounts((), table_bits=12, streams=3, words=2)
    feed(c, b"green cat sat. ", stream=0)
    feed(c, b"big cat ran. ", stream=1)
    feed(c, b"a green cat ", stream=2)            # between words, after "green" and "cat"
    got = c.lookup()[2]
    assert got[0, ord("s")] == 1 and got[0, ord("r")] == 1 and got[0].sum() == 2   # after "cat"
    assert got[1, ord("s")] == 1 and got[1].sum() == 1                             # after "green cat"
    feed(c, b"s", stream=2)                       # inside a word: the word so far and the one before
    assert c.lookup()[2, 1, ord("a")] == 1 and c.lookup()[2, 1].sum() == 1
    assert c.prev[2] != 0 and c.prev2[2] != 0 and c.prev[2] != c.prev2[2]
    c.clear()
    assert c.prev2[2] == 0 and c.lookup()[2].sum() == 0


def match_row(c: ContextCounts, stream: int = 0) -> np.ndarray:
    return c.lookup()[stream, -1]


def test_match_model_guesses_the_byte_after_the_last_repeat_and_counts_its_run():
    c = ContextCounts((1,), table_bits=12, streams=2, match=4, span=1000)
    assert c.lookup().shape == (2, 2, 256)               # one order + the match model's row
    feed(c, b"the quick brown fox. ")
    assert match_row(c).sum() == 0                       # nothing has repeated yet
    feed(c, b"the ")                                     # 4 bytes seen before: guess what followed
    row = match_row(c)
    assert row[ord("q")] == 1 and row.sum() == 1
    feed(c, b"quic")                                     # four right guesses in a row
    row = match_row(c)
    assert row[ord("k")] == 5 and row.sum() == 5
    feed(c, b"X")                                        # wrong: the guess is dropped ...
    assert match_row(c).sum() == 0
    feed(c, b"the ")                                     # ... and found again from the newest "the "
    assert match_row(c)[ord("q")] == 1 and match_row(c).sum() == 1


def test_match_model_survives_one_wrong_byte_after_a_long_run_but_not_two():
    c = ContextCounts((1,), table_bits=12, streams=1, match=4, span=1000)
    line = b"for each stream the same computation, "                 # 38 bytes, no 4 bytes twice
    feed(c, line + line[:20])                                         # 16+ right guesses in a row
    assert match_row(c)[line[20]] >= MatchModel.RECOVER
    feed(c, b"X")                                                     # one wrong byte: the guess goes on
    row = match_row(c)
    assert row[line[21]] == 1 and row.sum() == 1                      # from the next place, run 1
    feed(c, line[21:23])
    assert match_row(c)[line[23]] == 3
    feed(c, b"YZ")                                                    # wrong twice in a row: dropped
    assert match_row(c).sum() == 0
    short = ContextCounts((1,), table_bits=12, streams=1, match=4, span=1000)
    feed(short, line + line[:8] + b"X")                               # a short run ends at once
    assert match_row(short).sum() == 0


def nest_state(text: bytes, mask: int = 0b10000) -> tuple[Structure, int]:
    """A Structure of `mask`'s kinds (nest only by default; one stream) after `text`, and its
    nest context."""
    s = Structure(mask, streams=1)
    hist = np.zeros(1, dtype=np.uint64)
    for b in text:
        s.update(np.array([0]), np.array([b]))
        hist = (hist << np.uint64(8)) | np.uint64(b)
    return s, int(s.contexts(hist)[0, s.kinds.index("nest")])


def test_nest_context_knows_brackets_tags_and_indentation():
    state = nest_state
    s, ctx = state(b'<div class="x">\n  f(a[')
    assert (s.depth[0], s.in_tag[0], s.naming[0], s.indent[0, 0], s.lead[0]) == (2, 0, 0, 2, 0)
    assert state(b'<div id="y">\n  g(b[')[1] == ctx                  # the same tag, depth, indent, last byte
    for other in (b'<span class="x">\n  f(a[',            # another tag
                  b'<div class="x">\n f(a[',              # another indentation
                  b'<div class="x">\n  f(a(',             # another last byte
                  b'<div class="x">\n  f((a[',            # another depth
                  b'<div class="x"\n  f(a['):             # still inside the tag
        assert state(other)[1] != ctx, other
    s, _ = state(b"<p>a</p")
    assert (s.in_tag[0], s.naming[0]) == (1, 1) and s.tag[0] != state(b"<p")[0].tag[0]   # "/p" is not "p"
    s, _ = state(b"))}\n\t x <")
    assert (s.depth[0], s.indent[0, 0], s.in_tag[0]) == (0, 2, 1)     # depth never below 0; a tab indents
    s.clear()
    assert (s.depth[0], s.indent[0, 0], s.indent[0, 1], s.in_tag[0], s.tag[0], s.lead[0]) == (0, 0, 0, 0, 0, 1)


def test_nest_context_knows_the_attribute_a_value_belongs_to():
    """Inside an opening tag, after an attribute's "=", the nest context keys on that attribute's
    name as well as the tag's: a class's value and an href's differ; the next tag forgets it."""
    both = 0b10000 | 1 << STRUCTURE.index("word_mark")
    ctx = lambda text: nest_state(text, both)[1]
    value = ctx(b'<a class="')
    assert ctx(b'<a id="x" class="') == value                           # the last attribute is the one
    assert ctx(b'<a href="') != value and ctx(b'<p class="') != value
    assert ctx(b'<a class="x"><a href="') == ctx(b'<a href="')          # a new tag starts without one
    assert nest_state(b'if y < z == 1', both)[0].attr[0] == 0           # "<" then a blank: not a tag


def test_nest_context_knows_the_line_before_while_a_line_is_indented():
    """While a line holds only its indentation (and at its first byte after it) the nest context
    also knows the line before's indentation and that line's last mark (":" opens a block);
    past the indentation it forgets them. The mark needs the word kinds' state."""
    both = 0b10000 | 1 << STRUCTURE.index("word_mark")
    ctx = lambda text: nest_state(text, both)[1]
    opened = ctx(b"def f(a):\n    if a:\n    ")
    s, _ = nest_state(b"def f(a):\n    if a:\n    ", both)
    assert (s.indent[0, 0], s.indent[0, 1], s.lead[0]) == (4, 4, 1)
    assert ctx(b"class C(B):\n    while b:\n    ") == opened            # the same indentations and mark
    assert ctx(b"def f(a):\n    g(a)\n    ") != opened                  # another last mark: ")"
    assert ctx(b"def f(a):\n  if a:\n    ") != opened                   # the line before less deep
    assert ctx(b"def f(a):\n    if a:\n    x") == ctx(b"def f(a):\n        y = (a, b)\n    x")   # past it
    alone = lambda text: nest_state(text)[1]                             # no word kinds: no mark
    assert alone(b"if a:\n  ") == alone(b"if a\n  ") != alone(b"  if a:\n  ")


def test_nest_context_knows_the_element_open_and_the_name_that_closes_it():
    """After "</" the nest context holds the innermost element open (whatever came inside it,
    elements never closed and self-closing tags included); between tags, the element the text
    is in; a closing tag pops up to its element, and the stack keeps the innermost TAG_STACK."""
    ctx = lambda text: nest_state(text)[1]
    closing_p = ctx(b"<p><em>x</em></")
    assert ctx(b"<p><b>other words</b></") == closing_p
    assert ctx(b'<p><br><IMG src="x"><img src="y"/><hr/><!-- c --><em>x</em></') == closing_p
    assert ctx(b"<div><em>x</em></") != closing_p                     # another element open
    assert ctx(b"<p><em>x</em></d") != ctx(b"<div><em>x</em></d")       # and while its name is written
    assert ctx(b"<p>a<em>b</em>c") == ctx(b"<p>c") == ctx(b"<p>a</div>c")   # "</div>" closes nothing open
    assert ctx(b"<title>c") != ctx(b"<h1>c") and ctx(b"<ul><li>x</li>\n") == ctx(b"<ul>\n")
    s, _ = nest_state(b"<p><br>")
    assert s.n_open[0] == 1 and s.stack[0, 0] == nest_state(b"</p")[0].tag[0]   # "p", as "</p" names it
    assert nest_state(b"<ul>" * 20 + b"</ul>" * 15)[0].n_open[0] == 1         # 16 kept of 20
    assert nest_state(b"<ul>" * 20 + b"</ul>" * 17)[0].n_open[0] == 0
    assert TAG_STACK == 16


def test_match_model_finds_repeats_across_streams_but_only_of_known_bytes():
    c = ContextCounts((), table_bits=12, streams=2, match=3, span=1000)
    both = np.ones(2, bool)
    for a, b in zip(b"abcdef", b"zzzabc"):               # stream 1 writes "abc" as stream 0 did
        c.update(both, np.array([a, b]))
    assert match_row(c, 1)[ord("d")] == 1                # stream 0 wrote "d" after its "abc"
    assert match_row(c, 0).sum() == 0
    # the same context on two streams in one update: the first stream's place is kept
    c2 = ContextCounts((), table_bits=12, streams=2, match=2, span=1000)
    for a, b in zip(b"xyq", b"xyr"):
        c2.update(both, np.array([a, b]))
    c2.update(both, np.array([ord("-"), ord("-")]))
    for a, b in zip(b"xy", b"xy"):
        c2.update(both, np.array([a, b]))
    assert match_row(c2, 0)[ord("q")] == 1 and match_row(c2, 1)[ord("q")] == 1


def test_match_model_forgets_what_left_the_ring_and_clears():
    c = ContextCounts((), table_bits=12, streams=1, match=2, span=16)
    assert c.match.span == 16
    feed(c, b"AB1" + bytes(range(100, 120)) + b"AB")     # "1" was written 22 bytes ago: gone
    assert match_row(c).sum() == 0
    feed(c, b"7AB")                                      # 3 bytes back: still in the ring
    assert match_row(c)[ord("7")] == 1
    c.clear()
    assert match_row(c).sum() == 0 and c.match.where.max() == -1 and c.match.written.sum() == 0


def test_match_model_is_off_by_default_and_replay_never_sees_a_guess():
    assert ContextCounts((1,), table_bits=12, streams=1).match is None
    c = ContextCounts((1,), table_bits=12, streams=1, match=2, span=100)
    feed(c, b"xaxaxa")
    past = c.lookup_past(np.array([[0, 0, 0, 0, 0, 0, 0, ord("x"), ord("a")]]))
    assert past.shape == (1, 1, 2, 256) and past[0, 0, 1].sum() == 0
    assert MatchModel.SPAN >= c.match.span


def test_match_model_makes_long_repeats_cheaper_and_round_trips():
    """Over four letters, contexts of 3 bytes (tiny's longest order) are ambiguous; 8 bytes of
    context are not: only the match model can see that the text repeats."""
    block = bytes(np.frombuffer(b"ACGT", np.uint8)[np.random.default_rng(3).integers(0, 4, 400)])
    data = block * 3
    config = replace(preset("tiny"), streams=1)
    without = replace(config, model=replace(config.model, match=0))
    blob, stats = compress(data, config)
    _, plain = compress(data, without)
    assert stats["ideal_bits"] < 0.5 * plain["ideal_bits"]      # measured: 1,102 against 2,459 bits
    out, dstats = decompress(parse(blob))
    assert out == data and dstats["final_digest"] == stats["final_digest"]


@pytest.mark.parametrize("match", [-1, 9, "8", 2.0])
def test_bad_match_length_is_refused_with_the_field_named(match):
    d = preset("tiny").to_dict()
    d["model"]["match"] = match
    with pytest.raises(ConfigMismatch, match="model.match"):
        RunConfig.from_dict(d)


def test_a_chinese_character_is_a_word_and_a_latin_word_stays_whole():
    """UTF-8: a 3-byte lead starts a new word, so a run of CJK without spaces is not one word."""
    c = ContextCounts((1,), table_bits=12, streams=1, words=2)
    feed(c, "天下".encode())
    tian, xia = c.prev[0], c.word[0]
    assert tian != 0 and xia != 0 and tian != xia                      # 下 follows 天, in its own word
    c2 = ContextCounts((1,), table_bits=12, streams=1, words=2)
    feed(c2, "x下".encode())
    assert c2.word[0] == xia                                           # the same character, the same word
    c3 = ContextCounts((1,), table_bits=12, streams=1, words=2)
    feed(c3, "Ωmega".encode())                                         # a 2-byte letter continues a word
    assert c3.prev[0] == 0 and c3.word[0] != 0


def test_match_model_refuses_a_candidate_whose_bytes_differ():
    """A 20-bit hash collision is no guess: the candidate's bytes are checked."""
    m = MatchModel(4, streams=1, span=64)
    hist = np.zeros(1, dtype=np.uint64)
    for b in b"abcdXYZW":
        hist = (hist << np.uint64(8)) | np.uint64(b)
        m.update(np.array([0]), np.array([b]), hist)
    place_after_abcd = 4
    assert m._verified(np.array([place_after_abcd]), np.array([int.from_bytes(b"dcba", "little")], dtype=np.uint64)).all()
    assert not m._verified(np.array([place_after_abcd]), np.array([int.from_bytes(b"dcbx", "little")], dtype=np.uint64)).any()
    assert not m._verified(np.array([-1]), np.array([0], dtype=np.uint64)).any()


def test_structure_finds_the_record_length_and_the_bytes_above():
    from shared.core.ngram import Structure
    s = Structure(0b0110, streams=2)                                   # column and record
    rows = np.array([0])
    record = bytes([7, 1, 2, 3, 4, 5, 6, 9, 8, 9, 10, 11])             # 12-byte records, byte 7 once each
    for _ in range(5):
        for b in record:
            s.update(rows, np.array([b]))
    assert s.record[0] == 12 and s.record[1] == 0                      # stream 1 saw nothing
    ctx = s.contexts(np.zeros(2, dtype=np.uint64))
    above = (int(ctx[0, 1]) >> 9) & 0x1FF, int(ctx[0, 1]) & 0x1FF       # one and two records above: both 7
    assert above == (7, 7) and int(ctx[0, 1]) >> 18 & 0xFFFF == 12
    t = Structure(0b0010, streams=1)
    for b in b"ab\ncd":
        t.update(rows, np.array([b]))
    col_ctx = int(t.contexts(np.zeros(1, dtype=np.uint64))[0, 0])
    assert (col_ctx >> 9) & 0xFF == 2 and col_ctx & 0x1FF == ord("\n")  # column 2: "ab\n" has its newline there


def test_near_contexts_are_each_streams_own_rows():
    from shared.core.ngram import Structure
    s = Structure(0b1100000, streams=2)                                # near and near_word only
    assert s.kinds == ["near", "near_word"]

    def contexts(stream_text: dict) -> np.ndarray:
        s.clear()
        hist = np.zeros(2, dtype=np.uint64)
        for stream, text in stream_text.items():
            for b in text:
                s.update(np.array([stream]), np.array([b]))
                hist[stream] = (hist[stream] << np.uint64(8)) | np.uint64(b)
        return s.contexts(hist).astype(object)
    ctx = contexts({0: b"x = foo", 1: b"y = foo"})
    assert ctx[0, 0] != ctx[1, 0] and ctx[0, 1] != ctx[1, 1]             # the same bytes, two streams' rows
    again = contexts({0: b"if (foo", 1: b"y = foo"})
    assert again[0, 0] == ctx[0, 0] and again[0, 1] == ctx[0, 1]         # the same last two bytes, the same word
    assert contexts({0: b"x = FoO", 1: b""})[0, 1] == ctx[0, 1]          # the word is case folded
    assert contexts({0: b"x = fob", 1: b""})[0, 1] != ctx[0, 1]
    assert contexts({0: b"foo ", 1: b""})[0, 1] == contexts({0: b"bar.", 1: b""})[0, 1]   # between words: none


def test_near_contexts_make_each_regions_own_words_cheaper_and_round_trip():
    rng = np.random.default_rng(9)
    regions = []
    for _ in range(16):                                                # a vocabulary each; tiny's 32 streams take about half a region each
        words = [bytes(rng.integers(97, 123, int(rng.integers(3, 9))).astype(np.uint8)) for _ in range(12)]
        regions.append(b" ".join(words[int(i)] for i in rng.integers(0, 12, 300)))
    data = b"\n".join(regions)
    tiny = preset("tiny")
    shared_only = replace(tiny, model=replace(tiny.model, structure=tiny.model.structure & 0b11111))
    blob_shared, _ = compress(data, shared_only)
    blob, _ = compress(data, tiny)
    assert len(blob) < 0.9 * len(blob_shared)                          # measured: 0.80 (0.79 with 32 streams)
    assert decompress(parse(blob))[0] == data


def test_structure_contexts_make_fixed_records_cheaper_and_round_trip():
    rng = np.random.default_rng(5)
    rows = [int(i).to_bytes(4, "little") + bytes([1, 0]) + int(rng.integers(0, 50)).to_bytes(2, "little")
            for i in range(1500)]
    data = b"".join(rows)
    plain = replace(preset("tiny"), model=replace(preset("tiny").model, structure=0))
    blob_plain, _ = compress(data, plain)
    blob, _ = compress(data, preset("tiny"))
    assert len(blob) < 0.9 * len(blob_plain)
    assert decompress(parse(blob))[0] == data


def test_word_rows_pair_the_word_with_the_one_two_before_and_the_last_mark_and_the_line_with_its_first_word():
    from shared.core.ngram import Structure
    s = Structure(0b1111 << 7, streams=1)                              # the four word rows only
    assert s.kinds == ["skip_word", "word_mark", "mark_gap", "line_column"]

    def contexts(text: bytes) -> tuple:
        s.clear()
        hist = np.zeros(1, dtype=np.uint64)
        for b in text:
            s.update(np.array([0]), np.array([b]))
            hist = (hist << np.uint64(8)) | np.uint64(b)
        return tuple(int(v) for v in s.contexts(hist)[0])
    skip, mark, gap, line = 0, 1, 2, 3
    assert contexts(b"to be or")[skip] == contexts(b"to go or")[skip]        # the word between is skipped
    assert contexts(b"to be or")[skip] != contexts(b"at be or")[skip]
    assert contexts(b"self.name")[mark] == contexts(b"x = os.name")[mark]    # "." then "name"
    assert contexts(b"self.name")[mark] != contexts(b"self=name")[mark]
    assert contexts(b"x = os.name")[mark] == contexts(b"x = os. NAME")[mark]  # blanks are no mark; case folded
    assert contexts(b'f(a, "x')[gap] == contexts(b'g(bc, "x')[gap]          # ',"' then one byte, "x"
    assert contexts(b'f(a, "x')[gap] != contexts(b'f(a; "x')[gap]           # other marks
    assert contexts(b'f(a, "x')[gap] != contexts(b'f(a, "yx')[gap]          # two bytes after the mark
    assert contexts(b"if a and b")[line] == contexts(b"if xyz o b")[line]    # "if", column 10, "b"
    assert contexts(b"if a and b")[line] != contexts(b"while a  b")[line]
    assert contexts(b"if a\nfor b")[line] == contexts(b"while a\nfor b")[line]   # a new line: "for", column 5
    assert len(set(contexts(b"to be or"))) == 4                          # the kinds' rows stay apart


def test_indirect_context_is_the_last_byte_and_what_followed_it_the_last_two_times():
    """paq8px's indirect context: after "=", what came after "=" the last two times in this
    stream, so "x=1;y=" and "a=1;b=" predict alike; each stream keeps its own, but streams with
    the same history share the rows."""
    s = Structure(INDIRECT_KIND, streams=2)
    assert s.kinds == ["indirect"] and INDIRECT_KIND == 1 << STRUCTURE.index("indirect")

    def context(text: bytes, stream: int = 0, fresh: bool = True) -> int:
        if fresh:
            s.clear()
        hist = np.zeros(2, dtype=np.uint64)
        for b in text:
            s.update(np.array([stream]), np.array([b]))
            hist[stream] = (hist[stream] << np.uint64(8)) | np.uint64(b)
        return int(s.contexts(hist)[stream, 0])
    assert context(b"x=1;y=") == context(b"a=1;b=") != context(b"a=2;b=")
    assert context(b"x=1;x=2;x=") != context(b"x=2;x=1;x=")            # the newest follower is its own byte
    assert context(b"x=0;x=1;x=2;x=") == context(b"y=1;y=2;y=")           # only the last two
    assert context(b"q=1;q=", stream=1) == context(b"a=1;b=")             # another stream, the same row
    context(b"x=1;y=")
    assert context(b"a=2;b=", stream=1, fresh=False) == context(b"a=2;b=")  # stream 0's "=1" is not stream 1's


def test_shape_context_is_the_runs_of_byte_classes_in_text_and_the_bytes_before_the_last_elsewhere():
    """In text, the syntax whatever the names: the last byte and the classes of the last six runs
    of one class within 32 bytes, with the newest run's length up to 7. Where a byte no text has is
    among the last 16, or one of the last two is above 127 (binaries, UTF-16, CJK), the two bytes
    before the last one, which skip a changing byte."""
    s = Structure(1 << STRUCTURE.index("shape"), streams=1)
    assert s.kinds == ["shape"]

    def context(text: bytes) -> int:
        s.clear()
        hist = np.zeros(1, dtype=np.uint64)
        for b in text:
            s.update(np.array([0]), np.array([b]))
            hist[0] = (hist[0] << np.uint64(8)) | np.uint64(b)
        return int(s.contexts(hist)[0, 0])
    assert context(b"self.fooo(bar, ") == context(b"x.y[zz, ") != context(b"x.y=zz, ")
    assert context(b"Q.b.c") != context(b"q.b.c")                      # five runs: Q's class is one
    assert context(b"Q.b.c.d") == context(b"q.b.c.d")                  # the seventh run is not
    assert context(b"x =  ") != context(b"x =    ")                    # the newest run's length
    assert context(b"x =" + b" " * 7) == context(b"y =" + b" " * 9)    # up to 7
    assert context(b"Q" + b"a b " * 8) == context(b"q" + b"a b " * 8)  # 33 bytes back
    assert context(b"\x00xyB") == context(b"\x01xyB") != context(b"\x00xzB")   # not text
    assert context(b"\x00" + b"a" * 14 + b"b") != context(b"\x00" + b"a" * 15 + b"b")   # 16, 17 back
    assert context(b"\x00" + b"a" * 15 + b"b") == context(b"\x01" + b"c" * 15 + b"b")
    assert context("中文".encode()) == context("中斈".encode())   # CJK: its last byte skipped


def test_only_the_tree_mixer_reads_the_mark_line_and_indirect_rows():
    """With the tree mixer, the network's count mixer reads every row but order 5's, word_mark's,
    mark_gap's, line_column's and indirect's: default's network mixes 16 of its 21 rows (one
    tree of sums); without the tree mixer, the network reads them all."""
    m = preset("default").model
    assert m.n_contexts == 21 and m.n_network_rows == 16
    assert m.network_rows == (0, 1, 2, 3, 5) + tuple(range(6, 16)) + (20,)   # orders but 5, words, 8 structure rows, match
    assert replace(m, tree=0).network_rows is None
    assert replace(m, structure=0b1111111, orders=(1, 2, 3, 4, 6)).network_rows is None
    data = mission_log(3000)
    twin = Twin(preset("default"), len(data), data)
    assert twin.model.mixer.K == 16 and twin.tree.K == 21
    assert twin._index_window.shape[-1] == 16 and twin.count_window.shape[-2:] == (21, 256)
    assert twin.model.mixer.rows.tolist() == list(m.network_rows)
