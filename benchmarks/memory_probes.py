"""Peak memory of a training step with and without the GEMM probes in the warm-up.

speed.py's memory child (a fresh process per configuration: a T = 3 warm-up, then the
peak of one T = 100 step), run as it is ("measured": the warm-up pays the GEMM probes,
whose freed blocks the measured step may reuse) and with
``extension().set_gemm_mode(4)`` before the warm-up ("own": no probes), median of
``--rounds`` processes, fused / torch::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/memory_probes.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import speed  # noqa: E402

_OWN = "from gatelab.nn.backends.fused import extension; extension().set_gemm_mode(4)\n"
_WARM = "step(3)  # warm-up"


def peak_mb(B: int, I: int, H: int, T: int, impl: str, own: bool) -> float:
    code = speed._MEM_CHILD.format(src=str(speed.ROOT / "src"), B=B, I=I, H=H, T=T, impl=impl)
    if own:
        code = code.replace(_WARM, _OWN + _WARM)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"] / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", nargs="+", default=["1,64,128", "8,64,128", "16,64,128"])
    args = ap.parse_args()
    runs = [("torch", False)] + [
        (f"fused:{v}", o) for v in ("standard", "layernorm") for o in (False, True)
    ]
    for size in args.sizes:
        B, I, H = (int(v) for v in size.split(","))
        got: dict = {run: [] for run in runs}
        for _ in range(args.rounds):  # interleaved
            for impl, own in runs:
                got[(impl, own)].append(peak_mb(B, I, H, 100, impl, own))
        torch_mb = statistics.median(got[("torch", False)])
        cells = [
            f"{impl[6:]} {'own' if own else 'measured'} {statistics.median(v) / torch_mb:.2f}"
            for (impl, own), v in got.items()
            if impl != "torch"
        ]
        print(f"B={B} I={I} H={H}: torch {torch_mb:.2f} MB; " + ", ".join(cells), flush=True)


if __name__ == "__main__":
    main()
