"""Seq2Seq: tokenizer and vocabulary, attention, greedy and beam search, training, data."""

from __future__ import annotations

import pytest
import torch

from gatelab.data.batching import collate_pairs
from gatelab.data.vocab import BOS_ID, EOS, PAD_ID, WordVocab, tokenize
from gatelab.errors import DataError
from gatelab.models.seq2seq import Attention, Seq2Seq
from gatelab.tasks.sequence import TranslatorTrainConfig, corpus_bleu, translator_splits

# real data live beside the repository; tests that need them skip when they are absent
from tests.helpers import SHARED_DATA

DATA = SHARED_DATA


PAIRS = [
    ("I run.", "Je cours."),
    ("I see a cat.", "Je vois un chat."),
    ("You see a dog.", "Tu vois un chien."),
    ("We run fast.", "Nous courons vite."),
    ("The cat runs.", "Le chat court."),
    ("I see you.", "Je te vois."),
]


def vocabs():
    src = WordVocab.build(tokenize(s) for s, _ in PAIRS)
    tgt = WordVocab.build(tokenize(t) for _, t in PAIRS)
    return src, tgt


def make_model(seed=0, **kw) -> Seq2Seq:
    torch.manual_seed(seed)
    src, tgt = vocabs()
    args = {"embedding_dim": 12, "hidden_size": 16, "num_layers": 1, "dropout": 0.0} | kw
    return Seq2Seq(src, tgt, **args).eval()


def encoded_pairs(model):
    return [
        (model.src_vocab.encode(tokenize(s)), model.tgt_vocab.encode(tokenize(t))) for s, t in PAIRS
    ]


# ----------------------------------------------------------------- attention


@pytest.mark.parametrize("kind", ["dot", "general"])
def test_attention_weights_sum_to_one_and_skip_padding(kind):
    torch.manual_seed(0)
    att = Attention(8, kind)
    memory = torch.randn(3, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    weights, context = att(torch.randn(3, 4, 8), att.keys(memory), memory, mask)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4))
    assert (weights[~mask[:, None, :].expand_as(weights)] == 0).all()
    torch.testing.assert_close(context, weights @ memory)
    torch.testing.assert_close(context[2], memory[2, :1].expand(4, 8))  # one real position


def test_dot_attention_picks_the_constructed_position():
    H, S = 6, 5
    memory = torch.eye(S, H)[None] * 0.5  # (1, S, H): position s holds e_s / 2
    target = 3
    query = 40.0 * torch.eye(S, H)[target][None, None]  # (1, 1, H): aligned with position 3
    att = Attention(H, "dot")
    weights, context = att(query, att.keys(memory), memory, torch.ones(1, S, dtype=torch.bool))
    assert int(weights.argmax()) == target
    assert float(weights[0, 0, target]) > 0.99
    torch.testing.assert_close(context[0, 0], memory[0, target], atol=0.01, rtol=0)


def test_model_attention_matrix_rows_sum_to_one():
    model = make_model(attention="dot")
    src_tokens, tgt_tokens, weights = model.attention("I see a cat.", "Je vois un chat.")
    assert src_tokens == ["i", "see", "a", "cat", ".", EOS]
    assert tgt_tokens == ["je", "vois", "un", "chat", ".", EOS]
    assert weights.shape == (6, 6)
    torch.testing.assert_close(weights.sum(-1), torch.ones(6))
    _, own, w2 = model.attention("I run.")  # its own greedy translation
    assert own[-1] == EOS and w2.shape == (len(own), 4)


# ----------------------------------------------------------------- decoding


@pytest.mark.parametrize("input_feeding", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_beam_one_equals_greedy(seed, input_feeding):
    model = make_model(seed, input_feeding=input_feeding)
    for src, _ in PAIRS[:3]:
        _, ids = model.encode_source(src)
        greedy = model.greedy(torch.tensor([ids]), torch.tensor([len(ids)]), max_len=8)[0]
        beam = model.beam_search(ids, beam=1, max_len=8)
        assert beam.ids == greedy.ids
        assert beam.logprob == pytest.approx(greedy.logprob, abs=1e-9)


def test_batched_greedy_equals_one_at_a_time():
    model = make_model(1)
    batch = collate_pairs(encoded_pairs(model))
    together = model.greedy(batch["src"], batch["src_lengths"], max_len=8)
    for b, hyp in enumerate(together):
        n = int(batch["src_lengths"][b])
        alone = model.greedy(batch["src"][b : b + 1, :n], batch["src_lengths"][b : b + 1], 8)[0]
        assert alone.ids == hyp.ids
        assert alone.logprob == pytest.approx(hyp.logprob, abs=1e-4)


@pytest.mark.parametrize("seed", range(6))
def test_beam_score_is_at_least_greedy_and_matches_teacher_forced_scoring(seed):
    model = make_model(seed, attention="dot" if seed % 2 else "general")
    for src, _ in PAIRS:
        _, ids = model.encode_source(src)
        greedy = model.greedy(torch.tensor([ids]), torch.tensor([len(ids)]), max_len=10)[0]
        beam = model.beam_search(ids, beam=4, max_len=10, alpha=1.0)
        g_score = model.score(ids, greedy.ids) / len(greedy.ids)
        b_score = model.score(ids, beam.ids) / len(beam.ids)
        assert b_score >= g_score - 1e-5
        # the beam's own bookkeeping agrees with scoring the sequence afresh
        assert beam.logprob == pytest.approx(model.score(ids, beam.ids), abs=1e-4)
        assert beam.score == pytest.approx(beam.logprob / len(beam.ids), abs=1e-12)
        assert PAD_ID not in beam.ids + greedy.ids and BOS_ID not in beam.ids + greedy.ids


def test_beam_search_strictly_beats_greedy_on_some_random_models():
    wins = 0
    for seed in range(8):
        model = make_model(100 + seed, hidden_size=8)
        for src, _ in PAIRS:
            _, ids = model.encode_source(src)
            greedy = model.greedy(torch.tensor([ids]), torch.tensor([len(ids)]), max_len=10)[0]
            beam = model.beam_search(ids, beam=5, max_len=10)
            wins += beam.score > greedy.score + 1e-9
    assert wins > 0


@pytest.mark.parametrize("input_feeding", [True, False])
def test_teacher_forced_forward_equals_step_by_step_decoding(input_feeding):
    model = make_model(2, input_feeding=input_feeding).double()
    batch = collate_pairs(encoded_pairs(model))
    src, lengths, tgt_in = batch["src"], batch["src_lengths"], batch["tgt_in"]
    B, T = tgt_in.shape

    def stepwise(feed_own: bool) -> torch.Tensor:
        enc = model.encode(src, lengths)
        state, feed = enc.state, torch.zeros(B, 16, dtype=torch.double)
        y, out = tgt_in[:, 0], []
        for t in range(T):
            if t > 0:
                y = out[-1].argmax(-1) if feed_own else tgt_in[:, t]
            logits, state, feed, _ = model.decode_step(y, state, feed, enc)
            out.append(logits)
        return torch.stack(out, dim=1)  # (B, T, V)

    with torch.no_grad():
        gold = model(src, lengths, tgt_in)  # one LSTM call without input feeding
        own = model(src, lengths, tgt_in, teacher_forcing=0.0)  # feeds its own argmax
        torch.testing.assert_close(gold, stepwise(False), rtol=0, atol=1e-10)
        torch.testing.assert_close(own, stepwise(True), rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match=r"teacher_forcing=1.5; expected a probability"):
        model.loss(batch, 1.5)


def test_empty_source_sentence_is_refused():
    with pytest.raises(DataError, match="holds no word to translate"):
        make_model().translate(" ... "[:1])


# ----------------------------------------------------------------- training


@pytest.mark.parametrize(
    ("kw"),
    [
        {"attention": "general", "input_feeding": True},
        {"attention": "dot", "input_feeding": False, "variant": "cifg", "backend": "reference"},
    ],
)
def test_tiny_overfit_learns_the_pairs(kw):
    model = make_model(0, hidden_size=32, embedding_dim=16, **kw).train()
    batch = collate_pairs(encoded_pairs(model))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(120):
        loss = model.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(model.loss(batch).detach()) < 0.05  # nats per target word
    for src, tgt in PAIRS:
        assert model.translate(src) == " ".join(tokenize(tgt))
        assert model.translate(src, beam=3) == " ".join(tokenize(tgt))


def test_bleu_of_exact_translations_is_100():
    refs = ["Je cours.", "Tu vois un chien."]
    hyps = [" ".join(tokenize(r)) for r in refs]
    assert corpus_bleu(hyps, refs) == pytest.approx(100.0)
    assert corpus_bleu(["je", "tu"], refs) < 10


# ----------------------------------------------------------------- data


def test_pairs_file_without_tab_names_the_line(tmp_path):
    f = tmp_path / "pairs.txt"
    f.write_text("Go.\tVa !\nRun!\tCours !\nno tab here\nHi.\tSalut.\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"pairs.txt, line 3: no tab"):
        translator_splits(f, TranslatorTrainConfig(valid=1, test=1))


@pytest.mark.skipif(
    not (DATA / "translation" / "eng-fra.txt").is_file(),
    reason=f"the shared data folder {DATA} is absent (eng-fra.txt lives there)",
)
def test_eng_fra_split_skips_the_cut_off_last_line(caplog):
    dataset, splits = translator_splits(
        DATA / "translation" / "eng-fra.txt", TranslatorTrainConfig()
    )
    assert [n for n, _ in dataset.skipped] == [18066]
    assert "skipping the last line" in caplog.text
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (16065, 1000, 1000)
    again = translator_splits(DATA / "translation" / "eng-fra.txt", TranslatorTrainConfig())[1]
    assert again.test == splits.test  # fixed and seeded


def test_translate_refuses_a_length_normalisation_with_greedy_decoding():
    model = make_model()
    sentence = PAIRS[0][0]
    with pytest.raises(ValueError, match=r"alpha=0.5 with beam=1: greedy decoding has no"):
        model.translate(sentence, beam=1, alpha=0.5)
    # beam search with the default alpha is alpha=1
    assert model.translate(sentence, beam=3) == model.translate(sentence, beam=3, alpha=1.0)
