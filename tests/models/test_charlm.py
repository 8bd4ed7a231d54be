"""Character LM: bits per character, stateful TBPTT, sampling, training, bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gatelab.data.batching import stream_batches
from gatelab.data.vocab import CharVocab
from gatelab.errors import DataError
from gatelab.models.charlm import (
    CharLM,
    bits_per_char,
    detach_state,
    evaluate_loss,
    sample_next,
)
from gatelab.tasks.sequence import split_text
from gatelab.train.runs import read_json
from gatelab.train.tbptt import (
    CHECKPOINT_FILE,
    TrainingDiverged,
    fit_loop,
    load_checkpoint,
)

# real data live beside the repository; tests that need them skip when they are absent
from tests.helpers import SHARED_DATA

DATA = SHARED_DATA


def assert_close(a, b, dtype=torch.float64, what=""):
    tol = {torch.float64: 1e-10, torch.float32: 1e-5}[dtype]
    rtol = 0.0 if dtype == torch.float64 else tol
    torch.testing.assert_close(a, b, rtol=rtol, atol=tol, msg=lambda m: f"{what}: {m}")


TEXT = "the quick brown fox jumps over the lazy dog. " * 8


def make_lm(vocab=None, seed=0, **kw) -> CharLM:
    torch.manual_seed(seed)
    args = {"embedding_dim": 8, "hidden_size": 16, "num_layers": 2} | kw
    return CharLM(vocab or CharVocab.from_text(TEXT), **args)


# ----------------------------------------------------------------- values


def test_uniform_model_scores_exactly_log2_of_the_vocabulary_size():
    model = make_lm()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    ids = model.vocab.encode(TEXT)
    V = len(model.vocab)
    assert bits_per_char(model, ids, batch_size=4, seq_len=7) == pytest.approx(
        math.log2(V), rel=0, abs=1e-12
    )
    assert evaluate_loss(model, ids, 4, 7) == pytest.approx(math.log(V), rel=0, abs=1e-12)


@pytest.mark.parametrize(
    ("variant", "backend"), [("standard", "native"), ("peephole", "reference")]
)
def test_tbptt_state_carry_equals_one_long_forward(variant, backend):
    model = make_lm(variant=variant, backend=backend).double().eval()
    ids = model.vocab.encode(TEXT)
    B, T = 4, 9
    n = (ids.numel() - 1) // B
    full, _ = model(ids[: n * B].view(B, n))  # (B, n, V): one long forward
    state, chunks = None, []
    for x, _ in stream_batches(ids, B, T):
        logits, state = model(x, detach_state(state))
        chunks.append(logits)
    assert_close(torch.cat(chunks, dim=1), full, what="chunked vs full")


def test_sampling_at_temperature_zero_and_near_zero_is_argmax():
    model = make_lm(seed=3).eval()
    greedy = model.sample("the ", 40, temperature=0)
    tiny = model.sample("the ", 40, temperature=1e-6, generator=torch.Generator().manual_seed(0))
    # the argmax loop written out
    ids = model.vocab.encode("the ")
    logits, state = model(ids[None])
    out = []
    for _ in range(40):
        k = int(logits[0, -1].argmax())
        out.append(k)
        logits, state = model(torch.tensor([[k]]), state)
    assert greedy == tiny == model.vocab.decode(out)


def test_top_k_never_emits_a_character_outside_the_top_k():
    model = make_lm(seed=4).eval()
    prompt, k = "the ", 3
    text = model.sample(
        prompt, 150, temperature=3.0, top_k=k, generator=torch.Generator().manual_seed(1)
    )
    ids = model.vocab.encode(prompt + text)
    with torch.no_grad():
        logits, _ = model(ids[None])  # (1, P + 150, V), teacher-forced over what was drawn
    P = len(prompt)
    ranks = []
    for t in range(P, P + len(text)):
        order = logits[0, t - 1].argsort(descending=True)
        ranks.append(int((order == ids[t]).nonzero()))
    assert max(ranks) < k
    assert len(set(ranks)) > 1  # it does sample, not only the argmax


def test_sample_next_top_k_and_temperature_on_fixed_logits():
    logits = torch.tensor([0.0, 5.0, 1.0, 4.0, 3.0])
    g = torch.Generator().manual_seed(0)
    draws = {sample_next(logits, 10.0, 2, g) for _ in range(300)}
    assert draws == {1, 3}
    assert sample_next(logits, 0.0) == 1
    with pytest.raises(ValueError, match=r"temperature=-1.0; expected a finite number >= 0"):
        sample_next(logits, -1.0)
    with pytest.raises(ValueError, match=r"top_k=0; expected None or an int >= 1"):
        sample_next(logits, 1.0, 0)
    with pytest.raises(ValueError, match=r"top_k=2 with temperature=0: only random draws"):
        sample_next(logits, 0.0, 2)  # the CLI refuses --top-k at --temperature 0 too


def test_prompt_with_unseen_characters_is_refused():
    model = make_lm()
    with pytest.raises(DataError, match=r"the prompt holds 1 character\(s\).*'Z' \(first at"):
        model.sample("the Zoo", 5)
    with pytest.raises(DataError, match="prompt must be non-empty"):
        model.sample("", 5)


def test_trace_gives_every_gate_per_character():
    model = make_lm(variant="cifg", backend="reference")
    chars, trace = model.trace("the fox")
    assert chars == list("the fox")
    assert trace.forget_gate.shape == (2, 7, 16)
    assert_close(trace.forget_gate, 1 - trace.input_gate, torch.float32, what="cifg")


# ----------------------------------------------------------------- training


def _train(model, out, epochs, batches, fit=None, lr=1e-2, step=None):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    if fit == "resume":
        fit = load_checkpoint(out, model, optimizer)

    def lm_step(batch, state):
        x, y = batch
        logits, state = model(x, detach_state(state))
        return (
            F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)),
            state,
            y.numel(),
        )

    return fit_loop(
        model,
        optimizer,
        out,
        epochs=epochs,
        batches=lambda e: batches,
        step=step or lm_step,
        validate=lambda: 0.0,
        fit=fit,
    )


def test_tiny_overfit_learns_a_short_text(tmp_path):
    model = make_lm(hidden_size=32)
    ids = model.vocab.encode(TEXT)
    batches = list(stream_batches(ids, 4, 20))
    _train(model, tmp_path, 60, batches, lr=2e-2)
    assert evaluate_loss(model, ids, 4, 20) < 0.25  # nats/char; uniform is ln(29) = 3.37


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path):
    batches = list(stream_batches(make_lm().vocab.encode(TEXT), 4, 20))
    straight = make_lm(dropout=0.3)
    torch.manual_seed(7)
    _train(straight, tmp_path / "a", 3, batches)
    first = make_lm(dropout=0.3)
    torch.manual_seed(7)
    _train(first, tmp_path / "b", 1, batches)
    resumed = make_lm(seed=99, dropout=0.3)  # other weights: all must come from the checkpoint
    torch.manual_seed(12345)
    _train(resumed, tmp_path / "b", 3, batches, fit="resume")
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_non_finite_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(tmp_path):
    model = make_lm()
    batches = list(stream_batches(model.vocab.encode(TEXT), 4, 20))
    calls = {"n": 0}

    def step(batch, state):
        calls["n"] += 1
        x, y = batch
        logits, _ = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        return (loss * math.nan if calls["n"] == len(batches) + 2 else loss), None, y.numel()

    with pytest.raises(
        TrainingDiverged, match=r"epoch 2, step 2: the loss is nan.*epoch 1 is kept"
    ):
        _train(model, tmp_path, 5, batches, step=step)
    saved = read_json(tmp_path / CHECKPOINT_FILE)
    assert saved["fit"]["epoch"] == 1
    after_epoch_1 = make_lm(seed=5)
    load_checkpoint(tmp_path, after_epoch_1, torch.optim.Adam(after_epoch_1.parameters()))
    for p in after_epoch_1.parameters():
        assert torch.isfinite(p).all()


def test_split_text_is_contiguous_90_10():
    train, valid = split_text("abcdefghij" * 10, 0.1)
    assert (len(train), len(valid)) == (90, 10)
    assert train + valid == "abcdefghij" * 10
    with pytest.raises(DataError, match="too short to split"):
        split_text("abc", 0.1)
