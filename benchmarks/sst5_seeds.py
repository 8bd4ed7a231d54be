"""SST-5: what a TextClassifier setting gives in expectation, over many seeds.

One member per seed (``TextClassifier(n_models=1, seed=s, linear=False, **setting)``,
trained on the 8,544 training sentences, dev for early stopping) keeps its dev and test
logits; ensembles of ``k`` members are then formed offline from every combination of the
kept members, with the estimator's own logit adjustment (tau in {0, 1/4, ..., 1} chosen on
dev by the mean of accuracy and macro F1), and scored on test. With three members the
default is one such combination (seeds 0, 1, 2); the mean over all combinations is what
the setting gives whatever the seed, which a single run (test standard error about 1.1
points, seed-to-seed spread of one member about 1.2) cannot tell.

    python benchmarks/sst5_seeds.py --name base --seeds 0-9
    python benchmarks/sst5_seeds.py --name h256 --setting '{"hidden_size": 256}' --seeds 0-9
    python benchmarks/sst5_seeds.py --report base h256 --k 1 3 5

Members are kept as ``<out>/<name>_<seed>.npz``; ``--report`` reads them and trains
nothing.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, Timer, load_average, parser, setup

from gatelab import TextClassifier
from gatelab.data import read_labelled_text
from gatelab.estimators.text import choose_prior_adjustment, prior_adjusted
from gatelab.train.metrics import classification_metrics


def seed_list(text: str) -> list[int]:
    """``"0-9"`` or ``"0,2,5"``."""
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


def train_member(data: dict, setting: dict, seed: int, path: Path) -> None:
    """Fit one member and keep its unadjusted dev and test logits (up to a constant per
    row: the adjustment the estimator built into the head is added back)."""
    train, dev, test = data["train"], data["dev"], data["test"]
    clf = TextClassifier(n_models=1, seed=seed, linear=False, **setting)
    with Timer() as timer:
        clf.fit(train.texts, train.labels, validation_data=(dev.texts, dev.labels))
    classes = [str(c) for c in clf.classes_]
    counts = np.array([sum(str(y) == c for y in train.labels) for c in classes], float)
    log_prior = np.log(np.maximum(counts, 1) / counts.sum())
    kept = {"log_prior": log_prior, "classes": np.array(classes)}
    for split, d in (("dev", dev), ("test", test)):
        logp = np.log(clf.predict_proba(d.texts) + 1e-30)
        kept[split] = logp + clf.prior_adjustment_ * log_prior
        kept[split + "_y"] = np.array([classes.index(str(y)) for y in d.labels])
    np.savez(path, seconds=timer.seconds, **kept)
    acc = float((kept["test"].argmax(-1) == kept["test_y"]).mean())
    print(f"{path.stem}: {timer.seconds:.0f} s, test accuracy {100 * acc:.1f}", flush=True)


def ensemble(members: list) -> tuple[float, dict]:
    """The estimator's rule on kept members (``choose_prior_adjustment``: tau on dev),
    then the test metrics of the members' averaged probabilities with that tau."""
    lp = torch.as_tensor(members[0]["log_prior"])
    dev = torch.as_tensor(np.stack([m["dev"] for m in members])).float()
    tau, _ = choose_prior_adjustment(dev, lp, members[0]["dev_y"])
    test = torch.as_tensor(np.stack([m["test"] for m in members])).float()
    p = prior_adjusted(test, lp, tau)
    return tau, classification_metrics(members[0]["test_y"], p.argmax(-1).numpy())


def report(out: Path, names: list[str], ks: list[int]) -> None:
    for name in names:
        # <name>_<seed>.npz only: a setting named "base" must not read "base_wide_3"
        seeds = {f: f.stem.rsplit("_", 1) for f in out.glob(f"{name}_*.npz")}
        files = sorted(
            (f for f, (n, s) in seeds.items() if n == name and s.isdigit()),
            key=lambda f: int(seeds[f][1]),
        )
        members = [dict(np.load(f)) for f in files]
        if not members:
            print(f"{name}: no members in {out}")
            continue
        secs = np.mean([float(m["seconds"]) for m in members])
        for k in ks:
            if k > len(members):
                continue
            scores = [ensemble(list(c))[1] for c in itertools.combinations(members, k)]
            acc = 100 * np.array([s["accuracy"] for s in scores])
            f1 = 100 * np.array([s["macro_f1"] for s in scores])
            print(
                f"{name}, {len(members)} members ({secs:.0f} s each), k={k}: test accuracy "
                f"mean {acc.mean():.2f} (min {acc.min():.1f}, max {acc.max():.1f}) over "
                f"{len(scores)} combinations; macro F1 mean {f1.mean():.2f}",
                flush=True,
            )


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--name", help="the setting's name (file prefix of its members)")
    p.add_argument("--setting", default="{}", help="TextClassifier arguments, JSON")
    p.add_argument("--seeds", default="0-9", help="e.g. 0-9 or 0,3,4")
    p.add_argument("--report", nargs="+", metavar="NAME", help="only report these settings")
    p.add_argument("--k", nargs="+", type=int, default=[1, 3, 5], help="ensemble sizes")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "sst5_seeds")
    args = p.parse_args()
    setup(args)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.report:
        report(args.out, args.report, args.k)
        return
    if not args.name:
        sys.exit("--name is needed to train (or --report NAME ...)")
    folder = args.data / "sentiment" / "sst5"
    data = {s: read_labelled_text(folder / f"{s}.txt") for s in ("train", "dev", "test")}
    setting = json.loads(args.setting)
    for seed in seed_list(args.seeds):
        train_member(data, setting, seed, args.out / f"{args.name}_{seed}.npz")
    report(args.out, [args.name], args.k)
    print(f"load average at the end {load_average()}")


if __name__ == "__main__":
    main()
