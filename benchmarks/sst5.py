"""SST-5: gatelab's TextClassifier with its defaults against TF-IDF + logistic regression
and a hand-written nn.LSTM BiLSTM, accuracy and macro F1 on the test sentences.

All read the shared files as they are (``sentiment/sst5/{train,dev,test}.txt``,
``LABEL ||| text``): 8,544 training sentences, the 1,101 dev sentences for early stopping
or model choice, scored on the 2,210 test sentences; no pretrained vectors. gatelab:
``TextClassifier().fit(train, validation_data=dev)`` (what ``gatelab train
text-classifier --train train.txt --valid dev.txt`` does). Peers: TF-IDF of uni- and
bigrams + logistic regression, C in {0.5, 1, 2, 4, 8} chosen on dev; the textbook BiLSTM of
benchmarks/sst2.py (embedding 128, hidden 128, max-pool, dropout 0.5, Adam 1e-3, batch
64) for up to 6 epochs, the best epoch on dev.

    python benchmarks/sst5.py [--threads 1] [--skip-peer]

Targets (issue 11): test accuracy >= 45.0 (CNN with random embeddings, Kim 2014);
macro F1 reported beside it.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, load_average, parser, setup
from sst2 import PeerBiLSTM
from text_unseen import network_predict

from gatelab import TextClassifier
from gatelab.data import read_labelled_text
from gatelab.train.metrics import classification_metrics


def show(name: str, metrics: dict, seconds: float) -> str:
    return (
        f"{name}: test accuracy {100 * metrics['accuracy']:.1f}, macro F1 "
        f"{100 * metrics['macro_f1']:.1f}, training {seconds / 60:.1f} min"
    )


def tfidf_peer(train, dev, test) -> tuple[dict, float]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    with Timer() as timer:
        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True)
        Xtr = vec.fit_transform(train.texts)
        best = None
        for C in (0.5, 1.0, 2.0, 4.0, 8.0):
            lr = LogisticRegression(C=C, max_iter=2000).fit(Xtr, train.labels)
            acc = lr.score(vec.transform(dev.texts), dev.labels)
            if best is None or acc > best[0]:
                best = (acc, lr)
    pred = best[1].predict(vec.transform(test.texts))
    return classification_metrics(np.asarray(test.labels), pred), timer.seconds


def bilstm_peer(train, dev, test, seed: int = 0) -> tuple[dict, float]:
    torch.manual_seed(seed)
    counts = Counter(w for t in train.texts for w in t.lower().split())
    index = {w: i + 2 for i, w in enumerate(sorted(counts))}  # 0 pad, 1 unknown
    labels = sorted(set(train.labels))

    def batch(texts, idx):
        seqs = [
            torch.tensor([index.get(w, 1) for w in texts[i].lower().split()] or [1]) for i in idx
        ]
        lengths = torch.tensor([len(s) for s in seqs])
        return nn.utils.rnn.pad_sequence(seqs, batch_first=True), lengths

    def predict(model, texts):
        model.eval()
        with torch.no_grad():
            x, lengths = batch(texts, range(len(texts)))
            return [labels[p] for p in model(x, lengths).argmax(-1).tolist()]

    y_train = torch.tensor([labels.index(y) for y in train.labels])
    model = PeerBiLSTM(len(index) + 2)
    model.fc = nn.Linear(model.fc.in_features, len(labels))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    best = None
    with Timer() as timer:
        for _ in range(6):
            model.train()
            for idx in torch.randperm(len(train.texts)).split(64):
                x, lengths = batch(train.texts, idx.tolist())
                loss = F.cross_entropy(model(x, lengths), y_train[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            acc = np.mean([p == y for p, y in zip(predict(model, dev.texts), dev.labels)])
            if best is None or acc > best[0]:
                best = (acc, {k: v.clone() for k, v in model.state_dict().items()})
    model.load_state_dict(best[1])
    pred = predict(model, test.texts)
    return classification_metrics(np.asarray(test.labels), np.asarray(pred)), timer.seconds


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--skip-peer", action="store_true")
    args = p.parse_args()
    setup(args)
    folder = args.data / "sentiment" / "sst5"
    train, dev, test = (read_labelled_text(folder / f"{s}.txt") for s in ("train", "dev", "test"))

    clf = TextClassifier()
    with Timer() as timer:
        clf.fit(train.texts, train.labels, validation_data=(dev.texts, dev.labels))
    ours = classification_metrics(np.asarray(test.labels), clf.predict(test.texts))
    print(show("gatelab TextClassifier (defaults)", ours, timer.seconds), flush=True)
    print(
        f"  dev {clf.validation_metrics_}; logit adjustment tau {clf.prior_adjustment_}; "
        f"test predictions per class {dict(sorted(Counter(clf.predict(test.texts)).items()))}"
        f", truth {dict(sorted(Counter(test.labels).items()))}",
        flush=True,
    )
    alone = classification_metrics(np.asarray(test.labels), network_predict(clf, test.texts))
    print(
        f"  linear part: w {clf.linear_weight_}, C {clf.linear_C_}, dev log-loss by w "
        f"{clf.linear_losses_}; the network alone (w = 0): test accuracy "
        f"{100 * alone['accuracy']:.1f}, macro F1 {100 * alone['macro_f1']:.1f}",
        flush=True,
    )
    if not args.skip_peer:
        m, s = tfidf_peer(train, dev, test)
        print(show("peer TF-IDF (1-2 grams) + logistic regression", m, s), flush=True)
        m2, s2 = bilstm_peer(train, dev, test)
        print(show("peer nn.LSTM BiLSTM max-pool", m2, s2), flush=True)
        print(
            f"gatelab - TF-IDF: {100 * (ours['accuracy'] - m['accuracy']):+.1f} accuracy points;"
            f" gatelab - BiLSTM: {100 * (ours['accuracy'] - m2['accuracy']):+.1f}"
        )
    print(
        f"target: test accuracy >= 45.0 {'MET' if ours['accuracy'] >= 0.45 else 'MISSED'}; "
        f"load average at the end {load_average()}"
    )


if __name__ == "__main__":
    main()
