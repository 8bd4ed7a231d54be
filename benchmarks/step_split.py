"""Per-step split over threads against serial steps, per shape, in one interleaved run.

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src python benchmarks/step_split.py

The fused kernel splits a recurrent step over threads by rule above kSplitSure (2^21)
multiply-adds per thread of the step's recurrent product, and measures the choice on the
first steps of a shape below it (lstm_step.h, StepSplit). This script gives the evidence
for the rule: for each shape (standard LSTM, T = 100, float32, I = H / 2), a training step
(forward + backward) and a forward under ``no_grad`` with the split forced on
(``set_gemm_mode(0, 1, 0)``) and off (``set_gemm_mode(0, 1, 2)``), alternated, medians.
Ratio = serial time / split time (> 1: the split pays). Where the recurrent product runs on
the own kernel the split step is fused (each thread the GEMM columns of its hidden units,
then their pointwise pass) and has a second form, two phases (the GEMM, then the
pointwise pass over rows; ``set_gemm_mode(0, 1, 3)``), measured too: ratio = serial time
/ two-phase time; and with two batch rows per thread a third, over rows (each thread the
whole step of its rows; ``set_gemm_mode(0, 1, 4)``): ratio = serial time / time over rows.
``--own`` runs every product on the own kernel (``set_gemm_mode(4, ...)``) so that every
shape has every form.

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src python benchmarks/step_split.py --own
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


def one_shape(ext, B: int, H: int, T: int, rounds: int, gemm: int = 0) -> dict[str, float]:
    """Median ms of a training step and a no_grad forward, split (0), serial (2), split as
    two phases (3) and split over rows (4) (3 and 4 the same as 0 where the step has no
    such form)."""
    x = torch.randn(T, B, H // 2, requires_grad=True)
    m = gatelab.LSTM(H // 2, H, backend="fused")

    def in_mode(mode, run):
        def run_in_mode():
            ext.set_gemm_mode(gemm, 1, mode)  # 0: always split, 2: never, 3: two phases, 4: rows
            run()

        return run_in_mode

    fns = {
        f"{name}{mode}": in_mode(mode, make(m, x))
        for mode in (0, 2, 3, 4)
        for name, make in (("train", train_fn), ("fwd", forward_fn))
    }
    return interleaved_ms(fns, rounds, warmup=1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("-T", type=int, default=100)
    ap.add_argument("--own", action="store_true", help="every product on the own kernel")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ext = fused.extension()
    gemm = 4 if args.own else 0
    print(f"threads {args.threads}, T {args.T}, gemm mode {gemm}, load {os.getloadavg()[0]:.2f}")
    print("ms (serial / split, serial / two phases, serial / over rows)")
    try:
        for B, H in SHAPES:
            r = one_shape(ext, B, H, args.T, args.rounds, gemm)
            macs = B * 4 * H * H / args.threads
            cells = []
            for name in ("train", "fwd"):
                split, serial, two = r[f"{name}0"], r[f"{name}2"], r[f"{name}3"]
                rows = r[f"{name}4"]
                cells.append(
                    f"{name} serial {serial:7.1f} split {split:7.1f} two {two:7.1f} "
                    f"rows {rows:7.1f} ({serial / split:4.2f}, {serial / two:4.2f}, "
                    f"{serial / rows:4.2f})"
                )
            print(
                f"B={B:3d} H={H:3d} MACs/thread/step {macs / 1e6:6.2f}M: {'; '.join(cells)}; "
                f"load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    finally:
        ext.set_gemm_mode(0, 1, 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
