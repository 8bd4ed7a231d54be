"""Where the fused sLSTM's time goes, per phase, against torch.nn.LSTM in the same process.

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src python benchmarks/slstm_phases.py [--rounds 5]

T = 100, float32, one head, 2 threads (``--threads``), at B = 64, I = 128, H = 256 and
B = 8, I = 64, H = 128. Per round, interleaved: torch.nn.LSTM's forward under ``no_grad``,
the sLSTM's (phase timers on), torch's training step (forward + ``out.sum().backward()``,
``x`` requiring grad), the sLSTM's. The phase timers (``slstm_profile`` in
``csrc/slstm.cpp``) sum wall and process CPU time (all threads) per phase. Prints medians
over the rounds in ms per call: wall / CPU. On a shared machine CPU time leaves out the
slices other processes take; wall time is what a user waits.
"""

from __future__ import annotations

import argparse
import os
import time
from statistics import median

import torch
from speed import forward_fn, train_fn  # benchmarks/ is the script folder

import gatelab
from gatelab.nn.backends import fused

SIZES = ((64, 128, 256), (8, 64, 128))
T = 100
FWD = ("input projection", "recurrent GEMM (+ x W_ih^T)", "pointwise", "forward, all")
BWD = ("pointwise", "dh GEMM (+ copy)", "after the loop (dW, dx, db)", "backward, all")
PHASES = FWD + BWD


def timed(fn) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - w0) * 1e3, (time.process_time() - c0) * 1e3


def rounds(B: int, I: int, H: int, n: int, ops) -> dict:
    torch.manual_seed(0)
    x = torch.randn(T, B, I, requires_grad=True)
    peer = torch.nn.LSTM(I, H)
    slstm = gatelab.LSTM(I, H, variant="slstm", backend="fused")
    fwd = {m: forward_fn(m, x) for m in (peer, slstm)}  # speed.py's step closures
    train = {m: train_fn(m, x) for m in (peer, slstm)}

    runs: dict = {}
    for r in range(n + 1):  # round 0 warms up
        got = {"torch forward": timed(fwd[peer])}
        ops.slstm_profile(1)
        got["sLSTM forward"] = timed(fwd[slstm])
        prof = ops.slstm_profile(0)
        got.update(
            {f"  fwd: {k}": (prof[j] * 1e3, prof[len(PHASES) + j] * 1e3) for j, k in enumerate(FWD)}
        )
        got["torch train"] = timed(train[peer])
        ops.slstm_profile(1)
        got["sLSTM train"] = timed(train[slstm])
        prof = ops.slstm_profile(0)
        names = [f"train fwd: {k}" for k in FWD] + [f"train bwd: {k}" for k in BWD]
        got.update(
            {f"  {k}": (prof[j] * 1e3, prof[len(PHASES) + j] * 1e3) for j, k in enumerate(names)}
        )
        if r:
            for k, v in got.items():
                runs.setdefault(k, []).append(v)
    return {k: (median(w for w, _ in v), median(c for _, c in v)) for k, v in runs.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ops = fused._slstm_ops()
    for B, I, H in SIZES:
        load0 = os.getloadavg()[0]
        res = rounds(B, I, H, args.rounds, ops)
        print(
            f"\nB={B} I={I} H={H} T={T}, {args.threads} threads, load {load0:.2f} -> "
            f"{os.getloadavg()[0]:.2f}; ms per call, wall / CPU (all threads)"
        )
        print("| phase | wall ms | CPU ms |\n|---|---:|---:|")
        for k, (w, c) in res.items():
            print(f"| {k} | {w:.2f} | {c:.2f} |")
        tr, sl = res["torch train"][0], res["sLSTM train"][0]
        tf, sf = res["torch forward"][0], res["sLSTM forward"][0]
        print(f"ratio torch / sLSTM: train {tr / sl:.2f}, forward {tf / sf:.2f} (wall)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
