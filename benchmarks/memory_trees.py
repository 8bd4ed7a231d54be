"""Peak training memory of two checkouts of gatelab, alternately, a fresh process each.

    python benchmarks/memory_trees.py OLD_TREE NEW_TREE [--rounds 3] [--sizes B,I,H ...]

The measure is this checkout's ``benchmarks/speed.py`` ``peak_memory`` (one method for
both trees), run on each tree's ``src``: "step", the peak RSS growth of one training step
(T = 100, float32, torch's default threads) after a T = 3 warm-up, and "from the start",
the peak over the warm-up and the step from before the first call; for ``torch.nn.LSTM``
and the fused ``standard`` and ``layernorm`` cells at ``phase_profile.MEM_CONFIGS`` (or
``--sizes``). Every round runs each configuration and cell on both trees in turn, so that
the drift of a shared machine falls on both. Prints markdown: medians in MB, ratios to
torch (the median of both trees' torch runs), min-max.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from statistics import median

import speed
from phase_profile import MEM_CONFIGS

IMPLS = ("torch", "fused:standard", "fused:layernorm")
FIGURES = (("step", "peak_bytes"), ("from the start", "first_bytes"))


def _row(cfg, figure: str, runs: dict) -> str:
    mb = {k: median(v) / 2**20 for k, v in runs.items() if v}
    torch_mb = mb["torch", "both"]
    cells = [
        f"{mb[impl, 'old']:.2f} ({mb[impl, 'old'] / torch_mb:.2f}) / "
        f"{mb[impl, 'new']:.2f} ({mb[impl, 'new'] / torch_mb:.2f})"
        for impl in IMPLS[1:]
    ]
    spread = "; ".join(
        f"{min(runs[k]) / 2**20:.2f}-{max(runs[k]) / 2**20:.2f}"
        for k in [("torch", "both")] + [(i, t) for i in IMPLS[1:] for t in ("old", "new")]
    )
    return (
        f"| {', '.join(map(str, cfg))} | {figure} | {torch_mb:.2f} | "
        + " | ".join([*cells, spread])
        + " |"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", nargs="+", metavar="B,I,H", help="default: MEM_CONFIGS")
    args = ap.parse_args(argv)
    cfgs = MEM_CONFIGS
    if args.sizes:
        cfgs = [tuple(int(v) for v in size.split(",")) for size in args.sizes]
    trees = {"old": args.old.resolve() / "src", "new": args.new.resolve() / "src"}
    res: dict = {}
    print(f"# load average {os.getloadavg()[0]:.2f} (start)", flush=True)
    for _ in range(args.rounds):
        for cfg in cfgs:
            for impl in IMPLS:
                for tree, src in trees.items():
                    got = speed.peak_memory(*cfg, 100, impl, src) or {}
                    res.setdefault((cfg, impl, tree), []).append(got)
    print(f"# load average {os.getloadavg()[0]:.2f} (end)")
    print(
        "| B, I, H | figure | torch MB | standard old / new (x torch) | layernorm old / new "
        "(x torch) | min-max MB: torch; std old; std new; ln old; ln new |"
    )
    print("|---|---|---|---|---|---|")
    for cfg in cfgs:
        for figure, key in FIGURES:
            runs = {
                (i, t): [g[key] for g in res[(cfg, i, t)] if g.get(key) is not None]
                for i in IMPLS
                for t in trees
            }
            runs["torch", "both"] = runs["torch", "old"] + runs["torch", "new"]
            print(_row(cfg, figure, runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
