"""What OpenMP's wait policy does to the ratios against torch.nn.LSTM on this machine.

    PYTHONPATH=src python benchmarks/wait_policy.py            # about a minute on 2 cores
    PYTHONPATH=src python benchmarks/wait_policy.py --quick    # a smoke run

torch.nn.LSTM's CPU kernel runs every step's ops in parallel regions whose threads meet
at a barrier; the fused kernel splits a step only where its measurement says that pays
(BENCHMARKS.md, "The per-step split"). How long an idle OpenMP thread takes to wake
therefore moves torch's time, not the fused kernel's: with ``OMP_WAIT_POLICY=PASSIVE``
idle threads sleep at once (a futex wait; on a virtual machine whose idle vCPU halts, the
wake-up is a hypervisor round trip), with the policy unset GNU OpenMP spins first. This
script runs one child process per policy (the policy is read once, when OpenMP starts)
and, in each, times an empty parallel region and the forward (no_grad) and training step
of torch.nn.LSTM and the fused standard layer at 1 and 2 threads, interleaved.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

SIZES = ((1, 64, 128), (8, 64, 128), (64, 128, 256))
POLICIES = ("PASSIVE", None)  # None: unset, GNU OpenMP's default (spin, then sleep)


def child(quick: bool) -> dict:
    import torch
    from speed import forward_fn, interleaved_ms, train_fn

    import gatelab
    from gatelab.nn.backends import fused

    ext = fused.extension()
    T = 20 if quick else 100
    out = {"policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"), "rows": []}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        out[f"region_us_{threads}"] = ext.bench_parallel(2000, threads)
        for B, I, H in SIZES:
            torch.manual_seed(0)
            layer = gatelab.LSTM(I, H, backend="fused")
            peer = torch.nn.LSTM(I, H)
            peer.load_state_dict(layer.state_dict())
            x = torch.randn(T, B, I)
            xg = x.clone().requires_grad_(True)
            n = 3 if quick else (8 if B == 64 else 25)
            fwd = interleaved_ms({"torch": forward_fn(peer, x), "fused": forward_fn(layer, x)}, n)
            train = interleaved_ms({"torch": train_fn(peer, xg), "fused": train_fn(layer, xg)}, n)
            out["rows"].append({"threads": threads, "B": B, "H": H, "fwd": fwd, "train": train})
    out["load"] = os.getloadavg()[0]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short smoke run (T = 20)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.quick)))
        return 0
    here = os.path.dirname(os.path.abspath(__file__))
    cmd = [sys.executable, os.path.abspath(__file__), "--child"] + (["--quick"] * args.quick)
    print(
        "| OMP_WAIT_POLICY | threads | empty region us | B, H | torch fwd ms | fused fwd ms "
        "| torch / fused fwd | torch train ms | fused train ms | torch / fused train |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for policy in POLICIES:
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        if policy:
            env["OMP_WAIT_POLICY"] = policy
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH")]))
        got = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if got.returncode:
            raise SystemExit(f"child for OMP_WAIT_POLICY={policy} failed:\n{got.stderr[-2000:]}")
        res = json.loads(got.stdout.strip().splitlines()[-1])
        for r in res["rows"]:
            f, t = r["fwd"], r["train"]
            region = res[f"region_us_{r['threads']}"]
            print(
                f"| {res['policy']} | {r['threads']} | {region:.1f} | "
                f"{r['B']}, {r['H']} | {f['torch']:.2f} | {f['fused']:.2f} | "
                f"{f['torch'] / f['fused']:.2f} | {t['torch']:.2f} | {t['fused']:.2f} | "
                f"{t['torch'] / t['fused']:.2f} |",
                flush=True,
            )
        print(f"(load average after the {res['policy']} child: {res['load']:.2f})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
