"""Two builds of the fused extension against each other, interleaved in one process.

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src python benchmarks/ab_kernels.py OLD.so NEW.so
    ... --gemm   # the own GEMM alone at the kernel's shapes (bench_gemm), old against new

For a before/after of a kernel change: build each tree once (``fused.extension().__file__``
names the ``.so``; builds of other trees or sources get other names and can sit side by
side), then load both here. For each configuration (``standard``, T = 100) the forward
(keep=2) and backward of the extension are called directly on the same inputs and weights,
one call of each build per round; times are this thread's CPU time on one torch thread
(time lost to other processes on a shared machine is not counted), medians over the
rounds, for the backward's after-loop phase (the extension's ``profile(2)`` timer), the
whole backward and forward + backward. Ratios are OLD / NEW (> 1: NEW faster). The outputs
of the two builds are compared too (max |difference| of every gradient).
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import gatelab
from gatelab.nn.backends import fused

CONFIGS = [(1, 64, 128), (16, 64, 128), (64, 128, 256)]
BWD_AFTER = 6  # profile.h: the slot kPBwdAfter


def load(path: str):
    name = Path(path).name.split(".")[0]
    loader = importlib.machinery.ExtensionFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def step(ext, x, h0, c0, params, flags, dout, wall=False):
    """(after-phase s, backward s, forward + backward s, gradients) of one call each: this
    thread's CPU time, or wall time (``wall``: more than one thread)."""
    clock = time.perf_counter if wall else time.thread_time
    t0 = clock()
    res = ext.lstm_forward(x, h0, c0, params, None, flags, 2)
    saved = [res[0], None, None, res[3], res[4], *res[5:]]
    saved = [t if t is not None else torch.empty(0) for t in saved]
    ext.profile(1 if wall else 2)
    t1 = clock()
    grads = ext.lstm_backward(dout, None, None, x, h0, c0, params, None, flags, saved, True)
    t2 = clock()
    after = ext.profile(0)[BWD_AFTER]
    return after, t2 - t1, t2 - t0, grads


# C (M, N) = A (M, K) W^T: the recurrent products at B = 1..16 and 64, then the large ones
GEMM_SHAPES = [(1, 128, 512), (1, 512, 128), (2, 128, 512), (3, 128, 512), (4, 128, 512)]
GEMM_SHAPES += [(5, 128, 512), (8, 128, 512), (16, 128, 512), (16, 512, 128)]
GEMM_SHAPES += [(64, 256, 1024), (64, 1024, 256), (100, 64, 512), (1600, 64, 512)]
GEMM_SHAPES += [(512, 1600, 128), (6400, 128, 1024), (1024, 6400, 256), (6400, 1024, 128)]


def gemm_ab(exts: dict, rounds: int) -> int:
    """The own kernel's bench_gemm (mode 4 packed, and mode 5 unpacked up to 4 rows) of
    both builds, interleaved, this thread's CPU time: us per call, medians."""
    print(f"# load average {os.getloadavg()[0]:.2f}; bench_gemm, 1 thread, CPU time")
    print("| M, K, N | mode | old us | new us | old / new |")
    print("|---|---|---|---|---|")
    for M, K, N in GEMM_SHAPES:
        for mode in (4, 5) if M <= 4 else (4,):
            reps = max(3, min(2000, int(2e7 / (2 * M * K * N))))
            t = {k: [] for k in exts}
            for _ in range(rounds):
                for k, ext in exts.items():
                    t[k].append(ext.bench_gemm(M, K, N, mode, reps, False, True) * 1e6)
            o, n = statistics.median(t["old"]), statistics.median(t["new"])
            print(f"| {M}, {K}, {N} | {mode} | {o:.2f} | {n:.2f} | {o / n:.2f} |", flush=True)
    print(f"# load average after {os.getloadavg()[0]:.2f}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", help="the extension .so before the change")
    ap.add_argument("new", help="the extension .so after the change")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--variant", default="standard")
    ap.add_argument(
        "--sizes", nargs="+", metavar="B,I,H", help="configurations (default: B = 1, 16, 64)"
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads (more than 1: wall time)")
    ap.add_argument("--gemm", action="store_true", help="the own GEMM alone (bench_gemm)")
    args = ap.parse_args(argv)
    configs = [tuple(map(int, c.split(","))) for c in args.sizes] if args.sizes else CONFIGS
    torch.set_num_threads(args.threads)
    wall = args.threads > 1
    exts = {"old": load(args.old), "new": load(args.new)}
    if args.gemm:
        return gemm_ab(exts, args.rounds)
    clock = f"{args.threads} threads, wall time" if wall else "1 thread, CPU time"
    print(f"# load average {os.getloadavg()[0]:.2f}; variant {args.variant}; {clock}")
    print("| B, I, H | after old / new ms | ratio | backward ratio | fwd+bwd ratio | max diff |")
    print("|---|---|---|---|---|---|")
    for B, I, H in configs:
        torch.manual_seed(0)
        m = gatelab.LSTM(I, H, variant=args.variant, backend="fused")
        named = {k: v.detach() for k, v in m.named_parameters()}
        params = [named.get(f"{n}_l0") for n in fused._PARAMS]
        flags = fused.spec_flags(m.spec)
        x, h0, c0 = torch.randn(100, B, I), torch.zeros(B, H), torch.zeros(B, H)
        dout = torch.randn(100, B, H)
        times = {k: [] for k in exts}
        grads = {}
        for r in range(args.rounds + 1):
            for k, ext in exts.items():
                *t, grads[k] = step(ext, x, h0, c0, params, flags, dout, wall)
                if r:  # round 0 warms up
                    times[k].append(t)
        med = {k: [statistics.median(col) for col in zip(*v)] for k, v in times.items()}
        diff = max(
            float((a - b).abs().max())
            for a, b in zip(grads["old"], grads["new"])
            if a is not None and b is not None and a.numel()
        )
        o, n = med["old"], med["new"]
        print(
            f"| {B}, {I}, {H} | {o[0] * 1e3:.2f} / {n[0] * 1e3:.2f} | {o[0] / n[0]:.2f} | "
            f"{o[1] / n[1]:.2f} | {o[2] / n[2]:.2f} | {diff:.1e} |",
            flush=True,
        )
    print(f"# load average after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
