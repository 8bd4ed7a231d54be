"""Speed of the fused LSTM inside a training loop: LSTM -> Dense, loss, AdamW, next batch.

speed.py times the layer alone, one call of each of a dozen modules a round, so that every
call starts after eleven others; a user's loop calls one model again and again, with a
Dense head, an optimizer step and a new batch between two calls of the layer. This script
times that loop: the same model built on torch.nn.LSTM and on gatelab's fused layer (the
same weights for the standard cell), in blocks of ``--block`` steps each, the blocks
alternating; the median step of each (the first step of a block not counted), and the
ratio torch / gatelab (> 1: gatelab faster).

    OMP_WAIT_POLICY unset; python benchmarks/loop_speed.py [--sizes 8,64,128 ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import gatelab  # noqa: E402

SIZES = [(1, 64, 128), (8, 64, 128), (16, 64, 128), (64, 128, 256)]


class Model(nn.Module):
    """LSTM over the sequence, Dense on the last step's output."""

    def __init__(self, lstm: nn.Module, hidden: int, classes: int) -> None:
        super().__init__()
        self.lstm, self.head = lstm, nn.Linear(hidden, classes)

    def forward(self, x):
        return self.head(self.lstm(x)[0][-1])


def loop(model: Model, opt: torch.optim.Optimizer, batches: list, steps: int) -> list[float]:
    """``steps`` training steps over ``batches`` (cycled); seconds of each step."""
    times = []
    for k in range(steps):
        x, y = batches[k % len(batches)]
        start = time.perf_counter()
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return times


def bench(B: int, I: int, H: int, T: int, variants: list[str], blocks: int, block: int) -> dict:
    torch.manual_seed(0)
    classes = 5
    batches = [(torch.randn(T, B, I), torch.randint(0, classes, (B,))) for _ in range(8)]
    peer = nn.LSTM(I, H)
    models = {"torch": Model(peer, H, classes)}
    for v in variants:
        layer = gatelab.LSTM(I, H, variant=v, backend="fused")
        if v == "standard":
            layer.load_state_dict(peer.state_dict())
        models[v] = Model(layer, H, classes)
    opts = {}
    for k, m in models.items():
        m.head.load_state_dict(models["torch"].head.state_dict())
        opts[k] = torch.optim.AdamW(m.parameters(), lr=1e-3)
        loop(m, opts[k], batches, 3)  # warm-up: caches, plans, the optimizer's state
    times = {k: [] for k in models}
    for _ in range(blocks):
        for k, m in models.items():
            times[k] += loop(m, opts[k], batches, block)[1:]
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    return {"B": B, "I": I, "H": H, "ms": ms, "load": os.getloadavg()[0]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=[",".join(map(str, s)) for s in SIZES])
    p.add_argument("--variants", nargs="+", default=["standard", "peephole", "layernorm"])
    p.add_argument("-T", type=int, default=100)
    p.add_argument("--blocks", type=int, default=6, help="blocks of each model (default 6)")
    p.add_argument("--block", type=int, default=10, help="steps a block (default 10)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"{os.cpu_count()} cpus, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', '(unset)')}, T={args.T}; "
        "median step ms, torch / gatelab (> 1: gatelab faster)"
    )
    for size in args.sizes:
        B, I, H = (int(v) for v in size.split(","))
        r = bench(B, I, H, args.T, args.variants, args.blocks, args.block)
        t = r["ms"]["torch"]
        parts = [f"torch {t:.2f}"] + [
            f"{v} {r['ms'][v]:.2f} ({t / r['ms'][v]:.2f}x)" for v in args.variants
        ]
        print(f"B={B:3d} I={I:3d} H={H:3d}: " + ", ".join(parts) + f"; load {r['load']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
