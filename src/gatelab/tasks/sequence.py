"""The two sequence tasks end to end: data file -> model -> run folder -> evaluation.

``char-lm``: a text file, split 90/10 (the last 10% is the validation text), a
:class:`~gatelab.models.charlm.CharLM` trained statefully with TBPTT, quality in bits per
character on the held-out text.

``translator``: a ``source<TAB>target`` file (the cut-off last line of Tatoeba's
``eng-fra.txt`` is reported and skipped by :func:`gatelab.data.pairs.read_sentence_pairs`),
a fixed seeded train/valid/test split (1,000 + 1,000 pairs by default), a
:class:`~gatelab.models.seq2seq.Seq2Seq`, quality as sacreBLEU corpus BLEU on the test pairs.

A run folder follows :mod:`gatelab.train.runs` (locked while training, written atomically,
no pickle; ``--resume`` refuses other options or another data file) and holds::

    config.json             task kind, model, train, data and inputs (the data file's
                            size and SHA-256) sections
    model.safetensors       the weights with the best validation loss
    vocab.json              the characters, or {"source": ..., "target": ...} words
    metrics.json            per-epoch history and the final validation figures
    checkpoint.json / checkpoint-NNNN.safetensors   the last epoch, for --resume
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from gatelab._config import from_config
from gatelab.data.batching import corpus_shard, pair_batches, stream_batches
from gatelab.data.corpus import CharCorpus, scan_text_corpus, split_point
from gatelab.data.pair_corpus import PairCorpus, share_pairs
from gatelab.data.vocab import PAD_ID, CharVocab, WordVocab, tokenize
from gatelab.errors import DataError
from gatelab.models.charlm import LN2, CharLM, detach_state, evaluate_loss
from gatelab.models.seq2seq import Seq2Seq
from gatelab.train import distributed as D
from gatelab.train.runs import (
    CONFIG_FILE,
    METRICS_FILE,
    RunFolderError,
    atomic_write_json,
    fingerprint_file,
    load_state,
    read_config,
    read_json,
    run_lock,
    section,
    start_run,
    write_config,
)
from gatelab.train.tbptt import CHECKPOINT_FILE, FitState, fit_loop, load_checkpoint

__all__ = [
    "CHAR_LM",
    "TRANSLATOR",
    "VOCAB_FILE",
    "CharLMTrainConfig",
    "TranslatorTrainConfig",
    "corpus_bleu",
    "evaluate_char_lm",
    "evaluate_translator",
    "load_char_lm",
    "load_translator",
    "split_text",
    "train_char_lm",
    "train_translator",
    "translator_corpus",
    "translator_splits",
]

logger = logging.getLogger(__name__)

CHAR_LM = "char-lm"
TRANSLATOR = "translator"
VOCAB_FILE = "vocab.json"

PathLike = str | os.PathLike
OnEpoch = Callable[[dict[str, Any]], None] | None


def _positive(name: str, value: Any, kind: type = int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    ok = not isinstance(value, bool) and isinstance(value, (int, float) if kind is float else int)
    if not ok or not value > 0 or (kind is float and not math.isfinite(value)):
        raise ValueError(f"{name}={value!r}; expected a {'number' if kind is float else 'int'} > 0")


def _check_fit(config) -> None:
    """The settings both sequence tasks train by: ``epochs``, ``minutes`` (None: no time
    limit), ``batch_size``, ``lr`` and ``clip``."""
    _positive("epochs", config.epochs)
    _positive("minutes", config.minutes, float, allow_none=True)
    _positive("batch_size", config.batch_size)
    _positive("lr", config.lr, float)
    _positive("clip", config.clip, float)


@dataclass
class CharLMTrainConfig:
    """How a character LM is trained (defaults reach <= 1.60 nats/char on
    tiny-shakespeare in 20 minutes on 2 CPU cores; see BENCHMARKS.md)."""

    epochs: int = 50
    minutes: float | None = 20.0
    batch_size: int = 64
    seq_len: int = 100
    lr: float = 2e-3
    clip: float = 5.0
    valid_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        _check_fit(self)
        _positive("seq_len", self.seq_len)
        if not 0.0 < self.valid_fraction < 1.0:
            raise ValueError(f"valid_fraction={self.valid_fraction}; expected 0 < f < 1")


@dataclass
class TranslatorTrainConfig:
    """How a translator is trained, and how its data are split."""

    epochs: int = 20
    minutes: float | None = None
    batch_size: int = 64
    lr: float = 2e-3
    clip: float = 5.0
    teacher_forcing: float = 1.0
    min_freq: int = 2
    valid: int = 1000
    test: int = 1000
    split_seed: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        _check_fit(self)
        _positive("min_freq", self.min_freq)
        _positive("valid", self.valid)
        if not 0.0 <= self.teacher_forcing <= 1.0:
            raise ValueError(f"teacher_forcing={self.teacher_forcing}; expected 0 <= p <= 1")


def _from_dict(cls, d: dict[str, Any]):
    """A saved ``train`` section (:func:`gatelab._config.from_config`): a key this version
    does not know (a folder from another gatelab) is an error naming it, never dropped."""
    return from_config(cls, d, "train config")


BUDGET = ("train.epochs", "train.minutes")  # what a resumed run may change: it may go on


def _settings(out: Path, resume: bool, task: str, cls, train):
    """-> (the config of the run to resume in ``out`` or None, the training settings:
    ``train`` if given, else the saved ones when resuming, else the defaults)."""
    saved = read_config(out, task) if resume and (out / CONFIG_FILE).exists() else None
    if train is None and saved is not None:
        train = _from_dict(cls, section(saved, "train", out))
    return saved, train or cls()


def _build_and_start(out: Path, task: str, cls, vocabs, saved, model_kw, train, inputs, resume):
    """-> (the model, the saved config when resuming or None to start fresh).

    The model ``cls(*vocabs, ...)`` is built, seeded by ``train.seed`` so that a restart
    draws the same initial weights, from the saved ``model`` section when resuming without
    ``model_kw``, else from ``model_kw``; then :func:`gatelab.train.runs.start_run` checks it
    (same model, training settings but the budget, and data file) against the saved run."""
    torch.manual_seed(train.seed)
    if saved is not None and model_kw is None:
        model = cls.from_config(*vocabs, section(saved, "model", out))
    else:
        model = cls(*vocabs, **(model_kw or {}))
    now = {"model": model.config.to_dict(), "train": asdict(train), "inputs": inputs}
    return model, start_run(out, task, now, resume=resume, free=BUDGET)


def _optimizer_and_state(out: Path, task: str, model, train, saved, inputs, vocab_doc, data_doc):
    """-> (a seeded Adam optimizer for ``model``, the :class:`FitState` of the checkpoint to
    go on from or None). A fresh run (``saved`` None) writes ``vocab.json``, then the config
    (``data_doc`` its ``data`` section): the config marks a run, so it is written last."""
    torch.manual_seed(train.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=train.lr)
    if saved is not None and (out / CHECKPOINT_FILE).exists():
        return optimizer, load_checkpoint(out, model, optimizer)
    if saved is None:
        atomic_write_json(out / VOCAB_FILE, vocab_doc)
        write_config(
            out, task, model=model.config.to_dict(), train=asdict(train), data=data_doc,
            inputs=inputs,
        )  # fmt: skip
    return optimizer, None


def _read_vocab(run_dir: Path, task: str):
    """A run's ``vocab.json``: a CharVocab, or (source, target) WordVocabs."""
    path = run_dir / VOCAB_FILE
    doc = read_json(path, "vocabulary")
    try:
        if task == CHAR_LM:
            return CharVocab.from_dict(doc)
        if not isinstance(doc, dict) or "source" not in doc or "target" not in doc:
            raise DataError("expected {'source': ..., 'target': ...} word vocabularies")
        return WordVocab.from_dict(doc["source"]), WordVocab.from_dict(doc["target"])
    except DataError as err:
        raise RunFolderError(f"vocabulary '{path}' of a {task!r} run is corrupt: {err}") from None


def _write_metrics(out: Path, fit: FitState, extra: dict[str, Any]) -> dict[str, Any]:
    metrics = {
        "epochs": fit.epoch,
        "best_epoch": fit.best_epoch,
        "elapsed_s": fit.elapsed_s,
        "history": fit.history,
        **extra,
    }
    atomic_write_json(out / METRICS_FILE, metrics)
    return metrics


# --------------------------------------------------------------------------- char LM


def split_text(text: str, valid_fraction: float = 0.1) -> tuple[str, str]:
    """-> (the first ``1 - f`` of ``text``, the last ``f``): a contiguous 90/10 split."""
    cut = split_point(len(text), valid_fraction)
    return text[:cut], text[cut:]


def train_char_lm(
    data: PathLike,
    out: PathLike,
    model_kw: dict[str, Any] | None = None,
    train: CharLMTrainConfig | None = None,
    *,
    resume: bool = False,
    on_epoch: OnEpoch = None,
) -> dict[str, Any]:
    """Train a :class:`CharLM` on the text file ``data`` into the run folder ``out``.

    Args:
        data: a UTF-8 text file (empty, whitespace-only or binary files raise DataError).
        out: the run folder (created; an existing run is refused unless ``resume``).
        model_kw: :class:`CharLM` arguments besides the vocabulary (``embedding_dim``,
            ``hidden_size``, ``num_layers``, ``dropout``, ``variant``, ``forget_bias``,
            ``backend``); when resuming, None takes the saved ones, and others than the
            saved ones are refused.
        train: the training settings; when resuming, None takes the saved ones, and
            others are refused but for ``epochs`` and ``minutes`` (both count the epochs
            and time already spent).
        resume: continue the run in ``out`` from its checkpoint (from the start if it
            has none yet; a folder without a run starts a new one). Another data file
            (size and SHA-256) or other settings are refused, each difference named.

    Raises:
        RunFolderError: ``out`` holds a run and ``resume`` is False; ``resume`` with other
            settings or data; ``out`` locked by another process.
        on_epoch: called with each epoch's record.

    Returns:
        The metrics written to ``metrics.json``.
    """
    out = Path(out)
    with run_lock(out):
        return _train_char_lm(data, out, model_kw, train, resume, on_epoch)


def _train_char_lm(data, out: Path, model_kw, train, resume: bool, on_epoch) -> dict[str, Any]:
    D.init()  # a distributed job: rank 0 reads the whole file, the others their shard
    saved, train = _settings(out, resume, CHAR_LM, CharLMTrainConfig, train)
    inputs = {"data": fingerprint_file(data)} if D.is_writer() else None
    # streamed: one chunked pass for the vocabulary (rank 0's, sent on), ids on disk
    scan = D.from_writer(lambda: scan_text_corpus(data))
    corpus = CharCorpus.from_scan(scan, _read_vocab(out, CHAR_LM) if saved else None)
    vocab = corpus.vocab
    model, saved = _build_and_start(
        out, CHAR_LM, CharLM, (vocab,), saved, model_kw, train, inputs, resume
    )
    train_ids, rows, valid_ids = corpus_shard(
        corpus, train.batch_size, train.valid_fraction, D.rank(), D.world_size(), what=f"'{data}'"
    )
    n_valid = len(corpus) - split_point(len(corpus), train.valid_fraction)
    data_doc = {"path": str(data), "characters": len(corpus), "valid_characters": n_valid}
    optimizer, fit = _optimizer_and_state(
        out, CHAR_LM, model, train, saved, inputs, vocab.to_dict(), data_doc
    )
    logger.info(
        "char LM: %d characters, %d streams of them read here (%d characters), vocabulary %d",
        len(corpus),
        rows,
        len(train_ids),
        len(vocab),
    )

    def step(batch, state):
        x, y = batch
        logits, state = model(x, detach_state(state))  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        return loss, state, y.numel()

    fit = fit_loop(
        model,
        optimizer,
        out,
        epochs=train.epochs,
        batches=lambda epoch: stream_batches(train_ids, rows, train.seq_len),
        step=step,
        # rank 0 validates for all (fit_loop sends its loss); the others hold no held-out text
        validate=lambda: (
            math.nan
            if valid_ids is None
            else evaluate_loss(model, valid_ids, train.batch_size, train.seq_len)
        ),
        fit=fit,
        time_budget_s=None if train.minutes is None else 60.0 * train.minutes,
        clip=train.clip,
        on_epoch=on_epoch,
        sharded=True,
    )
    return _write_metrics(
        out,
        fit,
        {
            "valid_loss": fit.best_valid,
            "valid_bits_per_char": fit.best_valid / LN2,
            "tokens": "characters",
        },
    )


def load_char_lm(run_dir: PathLike) -> CharLM:
    """The :class:`CharLM` of a run folder, with its best weights, in eval mode."""
    run_dir = Path(run_dir)
    config = read_config(run_dir, CHAR_LM)
    vocab = _read_vocab(run_dir, CHAR_LM)
    model = CharLM.from_config(vocab, section(config, "model", run_dir))
    load_state(model, run_dir)
    return model.eval()


def evaluate_char_lm(run_dir: PathLike, data: PathLike) -> dict[str, Any]:
    """Bits per character of a run's model on the held-out part of the text ``data``.

    Returns ``{"bits_per_char", "nats_per_char", "characters"}`` (numbers only). The
    held-out part is the last ``valid_fraction`` (saved with the run, 10% by
    default) of the file, as in training; characters the model never saw raise
    DataError naming them.
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir, CHAR_LM)
    train = _from_dict(CharLMTrainConfig, section(config, "train", run_dir))
    model = load_char_lm(run_dir)
    corpus = CharCorpus(data, model.vocab)
    cut = split_point(len(corpus), train.valid_fraction)
    ids = corpus.ids(cut, None, what=f"the held-out text of '{data}'")
    loss = evaluate_loss(model, ids, train.batch_size, train.seq_len)
    return {"bits_per_char": loss / LN2, "nats_per_char": loss, "characters": len(ids)}


# --------------------------------------------------------------------------- translator


def translator_corpus(
    data: PathLike, train: TranslatorTrainConfig, rule: str = "selection"
) -> PairCorpus:
    """The pairs of ``data``, split as ``train`` says (by ``rule``, that of the run:
    :func:`_split_rule`), streamed from disk (:class:`gatelab.data.pair_corpus.PairCorpus`)."""
    return PairCorpus(data, valid=train.valid, test=train.test, seed=train.split_seed, rule=rule)


def translator_splits(data: PathLike, train: TranslatorTrainConfig, rule: str = "selection"):
    """``(corpus, splits)``: :func:`translator_corpus` and its parts as strings, in memory
    (:func:`gatelab.data.pairs.split_pairs`)."""
    corpus = translator_corpus(data, train, rule)  # logs a warning for a skipped cut-off line
    return corpus, corpus.splits()


def _split_rule(config: dict[str, Any] | None) -> str:
    """The split rule of a run: a folder written before the streamed split has none saved
    and keeps the permutation it was trained on."""
    return "selection" if config is None else (config.get("data") or {}).get("split", "permutation")


def train_translator(
    data: PathLike,
    out: PathLike,
    model_kw: dict[str, Any] | None = None,
    train: TranslatorTrainConfig | None = None,
    *,
    resume: bool = False,
    on_epoch: OnEpoch = None,
) -> dict[str, Any]:
    """Train a :class:`Seq2Seq` on the sentence pairs in ``data`` into ``out``.

    Args:
        data: ``source<TAB>target`` lines; a line without a tab raises DataError naming
            its number (the file's cut-off last line is skipped with a warning).
        out: the run folder.
        model_kw: :class:`Seq2Seq` arguments besides the vocabularies; when resuming,
            None takes the saved ones, and others are refused.
        train: training and split settings; when resuming, None takes the saved ones,
            and others are refused but for ``epochs`` and ``minutes``.
        resume: continue the run in ``out`` (as for :func:`train_char_lm`; another data
            file or other settings are refused, each difference named).
        on_epoch: called with each epoch's record.

    Returns:
        The metrics written to ``metrics.json`` (validation loss per target token).
    """
    out = Path(out)
    with run_lock(out):
        return _train_translator(data, out, model_kw, train, resume, on_epoch)


def _train_translator(data, out: Path, model_kw, train, resume: bool, on_epoch) -> dict[str, Any]:
    """The body of :func:`train_translator`, under its lock: the order of its writes
    (vocabularies, then the config that marks a run, then checkpoints through ``fit_loop``,
    then metrics) is what makes a kill at any instant resumable."""
    D.init()  # a distributed job: rank 0 reads the file, the others only their rows' ids
    saved, train = _settings(out, resume, TRANSLATOR, TranslatorTrainConfig, train)
    inputs = {"data": fingerprint_file(data)} if D.is_writer() else None
    made = []  # rank 0's files: removed below even when sending them fails (a rank gone)

    def share():
        made.append(share_pairs(
            data, valid=train.valid, test=train.test, seed=train.split_seed,
            min_freq=train.min_freq, rule=_split_rule(saved),
            vocabs=_read_vocab(out, TRANSLATOR) if saved is not None else None,
        ))  # fmt: skip
        return made[0]

    try:
        shared = D.from_writer(share)
        train_pairs = shared.open("train")
        valid_pairs = shared.open("valid") if D.is_writer() else None  # rank 0 validates
        D.barrier()  # every rank holds the files open: their names can go
    finally:
        for own in made:
            own.unlink()
    src_vocab, tgt_vocab = shared.src_vocab, shared.tgt_vocab
    vocabs = (src_vocab, tgt_vocab)
    model, saved = _build_and_start(
        out, TRANSLATOR, Seq2Seq, vocabs, saved, model_kw, train, inputs, resume
    )
    vocab_doc = {"source": src_vocab.to_dict(), "target": tgt_vocab.to_dict()}
    data_doc = {"path": str(data), "pairs": shared.pairs, "skipped_lines": shared.skipped}
    data_doc.update(shared.sizes, split=shared.rule)
    optimizer, fit = _optimizer_and_state(
        out, TRANSLATOR, model, train, saved, inputs, vocab_doc, data_doc
    )
    sizes = (len(train_pairs), len(src_vocab), len(tgt_vocab))
    logger.info("translator: %d train pairs, vocabularies %d -> %d", *sizes)

    def step(batch, _carry):
        n_tok = 0 if batch.get("standin") else int((batch["tgt_out"] != PAD_ID).sum())
        return model.loss(batch, train.teacher_forcing), None, n_tok

    @torch.no_grad()
    def validate() -> float:
        if valid_pairs is None or not len(valid_pairs):
            return math.nan  # not rank 0, or no validation pair
        model.eval()
        total, count = 0.0, 0
        for batch in pair_batches(valid_pairs, 128):
            n = int((batch["tgt_out"] != PAD_ID).sum())
            total += float(model.loss(batch)) * n
            count += n
        return total / max(count, 1)

    rank, world = D.rank(), D.world_size()

    def batches(epoch: int):  # this rank's rows of each global batch: only they are read
        seed = train.seed * 1_000_003 + epoch
        return pair_batches(train_pairs, train.batch_size, seed=seed, rank=rank, world_size=world)

    fit = fit_loop(
        model, optimizer, out, epochs=train.epochs, batches=batches, step=step,
        validate=validate, fit=fit, clip=train.clip, on_epoch=on_epoch, sharded=True,
        time_budget_s=None if train.minutes is None else 60.0 * train.minutes,
    )  # fmt: skip
    perplexity = math.exp(min(fit.best_valid, 700.0))
    extra = {"valid_loss": fit.best_valid, "valid_perplexity": perplexity}
    return _write_metrics(out, fit, {**extra, "tokens": "target words"})


def load_translator(run_dir: PathLike) -> Seq2Seq:
    """The :class:`Seq2Seq` of a run folder, with its best weights, in eval mode."""
    run_dir = Path(run_dir)
    config = read_config(run_dir, TRANSLATOR)
    src_vocab, tgt_vocab = _read_vocab(run_dir, TRANSLATOR)
    model = Seq2Seq.from_config(src_vocab, tgt_vocab, section(config, "model", run_dir))
    load_state(model, run_dir)
    return model.eval()


def corpus_bleu(hypotheses: list[str], references: list[str]) -> float:
    """sacreBLEU corpus BLEU of tokenised, lower-cased hypotheses against references
    (tokenised the same way, :func:`gatelab.data.vocab.tokenize`)."""
    import sacrebleu

    refs = [" ".join(tokenize(r)) for r in references]
    # force=True: both sides are tokenised on purpose (the same way), which sacreBLEU
    # would otherwise warn about as "forgot to detokenize".
    return float(sacrebleu.corpus_bleu(hypotheses, [refs], force=True).score)


@torch.no_grad()
def translate_all(model: Seq2Seq, sources: list[str], beam: int = 1, alpha: float = 1.0):
    """Translate many sentences (greedy in batches of 64, beam search one by one)."""
    encoded = [model.encode_source(s)[1] for s in sources]
    out: list[str] = [""] * len(sources)
    if beam == 1:
        order = sorted(range(len(encoded)), key=lambda k: len(encoded[k]))
        for i in range(0, len(order), 64):
            chunk = order[i : i + 64]
            S = max(len(encoded[k]) for k in chunk)
            src = torch.full((len(chunk), S), PAD_ID, dtype=torch.long)
            for b, k in enumerate(chunk):
                src[b, : len(encoded[k])] = torch.tensor(encoded[k])
            lengths = torch.tensor([len(encoded[k]) for k in chunk])
            for k, hyp in zip(chunk, model.greedy(src, lengths)):
                out[k] = " ".join(model.tgt_vocab.decode(hyp.ids))
    else:
        for k, ids in enumerate(encoded):
            hyp = model.beam_search(ids, beam, alpha=alpha)
            out[k] = " ".join(model.tgt_vocab.decode(hyp.ids))
    return out


def evaluate_translator(
    run_dir: PathLike, data: PathLike, beam: int = 5, alpha: float = 1.0
) -> dict[str, Any]:
    """sacreBLEU corpus BLEU of a run's model on the held-out test pairs of ``data``.

    The test pairs are re-derived from ``data`` with the split saved in the run (sizes
    and seed), so only the file is needed. Returns numbers only: ``bleu`` (beam search
    of width ``beam``), ``bleu_greedy`` on the same pairs, ``pairs``, ``beam`` and
    ``length_normalisation_alpha``.
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir, TRANSLATOR)
    train = _from_dict(TranslatorTrainConfig, section(config, "train", run_dir))
    model = load_translator(run_dir)
    corpus = translator_corpus(data, train, _split_rule(config))
    test = [(s, t) for s, t in corpus.texts("test") if tokenize(s)]
    if not test:
        raise DataError(f"'{data}' gives no test pairs (test={train.test}); nothing to evaluate")
    sources, refs = [s for s, _ in test], [t for _, t in test]
    greedy = translate_all(model, sources, 1)
    result = {"pairs": len(test), "bleu_greedy": corpus_bleu(greedy, refs)}
    if beam > 1:
        result["bleu"] = corpus_bleu(translate_all(model, sources, beam, alpha), refs)
        result["beam"] = beam
    else:
        result["bleu"], result["beam"] = result["bleu_greedy"], 1
    result["length_normalisation_alpha"] = alpha
    return result


# --------------------------------------------------------------------------- predict

PREDICT_LENGTH = 200  # characters a char LM adds to each prompt in ``gatelab predict``


def _lines(data: PathLike | None) -> list[str]:
    from gatelab.data.lines import read_lines

    if data is None:
        return []
    return [line.strip() for _, line in read_lines(data, what="prompts file").lines]


def char_lm_predict(run_dir: Path, texts: list[str], data: Path | None, options) -> list:
    """A greedy :data:`PREDICT_LENGTH`-character continuation of each prompt (the texts,
    then the lines of ``data``)."""
    model = load_char_lm(run_dir)
    prompts = list(texts) + _lines(data)
    return [
        {"prompt": p, "continuation": model.sample(p, PREDICT_LENGTH, temperature=0)}
        for p in prompts
    ]


def translator_predict(run_dir: Path, texts: list[str], data: Path | None, options) -> list:
    """A beam-5 translation of each sentence (the texts, then the lines of ``data``)."""
    model = load_translator(run_dir)
    sources = list(texts) + _lines(data)
    return [{"source": s, "translation": model.translate(s, beam=5)} for s in sources if s]
