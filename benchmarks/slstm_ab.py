"""The sLSTM's training step after the fused LSTM rows, with and without the GEMM probes.

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src python benchmarks/slstm_ab.py [--rounds 3]

speed.py's sLSTM row (``bench_slstm``: the fused sLSTM against torch.nn.LSTM, B = 64,
I = 128, H = 256, T = 100, interleaved) in a fresh process per condition, the conditions
alternating in each round: ``alone`` (the sLSTM row first thing in the process),
``default`` (after a training step of each LSTM row speed.py runs before it: torch,
fused standard and layernorm at speed.CONFIGS, three steps each, so that the fused
kernels take their GEMM plans, MKL probes included), ``own`` (the same after
``extension().set_gemm_mode(4)``: the own GEMM everywhere, no MKL probe). ``default``
then sets mode 4 in the same process and times the row again (``default+own``: the
sLSTM kernel, slstm.cpp, does not read the GEMM mode, so this shows the process's state,
not the mode). ``mm``: no LSTM row, only ``torch.mm`` (MKL sgemm, the BLAS side of the
probes) at the large products' probe shapes, 12 calls each, before the sLSTM row.
``--conditions`` picks some. Prints the sLSTM and torch ms and the ratios torch / sLSTM.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from statistics import median

import torch

HERE = Path(__file__).resolve().parent
CONDITIONS = ("alone", "default", "own", "mm")


def lstm_rows() -> None:
    """One short stand-in for speed.py's LSTM rows: three training steps of each model."""
    import speed

    import gatelab

    for B, I, H in speed.CONFIGS:
        torch.manual_seed(0)
        x = torch.randn(100, B, I, requires_grad=True)
        models = [torch.nn.LSTM(I, H)]
        models += [
            gatelab.LSTM(I, H, variant=v, backend="fused") for v in ("standard", "layernorm")
        ]
        for m in models:
            for _ in range(3):
                m(x)[0].sum().backward()


def mkl_calls() -> None:
    """torch.mm at the shapes the large products' probes time (256 rows), no LSTM."""
    import speed

    for _, I, H in speed.CONFIGS:
        GH = 4 * H
        w, a, g = torch.randn(GH, I), torch.randn(256, I), torch.randn(256, GH)
        h = torch.randn(256, H)
        for _ in range(12):
            torch.mm(a, w.t()), torch.mm(g, w), torch.mm(g.t(), a), torch.mm(g.t(), h)


def child(cond: str) -> dict:
    import speed

    ext = speed.fused.extension()
    if cond == "own":
        ext.set_gemm_mode(4)
    if cond in ("default", "own"):
        lstm_rows()
    if cond == "mm":
        mkl_calls()
    out = {cond: speed.bench_slstm(False, 100)}
    if cond == "default":
        ext.set_gemm_mode(4)
        out["default+own"] = speed.bench_slstm(False, 100)
    plans = ext.gemm_plans()
    out["plans"] = f"{len(plans)} ({sum(not p[6] for p in plans)} BLAS)"
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=CONDITIONS[:3])
    ap.add_argument("--child", choices=CONDITIONS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child)))
        return 0
    res: dict = {}
    print(f"# load average {os.getloadavg()[0]:.2f} (start)", flush=True)
    for r in range(args.rounds):
        for cond in args.conditions:
            out = subprocess.run(
                [sys.executable, str(Path(__file__)), "--child", cond],
                capture_output=True,
                text=True,
                check=True,
            )
            got = json.loads(out.stdout.strip().splitlines()[-1])
            for k, v in got.items():
                if k == "plans":
                    continue
                res.setdefault(k, []).append(v)
                print(
                    f"round {r} {k:12s} sLSTM train {v['slstm_train_ms']:7.1f} ms, torch "
                    f"{v['torch_train_ms']:7.1f} ms, ratio {v['train_ratio']:.2f}; fwd "
                    f"{v['slstm_fwd_ms']:6.1f} / {v['torch_fwd_ms']:6.1f} ms, ratio "
                    f"{v['fwd_ratio']:.2f}; plans {got['plans']}; load {v['load_after'][0]:.2f}",
                    flush=True,
                )
    print(f"# load average {os.getloadavg()[0]:.2f} (end)")
    print("| condition | sLSTM train ms | torch train ms | train ratio (runs) | fwd ratio |")
    print("|---|---|---|---|---|")
    for k, rows in res.items():
        ratios = ", ".join(f"{v['train_ratio']:.2f}" for v in rows)
        print(
            f"| {k} | {median(v['slstm_train_ms'] for v in rows):.1f} "
            f"| {median(v['torch_train_ms'] for v in rows):.1f} "
            f"| {median(v['train_ratio'] for v in rows):.2f} ({ratios}) "
            f"| {median(v['fwd_ratio'] for v in rows):.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    raise SystemExit(main())
