"""Data-parallel throughput: samples/s of ``training.fit`` on 1 and 2 ranks (gloo, CPU),
and the compute/communication ratio that predicts scaling to more ranks.

Each measurement is a fresh ``torch.distributed.run`` job (``--standalone``) running this
script as its worker; 1-rank and 2-rank jobs alternate (``--rounds`` times). The worker
trains a text-classifier-sized model (embedding 128 -> BiLSTM 128 -> max-pool -> Dense,
vocabulary 20,000) on synthetic token ids for ``--epochs`` epochs at a global batch of
64, timing the epochs after the first; the 2-rank worker also times an all-reduce of a
buffer the size of the gradients. On a 2-core machine the two ranks share the cores
that one rank uses with 2 threads: this measures overhead, not speed-up.

    PYTHONPATH=src python benchmarks/scale_ddp.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_average, machine


def worker(args) -> None:
    import torch.distributed as dist

    from gatelab.models.heads import ModelConfig, build_model
    from gatelab.train import distributed as D
    from gatelab.train.fit import Callback, TensorData, TrainConfig, fit

    D.init("gloo")
    world = D.world_size()
    torch.set_num_threads(max(1, args.threads // world))
    torch.manual_seed(0)
    config = ModelConfig(
        kind="classifier", output_size=2, vocab_size=20_000, embedding_dim=128,
        hidden_size=128, bidirectional=True, pooling="max", dropout=0.0,
    )  # fmt: skip
    model = build_model(config)
    g = torch.Generator().manual_seed(1)
    N, T = args.samples, 30
    data = TensorData(
        torch.randint(2, 20_000, (N, T), generator=g),
        torch.randint(5, T + 1, (N,), generator=g),
        torch.randint(2, (N,), generator=g),
    )

    class Clock(Callback):
        def __init__(self):
            self.times = []

        def on_epoch_begin(self, epoch):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs):
            self.times.append(time.perf_counter() - self.start)

    clock = Clock()
    train = TrainConfig(epochs=args.epochs, batch_size=64, patience=None)
    fit(model, data, None, train, callbacks=[clock])
    epoch_s = sum(clock.times[1:]) / len(clock.times[1:])
    steps = -(-N // 64)
    grad_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    allreduce_s = None
    if world > 1:
        buf = torch.zeros(grad_bytes // 4)
        dist.all_reduce(buf)
        start = time.perf_counter()
        for _ in range(10):
            dist.all_reduce(buf)
        allreduce_s = (time.perf_counter() - start) / 10
    if D.rank() == 0:
        result = {
            "world_size": world,
            "samples_per_s": N / epoch_s,
            "step_s": epoch_s / steps,
            "grad_bytes": grad_bytes,
            "allreduce_s": allreduce_s,
        }
        Path(args.result).write_text(json.dumps(result))


def launch(nproc: int, args, result: Path) -> dict:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={nproc}", __file__, "--worker", "--result", str(result),
        "--epochs", str(args.epochs), "--samples", str(args.samples),
        "--threads", str(args.threads),
    ]  # fmt: skip
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, env=env, timeout=900)
    return json.loads(result.read_text())


def predicted(step_s: float, grad_bytes: int, n: int, gbit_s: float, latency_s: float) -> float:
    """Speed-up of n ranks at a fixed global batch (each rank computes 1/n of a step), with
    a ring all-reduce of the gradients (2 (n-1)/n of their bytes through each link, 2 (n-1)
    latencies), not overlapped with the backward pass (a pessimistic bound)."""
    comm = 2 * (n - 1) / n * grad_bytes / (gbit_s * 1e9 / 8) + 2 * (n - 1) * latency_s
    return step_s / (step_s / n + comm)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", default="", help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=int, default=3, help="epochs per job (the first is warm-up)")
    p.add_argument("--samples", type=int, default=1536, help="training sequences")
    p.add_argument("--threads", type=int, default=2, help="torch threads over all ranks")
    p.add_argument("--rounds", type=int, default=2, help="1-rank/2-rank pairs to alternate")
    args = p.parse_args()
    if args.worker:
        return worker(args)
    print(f"# {machine()}", flush=True)
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"scale_ddp_{os.getpid()}.json"
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for _ in range(args.rounds):
        for n in (1, 2):
            r = launch(n, args, tmp)
            runs[n].append(r)
            print(
                f"{n} rank(s): {r['samples_per_s']:.1f} samples/s, step {r['step_s'] * 1e3:.1f} ms"
                + (f", all-reduce {r['allreduce_s'] * 1e3:.2f} ms" if r["allreduce_s"] else "")
                + f"  (load {load_average()})",
                flush=True,
            )
    tmp.unlink(missing_ok=True)
    best = {n: max(runs[n], key=lambda r: r["samples_per_s"]) for n in runs}
    ratio = best[2]["samples_per_s"] / best[1]["samples_per_s"]
    print(f"2 ranks / 1 rank: {ratio:.2f}x samples/s (best of {args.rounds} each)")
    step, grad = best[1]["step_s"], best[1]["grad_bytes"]
    ar = best[2]["allreduce_s"]
    print(
        f"gradients {grad / 1e6:.2f} MB per step; 1-rank step {step * 1e3:.1f} ms; local "
        f"all-reduce of them {ar * 1e3:.2f} ms ({ar / step:.2f} of a step)"
    )
    for label, gbit, lat in (("10 Gb/s Ethernet", 10, 50e-6), ("100 Gb/s InfiniBand", 100, 5e-6)):
        speed = ", ".join(f"{n} ranks {predicted(step, grad, n, gbit, lat):.1f}x" for n in (8, 64))
        print(f"predicted speed-up at this global batch over {label}: {speed}")


if __name__ == "__main__":
    main()
