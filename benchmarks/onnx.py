"""Inference latency of exported LSTMs in onnxruntime against the same model in PyTorch.

    python benchmarks/onnx.py            # batch 1 and 64, T = 100 (about a minute)
    python benchmarks/onnx.py --quick    # a smoke run (seconds)

For each variant (``standard`` and ``peephole`` export as one native ``LSTM`` node per
layer, ``layernorm`` as a ``Scan`` over the step equations), one model ``gatelab.LSTM(64,
128, num_layers=2)`` on a time-major ``(100, B, 64)`` float32 input, forward without
grad: gatelab eager (``backend="native"`` for the standard cell, torch's own kernel),
gatelab ``backend="fused"`` (the C++ time loop) and onnxruntime on the exported graph
(CPU provider, the same number of threads as torch, graph optimisations on). Medians of
interleaved rounds (one call of each per round), so drift of a busy machine hits all
alike. Every ratio is PyTorch time / onnxruntime time: > 1 means onnxruntime is faster.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

# This file is named onnx.py: its folder goes last on the path, so that `import onnx`
# finds the package and `import speed` the sibling script.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.append(str(HERE))

import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from speed import interleaved_ms  # noqa: E402

import gatelab  # noqa: E402

VARIANTS = ("standard", "peephole", "layernorm")


def torch_fn(module, x):
    def run():
        with torch.no_grad():
            module(x)

    return run


def ort_fn(path: Path, x: torch.Tensor, threads: int):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # with threads > 1, spinning workers would take the cores from the call timed next
    # (peers.py, BENCHMARKS.md session 12)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"input": x.numpy()}
    return lambda: session.run(None, feed)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads")
    p.add_argument("--quick", action="store_true", help="a smoke run")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"# {os.cpu_count()} cores, torch {torch.__version__}, onnxruntime {ort.__version__}, "
        f"{args.threads} thread(s) each, load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    I, H, L, T = 64, 128, 2, 100
    batches = (1, 64)
    print("variant    B  node  eager_ms  fused_ms  ort_ms  eager/ort  fused/ort  max|diff|")
    with tempfile.TemporaryDirectory() as tmp:
        for variant in VARIANTS:
            torch.manual_seed(0)
            eager = gatelab.LSTM(I, H, L, variant=variant, backend="native" if variant ==
                                 "standard" else "reference").eval()  # fmt: skip
            fused = gatelab.LSTM(I, H, L, variant=variant, backend="fused").eval()
            fused.load_state_dict(eager.state_dict())
            path = Path(tmp) / f"{variant}.onnx"
            gatelab.to_onnx(eager, path, (torch.randn(T, 2, I),))
            import onnx

            ops = {n.op_type for n in onnx.load(str(path)).graph.node}
            node = "LSTM" if "LSTM" in ops else "Scan"
            for B in batches:
                x = torch.randn(T, B, I)
                fns = {"fused": torch_fn(fused, x), "ort": ort_fn(path, x, args.threads)}
                if variant == "standard":  # the reference loop is the oracle, not a peer
                    fns["eager"] = torch_fn(eager, x)
                repeats = 3 if args.quick else (100 if B == 1 else 20)
                ms = interleaved_ms(fns, repeats)
                with torch.no_grad():
                    want = fused(x)[0]
                got = torch.from_numpy(fns["ort"]()[0])
                diff = float((got - want).abs().max())
                e = ms.get("eager", float("nan"))
                print(
                    f"{variant:10s} {B:2d}  {node:4s}  {e:8.2f}  {ms['fused']:8.2f}  "
                    f"{ms['ort']:6.2f}  {e / ms['ort']:9.2f}  {ms['fused'] / ms['ort']:9.2f}  "
                    f"{diff:.1e}",
                    flush=True,
                )
    print(f"# load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
