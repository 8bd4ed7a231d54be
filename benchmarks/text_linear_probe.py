"""Probe for the next text default: would a linear model beside the network help, and does
the validation data know when?

For each split, ``TextClassifier()`` (the defaults) is fitted with an explicit validation
part, and TF-IDF uni+bigrams + logistic regression (C=10) on the same training part; both
give probabilities on the validation and the test texts, saved to ``--out``. The mix
``(1 - w) * network + w * linear`` is then scored for w in {0, 1/4, 1/2, 3/4, 1}, and w is
also chosen per split by the validation log-loss (what an estimator could do without the
test data). UCI sets and MR: ``StratifiedKFold(10, shuffle=True, random_state=0)``, the
first ``--folds`` folds, 10% of each training part held out (stratified, seed 0); SST-5:
train / dev / test as shipped.

    python benchmarks/text_linear_probe.py --set yelp --folds 5 --threads 1
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json
import sys
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, load_average, parser, setup
from text_unseen import SETS, tfidf_lr

from gatelab import TextClassifier
from gatelab.data import read_labelled_text

WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def splits(data: Path, name: str, folds: int):
    """``(train X, y, valid X, y, test X, y)`` per split."""
    s = data / "sentiment"
    if name == "sst5":
        tr, dv, te = (read_labelled_text(s / "sst5" / f"{p}.txt") for p in ("train", "dev", "test"))
        yield tr.texts, np.asarray(tr.labels), dv.texts, np.asarray(dv.labels), te.texts, te.labels
        return
    path = s / "rt_polarity" / "rt-polarity" if name == "mr" else None
    path = path or s / "uci_labelled_sentences" / f"{name}_labelled.txt"
    d = read_labelled_text(path)
    X, y = np.array(d.texts, dtype=object), np.asarray(d.labels)
    for a, b in list(StratifiedKFold(10, shuffle=True, random_state=0).split(X, y))[:folds]:
        ta, va = train_test_split(a, test_size=0.1, stratify=y[a], random_state=0)
        yield list(X[ta]), y[ta], list(X[va]), y[va], list(X[b]), y[b]


def scores(r: dict) -> tuple[dict, float]:
    """Test accuracy of each mix, and the w the validation log-loss picks."""
    nv, lv, n, lin = (np.asarray(r[k]) for k in ("netv", "linv", "net", "lin"))
    yv, y = np.asarray(r["yv"]), np.asarray(r["y"])
    test = {w: float((((1 - w) * n + w * lin).argmax(1) == y).mean()) for w in WEIGHTS}
    loss = {
        w: -np.log(((1 - w) * nv + w * lv)[np.arange(len(yv)), yv] + 1e-12).mean() for w in WEIGHTS
    }
    return test, min(WEIGHTS, key=lambda w: loss[w])


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--set", choices=(*SETS, "mr", "sst5"), required=True)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("text_linear_probe.json"))
    args = p.parse_args()
    setup(args)
    results = []
    for k, (Xa, ya, Xv, yv, Xb, yb) in enumerate(splits(args.data, args.set, args.folds)):
        with Timer() as t:
            net = TextClassifier().fit(Xa, ya, validation_data=(Xv, yv))
        lin = tfidf_lr().fit(Xa, ya)
        ids = {c: i for i, c in enumerate(net.classes_)}
        r = {
            "yv": [ids[v] for v in yv],
            "y": [ids[v] for v in yb],
            **{f"{key}v": m.predict_proba(Xv).tolist() for key, m in (("net", net), ("lin", lin))},
            **{key: m.predict_proba(Xb).tolist() for key, m in (("net", net), ("lin", lin))},
        }
        results.append(r)
        test, w = scores(r)
        row = " ".join(f"w={v:g}: {100 * a:.1f}" for v, a in test.items())
        print(
            f"{args.set} split {k}: {row}; validation picks w={w:g}; {t.seconds:.0f} s", flush=True
        )
        args.out.write_text(json.dumps(results))
    picked = [scores(r) for r in results]
    mean = {w: np.mean([s[0][w] for s in picked]) for w in WEIGHTS}
    print(
        f"{args.set}, {len(results)} splits, mean test accuracy: "
        + " ".join(f"w={w:g} {100 * a:.1f}" for w, a in mean.items())
        + f"; w by validation log-loss {[s[1] for s in picked]}: "
        + f"{100 * np.mean([s[0][s[1]] for s in picked]):.1f}; load {load_average()}"
    )


if __name__ == "__main__":
    main()
