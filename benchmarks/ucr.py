"""Series classification: gatelab's SeriesClassifier with its defaults against 1-NN
Euclidean, 1-NN DTW and ROCKET (aeon, a benchmark-only extra) on every development set.

Sets (``timeseries/ucr`` in the shared data, read by ``read_labelled_series``, the format
found from the content): ItalyPowerDemand, Coffee (old UCR text format), OSULeaf, ACSF1,
PLAID and PickupGestureWiimoteZ (unequal lengths: 1-NN Euclidean and ROCKET do not run
there). Every model trains on the TRAIN file and is scored on the TEST file; gatelab's
choice of architecture (inner cross-validation on TRAIN only) is printed.

    python benchmarks/ucr.py [--threads 1] [--sets OSULeaf ACSF1] [--skip-peers]

``--skip-peers`` prints the peers measured with aeon 1.6.0 on this machine (issue 11,
shared data README) instead of running them (DTW on PLAID and ROCKET on ACSF1 take long).

Targets (issue 11): accuracy >= the best 1-NN on every set; OSULeaf and ACSF1 within 3
points of ROCKET; training <= 5 minutes per set.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, load_average, parser, setup

from gatelab import SeriesClassifier
from gatelab.data import read_labelled_series

SETS = ["ItalyPowerDemand", "Coffee", "OSULeaf", "ACSF1", "PLAID", "PickupGestureWiimoteZ"]
NEAR_ROCKET = {"OSULeaf", "ACSF1"}
# 1-NN ED / 1-NN DTW / ROCKET (10,000 kernels), test accuracy, aeon 1.6.0 (issue 11)
REFERENCE = {
    "ItalyPowerDemand": (95.5, 95.0, 97.0),
    "Coffee": (100.0, 100.0, 100.0),
    "OSULeaf": (52.1, 59.1, 94.2),
    "ACSF1": (54.0, 64.0, 88.0),
    "PLAID": (None, 93.1, None),
    "PickupGestureWiimoteZ": (None, 70.0, None),
}


def load(folder: Path, name: str, split: str):
    files = sorted(folder.glob(f"{name}_{split}.*"))
    if not files:
        sys.exit(f"no {name}_{split}.* in {folder}")
    return read_labelled_series(files[0])


def aeon_input(series: list[np.ndarray]):
    """(N, C, T) when every length is equal, else a list of (C, T_i)."""
    if len({len(s) for s in series}) == 1:
        return np.stack([s.T for s in series]).astype(np.float64)
    return [s.T.astype(np.float64) for s in series]


def peers(train, test, dtw: bool = True) -> tuple[float | None, float | None, float | None]:
    """Test accuracy of 1-NN ED, 1-NN DTW and ROCKET (None where not run: ED and ROCKET
    need equal lengths, DTW runs where ``dtw``); ``train`` and ``test`` have ``series``
    and ``labels``."""
    from aeon.classification.convolution_based import RocketClassifier
    from aeon.classification.distance_based import KNeighborsTimeSeriesClassifier

    Xtr, Xte = aeon_input(train.series), aeon_input(test.series)
    equal = isinstance(Xtr, np.ndarray) and isinstance(Xte, np.ndarray)
    ytr, yte = np.asarray(train.labels), np.asarray(test.labels)

    def score(clf) -> float:
        return 100.0 * float(np.mean(clf.fit(Xtr, ytr).predict(Xte) == yte))

    ed = score(KNeighborsTimeSeriesClassifier(distance="euclidean")) if equal else None
    by_dtw = score(KNeighborsTimeSeriesClassifier(distance="dtw")) if dtw else None
    rocket = score(RocketClassifier(n_kernels=10_000, random_state=0)) if equal else None
    return ed, by_dtw, rocket


def fmt(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sets", nargs="+", default=SETS, choices=SETS)
    p.add_argument("--skip-peers", action="store_true")
    args = p.parse_args()
    setup(args)
    folder = args.data / "timeseries" / "ucr"
    verdicts = {}
    for name in args.sets:
        train, test = load(folder, name, "TRAIN"), load(folder, name, "TEST")
        lengths = sorted({len(s) for s in train.series})
        print(
            f"\n== {name}: {len(train)} train / {len(test)} test series, lengths "
            f"{lengths[0]}-{lengths[-1]}, {len(train.class_labels)} classes, {train.format}",
            flush=True,
        )
        clf = SeriesClassifier()
        with Timer() as timer:
            clf.fit(train.series, train.labels)
        ours = 100.0 * clf.score(test.series, test.labels)
        sel = clf.selection_ or {}
        cfg = clf.model_config_
        ridge = ""
        if cfg.kernel_ridge:  # each member's ridge strength and temperature
            kernels = [m.kernels for m in getattr(clf.model_, "members", [clf.model_])]
            ridge = "; ridge alpha, temperature " + ", ".join(
                f"{float(k.ridge_alpha):.3g} {float(k.ridge_temperature):.3g}" for k in kernels
            )
        print(
            f"gatelab SeriesClassifier (defaults): test accuracy {ours:.1f}, training "
            f"{timer.seconds:.0f} s; architecture {clf.architecture_} "
            f"({sel.get('chosen')}; inner CV "
            f"{sel.get('mean_accuracy')}, cross-entropy {sel.get('mean_cross_entropy')}, "
            f"{sel.get('folds')} of {sel.get('of_folds')} folds, "
            f"{sel.get('seconds', 0):.0f} s); patch {cfg.patch}, conv pool {cfg.conv_pool}, "
            f"epochs {clf.train_config_.epochs}{ridge}",
            flush=True,
        )
        budget = clf.budget_  # what the time budget did (seconds per phase, cuts)
        phases = ", ".join(f"{k} {v:.0f} s" for k, v in budget["seconds"].items())
        print(
            f"time budget {budget['time_budget']} s: {phases}; members' epochs "
            f"{budget['member_epochs']} of {budget['planned_epochs']} "
            f"({', '.join(f'{s:.0f}' for s in budget['member_seconds'])} s); cut: inner CV "
            f"{budget['selection_cut']}, members {budget['members_cut']}",
            flush=True,
        )
        if args.skip_peers:
            ed, dtw, rocket = REFERENCE[name]
            source = "reference (issue 11)"
        else:
            with Timer() as peer_timer:
                ed, dtw, rocket = peers(train, test)
            source = f"measured here, {peer_timer.seconds:.0f} s"
        best_nn = max(v for v in (ed, dtw) if v is not None)
        ok = ours >= best_nn
        if name in NEAR_ROCKET and rocket is not None:
            ok = ok and ours >= rocket - 3.0
        verdicts[name] = ok
        print(
            f"peers ({source}): 1-NN ED {fmt(ed)}, 1-NN DTW {fmt(dtw)}, ROCKET {fmt(rocket)}; "
            f"gatelab - best 1-NN {ours - best_nn:+.1f}"
            + (f", gatelab - ROCKET {ours - rocket:+.1f}" if rocket is not None else "")
            + f"; accuracy target {'MET' if ok else 'MISSED'}; training <= 5 min "
            f"{'MET' if timer.seconds <= 300 else 'MISSED'} (load average {load_average()})",
            flush=True,
        )
    met = [n for n, v in verdicts.items() if v]
    print(f"\naccuracy targets met on {len(met)} of {len(verdicts)}: {met}")


if __name__ == "__main__":
    main()
