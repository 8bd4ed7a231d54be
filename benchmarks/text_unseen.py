"""Text classifier defaults on sets never used to choose them: UCI Sentiment Labelled Sentences.

Amazon, IMDb and Yelp, 1,000 sentences each (Kotzias et al., KDD 2015), each scored by
10-fold cross-validation (``StratifiedKFold(10, shuffle=True, random_state=0)``) through
``cross_val_score`` with the TextClassifier's defaults, beside two peers in the same folds:
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
        for label, make in (
            ("gatelab", TextClassifier),
            ("tfidf+lr", tfidf_lr),
            ("nb+lr", NBLogisticRegression),
        ):
            with Timer() as t:
                s = cross_val_score(make(), X, y, cv=folds)
            row.append(f"{label} {100 * s.mean():.1f} (sd {100 * s.std():.1f}, {t.seconds:.0f} s)")
        print(" ".join(row), f"| load {load_average()}", flush=True)


if __name__ == "__main__":
    main()
