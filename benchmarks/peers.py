"""The fused backend against the peers a user would try first, in one interleaved run.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/peers.py            # B = 1 and 16 (minutes)
    OMP_WAIT_POLICY=PASSIVE python benchmarks/peers.py --quick    # a smoke run (T = 10)

Peers, per variant and batch size (``gatelab.LSTM(64, 128)``, time-major ``(T, B, 64)``,
float32, T = 100):

- ``compile``: ``torch.compile(gatelab.LSTM(..., variant=v, backend="reference"))``, the
  whole layer (the Python loop over the step equations, unrolled by Dynamo over T), default
  mode, training step. Its first call (tracing, Inductor's code generation and C++ build,
  forward and backward graphs) is timed apart and reported as the compile time; Inductor's
  on-disk cache starts empty in each run (set ``TORCHINDUCTOR_CACHE_DIR`` to reuse one).
  Each (variant, B) is a new module compiled after ``torch._dynamo.reset()``, as in a new
  process (static shapes; without the reset the layers' shared ``forward`` reaches Dynamo's
  recompile limit after eight and the rest would run eagerly).
- ``keras``: Keras 3's ``keras.layers.LSTM`` on the torch backend (``KERAS_BACKEND=torch``,
  batch-first ``(B, T, 64)``, ``return_sequences=True``), the standard cell only (Keras has
  no other variant), training step through torch autograd, weights copied from the fused
  layer so that the outputs can be compared.
- ``torch``: ``torch.nn.LSTM`` (standard only; the yardstick of BENCHMARKS.md).
- ``ort``: onnxruntime (CPU provider, same thread count, threads that sleep instead of
  spinning between runs) on the layer exported with ``gatelab.to_onnx``, inference,
  against the fused forward under ``no_grad``.

A training step is ``out.sum().backward()`` with grads cleared. Times are medians of
interleaved rounds (one call of each per round, speed.py's ``interleaved_ms``), so that a
change of the machine's load hits all alike. Ratios are peer time / fused time: > 1 means
the fused backend is faster. ``max|diff|`` compares each peer's output with the fused one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
# A cold compile, as a user's first try meets it: Inductor's on-disk caches (FX graphs,
# AOTAutograd, the C++ builds) start empty in a folder of this run, unless one is given.
_COLD = "TORCHINDUCTOR_CACHE_DIR" not in os.environ
if _COLD:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="peers_inductor_")
# benchmarks/onnx.py would shadow the onnx package: this folder goes last on the path
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.append(str(HERE))

import torch  # noqa: E402
from speed import interleaved_ms  # noqa: E402

import gatelab  # noqa: E402
from gatelab.nn.backends import fused as fused_backend  # noqa: E402

I, H = 64, 128
VARIANTS = ("standard", "peephole", "layernorm")


def train_fn(module, x, params=None):
    params = list(module.parameters()) if params is None else params

    def run():
        for p in params:
            p.grad = None
        x.grad = None
        out = module(x)
        out = out[0] if isinstance(out, tuple) else out
        out.sum().backward()

    return run


def forward_fn(fn):
    def run():
        with torch.no_grad():
            fn()

    return run


def keras_lstm(fused):
    """Keras 3's LSTM holding ``fused``'s (standard) weights: kernel = W_ih^T, recurrent
    kernel = W_hh^T, bias = b_ih + b_hh; Keras' gate order (i, f, c, o) is torch's."""
    import keras

    layer = keras.layers.LSTM(H, return_sequences=True)
    layer.build((None, None, I))
    with torch.no_grad():
        layer.cell.kernel.value.copy_(fused.weight_ih_l0.t())
        layer.cell.recurrent_kernel.value.copy_(fused.weight_hh_l0.t())
        layer.cell.bias.value.copy_(fused.bias_ih_l0 + fused.bias_hh_l0)
    return layer, [w.value for w in layer.trainable_weights]


def ort_session(module, x, threads: int, tmp: Path):
    import onnxruntime as ort

    path = gatelab.to_onnx(module, tmp / "m.onnx", (x.detach(),))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # onnxruntime's threads spin after each run by default and took the cores from the
    # call timed next: the fused forward at B = 16 read 9.0-9.2 ms with a spinning session
    # alive, 4.5-4.7 ms without (BENCHMARKS.md, session 12). Interleaved timing needs them
    # asleep (which costs onnxruntime its wake-ups, as OMP_WAIT_POLICY=PASSIVE costs torch)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {"input": x.detach().numpy()}
    return lambda: sess.run(None, feed)[0]


def max_diff(a, b) -> float:
    return float((torch.as_tensor(a).detach() - b.detach()).abs().max())


def bench(
    variant: str, B: int, T: int, repeats: int, threads: int, tmp: Path, compile_: bool = True
) -> dict:
    torch.manual_seed(0)
    fused = gatelab.LSTM(I, H, variant=variant, backend="fused")
    ref = gatelab.LSTM(I, H, variant=variant, backend="reference")
    ref.load_state_dict(fused.state_dict())
    x = torch.randn(T, B, I, requires_grad=True)
    row = {"variant": variant, "B": B, "T": T, "load_before": os.getloadavg()[0]}
    with torch.no_grad():
        want = fused(x)[0]

    train = {"fused": train_fn(fused, x)}
    if compile_:
        # every (variant, B) compiles from scratch: the layers share one forward, so without
        # the reset the ninth compile of a run hit Dynamo's recompile limit (8) and the rest
        # ran eagerly, their "compile" ratios the eager loop's (2026-12-02 run)
        torch._dynamo.reset()
        compiled = torch.compile(ref)
        start = time.perf_counter()
        got = compiled(x)[0]
        got.sum().backward()
        row["compile_s"] = time.perf_counter() - start
        row["diff_compile"] = max_diff(got, want)
        train["compile"] = train_fn(compiled, x)
    if variant == "standard":
        peer = torch.nn.LSTM(I, H)
        peer.load_state_dict(fused.state_dict())
        train["torch"] = train_fn(peer, x)
        layer, weights = keras_lstm(fused)
        xb = x.detach().transpose(0, 1).contiguous().requires_grad_(True)  # (B, T, I)
        row["diff_keras"] = max_diff(layer(xb).transpose(0, 1), want)
        train["keras"] = train_fn(layer, xb, weights)
    row["train_ms"] = interleaved_ms(train, repeats)

    session = ort_session(ref, x, threads, tmp)
    row["diff_ort"] = max_diff(session(), want)
    fwd = {"fused": forward_fn(lambda: fused(x)), "ort": forward_fn(session)}
    row["fwd_ms"] = interleaved_ms(fwd, repeats)
    row["load_after"] = os.getloadavg()[0]
    return row


HEADER = (
    "| variant | B | fused train ms | compile / fused | compile time s | keras / fused | "
    "torch / fused | fused fwd ms | ort / fused (fwd) | max diff compile, keras, ort | load |\n"
    + "|---" * 11
    + "|"
)


def row_line(r: dict) -> str:
    """One Markdown row of the table (HEADER)."""
    tr, fw = r["train_ms"], r["fwd_ms"]
    f = tr["fused"]
    keras = f"{tr['keras'] / f:.2f}" if "keras" in tr else "-"
    comp = f"{tr['compile'] / f:.2f}" if "compile" in tr else "-"
    comp_s = f"{r['compile_s']:.0f}" if "compile_s" in r else "-"
    peer = f"{tr['torch'] / f:.2f}" if "torch" in tr else "-"
    diffs = [f"{r[k]:.0e}" if k in r else "-" for k in ("diff_compile", "diff_keras", "diff_ort")]
    return (
        f"| {r['variant']} | {r['B']} | {f:.2f} | {comp} | {comp_s} | {keras} | {peer} | "
        f"{fw['fused']:.2f} | "
        f"{fw['ort'] / fw['fused']:.2f} | {', '.join(diffs)} | "
        f"{r['load_before']:.1f} -> {r['load_after']:.1f} |"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="T = 10, B = 1, 3 repeats")
    ap.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated presets")
    ap.add_argument("--batches", default="1,16", help="comma-separated batch sizes")
    ap.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    fused_backend.extension()  # build (or load) before timing anything
    T = 10 if args.quick else 100
    batches = [1] if args.quick else [int(b) for b in args.batches.split(",")]
    print(
        f"{os.cpu_count()} cpus, torch {torch.__version__}, {args.threads} threads, T = {T}, "
        f"I = {I}, H = {H}, float32; rows print as they finish\n\n{HEADER}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants.split(","):
            for B in batches:
                repeats = 3 if args.quick else (20 if B == 1 else 10)
                row = bench(variant, B, T, repeats, args.threads, Path(tmp), not args.no_compile)
                print(row_line(row), flush=True)
    if _COLD:
        shutil.rmtree(os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
