"""An LSTM encoder-decoder translator with Luong attention, greedy and beam-search decoding.

The model (Luong, Pham & Manning, EMNLP 2015, "global attention")::

    encoder      h̄_1 .. h̄_S, (h_S, c_S) = LSTM_enc(emb_src(x_1 .. x_S))
    decoder      h_t, c_t = LSTM_dec([emb_tgt(y_{t-1}); h̃_{t-1}], (h_{t-1}, c_{t-1}))
                 (the h̃_{t-1} part only with input feeding; h_0, c_0 = h_S, c_S)
    score        dot: h_t · h̄_s        general: h_t · (W_a h̄_s)
    attention    a_t = softmax_s(score(h_t, h̄_s))   (padding positions get 0)
    context      ctx_t = Σ_s a_ts h̄_s
    attentional  h̃_t = tanh(W_c [ctx_t; h_t])
    output       p(y_t | y_<t, x) = softmax(W_out h̃_t)   (<pad> and <s> masked out: never targets)

Training uses teacher forcing (the gold ``y_{t-1}`` is fed; with ``teacher_forcing < 1``
the model's own argmax is fed with that probability's complement). Without input feeding
and with full teacher forcing the decoder runs over the whole target in one LSTM call.

Tokenisation is the model's own: lower-case, then the regex ``\\w+|[^\\w\\s]`` (words and
single punctuation marks), with a vocabulary per side holding the specials ``<pad>``
``<unk>`` ``<s>`` ``</s>`` at ids 0..3. Every source sentence ends with ``</s>``.
Unknown source words become ``<unk>`` (the translator logs which).

Beam search keeps the ``beam`` best partial hypotheses by summed log-probability; a
hypothesis that emits ``</s>`` leaves the beam (which shrinks), and the result is the
finished hypothesis with the best *length-normalised* score ``log p(y | x) / |y|^alpha``
(``|y|`` counts ``</s>``). The greedy hypothesis always competes in that final choice, so
beam search never returns a hypothesis that scores worse than greedy decoding, and
``beam=1`` is exactly greedy decoding.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from gatelab.data.vocab import BOS_ID, EOS, EOS_ID, PAD_ID, UNK, WordVocab, tokenize
from gatelab.errors import DataError
from gatelab.nn.equations import CellSpec
from gatelab.nn.layers import LSTM

__all__ = [
    "Attention",
    "Hypothesis",
    "Seq2Seq",
    "Seq2SeqConfig",
]

logger = logging.getLogger(__name__)

State = tuple[Tensor, Tensor]


# --------------------------------------------------------------------------- model


class Attention(nn.Module):
    """Luong's global attention scores and weights.

    Args:
        hidden_size: ``H`` of the decoder state and of the encoder outputs.
        kind: ``"dot"`` (``score = h_t · h̄_s``) or ``"general"``
            (``score = h_t · W_a h̄_s``, ``W_a (H, H)`` without bias).
    """

    KINDS = ("dot", "general")

    def __init__(self, hidden_size: int, kind: str = "general") -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"attention={kind!r}; expected one of {', '.join(self.KINDS)}")
        self.kind = kind
        self.W_a = nn.Linear(hidden_size, hidden_size, bias=False) if kind == "general" else None

    def keys(self, memory: Tensor) -> Tensor:
        """What the decoder state is compared with: ``memory (B, S, H)`` or ``W_a`` of it."""
        return memory if self.W_a is None else self.W_a(memory)  # (B, S, H)

    def forward(
        self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Attend from ``query (B, T, H)`` over ``S`` source positions.

        Args:
            query: decoder states ``h_t``, ``(B, T, H)``.
            keys: :meth:`keys` of ``memory``, ``(B, S, H)``.
            memory: encoder outputs ``h̄_s``, ``(B, S, H)``.
            mask: ``(B, S)`` bool, True at real (not padding) positions.

        Returns:
            ``weights (B, T, S)`` (each row sums to 1, zero on padding) and
            ``context (B, T, H)``.
        """
        scores = query @ keys.transpose(1, 2)  # (B, T, S)
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # (B, T, S)
        return weights, weights @ memory  # (B, T, H)


@dataclass
class Seq2SeqConfig:
    """Everything that shapes a :class:`Seq2Seq` (saved whole in a run folder)."""

    src_vocab_size: int
    tgt_vocab_size: int
    embedding_dim: int = 256
    hidden_size: int = 256
    num_layers: int = 1
    dropout: float = 0.2
    attention: str = "general"
    input_feeding: bool = True
    variant: str = "standard"
    forget_bias: float | None = None
    backend: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Hypothesis:
    """A decoded target: ``ids`` (ending with ``</s>`` when finished), its summed
    log-probability and its length-normalised score ``logprob / len(ids)**alpha``."""

    ids: list[int]
    logprob: float
    score: float


@dataclass
class _Memory:
    """The encoded source, as the decoder reads it."""

    memory: Tensor  # (B, S, H) encoder outputs
    keys: Tensor  # (B, S, H) what scores compare with
    mask: Tensor  # (B, S) True on real positions
    state: State  # (L, B, H) each: the encoder's final state

    def expand(self, n: int) -> _Memory:
        """Repeat a single encoded sentence ``n`` times along the batch."""
        return _Memory(
            self.memory.expand(n, -1, -1),
            self.keys.expand(n, -1, -1),
            self.mask.expand(n, -1),
            (self.state[0].expand(-1, n, -1), self.state[1].expand(-1, n, -1)),
        )


def _evaluating(method):
    """Run ``method`` without gradients in eval mode (no dropout), then restore the mode."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                return method(self, *args, **kwargs)
        finally:
            self.train(was_training)

    return wrapper


class Seq2Seq(nn.Module):
    """An LSTM encoder-decoder with Luong attention (see the module docstring).

    Args:
        src_vocab, tgt_vocab: :class:`WordVocab` of each side (``V_s``, ``V_t``).
        embedding_dim: ``E`` of both embeddings.
        hidden_size, num_layers: of both LSTMs (``H``, ``L``; equal, because the decoder
            starts from the encoder's final state and dot attention compares them).
        dropout: on embeddings, between LSTM layers and on ``h̃_t`` before the output.
        attention: ``"dot"`` or ``"general"``.
        input_feeding: feed ``h̃_{t-1}`` into the decoder with ``y_{t-1}``.
        variant, forget_bias, backend: passed to both :class:`gatelab.LSTM`.

    Shapes: ``forward(src (B, S), src_lengths (B,), tgt_in (B, T))`` ->
    ``logits (B, T, V_t)``.
    """

    def __init__(
        self,
        src_vocab: WordVocab,
        tgt_vocab: WordVocab,
        embedding_dim: int = 256,
        hidden_size: int = 256,
        num_layers: int = 1,
        dropout: float = 0.2,
        *,
        attention: str = "general",
        input_feeding: bool = True,
        variant: str | CellSpec = "standard",
        forget_bias: float | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        for name, v in (("src_vocab", src_vocab), ("tgt_vocab", tgt_vocab)):
            if not isinstance(v, WordVocab):
                raise TypeError(f"{name} must be a WordVocab, got {type(v).__name__}")
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab
        self.config = Seq2SeqConfig(
            len(src_vocab),
            len(tgt_vocab),
            embedding_dim,
            hidden_size,
            num_layers,
            float(dropout),
            attention,
            bool(input_feeding),
            variant if isinstance(variant, str) else str(variant),
            forget_bias,
            backend,
        )
        H, E = hidden_size, embedding_dim
        lstm_kw = {
            "num_layers": num_layers,
            "batch_first": True,
            "dropout": dropout if num_layers > 1 else 0.0,
            "variant": variant,
            "forget_bias": forget_bias,
            "backend": backend,
        }
        self.src_embedding = nn.Embedding(len(src_vocab), E, padding_idx=PAD_ID)
        self.tgt_embedding = nn.Embedding(len(tgt_vocab), E, padding_idx=PAD_ID)
        self.encoder = LSTM(E, H, **lstm_kw)
        self.decoder = LSTM(E + (H if input_feeding else 0), H, **lstm_kw)
        self.attention_layer = Attention(H, attention)
        self.W_c = nn.Linear(2 * H, H, bias=False)
        self.out = nn.Linear(H, len(tgt_vocab))
        self.drop = nn.Dropout(dropout)
        self.input_feeding = bool(input_feeding)
        never = torch.zeros(len(tgt_vocab), dtype=torch.bool)
        never[[PAD_ID, BOS_ID]] = True  # never a target: masked out of every distribution
        self.register_buffer("_never", never, persistent=False)

    @classmethod
    def from_config(
        cls, src_vocab: WordVocab, tgt_vocab: WordVocab, config: Seq2SeqConfig | dict[str, Any]
    ) -> Seq2Seq:
        """Rebuild a model from a saved config (vocabulary sizes must match)."""
        if isinstance(config, dict):
            config = Seq2SeqConfig(**config)
        for side, v, n in (
            ("source", src_vocab, config.src_vocab_size),
            ("target", tgt_vocab, config.tgt_vocab_size),
        ):
            if len(v) != n:
                raise DataError(f"config says a {side} vocabulary of {n} but it holds {len(v)}")
        kw = config.to_dict()
        del kw["src_vocab_size"], kw["tgt_vocab_size"]  # the vocabularies' own
        return cls(src_vocab, tgt_vocab, **kw)

    # ----------------------------------------------------------------- encoder, decoder

    def encode(self, src: Tensor, src_lengths: Tensor) -> _Memory:
        """``src (B, S)`` padded ids, ``src_lengths (B,)`` -> the encoded source."""
        S = src.shape[1]
        x = self.drop(self.src_embedding(src))  # (B, S, E)
        packed = pack_padded_sequence(x, src_lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, state = self.encoder(packed)
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=S)  # (B, S, H)
        mask = torch.arange(S, device=src.device)[None, :] < src_lengths[:, None]  # (B, S)
        return _Memory(memory, self.attention_layer.keys(memory), mask, state)

    def _attend(self, h: Tensor, enc: _Memory) -> tuple[Tensor, Tensor]:
        """Decoder outputs ``h (B, T, H)`` -> ``h̃ (B, T, H)``, attention ``(B, T, S)``."""
        weights, context = self.attention_layer(h, enc.keys, enc.memory, enc.mask)
        h_tilde = torch.tanh(self.W_c(torch.cat([context, h], dim=-1)))  # (B, T, H)
        return h_tilde, weights

    def _logits(self, h_tilde: Tensor) -> Tensor:
        """``h̃ (B, T, H)`` -> logits ``(B, T, V_t)``; ``<pad>`` and ``<s>`` get -inf."""
        logits = self.out(self.drop(h_tilde))
        return logits.masked_fill(self._never, float("-inf"))

    def decode_step(
        self, y_prev: Tensor, state: State, feed: Tensor | None, enc: _Memory
    ) -> tuple[Tensor, State, Tensor, Tensor]:
        """One decoder step for a batch.

        Args:
            y_prev: the previous target ids ``(B,)``.
            state: the decoder state ``(h, c)``, each ``(L, B, H)``.
            feed: ``h̃_{t-1} (B, H)`` (zeros at ``t = 1``), used with input feeding.
            enc: the encoded source, batch ``B``.

        Returns:
            ``logits (B, V_t)``, the new state, ``h̃_t (B, H)``, attention ``(B, S)``.
        """
        x = self.drop(self.tgt_embedding(y_prev))[:, None, :]  # (B, 1, E)
        if self.input_feeding:
            x = torch.cat([x, feed[:, None, :]], dim=-1)  # (B, 1, E + H)
        h, state = self.decoder(x, state)  # (B, 1, H)
        h_tilde, weights = self._attend(h, enc)
        logits = self._logits(h_tilde)  # (B, 1, V_t)
        return logits[:, 0], state, h_tilde[:, 0], weights[:, 0]

    def forward(
        self,
        src: Tensor,
        src_lengths: Tensor,
        tgt_in: Tensor,
        *,
        teacher_forcing: float = 1.0,
        return_attention: bool = False,
    ):
        """Teacher-forced logits ``(B, T, V_t)`` (and attention ``(B, T, S)`` if asked).

        ``teacher_forcing`` is the probability of feeding the gold previous token at each
        step (1.0: always); otherwise the model's own argmax is fed.
        """
        if not 0.0 <= teacher_forcing <= 1.0:
            raise ValueError(f"teacher_forcing={teacher_forcing}; expected a probability in [0, 1]")
        enc = self.encode(src, src_lengths)
        B, T = tgt_in.shape
        if not self.input_feeding and teacher_forcing == 1.0:
            x = self.drop(self.tgt_embedding(tgt_in))  # (B, T, E)
            h, _ = self.decoder(x, enc.state)  # (B, T, H)
            h_tilde, weights = self._attend(h, enc)
            logits = self._logits(h_tilde)  # (B, T, V_t)
            return (logits, weights) if return_attention else logits
        state, feed = enc.state, enc.memory.new_zeros(B, self.config.hidden_size)
        logits_t, weights_t = [], []
        y_prev = tgt_in[:, 0]
        for t in range(T):
            if t > 0:
                y_prev = tgt_in[:, t]
                if teacher_forcing < 1.0:
                    own = logits_t[-1].argmax(-1)
                    use_gold = torch.rand(B, device=src.device) < teacher_forcing
                    y_prev = torch.where(use_gold, y_prev, own)
            step_logits, state, feed, w = self.decode_step(y_prev, state, feed, enc)
            logits_t.append(step_logits)
            weights_t.append(w)
        logits = torch.stack(logits_t, dim=1)  # (B, T, V_t)
        return (logits, torch.stack(weights_t, dim=1)) if return_attention else logits

    def loss(self, batch: dict[str, Tensor], teacher_forcing: float = 1.0) -> Tensor:
        """Mean cross-entropy per target token (padding ignored) of a collated batch."""
        logits = self(
            batch["src"], batch["src_lengths"], batch["tgt_in"], teacher_forcing=teacher_forcing
        )
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), batch["tgt_out"].reshape(-1), ignore_index=PAD_ID
        )

    # ----------------------------------------------------------------- text in, text out

    def encode_source(self, sentence: str | Sequence[str]) -> tuple[list[str], list[int]]:
        """A source sentence (text or tokens) -> (tokens + ``</s>``, ids); empty raises."""
        tokens = tokenize(sentence) if isinstance(sentence, str) else list(sentence)
        if not tokens:
            raise DataError(f"the source sentence {sentence!r} holds no word to translate")
        unknown = self.src_vocab.unknown(tokens)
        if unknown:
            logger.info("unknown source words read as %s: %s", UNK, ", ".join(unknown))
        return [*tokens, EOS], [*self.src_vocab.encode(tokens), EOS_ID]

    @_evaluating
    def greedy(
        self, src: Tensor, src_lengths: Tensor, max_len: int | None = None
    ) -> list[Hypothesis]:
        """Greedy decoding of a batch: ``src (B, S)``, ``src_lengths (B,)``.

        Each hypothesis's ``ids`` end with ``</s>`` unless ``max_len`` (default
        ``2 * S + 10``) cut it; its ``score`` is normalised with ``alpha = 1``.
        """
        B, S = src.shape
        max_len = max_len or 2 * S + 10
        enc = self.encode(src, src_lengths)
        state, feed = enc.state, enc.memory.new_zeros(B, self.config.hidden_size)
        y = torch.full((B,), BOS_ID, dtype=torch.long, device=src.device)
        ids = [[] for _ in range(B)]
        logprob = [0.0] * B
        done = [False] * B
        for _ in range(max_len):
            logits, state, feed, _ = self.decode_step(y, state, feed, enc)
            logp = torch.log_softmax(logits.double(), dim=-1)  # (B, V_t)
            y = logp.argmax(-1)
            for b in range(B):
                if not done[b]:
                    k = int(y[b])
                    ids[b].append(k)
                    logprob[b] += float(logp[b, k])
                    done[b] = k == EOS_ID
            if all(done):
                break
        return [Hypothesis(i, lp, lp / len(i)) for i, lp in zip(ids, logprob)]

    @_evaluating
    def beam_search(
        self, src_ids: Sequence[int], beam: int = 5, max_len: int | None = None, alpha: float = 1.0
    ) -> Hypothesis:
        """Beam search for one source sentence.

        Args:
            src_ids: source ids ending with ``</s>`` (see :meth:`encode_source`).
            beam: ``K``, the number of partial hypotheses kept (1 = greedy).
            max_len: at most this many target tokens (default ``2 * S + 10``).
            alpha: length normalisation exponent: the final choice maximises
                ``logprob / len**alpha`` (0: raw log-probability).

        Returns:
            The best :class:`Hypothesis` by normalised score.
        """
        if isinstance(beam, bool) or not isinstance(beam, int) or beam < 1:
            raise ValueError(f"beam={beam!r}; expected an int >= 1")
        src = torch.tensor([list(src_ids)], dtype=torch.long)
        lengths = torch.tensor([src.shape[1]])
        max_len = max_len or 2 * src.shape[1] + 10
        enc1 = self.encode(src, lengths)

        def norm(lp: float, n: int) -> float:
            return lp / (n**alpha)

        greedy = self.greedy(src, lengths, max_len)[0]
        finished = [Hypothesis(greedy.ids, greedy.logprob, norm(greedy.logprob, len(greedy.ids)))]
        live: list[tuple[list[int], float]] = [([], 0.0)]
        state = enc1.state
        feed = enc1.memory.new_zeros(1, self.config.hidden_size)
        for _ in range(max_len):
            k = len(live)
            enc = enc1.expand(k)
            y_prev = torch.tensor([h[-1] if h else BOS_ID for h, _ in live])
            logits, state, feed, _ = self.decode_step(y_prev, state, feed, enc)
            logp = torch.log_softmax(logits.double(), dim=-1)  # (k, V_t)
            total = torch.tensor([lp for _, lp in live], dtype=torch.double)[:, None] + logp
            top = torch.topk(total.view(-1), min(beam, total.numel()))
            V = logp.shape[1]
            keep, new_live = [], []
            for value, flat in zip(top.values.tolist(), top.indices.tolist()):
                i, w = divmod(flat, V)
                ids = [*live[i][0], w]
                if w == EOS_ID:
                    finished.append(Hypothesis(ids, value, norm(value, len(ids))))
                else:
                    keep.append(i)
                    new_live.append((ids, value))
            if not new_live:
                break
            index = torch.tensor(keep)
            state = (state[0][:, index], state[1][:, index])
            feed = feed[index]
            live = new_live
        else:
            finished += [Hypothesis(ids, lp, norm(lp, len(ids))) for ids, lp in live]
        return max(finished, key=lambda h: h.score)

    def translate(self, sentence: str, beam: int = 1, alpha: float | None = None) -> str:
        """Translate one sentence; returns target tokens joined by spaces.

        ``beam == 1`` decodes greedily; a larger beam runs :meth:`beam_search` with length
        normalisation ``alpha`` (default 1). Greedy decoding has no length normalisation,
        so an ``alpha`` with ``beam == 1`` is refused."""
        if alpha is not None and beam == 1:
            raise ValueError(
                f"alpha={alpha} with beam=1: greedy decoding has no length normalisation; "
                "drop alpha or use beam > 1"
            )
        _, src_ids = self.encode_source(sentence)
        if beam == 1:
            src = torch.tensor([src_ids])
            hyp = self.greedy(src, torch.tensor([len(src_ids)]))[0]
        else:
            hyp = self.beam_search(src_ids, beam, alpha=1.0 if alpha is None else alpha)
        return " ".join(self.tgt_vocab.decode(hyp.ids))

    @_evaluating
    def score(self, src_ids: Sequence[int], tgt_ids: Sequence[int]) -> float:
        """``log p(tgt_ids | src_ids)`` (summed over ``tgt_ids``, which include ``</s>``
        if it is to be scored), teacher-forced."""
        src = torch.tensor([list(src_ids)])
        tgt_in = torch.tensor([[BOS_ID, *list(tgt_ids)[:-1]]])
        logits = self(src, torch.tensor([len(src_ids)]), tgt_in)  # (1, T, V_t)
        logp = torch.log_softmax(logits[0].double(), dim=-1)  # (T, V_t)
        return float(logp.gather(1, torch.tensor(list(tgt_ids))[:, None]).sum())

    @_evaluating
    def attention(
        self, src: str | Sequence[str], tgt: str | Sequence[str] | None = None
    ) -> tuple[list[str], list[str], Tensor]:
        """The attention weights of the decoder over the source.

        Args:
            src: the source sentence (text or tokens).
            tgt: the target sentence, read with teacher forcing; None: the model's own
                greedy translation.

        Returns:
            ``(src_tokens, tgt_tokens, weights)``: the source tokens with ``</s>`` (``S``),
            the target tokens with ``</s>`` (``T``; row ``t`` is the attention while
            producing ``tgt_tokens[t]``), and ``weights (T, S)``, rows summing to 1.
            Unknown words are shown as themselves but read as ``<unk>``.
        """
        src_tokens, src_ids = self.encode_source(src)
        if tgt is None:
            hyp = self.greedy(torch.tensor([src_ids]), torch.tensor([len(src_ids)]))[0]
            words = self.tgt_vocab.decode(hyp.ids)
            tgt_ids = [*self.tgt_vocab.encode(words), EOS_ID]
        else:
            words = tokenize(tgt) if isinstance(tgt, str) else list(tgt)
            tgt_ids = [*self.tgt_vocab.encode(words), EOS_ID]
        tgt_in = torch.tensor([[BOS_ID, *tgt_ids[:-1]]])
        _, weights = self(
            torch.tensor([src_ids]), torch.tensor([len(src_ids)]), tgt_in, return_attention=True
        )
        return src_tokens, [*words, EOS], weights[0]


def hypothesis_score(logprob: float, length: int, alpha: float = 1.0) -> float:
    """The length-normalised score beam search maximises: ``logprob / length**alpha``."""
    return logprob / (length**alpha) if length else -math.inf
