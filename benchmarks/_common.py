"""What the model benchmarks share: the data folder, threads, machine load, timing."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data").resolve()


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--data", type=Path, default=DATA, help=f"real data folder (default {DATA})")
    return p


def setup(args) -> None:
    torch.set_num_threads(args.threads)
    if not (args.data / "README.md").is_file():
        sys.exit(f"real data not found at {args.data}; pass --data")
    print(f"# {machine()}", flush=True)


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine() -> str:
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, load average {load_average()}"
    )


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
