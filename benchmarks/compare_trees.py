"""Time the fused backend of two checkouts of gatelab alternately, in fresh processes.

    python benchmarks/compare_trees.py OLD_TREE NEW_TREE [--rounds 3]

Each round runs, for each tree in turn, one process that imports gatelab from
``TREE/src`` and times a forward + backward step (T = 100, float32, 2 threads; the median
of 15 steps after 3 warm-up steps) for a few configurations. Alternating the trees
round by round spreads the drift of a shared machine over both. Prints milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CONFIGS = [
    ("standard", 64, 128, 256),
    ("layernorm", 64, 128, 256),
    ("peephole", 64, 128, 256),
    ("standard", 16, 64, 128),
    ("layernorm", 8, 64, 128),
]

CHILD = """
import json, os, statistics, sys, time
import torch
import gatelab
torch.set_num_threads(2)
out = {}
for variant, B, I, H in json.loads(sys.argv[1]):
    torch.manual_seed(0)
    m = gatelab.LSTM(I, H, variant=variant, backend="fused")
    x = torch.randn(100, B, I, requires_grad=True)
    def step():
        y, _ = m(x)
        y.sum().backward()
    for _ in range(3):
        step()
    times = []
    for _ in range(15):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    out[f"{variant} B={B} H={H}"] = 1000 * statistics.median(times)
print(json.dumps(out))
"""


def run(tree: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(CONFIGS)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trees", nargs=2, type=Path, help="two checkouts of gatelab")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    results: dict[Path, list[dict[str, float]]] = {t: [] for t in args.trees}
    for r in range(args.rounds):
        for tree in args.trees:
            results[tree].append(run(tree))
            print(f"round {r + 1}, {tree}: done", file=sys.stderr, flush=True)
    print("| configuration | " + " | ".join(f"{t} (ms per round)" for t in args.trees) + " |")
    print("|---|" + "---|" * len(args.trees))
    for key in results[args.trees[0]][0]:
        cells = [", ".join(f"{r[key]:.1f}" for r in results[t]) for t in args.trees]
        print(f"| {key} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
