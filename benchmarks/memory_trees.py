"""Peak training memory of two checkouts of gatelab, alternately, a fresh process each.

    python benchmarks/memory_trees.py OLD_TREE NEW_TREE [--rounds 3]

The measure is ``benchmarks/speed.py``'s ``peak_memory`` (peak RSS growth of one training
step, T = 100, float32, torch's default threads) for ``torch.nn.LSTM`` and the fused
``standard`` and ``layernorm`` cells at ``phase_profile.MEM_CONFIGS``, each checkout's own
``src``; every round runs each configuration and cell on both trees in turn, so that the
drift of a shared machine falls on both. Prints markdown: medians in MB, ratios to torch
(the median of both trees' torch runs), min-max.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path
from statistics import median

from phase_profile import MEM_CONFIGS

IMPLS = ("torch", "fused:standard", "fused:layernorm")


def _speed(tree: Path):
    """That tree's benchmarks/speed.py (its peak_memory imports gatelab from its src)."""
    spec = importlib.util.spec_from_file_location(
        f"speed_{abs(hash(tree))}", tree / "benchmarks" / "speed.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    trees = {"old": _speed(args.old.resolve()), "new": _speed(args.new.resolve())}
    res: dict = {}
    print(f"# load average {os.getloadavg()[0]:.2f} (start)", flush=True)
    for _ in range(args.rounds):
        for cfg in MEM_CONFIGS:
            for impl in IMPLS:
                for tree, mod in trees.items():
                    res.setdefault((cfg, impl, tree), []).append(mod.peak_memory(*cfg, 100, impl))
    print(f"# load average {os.getloadavg()[0]:.2f} (end)")
    print(
        "| B, I, H | torch MB | standard old / new (x torch) | layernorm old / new (x torch) "
        "| min-max MB: torch; std old; std new; ln old; ln new |"
    )
    print("|---|---|---|---|---|")
    for cfg in MEM_CONFIGS:
        runs = {
            k: [v for v in res[(cfg, *k)] if v is not None]
            for k in [(i, t) for i in IMPLS for t in trees]
        }
        mb = {k: median(v) / 2**20 for k, v in runs.items() if v}
        torch_mb = median(runs["torch", "old"] + runs["torch", "new"]) / 2**20

        cell = {
            impl: f"{mb[impl, 'old']:.2f} ({mb[impl, 'old'] / torch_mb:.2f}) / "
            f"{mb[impl, 'new']:.2f} ({mb[impl, 'new'] / torch_mb:.2f})"
            for impl in IMPLS[1:]
        }
        runs["torch", "both"] = runs["torch", "old"] + runs["torch", "new"]
        spread = "; ".join(
            f"{min(runs[k]) / 2**20:.2f}-{max(runs[k]) / 2**20:.2f}"
            for k in [
                ("torch", "both"),
                ("fused:standard", "old"),
                ("fused:standard", "new"),
                ("fused:layernorm", "old"),
                ("fused:layernorm", "new"),
            ]
        )
        print(
            f"| {', '.join(map(str, cfg))} | {torch_mb:.2f} | {cell['fused:standard']} | "
            f"{cell['fused:layernorm']} | {spread} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
