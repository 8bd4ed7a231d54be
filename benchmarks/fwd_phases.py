"""Where the fused forward's time goes under no_grad, against torch.nn.LSTM's (1 thread).

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src python benchmarks/fwd_phases.py

B = 64, I = 128, H = 256, T = 100, float32, one thread, the calling thread's CPU time (on a
shared machine that leaves out the slices other processes take). Per round, interleaved:
torch.nn.LSTM's forward, the fused standard forward (default mode), the same with the
recurrent GEMM and the pointwise pass as two phases (``fused_step=0``: the phase timers
read input projection / recurrent GEMM / pointwise), and the GEMM floor: the recurrent
product (64 x 256 x 1024) 100 times on the own kernel and on MKL packed, and the input
projection (6400 x 128 x 1024) once on the own kernel. Prints the medians in ms.
"""

from __future__ import annotations

import argparse
import time
from statistics import median

import torch

import gatelab
from gatelab.nn.backends import fused

B, I, H, T = 64, 128, 256, 100


def cpu_ms(fn) -> float:
    t0 = time.thread_time()
    fn()
    return (time.thread_time() - t0) * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ext = fused.extension()
    torch.manual_seed(0)
    x = torch.randn(T, B, I)
    peer = torch.nn.LSTM(I, H)
    fus = gatelab.LSTM(I, H, backend="fused")
    fus.load_state_dict(peer.state_dict())

    def fwd(m):
        with torch.no_grad():
            m(x)

    res: dict = {}
    for _ in range(args.rounds + 1):  # the first round is a warm-up
        rnd = {"torch": cpu_ms(lambda: fwd(peer)), "fused": cpu_ms(lambda: fwd(fus))}
        ext.set_gemm_mode(0, 0)
        ext.profile(2)
        rnd["fused split"] = cpu_ms(lambda: fwd(fus))
        proj, gemm, point, whole = (v * 1e3 for v in ext.profile(0)[:4])
        ext.set_gemm_mode(0, 1)
        rnd.update({"  proj": proj, "  rec gemm": gemm, "  pointwise": point, "  all": whole})
        rnd["floor: rec own x100"] = ext.bench_gemm(B, H, 4 * H, 4, T, False, True) * T * 1e3
        rnd["floor: rec mkl packed x100"] = ext.bench_gemm(B, H, 4 * H, 2, T, False, True) * T * 1e3
        rnd["floor: proj own"] = ext.bench_gemm(T * B, I, 4 * H, 4, 3, False, True) * 1e3
        for k, v in rnd.items():
            res.setdefault(k, []).append(v)
    for k, v in res.items():
        print(f"{k:28s} {median(v[1:]):8.2f} ms  ({min(v[1:]):.2f}-{max(v[1:]):.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
