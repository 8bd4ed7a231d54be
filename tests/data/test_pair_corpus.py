"""The streamed sentence pairs (PairCorpus) against the in-memory path, and its memory.

The oracle is the in-memory path the translator took before streaming:
``read_sentence_pairs`` + ``split_pairs`` + ``WordVocab.build`` over the training pairs +
an encoded list of ``(source ids, target ids)`` + ``pair_batches`` on that list. The
streamed path must give the same split, vocabularies, ids and batches (values), whatever
the chunk size (down to one byte, so that multi-byte characters and lines are cut).
"""

from __future__ import annotations

import random
import shutil
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from gatelab.data.batching import collate_pairs, pair_batches
from gatelab.data.pair_corpus import PairCorpus, share_pairs
from gatelab.data.pairs import read_sentence_pairs, split_codes, split_indices, split_pairs
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


# ----------------------------------------------------------------- the streamed split


@pytest.mark.parametrize(("n", "valid", "test"), [(5, 1, 1), (46, 5, 4), (70_000, 1000, 1000)])
def test_the_split_has_exact_sizes_and_depends_on_seed_and_n_only(n, valid, test):
    whole = np.concatenate(list(split_codes(n, valid, test, seed=7)))
    assert whole.dtype == np.uint8 and len(whole) == n
    assert np.bincount(whole, minlength=3).tolist() == [n - valid - test, valid, test]
    for block in (1, 3, 1000) if n < 1000 else (977, 4096):  # how they are walked: no matter
        again = np.concatenate(list(split_codes(n, valid, test, seed=7, block=block)))
        np.testing.assert_array_equal(again, whole)
    other = np.concatenate(list(split_codes(n, valid, test, seed=8)))
    assert not np.array_equal(other, whole)
    train, held, tested = split_indices(n, valid=valid, test=test, seed=7)
    np.testing.assert_array_equal(tested, np.flatnonzero(whole == 2))
    np.testing.assert_array_equal(held, np.flatnonzero(whole == 1))
    np.testing.assert_array_equal(train, np.flatnonzero(whole == 0))


def test_every_split_of_the_sizes_is_equally_likely():
    """5 pairs, 1 valid and 1 test: 20 splits; 4000 seeds give each 200 times (binomial
    sd 13.8: a bound of 5 sd)."""
    counts = Counter()
    for seed in range(4000):
        codes = np.concatenate(list(split_codes(5, 1, 1, seed=seed)))
        counts[(int(np.flatnonzero(codes == 1)[0]), int(np.flatnonzero(codes == 2)[0]))] += 1
    assert len(counts) == 20
    assert all(abs(c - 200) < 70 for c in counts.values()), counts


def test_the_permutation_rule_is_the_split_of_old_run_folders():
    order = np.random.default_rng(3).permutation(40)  # the oracle: the old rule itself
    train, valid, test = split_indices(40, valid=4, test=5, seed=3, rule="permutation")
    np.testing.assert_array_equal(test, np.sort(order[:5]))
    np.testing.assert_array_equal(valid, np.sort(order[5:9]))
    np.testing.assert_array_equal(train, np.sort(order[9:]))
    with pytest.raises(ValueError, match=r"rule='shuffle'; expected one of"):
        split_indices(40, rule="shuffle")


# ----------------------------------------------------------------- bucketed batches


def bucket_oracle(pairs, B: int, C: int, seed: int):
    """The chunked bucket rule written out plainly: chunks of C pairs in a seeded order;
    in each, positions shuffled, sorted by (source, target) length, cut into runs of B,
    runs shuffled (one ``random.Random(seed)`` for all, in that order)."""
    rng = random.Random(seed)
    shuffle = rng.shuffle if seed is not None else (lambda items: None)
    chunks = list(range(-(-len(pairs) // C)))
    shuffle(chunks)
    out = []
    for c in chunks:
        pos = list(range(c * C, min(len(pairs), (c + 1) * C)))
        shuffle(pos)
        pos.sort(key=lambda k: (len(pairs[k][0]), len(pairs[k][1])))
        runs = [pos[i : i + B] for i in range(0, len(pos), B)]
        shuffle(runs)
        out += runs
    return out


def test_chunked_batches_follow_the_bucket_rule_and_cover_every_pair_once():
    rng = np.random.default_rng(0)
    pairs = [
        (
            rng.integers(4, 30, rng.integers(1, 9)).tolist(),
            rng.integers(4, 30, rng.integers(1, 6)).tolist(),
        )
        for _ in range(103)
    ]
    B, per_chunk = 4, 3  # chunks of 12 pairs: 9 chunks, the last of 7
    runs = bucket_oracle(pairs, B, B * per_chunk, seed=5)
    batches = pair_batches(pairs, B, seed=5, chunk_batches=per_chunk)
    assert len(batches) == len(runs) == 8 * 3 + 2
    want = [collate_pairs([pairs[k] for k in run]) for run in runs]
    assert_same_batches(list(batches), want)
    assert_same_batches(list(pair_batches(pairs, B, seed=5, chunk_batches=per_chunk)), want)
    assert sorted(k for run in runs for k in run) == list(range(103))  # each pair once
    for run in runs:  # each run inside one chunk, sorted by length within it
        assert len({k // (B * per_chunk) for k in run}) == 1
        lengths = [(len(pairs[k][0]), len(pairs[k][1])) for k in run]
        assert lengths == sorted(lengths)
    assert_same_batches([batches[3], batches[-1]], [want[3], want[-1]])
    assert [len(b["src"]) for b in batches].count(B) == len(runs) - 1  # the last chunk: 4 + 3
    # no seed: the chunks in order, each sorted by length
    plain = [collate_pairs([pairs[k] for k in run]) for run in bucket_oracle(pairs, B, 12, None)]
    assert_same_batches(list(pair_batches(pairs, B, chunk_batches=per_chunk)), plain)
    with pytest.raises(ValueError, match=r"chunk_batches=0; expected an int >= 1"):
        pair_batches(pairs, B, chunk_batches=0)


def test_each_rank_reads_only_its_rows_of_every_global_batch(tmp_path):
    f = tmp_path / "pairs.txt"
    f.write_bytes("\n".join(LINES).encode())
    corpus = PairCorpus(f, valid=3, test=3, seed=2)
    vocabs = (
        WordVocab.build(corpus.tokens("train", 0)),
        WordVocab.build(corpus.tokens("train", 1)),
    )
    B = 5  # 40 train pairs but the one of no token: 39, so the last batch has 4 rows
    whole = list(pair_batches(corpus.encode(*vocabs, ["train"])[0], B, seed=4, chunk_batches=2))
    for world in (2, 3, 5):
        read, want = 0, 0
        for rank in range(world):
            ids = corpus.encode(*vocabs, ["train"])[0]
            got = list(pair_batches(ids, B, seed=4, chunk_batches=2, rank=rank, world_size=world))
            assert len(got) == len(whole)
            for mine, batch in zip(got, whole, strict=True):
                tokens = (batch["src_lengths"] - 1) + (batch["tgt_out"] != 0).sum(1) - 1  # (B,)
                if rank < len(batch["src"]):  # the global batch's rows rank, rank + world, ...
                    assert_same_batches([mine], [{k: v[rank::world] for k, v in batch.items()}])
                    want += 4 * int(tokens[rank::world].sum())
                else:  # a stand-in (row 0), which the translator weighs 0
                    assert mine.pop("standin") is True
                    assert_same_batches([mine], [{k: v[:1] for k, v in batch.items()}])
                    want += 4 * int(tokens[0])
            read += ids.bytes_read
        assert read == want, world  # each rank read its rows' ids and nothing else


def test_shared_pairs_open_by_name_and_unlink(tmp_path):
    f = tmp_path / "pairs.txt"
    f.write_bytes("\n".join(LINES).encode())
    shared = share_pairs(f, valid=3, test=3, seed=1, min_freq=1, cache_dir=tmp_path)
    corpus = PairCorpus(f, valid=3, test=3, seed=1)
    assert shared.src_vocab == WordVocab.build(corpus.tokens("train", 0))
    assert (shared.pairs, shared.sizes, shared.skipped) == (46, corpus.sizes, [48])
    direct = corpus.encode(shared.src_vocab, shared.tgt_vocab, ("train", "valid"))
    opened = [shared.open("train"), shared.open("valid")]
    shared.unlink()
    assert list(tmp_path.iterdir()) == [f]  # the names are gone, the open files stay
    for a, b in zip(opened, direct, strict=True):
        assert [a[k] for k in range(len(a))] == [b[k] for k in range(len(b))]
    with pytest.raises(DataError, match=r"set TMPDIR to a folder they share"):
        shared.open("train")


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
        from gatelab.data.pair_corpus import share_pairs
        shared = share_pairs(path, valid=1000, test=1000, seed=0, min_freq=1, cache_dir=tmp)
        train = shared.open("train")
        shared.unlink()
    batches = pair_batches(train, 64, seed=1)
    first = [batch["src"].sum().item() for batch, _ in zip(batches, range(3))]
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


@pytest.mark.slow  # ~50 s on the shared 2-core machine (4 passes over 8 + 32 MB, 5 MB read whole)
def test_the_peak_memory_of_the_streamed_reader_is_flat_in_the_number_of_pairs(tmp_path):
    """From an 8 MB file to a 32 MB one (~0.08M to ~0.3M pairs) the streamed reader's
    peak (VmHWM: the split, the vocabularies, the encoding and the first batches) grows by
    less than 4 MB: no state a pair is held (the old index held 40-61 bytes a pair, which
    would be 9-14 MB more here; measured +0.4 MiB from 0.1M to 0.4M pairs, +1.2 MiB to
    1.9M). The old in-memory reader, on a 5 MB file, needs several times its file
    (5.9-7.6x measured). Their equal results are tested above."""
    free = shutil.disk_usage(tmp_path).free
    if free < 1 * 2**30:
        pytest.skip(f"needs 1 GiB free under {tmp_path}; {free / 2**30:.1f} GiB free")
    old_file, small, big = tmp_path / "old.txt", tmp_path / "small.txt", tmp_path / "big.txt"
    try:
        write_pairs(old_file, 5 * 2**20)
        old = run_child(old_file, "old", tmp_path)
        old_ratio = (old["peak"] - old["base"]) / old_file.stat().st_size
        assert old_ratio > 2, old  # measured 5.9x
        write_pairs(small, 8 * 2**20)
        write_pairs(big, 32 * 2**20)
        low = run_child(small, "new", tmp_path)
        high = run_child(big, "new", tmp_path)
        assert high["n"] == len(PairCorpus(big)) - 2000  # every training pair, encoded
        assert (high["peak"] - high["base"]) / big.stat().st_size < 0.75, (high, old_ratio)
        assert high["peak"] - low["peak"] < 4 * 2**20, (low, high)
        assert sorted(tmp_path.iterdir()) == sorted([old_file, small, big])  # ids unlinked
    finally:
        for f in (old_file, small, big):
            f.unlink(missing_ok=True)
