"""The sLSTM kernel of another build against this tree's, in one process, interleaved.

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src python benchmarks/slstm_builds.py OTHER.so [--rounds 7]

``OTHER.so``: another checkout's compiled extension (torch's extensions folder, e.g.
``~/.cache/torch_extensions/py311_cpu/gatelab_fused_<hash>/gatelab_fused_<hash>.so``), loaded
with ``torch.ops.load_library``; its ``slstm_forward`` / ``slstm_backward`` ops run under
this tree's Python side (flag 8, inference with one step kept, is stripped for a build that
refuses it: that build keeps every step, as its own Python side did). B = 64, I = 128,
H = 256, T = 100 and B = 8, I = 64, H = 128, float32, 2 threads. Per round, one call of
each: torch.nn.LSTM, the other build's sLSTM, this tree's sLSTM; the forward under
``no_grad`` and the training step (forward + ``out.sum().backward()``, ``x`` requiring
grad). Prints median ms and the ratios torch / sLSTM of each build from the same rounds.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from statistics import median

import torch
from speed import forward_fn, train_fn  # benchmarks/ is the script folder

import gatelab
from gatelab.nn.backends import fused

SIZES = ((64, 128, 256), (8, 64, 128))
T = 100


class _Strip8:
    """An older build's ops: flag 8 (inference, one step kept) stripped."""

    def __init__(self, ops):
        self.ops = ops

    def slstm_forward(self, *args):
        return self.ops.slstm_forward(*args[:-1], args[-1] & 3)

    def slstm_backward(self, *args):
        return self.ops.slstm_backward(*args)


def _rounds(B: int, I: int, H: int, rounds: int, builds: dict) -> dict:
    """Median ms of each (pass, who), one call of each per round, round 0 a warm-up."""
    torch.manual_seed(0)
    x = torch.randn(T, B, I, requires_grad=True)
    peer = torch.nn.LSTM(I, H)
    slstm = gatelab.LSTM(I, H, variant="slstm", backend="fused")
    steps = {  # speed.py's step closures
        name: {"torch": make(peer, x), "sLSTM": make(slstm, x)}
        for name, make in (("fwd", forward_fn), ("train", train_fn))
    }

    times: dict = {}
    for r in range(rounds + 1):
        for pass_name, fns in steps.items():
            for who in ("torch", "other", "this"):
                if who != "torch":
                    fused._slstm_ops = lambda ops=builds[who]: ops
                start = time.perf_counter()
                fns["torch" if who == "torch" else "sLSTM"]()
                if r:
                    times.setdefault((pass_name, who), []).append(time.perf_counter() - start)
    fused._slstm_ops = lambda: builds["this"]
    return {k: median(v) * 1e3 for k, v in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("other", type=Path, help="the other build's extension (.so)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.ops.load_library(str(args.other))
    builds = {"other": _Strip8(getattr(torch.ops, args.other.stem)), "this": fused._slstm_ops()}
    print(f"# other {args.other.stem}, this {fused.extension().__name__}, load {os.getloadavg()}")
    for B, I, H in SIZES:
        load0 = os.getloadavg()[0]
        med = _rounds(B, I, H, args.rounds, builds)
        print(f"\nB={B} I={I} H={H}, load {load0:.2f} -> {os.getloadavg()[0]:.2f}")
        for pass_name in ("fwd", "train"):
            t = med[(pass_name, "torch")]
            o, n = med[(pass_name, "other")], med[(pass_name, "this")]
            print(
                f"  {pass_name:5s} torch {t:7.1f} ms | other {o:7.1f} ms, ratio {t / o:.2f} "
                f"| this {n:7.1f} ms, ratio {t / n:.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
