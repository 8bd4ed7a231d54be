"""Tests of gatelab.data.vocab: the tokenisers and the vocabulary family (Vocabulary,
WordVocab, CharVocab, Labels) on one core."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatelab.data.corpus import read_text_corpus
from gatelab.data.vocab import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIALS,
    UNK_ID,
    CharVocab,
    IdMap,
    Labels,
    PlainTokenizer,
    Tokenizer,
    Vocabulary,
    WordVocab,
    tokenize,
)
from gatelab.errors import DataError
from tests.helpers import shared_data

# --------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------

FAST = settings(max_examples=60, deadline=None)


def test_tokenizer_tokens() -> None:
    tok = Tokenizer()
    assert tok("I don't think it's 3.5/10 -- 1,000 people’d say: WON'T!") == [
        "i", "do", "n't", "think", "it", "'s", "3.5", "/", "10", "-", "-",
        "1,000", "people", "'d", "say", ":", "wo", "n't", "!",
    ]  # fmt: skip
    # Already tokenised SST-2 / MR text tokenises the same way.
    assert tok("it 's not ca n't") == ["it", "'s", "not", "ca", "n't"]
    assert tok("  \x85 \n") == []
    assert tok("a\x85b") == ["a", "b"]
    assert Tokenizer(lower=False)("Don't GO") == ["Do", "n't", "GO"]


def test_tokenizer_dict_roundtrip() -> None:
    tok = Tokenizer(lower=False)
    d = json.loads(json.dumps(tok.to_dict()))
    assert d == {"type": "regex_word", "lower": False}
    assert Tokenizer.from_dict(d) == tok
    with pytest.raises(DataError, match="not a Tokenizer description"):
        Tokenizer.from_dict({"type": "bpe"})
    with pytest.raises(DataError, match="'lower' must be true or false, got 'yes'"):
        Tokenizer.from_dict({"type": "regex_word", "lower": "yes"})


# --------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------


def test_vocabulary_order_and_limits() -> None:
    data = [["b", "a", "c", "b"], ["a", "b", "d", "<unk>"], ["c"]]
    v = Vocabulary.build(data)
    # b:3, a:2, c:2 (tie broken a < c), d:1; the literal '<unk>' is not counted.
    assert v.tokens == ["<pad>", "<unk>", "b", "a", "c", "d"]
    assert Vocabulary.build(data, min_freq=2).tokens == ["<pad>", "<unk>", "b", "a", "c"]
    assert Vocabulary.build(data, max_size=4).tokens == ["<pad>", "<unk>", "b", "a"]
    assert v.encode(["a", "zzz", "d", "<pad>"]) == [3, UNK_ID, 5, UNK_ID]
    assert v.decode([2, 3, PAD_ID]) == ["b", "a", "<pad>"]
    assert len(v) == 6
    assert v.unknown_fraction(["a", "x", "y", "b"]) == 0.5
    assert v.unknown_fraction([["a", "x"], ["y", "b", "c", "d"]]) == pytest.approx(2 / 6)


def test_vocabulary_dict_roundtrip_and_errors() -> None:
    v = Vocabulary.build([["x", "y", "x"]])
    d = json.loads(json.dumps(v.to_dict()))
    assert Vocabulary.from_dict(d) == v
    with pytest.raises(DataError, match=r"must start with '<pad>', '<unk>'; got \['x'"):
        Vocabulary(["x", "<pad>", "<unk>"])
    with pytest.raises(DataError, match=r"token 'x' appears twice \(ids 2 and 3\)"):
        Vocabulary(["<pad>", "<unk>", "x", "x"])
    with pytest.raises(DataError, match="token id 9 is out of range"):
        v.decode([9])
    with pytest.raises(DataError, match="min_freq must be an integer >= 1, got 0"):
        Vocabulary.build([["x"]], min_freq=0)
    with pytest.raises(DataError, match="max_size must be an integer >= 2"):
        Vocabulary.build([["x"]], max_size=1)
    with pytest.raises(DataError, match="item 0 is a str"):
        Vocabulary.build(["not tokenised"])
    with pytest.raises(DataError, match="no tokens"):
        v.unknown_fraction([])


@FAST
@given(st.lists(st.lists(st.text(min_size=1, max_size=4), max_size=8), max_size=8))
def test_vocabulary_encode_decode_roundtrip(token_lists: list[list[str]]) -> None:
    v = Vocabulary.build(token_lists)
    specials = {"<pad>", "<unk>"}
    for tokens in token_lists:
        known = [t for t in tokens if t not in specials]
        ids = v.encode(known)
        assert v.decode(ids) == known
        assert all(i >= 2 for i in ids)
    assert len(v) == 2 + len({t for ts in token_lists for t in ts} - specials)


# --------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------


def test_labels_order_encode_decode() -> None:
    numeric = Labels.fit(["10", "9", "2", "9"])
    assert numeric.names == ("2", "9", "10")
    assert numeric.encode(["10", "2"]) == [2, 0]
    words = Labels.fit(["pos", "neg", "neutral"])
    assert words.names == ("neg", "neutral", "pos")
    assert words.decode([2, 0]) == ["pos", "neg"]
    assert Labels.from_dict(json.loads(json.dumps(words.to_dict()))) == words
    with pytest.raises(DataError, match=r"unknown class 'meh'; the known classes are"):
        words.encode(["meh"])
    with pytest.raises(DataError, match=r"class id 3 is out of range 0\.\.2"):
        words.decode([3])
    with pytest.raises(DataError, match=r"repeated: \['a'\]"):
        Labels(["a", "a"])


# --------------------------------------------------------------------------------------
# Words (the translator's), characters (the char LM's)
# --------------------------------------------------------------------------------------


def test_tokenizer_lower_cases_and_splits_words_from_punctuation():
    assert tokenize("Ils l'ont VU, déjà !") == ["ils", "l", "'", "ont", "vu", ",", "déjà", "!"]
    assert tokenize("  ") == []


def test_vocabulary_specials_frequency_order_and_unknowns():
    v = WordVocab.build([["b", "a", "b"], ["c", "b", "a"], ["d"]], min_freq=2)
    assert v.tokens == [*SPECIALS, "b", "a"]
    assert v.encode(["a", "zzz"]) == [5, UNK_ID]
    assert v.decode([BOS_ID, 4, 5, EOS_ID, 4]) == ["b", "a"]
    assert WordVocab.from_dict(v.to_dict()) == v
    with pytest.raises(DataError, match="must start with"):
        WordVocab(["a", "b"])


def test_vocab_round_trip_and_unseen_characters_are_refused_with_positions():
    v = CharVocab.from_text("banana")
    assert v.chars == ["a", "b", "n"]
    assert v.decode(v.encode("nab")) == "nab"
    assert CharVocab.from_dict(v.to_dict()) == v
    with pytest.raises(
        DataError, match=r"2 character\(s\) never seen.*'x' \(first at position 1\)"
    ):
        v.encode("axbzx", what="the prompt")
    with pytest.raises(DataError, match=r"'z' \(first at position 3\)"):
        v.encode("axbzx")


def test_tinyshakespeare_vocabulary():
    text = read_text_corpus(shared_data("text", "tinyshakespeare.txt"))
    vocab = CharVocab.from_text(text)
    assert len(vocab) == 65
    assert vocab.decode(vocab.encode(text[:200])) == text[:200]


# --------------------------------------------------------------------------------------
# One family: the JSON of run folders, the shared core
# --------------------------------------------------------------------------------------


def test_every_map_writes_the_json_its_run_folders_hold_and_refuses_the_others() -> None:
    maps = {
        Vocabulary: (
            ["<pad>", "<unk>", "b"],
            {"type": "vocabulary", "tokens": ["<pad>", "<unk>", "b"]},
        ),
        WordVocab: ([*SPECIALS, "x"], {"kind": "words", "tokens": [*SPECIALS, "x"]}),
        CharVocab: ("ba", {"kind": "chars", "chars": ["a", "b"]}),
        Labels: (["10", "2"], {"type": "labels", "names": ["2", "10"]}),
    }
    for cls, (items, doc) in maps.items():
        m = cls(items)
        assert json.dumps(m.to_dict()) == json.dumps(doc)  # keys in the same order too
        assert cls.from_dict(json.loads(json.dumps(doc))) == m
        for other, (_, other_doc) in maps.items():
            if other is not cls:
                with pytest.raises(DataError, match=f"not a {cls.__name__} description"):
                    cls.from_dict(other_doc)
    # equal entries of different kinds are different maps
    assert Vocabulary(["<pad>", "<unk>"]) != IdMap(["<pad>", "<unk>"])
    assert Labels(["a"]) != CharVocab("a")


def test_shared_core_ids_range_check_and_counting() -> None:
    v = WordVocab.build([["b", "a", "b", "<s>"], ["c", "b", "a"]], max_size=2)
    assert v.tokens == [*SPECIALS, "b", "a"]  # the literal '<s>' is not counted
    assert [v.index[t] for t in v.tokens] == list(range(6))
    assert "b" in v and "c" not in v
    assert v.lookup([5, 4, 0]) == ["a", "b", "<pad>"]
    with pytest.raises(DataError, match=r"token id 6 is out of range 0\.\.5"):
        v.lookup([6])
    with pytest.raises(DataError, match=r"character id -1 is out of range 0\.\.1"):
        CharVocab("ab").decode([0, -1])  # a negative id never wraps around
    with pytest.raises(DataError, match="item 0 is a str"):
        WordVocab.build(["not tokenised"])
    with pytest.raises(DataError, match="min_freq must be an integer >= 1, got 0"):
        WordVocab.build([["a"]], min_freq=0)
    with pytest.raises(DataError, match=r"word vocabulary token 'a' appears twice \(ids 4 and 5\)"):
        WordVocab([*SPECIALS, "a", "a"])


def test_plain_tokenizer_keeps_apostrophes_and_contractions_whole() -> None:
    text = "They don\u2019t SEE it's 3.5"
    assert tokenize(text) == ["they", "don", "\u2019", "t", "see", "it", "'", "s", "3", ".", "5"]
    assert PlainTokenizer()(text) == tokenize(text)
    assert Tokenizer()(text) == ["they", "do", "n't", "see", "it", "'s", "3.5"]
    plain = PlainTokenizer(lower=False)
    assert plain.to_dict() == {"type": "regex_plain", "lower": False}
    assert PlainTokenizer.from_dict(plain.to_dict()) == plain
    assert plain != Tokenizer(lower=False)
    with pytest.raises(DataError, match="not a Tokenizer description"):
        Tokenizer.from_dict(plain.to_dict())
    with pytest.raises(DataError, match="PlainTokenizer expects a str"):
        plain(["a"])


def test_word_vocab_takes_its_tokens_by_name():
    """``WordVocab(tokens=...)`` is the public constructor (gatelab.__all__)."""
    tokens = [*SPECIALS, "the", "cat"]
    vocab = WordVocab(tokens=tokens)
    assert vocab.tokens == tokens
    assert vocab.encode(["cat", "dog"]) == [5, UNK_ID]


def test_counts_made_in_one_pass_give_the_vocabulary_of_build() -> None:
    """Counting several lists into one Counter (as the translator counts both sides of
    each pair in one pass) and keeping from it gives what build gives; specials in the
    data are not kept, and bad ``min_freq`` is refused before any counting."""
    sentences = [["a", "b", "a"], ["<s>", "c", "b"], ["a"]]
    counts = WordVocab.count(sentences[:1])
    WordVocab.count(sentences[1:], counts)  # updated in place
    for min_freq in (1, 2):
        got = WordVocab.from_counts(counts, min_freq)
        assert got == WordVocab.build(sentences, min_freq)
    assert WordVocab.from_counts(counts).tokens[4:] == ["a", "b", "c"]
    with pytest.raises(DataError, match="min_freq must be an integer >= 1, got 0"):
        WordVocab.from_counts(counts, 0)
