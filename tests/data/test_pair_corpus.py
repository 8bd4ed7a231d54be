"""The streamed sentence pairs (PairCorpus) against the in-memory path, and its memory.

The oracle is the in-memory path the translator took before streaming:
``read_sentence_pairs`` + ``split_pairs`` + ``WordVocab.build`` over the training pairs +
an encoded list of ``(source ids, target ids)`` + ``pair_batches`` on that list. The
streamed path must give the same split, vocabularies, ids and batches (values), whatever
the chunk size (down to one byte, so that multi-byte characters and lines are cut).
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from gatelab.data.batching import pair_batches
from gatelab.data.pair_corpus import PairCorpus
from gatelab.data.pairs import read_sentence_pairs, split_pairs
from gatelab.data.vocab import WordVocab, tokenize
from gatelab.errors import DataError
from tests.helpers import run_child_json

# multi-byte characters, CRLF, a blank line, a side with no token ("…"), a repeated
# pair, and a cut-off last line (it ends in whitespace, mid-sentence)
LINES = [
    "Go.\tVa !",
    "I ran home.\tJe suis rentré en courant.\r",
    "",
    "Café naïve — 中文 😀?\tUn café naïf !",
    "…\tpoints",
    "Go.\tVa !",
    "We saw it.\tNous l'avons vu.\tattribution #1",
    *(f"Sentence {k} is here.\tLa phrase {k % 7} est là." for k in range(40)),
    "They did it again.\tIls l'ont ",
]


def old_path(path: Path, valid: int, test: int, seed: int, min_freq: int):
    """The translator's data before streaming (the oracle)."""
    splits = split_pairs(read_sentence_pairs(path), valid=valid, test=test, seed=seed)
    src_vocab = WordVocab.build((tokenize(s) for s, _ in splits.train), min_freq)
    tgt_vocab = WordVocab.build((tokenize(t) for _, t in splits.train), min_freq)

    def encode(pairs):
        out = []
        for s, t in pairs:
            s, t = tokenize(s), tokenize(t)
            if s and t:
                out.append((src_vocab.encode(s), tgt_vocab.encode(t)))
        return out

    return splits, src_vocab, tgt_vocab, encode(splits.train), encode(splits.valid)


def assert_same_batches(got, want) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in b)


@pytest.mark.parametrize(
    ("chunk", "valid", "test", "seed"), [(1, 5, 4, 0), (7, 0, 3, 3), (None, 9, 0, 11)]
)
def test_streamed_pairs_equal_the_in_memory_path(tmp_path, caplog, chunk, valid, test, seed):
    f = tmp_path / "pairs.txt"
    f.write_bytes("\n".join(LINES).encode())
    splits, src_vocab, tgt_vocab, train, held = old_path(f, valid, test, seed, 1)
    old_skipped = read_sentence_pairs(f).skipped
    caplog.clear()
    corpus = PairCorpus(f, valid=valid, test=test, seed=seed, chunk_bytes=chunk)
    assert corpus.skipped == old_skipped == [(48, LINES[-1])]
    assert len(corpus) == 46
    assert corpus.sizes == {"train": 46 - valid - test, "valid": valid, "test": test}
    assert corpus.splits() == splits
    assert corpus.texts("test") == splits.test
    assert WordVocab.build(corpus.tokens("train", 0)) == src_vocab
    assert WordVocab.build(corpus.tokens("train", 1)) == tgt_vocab
    ids, valid_ids = corpus.encode(src_vocab, tgt_vocab, ("train", "valid"), cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == [f]  # the id files were unlinked at once
    assert [ids[k] for k in range(len(ids))] == train
    assert [valid_ids[k] for k in range(len(valid_ids))] == held
    assert ids[-1] == train[-1]
    for s in (None, 0, 5):
        assert_same_batches(pair_batches(ids, 4, seed=s), pair_batches(train, 4, seed=s))
    assert_same_batches(pair_batches(valid_ids, 128), pair_batches(held, 128))
    # the cut-off last line is logged once, by the first pass, not by every pass
    assert caplog.text.count("line 48: skipping the last line") == 1


def test_min_freq_vocabularies_and_errors_are_those_of_the_in_memory_reader(tmp_path):
    f = tmp_path / "pairs.txt"
    f.write_text("\n".join(LINES[:-1]) + "\n", encoding="utf-8")
    _, src_vocab, tgt_vocab, _, _ = old_path(f, 3, 3, 1, 2)
    corpus = PairCorpus(f, valid=3, test=3, seed=1)
    assert WordVocab.build(corpus.tokens("train", 0), 2) == src_vocab
    assert WordVocab.build(corpus.tokens("train", 1), 2).tokens == tgt_vocab.tokens
    assert corpus.skipped == []
    bad = tmp_path / "bad.txt"
    bad.write_text("Go.\tVa !\nno tab here\nHi.\tSalut.\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.txt, line 2: no tab"):
        PairCorpus(bad, valid=0, test=0)
    with pytest.raises(DataError, match=r"valid=30 \+ test=30 leaves no training pair"):
        PairCorpus(f, valid=30, test=30)
    with pytest.raises(ValueError, match=r"part='dev'; expected one of"):
        corpus.texts("dev")


def test_a_file_that_changes_between_passes_is_refused(tmp_path):
    f = tmp_path / "pairs.txt"
    f.write_text("\n".join(LINES[:-1]) + "\n", encoding="utf-8")
    corpus = PairCorpus(f, valid=3, test=3, seed=1)
    assert len(corpus.texts("test")) == 3
    with open(f, "a", encoding="utf-8") as out:
        out.write("One more.\tUne de plus.\n")
    with pytest.raises(DataError, match=r"pairs.txt changed while it was being read"):
        corpus.texts("test")


# ----------------------------------------------------------------- memory on a big file

_CHILD = textwrap.dedent(
    """
    import json, sys
    import torch
    from gatelab.data.batching import pair_batches
    from gatelab.data.vocab import WordVocab, tokenize

    path, mode, tmp = sys.argv[1], sys.argv[2], sys.argv[3]
    base = hwm()
    if mode == "old":  # the translator's reading before streaming
        from gatelab.data.pairs import read_sentence_pairs, split_pairs
        splits = split_pairs(read_sentence_pairs(path))
        src = WordVocab.build(tokenize(s) for s, _ in splits.train)
        tgt = WordVocab.build(tokenize(t) for _, t in splits.train)
        train = [(src.encode(tokenize(s)), tgt.encode(tokenize(t))) for s, t in splits.train]
    else:
        from gatelab.data.pair_corpus import PairCorpus
        corpus = PairCorpus(path)
        src = WordVocab.build(corpus.tokens("train", 0))
        tgt = WordVocab.build(corpus.tokens("train", 1))
        train, _ = corpus.encode(src, tgt, cache_dir=tmp)
    batches = pair_batches(train, 64, seed=1)
    first = [batches[k]["src"].sum().item() for k in range(3)]
    peak = hwm()
    print(json.dumps({"base": base, "peak": peak, "n": len(train), "first": first}))
    """
)


def run_child(path: Path, mode: str, tmp: Path) -> dict:
    return run_child_json(_CHILD, path, mode, tmp)


def write_pairs(path: Path, size: int) -> None:
    """About ``size`` bytes of pairs of 6-12 words a side (~100 bytes a line)."""
    rng = np.random.default_rng(0)
    src = np.array(["the", "gate", "forget", "cell", "input", "output", "lstm", "state"])
    tgt = np.array(["la", "porte", "oubli", "cellule", "entrée", "sortie", "état", "réseau"])
    lines = []
    for _ in range(20_000):
        s = " ".join(src[rng.integers(0, 8, rng.integers(6, 13))])
        t = " ".join(tgt[rng.integers(0, 8, rng.integers(6, 13))])
        lines.append(f"{s.capitalize()}.\t{t.capitalize()} !\n")
    block = "".join(lines).encode()
    with open(path, "wb") as f:
        done = 0
        while done < size:
            f.write(block)
            done += len(block)


@pytest.mark.slow  # ~45 s of CPU on the shared 2-core machine (5 passes over 100 MB)
def test_a_big_pairs_file_is_read_in_memory_well_under_its_size(tmp_path):
    """The streamed reader's growth over the interpreter's footprint stays well under the
    file's size (the per-pair index: ~17 bytes a pair, ~40 at the peak of the batch
    order; measured 0.36x on 122 MB and 0.54x on 100 MB, by VmHWM); the old reader,
    measured on a 5 MB file, needs several times its file (5.9-7.6x measured). Their
    equal results are tested above."""
    free = shutil.disk_usage(tmp_path).free
    if free < 1 * 2**30:
        pytest.skip(f"needs 1 GiB free under {tmp_path}; {free / 2**30:.1f} GiB free")
    small, big = tmp_path / "small.txt", tmp_path / "big.txt"
    try:
        write_pairs(small, 5 * 2**20)
        old = run_child(small, "old", tmp_path)
        old_ratio = (old["peak"] - old["base"]) / small.stat().st_size
        assert old_ratio > 2, old  # measured 5.9x
        write_pairs(big, 100 * 2**20)
        new = run_child(big, "new", tmp_path)
        assert new["n"] == len(PairCorpus(big)) - 2000  # every training pair, encoded
        ratio = (new["peak"] - new["base"]) / big.stat().st_size
        assert ratio < 0.75, (new, old_ratio)
    finally:
        for f in (small, big):
            f.unlink(missing_ok=True)
