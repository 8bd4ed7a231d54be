"""Run-to-run spread of the fused training step against torch.nn.LSTM (issue 16: stable speed).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/step_split.py            # 3 runs (minutes)
    OMP_WAIT_POLICY=PASSIVE python benchmarks/step_split.py --runs 5 --repeats 15

Each run is a fresh process (so that the per-shape decision whether to split a step over
threads, lstm_step.h's StepSplit, is made anew) timing, interleaved round-robin, the
training step (``out.sum().backward()``, T = 100, float32, 2 threads) of torch.nn.LSTM and
of the fused ``standard`` layer at B = 1 (I = 64, H = 128) and B = 64 (I = 128, H = 256).
It prints each run's ratios (torch time / fused time, medians over the repeats), the
decisions the run made (forward and backward: split or serial, the median serial and split
step in us), and the spread of each ratio over the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGS = [(1, 64, 128), (64, 128, 256)]


def child(repeats: int, threads: int) -> dict:
    sys.path.insert(0, str(HERE.parent / "src"))
    sys.path.append(str(HERE))
    import torch
    from speed import interleaved_ms, train_fn

    import gatelab
    from gatelab.nn.backends import fused

    torch.set_num_threads(threads)
    ext = fused.extension()
    out = {"load_before": os.getloadavg()[0], "ratios": {}, "plans": []}
    for B, I, H in CONFIGS:
        torch.manual_seed(0)
        x = torch.randn(100, B, I, requires_grad=True)
        peer = torch.nn.LSTM(I, H)
        mine = gatelab.LSTM(I, H, backend="fused")
        mine.load_state_dict(peer.state_dict())
        ms = interleaved_ms({"torch": train_fn(peer, x), "fused": train_fn(mine, x)}, repeats)
        out["ratios"][f"B={B}"] = ms["torch"] / ms["fused"]
        out[f"fused_ms_B={B}"] = ms["fused"]
    for kind, _, B, GH, _, _, _, thr, decided, par, ts, tp in ext.step_plans():
        out["plans"].append(
            f"{'fwd' if kind == 0 else 'bwd'} B={B} 4H={GH}: "
            + (("split" if par else "serial") if decided else "undecided")
            + f" (serial {ts * 1e6:.0f} us, split {tp * 1e6:.0f} us, {thr} threads)"
        )
    out["load_after"] = os.getloadavg()[0]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=11, help="interleaved rounds per run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.repeats, args.threads)))
        return 0
    runs = []
    for r in range(args.runs):
        cmd = [sys.executable, __file__, "--child", "--repeats", str(args.repeats)]
        cmd += ["--threads", str(args.threads)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
        run = runs[-1]
        ratios = ", ".join(f"{k} {v:.2f}x" for k, v in run["ratios"].items())
        print(f"run {r + 1}: {ratios}; load {run['load_before']:.1f} -> {run['load_after']:.1f}")
        for line in run["plans"]:
            print(f"    {line}")
    print("spread over the runs (torch / fused, training step):")
    for key in runs[0]["ratios"]:
        v = [run["ratios"][key] for run in runs]
        print(f"  {key}: {min(v):.2f}-{max(v):.2f} (median {statistics.median(v):.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
