"""Text classifier defaults on sets never used to choose them: UCI Sentiment Labelled Sentences.

Amazon, IMDb and Yelp, 1,000 sentences each (Kotzias et al., KDD 2015), each scored by
10-fold cross-validation (``StratifiedKFold(10, shuffle=True, random_state=0)``) with the
TextClassifier's defaults (the mixed model, and its network alone: ``w = 0``, what the
defaults gave before the linear part; the ``w`` and ``C`` chosen on each fold's validation
part are printed), beside two peers in the same folds through ``cross_val_score``:
TF-IDF uni+bigrams + logistic regression, and NB-weighted logistic regression (the MR
peer of benchmarks/mr_cv.py). None of these sets was looked at while the defaults were
chosen (SST-2, MR and SST-5 were), so this is a check of the defaults, not a target.

    python benchmarks/text_unseen.py      # --sets yelp imdb, --folds N for the first N
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, load_average, parser, setup
from mr_cv import NBLogisticRegression

from gatelab import TextClassifier
from gatelab.data import read_labelled_text

SETS = ("amazon_cells", "imdb", "yelp")


def tfidf_lr():
    return make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(C=10.0)
    )


def network_predict(est, X) -> np.ndarray:
    """What ``est`` (a fitted TextClassifier) predicts for texts ``X`` with its network
    alone (``w = 0``: the defaults before the linear part)."""
    from gatelab.models.bag import WithLinear
    from gatelab.train.fit import predict_batches

    data = est._inputs(X)
    net = est.model_
    if isinstance(net, WithLinear):  # the linear part's own words are <unk> to the network
        data.inputs = net.network_ids(data.inputs)
        net = net.network
    return est.classes_[predict_batches(net, data).argmax(-1).numpy()]


def gatelab_folds(X, y, folds):
    """Test accuracy per fold of ``TextClassifier()``, of its network alone, and the
    ``(w, C)`` each fold chose."""
    mixed, alone, chosen = [], [], []
    for a, b in folds:
        est = TextClassifier().fit([X[i] for i in a], y[a])
        Xb = [X[i] for i in b]
        mixed.append(est.score(Xb, y[b]))
        alone.append(float((network_predict(est, Xb) == y[b]).mean()))
        chosen.append((est.linear_weight_, est.linear_C_))
    return np.asarray(mixed), np.asarray(alone), chosen


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    p.add_argument("--folds", type=int, default=10, help="run only the first N of the 10 folds")
    args = p.parse_args()
    setup(args)
    folder = args.data / "sentiment" / "uci_labelled_sentences"
    for name in args.sets:
        data = read_labelled_text(folder / f"{name}_labelled.txt")
        X, y = data.texts, np.asarray(data.labels)
        folds = list(StratifiedKFold(10, shuffle=True, random_state=0).split(X, y))
        folds = folds[: args.folds]
        row = [f"{name} ({len(X)} sentences, {len(folds)} folds):"]
        with Timer() as t:
            mixed, alone, chosen = gatelab_folds(X, y, folds)
        row.append(
            f"gatelab {100 * mixed.mean():.1f} (sd {100 * mixed.std():.1f}, {t.seconds:.0f} s)"
        )
        row.append(f"network alone {100 * alone.mean():.1f} (sd {100 * alone.std():.1f})")
        row.append(f"w, C per fold {chosen}")
        for label, make in (
            ("tfidf+lr", tfidf_lr),
            ("nb+lr", NBLogisticRegression),
        ):
            with Timer() as t:
                s = cross_val_score(make(), X, y, cv=folds)
            row.append(f"{label} {100 * s.mean():.1f} (sd {100 * s.std():.1f}, {t.seconds:.0f} s)")
        print(" ".join(row), f"| load {load_average()}", flush=True)


if __name__ == "__main__":
    main()
