"""A fixed architecture under a time budget: how many epochs each member of a
SeriesClassifier trains, and what the budget recorded (with a fixed architecture there is
no inner CV to measure a rate; since branch budgetrate a probe measures it for the first
member).

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src python benchmarks/series_budget_probe.py \\
        --threads 2 --set PLAID --architecture lstm-rocket --time-budget 60
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, load_average, parser, setup
from ucr import SETS, load

from gatelab import SeriesClassifier


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--set", default="PLAID", choices=SETS)
    p.add_argument("--architecture", default="lstm-rocket")
    p.add_argument("--time-budget", type=float, default=60.0)
    args = p.parse_args()
    setup(args)
    folder = args.data / "timeseries" / "ucr"
    train, test = load(folder, args.set, "TRAIN"), load(folder, args.set, "TEST")
    clf = SeriesClassifier(architecture=args.architecture, time_budget=args.time_budget)
    with Timer() as timer:
        clf.fit(train.series, train.labels)
    accuracy = 100.0 * clf.score(test.series, test.labels)
    print(
        f"{args.set} {args.architecture}: test accuracy {accuracy:.1f}, fit {timer.seconds:.0f} s"
    )
    print(f"budget {json.dumps(clf.budget_)}")
    print(f"load average {load_average()}", flush=True)


if __name__ == "__main__":
    main()
