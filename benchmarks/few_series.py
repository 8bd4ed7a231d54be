"""The series classifier's defaults on FEW training series: k per class, drawn from sets.

Many sets of the UCR archive train on a handful of series per class. This draws ``k``
training series of every class (seeded by ``k``) from the TRAIN part of each set (the
shared development sets and the ones ``benchmarks/unseen.py`` reads) and scores on at
most 300 TEST series (seeded), beside:

- ``SeriesClassifier(architecture="lstm-rocket")``: the LSTM head on the ridge's scores,
  which the defaults took for every such draw before the ridge alone was a candidate;
- its ridge alone (the same fitted model's kernel branch);
- 1-NN Euclidean on the series linearly resampled to the longest (numpy).

With one or two series of a class no inner cross-validation runs; with four it runs on
folds of two or three. One draw per (set, k): a test accuracy is one sample.

    python benchmarks/few_series.py [--sets GunPoint Coffee] [--k 1 2 4] [--threads 1]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, load_average, parser, setup
from probe_shapes import one_nn
from ucr import load
from unseen import classification_set

from gatelab import SeriesClassifier
from gatelab.estimators.ensemble import members

SHARED = ["ItalyPowerDemand", "Coffee", "OSULeaf", "ACSF1", "PLAID", "PickupGestureWiimoteZ"]
SETS = [*SHARED, "ArrowHead", "GunPoint", "BasicMotions", "JapaneseVowels"]
TEST_AT_MOST = 300


def ridge_alone(clf: SeriesClassifier, series: list[np.ndarray]) -> np.ndarray:
    """The labels an lstm-rocket fit's ridges give alone (members' softmax averaged)."""
    data = clf._inputs(series)
    with torch.no_grad():
        p = sum(m.kernels(data.inputs, data.lengths).softmax(-1) for m in members(clf.model_))
    return clf.classes_[p.argmax(-1).numpy()]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sets", nargs="+", default=SETS, choices=SETS)
    p.add_argument("--k", nargs="+", type=int, default=[1, 2, 4])
    args = p.parse_args()
    setup(args)
    folder = args.data / "timeseries" / "ucr"
    print("set | k | series | defaults (choice) | lstm-rocket | its ridge alone | 1-NN ED")
    for name in args.sets:
        if name in SHARED:
            tr, te = load(folder, name, "TRAIN"), load(folder, name, "TEST")
            train, y_train, test, y_test = tr.series, np.asarray(tr.labels), te.series, te.labels
        else:
            train, y_train = classification_set(name, "train")
            test, y_test = classification_set(name, "test")
        y_test = np.asarray(y_test)
        if len(test) > TEST_AT_MOST:
            pick = np.random.default_rng(0).choice(len(test), TEST_AT_MOST, replace=False)
            test, y_test = [test[i] for i in pick], y_test[pick]
        for k in args.k:
            rng = np.random.default_rng(k)
            pick = np.concatenate([
                rng.choice(np.flatnonzero(y_train == c), min(k, int((y_train == c).sum())), False)
                for c in np.unique(y_train)
            ])  # fmt: skip
            X, y = [train[i] for i in pick], y_train[pick]
            with Timer() as timer:
                clf = SeriesClassifier().fit(X, y)
            ours = 100 * float(np.mean(clf.predict(test) == y_test))
            chosen = (clf.selection_ or {}).get("chosen")
            head = SeriesClassifier(architecture="lstm-rocket").fit(X, y)
            with_head = 100 * float(np.mean(head.predict(test) == y_test))
            ridge = 100 * float(np.mean(ridge_alone(head, test) == y_test))
            nn = 100 * float(np.mean(one_nn(X, y, test) == y_test))
            print(
                f"{name} | {k} | {len(X)} | {ours:.1f} ({chosen}, {timer.seconds:.0f} s) | "
                f"{with_head:.1f} | {ridge:.1f} | {nn:.1f}",
                flush=True,
            )
    print(f"# load average at the end {load_average()}")


if __name__ == "__main__":
    main()
