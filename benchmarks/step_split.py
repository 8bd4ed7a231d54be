"""Per-step split over threads against serial steps, per shape, in one interleaved run.

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src python benchmarks/step_split.py

The fused kernel splits a recurrent step over threads by rule above kSplitSure (2^21)
multiply-adds per thread of the step's recurrent product, and measures the choice on the
first steps of a shape below it (lstm_step.h, StepSplit). This script gives the evidence
for the rule: for each shape (standard LSTM, T = 100, float32, I = H / 2), a training step
(forward + backward) and a forward under ``no_grad`` with the split forced on
(``set_gemm_mode(0, 1, 0)``) and off (``set_gemm_mode(0, 1, 2)``), alternated, medians.
Ratio = serial time / split time (> 1: the split pays).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from speed import forward_fn, interleaved_ms, train_fn  # noqa: E402

import gatelab  # noqa: E402
from gatelab.nn.backends import fused  # noqa: E402

SHAPES = [(8, 128), (16, 128), (32, 128), (64, 128), (8, 256), (16, 256), (32, 256),
          (64, 256), (4, 512), (8, 512), (16, 512), (32, 512)]  # fmt: skip


def one_shape(ext, B: int, H: int, T: int, rounds: int) -> dict[str, float]:
    """Median ms of a training step and a no_grad forward, split (0) and serial (2)."""
    x = torch.randn(T, B, H // 2, requires_grad=True)
    m = gatelab.LSTM(H // 2, H, backend="fused")

    def in_mode(mode, run):
        def run_in_mode():
            ext.set_gemm_mode(0, 1, mode)  # 0: always split, 2: never
            run()

        return run_in_mode

    fns = {
        f"{name}{mode}": in_mode(mode, make(m, x))
        for mode in (0, 2)
        for name, make in (("train", train_fn), ("fwd", forward_fn))
    }
    return interleaved_ms(fns, rounds, warmup=1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("-T", type=int, default=100)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ext = fused.extension()
    print(f"threads {args.threads}, T {args.T}, load {os.getloadavg()[0]:.2f}")
    try:
        for B, H in SHAPES:
            r = one_shape(ext, B, H, args.T, args.rounds)
            macs = B * 4 * H * H / args.threads
            print(
                f"B={B:3d} H={H:3d} MACs/thread/step {macs / 1e6:6.2f}M: train split "
                f"{r['train0']:7.1f} serial {r['train2']:7.1f} ms "
                f"({r['train2'] / r['train0']:4.2f}); fwd split {r['fwd0']:6.1f} serial "
                f"{r['fwd2']:6.1f} ms ({r['fwd2'] / r['fwd0']:4.2f}); "
                f"load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    finally:
        ext.set_gemm_mode(0, 1, 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
