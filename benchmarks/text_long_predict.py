"""TextClassifier.predict_proba on whole texts: seconds and peak RSS, one fresh process.

A mix (``linear=True``, its weight set to 1/2 so that the network runs too, ``max_len``
400) fitted on 300 synthetic sentiment texts, then ``predict_proba`` on

- ``short``: 5,000 texts of 3 to 59 words (no text past ``max_len``): best of 3 seconds;
- ``long``: 1,000 such texts and one of ``--long`` words (100,000): one call, its
  seconds and the growth of the process's peak RSS during it (``ru_maxrss``).

Prints one JSON line. Run it alternately against two checkouts (their ``src``), e.g.

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=<tree>/src python benchmarks/text_long_predict.py \
        --case long --threads 1
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import resource
import time

import numpy as np
import torch

from gatelab import TextClassifier

FILLER = "the a film movie plot was is it and of this that story acting".split()
WORDS = [*FILLER, "great", "good", "wonderful", "bad", "awful", "boring"]


def sentiment_texts(n: int, seed: int, more: int = 0) -> tuple[list[str], list[str]]:
    """``n`` texts of 2 to 8 filler words, one sentiment word (its side: the label) and 0
    to ``more`` more filler words."""
    g = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        k = int(g.integers(2))
        words = [*g.choice(FILLER, g.integers(2, 9)), WORDS[-6 + 3 * k + int(g.integers(3))]]
        texts.append(" ".join([*words, *g.choice(FILLER, g.integers(0, more + 1))]))
        labels.append(("pos", "neg")[k])
    return texts, labels


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=("short", "long"), required=True)
    p.add_argument("--long", type=int, default=100_000, help="words of the long text")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    X, y = sentiment_texts(300, seed=0)
    tiny = dict(embedding_dim=16, hidden_size=16, epochs=2, n_models=1, lr=1e-9)
    est = TextClassifier(**tiny, linear=True, validation_fraction=0.25).fit(X, y)
    with torch.no_grad():
        est.model_.weight.fill_(0.5)
    if args.case == "short":
        Xt, rounds = sentiment_texts(5000, seed=1, more=50)[0], 3
    else:
        g = np.random.default_rng(2)
        Xt, rounds = sentiment_texts(1000, seed=1, more=50)[0], 1
        Xt.insert(500, " ".join(g.choice(WORDS, args.long)))
    before, seconds = peak_mb(), []
    for _ in range(rounds):
        start = time.perf_counter()
        proba = est.predict_proba(Xt)
        seconds.append(time.perf_counter() - start)
    out = {"case": args.case, "seconds": round(min(seconds), 3)}
    out["peak_rss_growth_mb"] = round(peak_mb() - before, 1)
    out.update(src=os.environ.get("PYTHONPATH"), checksum=float(proba.sum()))
    out["load"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
