"""Experiment (not a library feature yet): MR folds with out-of-fold naive-Bayes ratios.

``TextClassifier(nb_features=...)`` computes each word's naive-Bayes log-count ratio from
the training texts and appends it to the embedding; the model then trains on texts whose
ratios were computed from those very texts, so it learns to trust them more than they
deserve on unseen text. Here a training text in inner fold k (of K) reads ratios computed
without inner fold k, while validation and test texts read the ratios of all training
texts. It is done from outside, by patching: the ids of inner fold k get the offset
(k + 1) * V into a table of (K + 1) * V rows, and the embedding reads ``id % V``.

    python benchmarks/mr_oof_experiment.py 0,1,2,3,4      # these of the 10 outer folds
    python benchmarks/mr_oof_experiment.py 0-9 --baseline # the defaults, same protocol

One torch thread per process (run two processes side by side on 2 cores). Prints one
JSON line per fold. Result in BENCHMARKS.md ("MR: the miss, and what was tried").
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA

from gatelab import TextClassifier, estimators, models
from gatelab.data import read_labelled_text
from gatelab.training import TensorData


def patch(K: int) -> None:
    full_ratios = estimators._nb_log_count_ratios

    def oof_ratios(data: TensorData, n_classes: int, V: int) -> torch.Tensor:
        fold = torch.randperm(len(data), generator=torch.Generator().manual_seed(0)) % K
        tables = [full_ratios(data, n_classes, V)]
        for k in range(K):
            keep = fold != k
            part = TensorData(data.inputs[keep], data.lengths[keep], data.targets[keep])
            tables.append(full_ratios(part, n_classes, V))
        for k in range(K):  # offset the training ids in place (after every table is made)
            rows = (fold == k).nonzero().squeeze(1)
            x = data.inputs[rows]
            data.inputs[rows] = torch.where(x > 0, x + (k + 1) * V, x)
        return torch.cat(tables, dim=0)  # ((K + 1) * V, F)

    def prepare(self, model) -> None:
        if self._nb_table is not None:
            model.token_feature_table = self._nb_table.clone()

    def lstm_input(self, x: torch.Tensor) -> torch.Tensor:
        e = self.embedding(x % self.config.vocab_size)
        return torch.cat([e, self.token_feature_table[x]], dim=-1)

    estimators._nb_log_count_ratios = oof_ratios
    estimators.TextClassifier._prepare_model = prepare
    models._SequenceModel.lstm_input = lstm_input


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folds", help="outer folds: 0,1,2 or 0-9")
    ap.add_argument("--inner", type=int, default=5, help="inner folds K (default 5)")
    ap.add_argument("--baseline", action="store_true", help="the defaults, unpatched")
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if "-" in args.folds:
        a, b = map(int, args.folds.split("-"))
        wanted = list(range(a, b + 1))
    else:
        wanted = [int(f) for f in args.folds.split(",")]
    if not args.baseline:
        patch(args.inner)
    data = read_labelled_text(args.data / "sentiment" / "rt_polarity" / "rt-polarity")
    X, y = data.texts, np.asarray(data.labels)
    folds = list(StratifiedKFold(10, shuffle=True, random_state=0).split(X, y))
    for k in wanted:
        train, test = folds[k]
        start = time.perf_counter()
        est = TextClassifier().fit([X[i] for i in train], y[train])
        acc = est.score([X[i] for i in test], y[test])
        record = {"fold": k, "accuracy": round(100 * acc, 2), "oof": not args.baseline}
        print(json.dumps({**record, "seconds": round(time.perf_counter() - start)}), flush=True)


if __name__ == "__main__":
    main()
