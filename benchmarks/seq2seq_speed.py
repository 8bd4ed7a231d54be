"""Training throughput of the char LM and the translator: gatelab vs torch.nn.LSTM.

For each model, one training step (forward, loss, backward, Adam step) is timed for:

* ``torch.nn.LSTM``: the same model with its gatelab.LSTM modules swapped for
  ``torch.nn.LSTM`` (same weights, ``LSTM.to_torch()``): the peer;
* ``gatelab standard``: ``gatelab.LSTM`` with the standard cell, ``backend="native"``;
* ``gatelab <variant> auto``: each variant asked for with ``backend="auto"`` (the fused C++
  kernel where it can run, else the reference Python loop with a warning): the line
  says which backend ran.

Configurations are timed interleaved, ``--repeats`` rounds of ``--steps`` steps each,
and the median round counts, so a busy machine slows all of them alike. Prints tokens/s
(characters for the LM, target words for the translator) and the ratio to the peer.

    PYTHONPATH=src python benchmarks/seq2seq_speed.py [--threads 1] [--variants peephole cifg]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import torch
import torch.nn.functional as F

from gatelab.data.batching import collate_pairs
from gatelab.data.vocab import CharVocab, WordVocab
from gatelab.models.charlm import CharLM
from gatelab.models.seq2seq import Seq2Seq
from gatelab.nn.layers import LSTM


def backend_of(lstm) -> str:
    """The backend the module's last forward ran on (after the warm-up step)."""
    if isinstance(lstm, torch.nn.LSTM) and not isinstance(lstm, LSTM):
        return "torch.nn.LSTM"
    return str(lstm.last_backend)


def char_lm_case(args, variant: str, backend: str, torch_peer: bool):
    torch.manual_seed(0)
    vocab = CharVocab([chr(32 + k) for k in range(65)])
    model = CharLM(vocab, 64, args.hidden, 2, variant=variant, backend=backend)
    if torch_peer:
        model.lstm = model.lstm.to_torch()
    x = torch.randint(0, 65, (args.lm_batch, args.lm_seq))
    y = torch.randint(0, 65, (args.lm_batch, args.lm_seq))
    opt = torch.optim.Adam(model.parameters(), 2e-3)

    def step():
        logits, _ = model(x)
        loss = F.cross_entropy(logits.reshape(-1, 65), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step, x.numel(), lambda: backend_of(model.lstm)


def translator_case(args, variant: str, backend: str, torch_peer: bool):
    torch.manual_seed(0)
    words = [f"w{k}" for k in range(args.vocab)]
    src_vocab = WordVocab.build([words])
    tgt_vocab = WordVocab.build([words])
    model = Seq2Seq(
        src_vocab, tgt_vocab, 256, args.hidden, 1, 0.0, variant=variant, backend=backend
    )
    if torch_peer:
        model.encoder = model.encoder.to_torch()
        model.decoder = model.decoder.to_torch()
    g = torch.Generator().manual_seed(1)
    pairs = []
    for _ in range(args.tr_batch):
        S = int(torch.randint(4, args.tr_len + 1, (1,), generator=g))
        T = int(torch.randint(4, args.tr_len + 1, (1,), generator=g))
        pairs.append(
            (
                torch.randint(4, len(src_vocab), (S,), generator=g).tolist(),
                torch.randint(4, len(tgt_vocab), (T,), generator=g).tolist(),
            )
        )
    batch = collate_pairs(pairs)
    tokens = int((batch["tgt_out"] != 0).sum())
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    model.train()

    def step():
        loss = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step, tokens, lambda: backend_of(model.encoder)


def run(name, make, args) -> None:
    configs = [("torch.nn.LSTM", "standard", "native", True)]
    configs.append(("gatelab standard", "standard", "native", False))
    configs += [(f"gatelab {v} auto", v, "auto", False) for v in args.variants]
    cases = []
    for label, variant, backend, peer in configs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            step, tokens, ran = make(args, variant, backend, peer)
            step()  # warm-up (and the fused kernel's first build)
        cases.append((label, step, tokens, ran(), []))
    for _ in range(args.repeats):
        for _label, step, _tokens, _ran, times in cases:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    step()
                times.append((time.perf_counter() - t0) / args.steps)
    peer = statistics.median(cases[0][4])
    print(f"\n{name}")
    print(f"{'model':<28} {'backend':<14} {'s/step':>8} {'tokens/s':>10} {'vs torch':>9}")
    for label, _step, tokens, ran, times in cases:
        t = statistics.median(times)
        print(f"{label:<28} {ran:<14} {t:8.4f} {tokens / t:10.0f} {peer / t:8.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--variants", nargs="*", default=["peephole", "cifg"])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--lm-batch", type=int, default=32)
    p.add_argument("--lm-seq", type=int, default=100)
    p.add_argument("--tr-batch", type=int, default=64)
    p.add_argument("--tr-len", type=int, default=12, help="max source/target words")
    p.add_argument("--vocab", type=int, default=5000, help="words per side (translator)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.2f} (1 min), hidden {args.hidden}"
    )
    run(
        f"char LM: 2 layers, batch {args.lm_batch} x {args.lm_seq} characters "
        "(tokens = characters)",
        char_lm_case,
        args,
    )
    run(
        f"translator: 1 layer, input feeding, batch {args.tr_batch}, <= {args.tr_len} "
        "words a side (tokens = target words)",
        translator_case,
        args,
    )


if __name__ == "__main__":
    main()
