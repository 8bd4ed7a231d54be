"""``gatelab train char-lm | translator``, ``gatelab generate``, ``gatelab translate``.

``gatelab evaluate DIR --data FILE [--json]`` handles these run folders too (bits per
character on the file's held-out part; sacreBLEU on the held-out test pairs, beam 5 and
greedy), and so does ``gatelab predict DIR TEXT...`` (a greedy 200-character
continuation; a beam-5 translation): :mod:`gatelab.tasks.registry` lists the ``char-lm``
and ``translator`` task kinds.

Bad input ends with one line ``error: ...`` on stderr and exit code 2 (1 when training
itself fails, e.g. a NaN loss: the last good checkpoint is kept), never a traceback.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from gatelab._config import pick_fields
from gatelab.cli import app
from gatelab.cli.common import Threads, clean_errors, set_threads
from gatelab.cli.options import (
    Backend,
    BatchSize,
    HiddenSize,
    Layers,
    MaxRestarts,
    Nproc,
    Variant,
)
from gatelab.cli.tasks import train_command
from gatelab.tasks.sequence import (
    CharLMTrainConfig,
    TranslatorTrainConfig,
    load_char_lm,
    load_translator,
    train_char_lm,
    train_translator,
)

LM = CharLMTrainConfig(epochs=50)
TR = TranslatorTrainConfig()


def _epoch_printer(quiet: bool, unit: str, bits: bool) -> Callable[[dict[str, Any]], None] | None:
    if quiet:
        return None

    def show(record: dict[str, Any]) -> None:
        v = record["valid_loss"]
        extra = f" ({v / math.log(2):.3f} bits/char)" if bits else f" (ppl {math.exp(v):.2f})"
        stop = ", time budget reached" if record["stopped_by_time_budget"] else ""
        typer.echo(
            f"epoch {record['epoch']}: train {record['train_loss']:.4f} valid {v:.4f}{extra}, "
            f"{record['tokens_per_s']:.0f} {unit}/s, {record['elapsed_s'] / 60:.1f} min{stop}",
            err=True,
        )

    return show


# ----------------------------------------------------------------- shared option types

Data = Annotated[Path, typer.Option("--data", help="The training file.", show_default=False)]
Out = Annotated[
    Path,
    typer.Option(
        "--out",
        help="Run folder to write (config.json, model.safetensors, vocab.json, metrics.json, "
        "checkpoint).",
        show_default=False,
    ),
]
Epochs = Annotated[int, typer.Option("--epochs", help="Passes over the training data (at most).")]
Minutes = Annotated[
    float | None,
    typer.Option("--minutes", help="Time budget in minutes of training (with --resume: in all)."),
]
Embedding = Annotated[int, typer.Option("--embedding-dim", help="Embedding size.")]
Dropout = Annotated[float, typer.Option("--dropout", help="Dropout probability.")]
Lr = Annotated[float, typer.Option("--lr", help="Adam learning rate.")]
Clip = Annotated[float, typer.Option("--clip", help="Maximum gradient norm.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed (weights, dropout, order).")]
Resume = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue the run in --out from its last checkpoint; other options (but "
        "--epochs, --minutes) or another data file are refused, each difference named.",
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", help="No per-epoch lines, only the summary.")]


def _run_options(
    config: CharLMTrainConfig | TranslatorTrainConfig,
    *,
    hidden_size: int,
    layers: int,
    embedding_dim: int,
    dropout: float = 0.0,
) -> dict[str, Any]:
    """The options both ``train`` commands take after their own, for
    :func:`gatelab.cli.options.with_options`: ``{name: (type, default)}``; the model's
    size defaults differ per command."""
    return {
        "epochs": (Epochs, config.epochs),
        "minutes": (Minutes, config.minutes),
        "batch_size": (BatchSize, config.batch_size),
        "hidden_size": (HiddenSize, hidden_size),
        "layers": (Layers, layers),
        "embedding_dim": (Embedding, embedding_dim),
        "dropout": (Dropout, dropout),
        "variant": (Variant, "standard"),
        "backend": (Backend, "auto"),
        "lr": (Lr, config.lr),
        "clip": (Clip, config.clip),
        "seed": (Seed, config.seed),
        "resume": (Resume, False),
        "nproc": (Nproc, 1),
        "max_restarts": (MaxRestarts, 0),
        "quiet": (Quiet, False),
        "threads": (Threads, None),
    }


def _train(
    train: Callable,
    config_cls: type,
    given: dict[str, Any],
    extra: tuple[str, ...],
    unit: str,
    bits: bool,
) -> dict[str, Any]:
    """Run ``train`` (:func:`train_char_lm` or :func:`train_translator`) from a command's
    options (``given``: its arguments and shared options by name): the threads, the
    model's arguments (with the ``extra`` ones), the training config, the epoch lines."""
    set_threads(given["threads"])
    model_kw = _model_kw(given, *extra)
    config = config_cls(**pick_fields(config_cls, given))
    on_epoch = _epoch_printer(given["quiet"], unit, bits)
    return train(
        given["data"], given["out"], model_kw, config, resume=given["resume"], on_epoch=on_epoch
    )


def _model_kw(given: dict[str, Any], *extra: str) -> dict[str, Any]:
    """The model arguments from a ``train`` command's options (its ``locals()``): the
    ones both models take, then ``extra`` ones by their own names."""
    kw = {
        "embedding_dim": given["embedding_dim"],
        "hidden_size": given["hidden_size"],
        "num_layers": given["layers"],
        "dropout": given["dropout"],
    }
    kw.update({name: given[name] for name in extra})
    kw.update(variant=given["variant"], backend=given["backend"])
    return kw


# ----------------------------------------------------------------- char LM


@train_command(
    "char-lm", _run_options(LM, hidden_size=256, layers=2, embedding_dim=64), hold_out=False
)
def train_char_lm_command(
    data: Data,
    out: Out,
    seq_len: Annotated[
        int, typer.Option("--seq-len", help="Characters per TBPTT window.")
    ] = LM.seq_len,
    valid_fraction: Annotated[
        float, typer.Option("--valid-fraction", help="The last part of the text held out.")
    ] = LM.valid_fraction,
    **run: Any,
) -> None:
    """Train a character language model (embedding -> LSTM -> Dense) on a text file,
    stateful TBPTT; reports validation bits per character."""
    given = {**locals(), **run}
    metrics = _train(train_char_lm, CharLMTrainConfig, given, (), unit="chars", bits=True)
    typer.echo(
        f"{out}: valid {metrics['valid_loss']:.4f} nats/char = "
        f"{metrics['valid_bits_per_char']:.4f} bits/char (epoch {metrics['best_epoch']}), "
        f"{metrics['elapsed_s'] / 60:.1f} min"
    )


@app.command("generate")
@clean_errors
def generate_command(
    run_dir: Annotated[Path, typer.Argument(help="A char-lm run folder.", show_default=False)],
    prompt: Annotated[
        str,
        typer.Option(
            "--prompt",
            help="Text to continue; every character must have been seen in training "
            "(others are refused, naming them).",
            show_default=False,
        ),
    ],
    length: Annotated[int, typer.Option("--length", help="Characters to generate.")] = 500,
    temperature: Annotated[
        float,
        typer.Option("--temperature", help="Sampling temperature; 0 picks the most likely."),
    ] = 1.0,
    top_k: Annotated[
        int | None,
        typer.Option("--top-k", help="Draw only among the K most likely characters."),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the draws.")] = None,
) -> None:
    """Continue a prompt with a trained character language model."""
    import torch

    if temperature == 0:
        given = [name for name, v in (("--top-k", top_k), ("--seed", seed)) if v is not None]
        if given:
            raise ValueError(
                f"{' and '.join(given)}: only random draws use it; --temperature 0 draws "
                "nothing (it picks the most likely character): drop it"
            )
    model = load_char_lm(run_dir)
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    text = model.sample(prompt, length, temperature=temperature, top_k=top_k, generator=generator)
    typer.echo(prompt + text)


# ----------------------------------------------------------------- translator


@train_command(
    "translator",
    _run_options(TR, hidden_size=256, layers=1, embedding_dim=256, dropout=0.2),
    hold_out=False,
)
def train_translator_command(
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            help="Sentence pairs, 'source<TAB>target' a line (e.g. Tatoeba eng-fra.txt).",
            show_default=False,
        ),
    ],
    out: Out,
    attention: Annotated[
        str, typer.Option("--attention", help="Luong attention score: general or dot.")
    ] = "general",
    input_feeding: Annotated[
        bool,
        typer.Option(
            "--input-feeding/--no-input-feeding",
            help="Feed the previous attentional state into the decoder (Luong et al. 2015).",
        ),
    ] = True,
    teacher_forcing: Annotated[
        float,
        typer.Option("--teacher-forcing", help="Probability of feeding the gold previous word."),
    ] = TR.teacher_forcing,
    min_freq: Annotated[
        int, typer.Option("--min-freq", help="Words seen fewer times become <unk>.")
    ] = TR.min_freq,
    valid: Annotated[int, typer.Option("--valid", help="Validation pairs held out.")] = TR.valid,
    test: Annotated[int, typer.Option("--test", help="Test pairs held out.")] = TR.test,
    split_seed: Annotated[
        int, typer.Option("--split-seed", help="Seed of the train/valid/test split.")
    ] = TR.split_seed,
    **run: Any,
) -> None:
    """Train an LSTM encoder-decoder translator with attention on sentence pairs, with a
    fixed seeded train/valid/test split."""
    given = {**locals(), **run}
    extra = ("attention", "input_feeding")
    metrics = _train(train_translator, TranslatorTrainConfig, given, extra, "target words", False)
    typer.echo(
        f"{out}: valid {metrics['valid_loss']:.4f} nats/word (perplexity "
        f"{metrics['valid_perplexity']:.2f}, epoch {metrics['best_epoch']}), "
        f"{metrics['elapsed_s'] / 60:.1f} min"
    )


@app.command("translate")
@clean_errors
def translate_command(
    run_dir: Annotated[Path, typer.Argument(help="A translator run folder.", show_default=False)],
    sentence: Annotated[str, typer.Argument(help="The sentence to translate.", show_default=False)],
    beam: Annotated[int, typer.Option("--beam", help="Beam size; 1 is greedy decoding.")] = 5,
    alpha: Annotated[
        float | None,
        typer.Option(
            "--alpha",
            help="Length normalisation of beam search: score = log p / length^alpha "
            "(default 1; greedy decoding, --beam 1, has none).",
        ),
    ] = None,
) -> None:
    """Translate one sentence with a trained translator (lower-case, tokenised output)."""
    if alpha is not None and beam == 1:  # the library refuses it too, in its own words
        raise ValueError(
            f"--alpha {alpha:g} normalises beam-search scores; --beam 1 is greedy decoding, "
            "which it does not change: drop --alpha or use --beam > 1"
        )
    model = load_translator(run_dir)
    tokens = model.encode_source(sentence)[0][:-1]
    unknown = model.src_vocab.unknown(tokens)
    if unknown:
        typer.echo(f"note: unknown words read as <unk>: {', '.join(unknown)}", err=True)
    typer.echo(model.translate(sentence, beam=beam, alpha=alpha))
