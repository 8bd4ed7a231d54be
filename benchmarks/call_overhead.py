"""What a call of the fused layer costs around its kernel, against torch.nn.LSTM (issue 16).

    PYTHONPATH=src python benchmarks/call_overhead.py            # about a minute on 2 cores
    PYTHONPATH=src python benchmarks/call_overhead.py --quick    # a smoke run

At B = 1 a whole sequence of T = 100 steps takes the fused kernel about a millisecond, so
what runs around it in Python (the layer's argument checks, the backend choice, the
autograd node, torch's backward engine) is a visible share of the step that the B = 1
targets read. This script times, interleaved round-robin in one process, for T = 1 and
T = 100 at B = 1 (I = 64, H = 128, float32):

- ``kernel``: the extension's ``lstm_forward`` called directly (no_grad; for training,
  ``lstm_forward`` keeping the buffers and ``lstm_backward``, no autograd);
- ``gatelab``: ``gatelab.LSTM(backend="fused")`` as a user calls it (forward under
  no_grad; training ``out.sum().backward()`` with ``x`` requiring grad);
- ``torch``: ``torch.nn.LSTM`` the same way.

``gatelab - kernel`` is the cost of the layer around the kernel, per call.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from speed import forward_fn, interleaved_ms, train_fn

import gatelab
from gatelab.nn.backends import fused


def fns(T: int, B: int = 1, I: int = 64, H: int = 128) -> tuple[dict, dict]:
    torch.manual_seed(0)
    layer = gatelab.LSTM(I, H, backend="fused")
    peer = torch.nn.LSTM(I, H)
    peer.load_state_dict(layer.state_dict())
    ext = fused.extension()
    p = layer.layer_parameters(0)
    params = [p.get(name) for name in fused._PARAMS]
    flags = fused.spec_flags(layer.spec)
    x = torch.randn(T, B, I)
    xg = x.clone().requires_grad_(True)
    h0, c0 = torch.zeros(B, H), torch.zeros(B, H)

    def kernel_fwd():
        with torch.no_grad():
            ext.lstm_forward(x, h0, c0, params, None, flags, 0)

    def kernel_train():
        with torch.no_grad():
            res = ext.lstm_forward(xg, h0, c0, params, None, flags, 2)
            none = x.new_empty(0)
            saved = [
                res[0],
                none,
                none,
                res[3],
                res[4],
                *(none if t is None else t for t in res[5:]),
            ]
            d_out = torch.ones_like(res[0])
            ext.lstm_backward(d_out, None, None, xg, h0, c0, params, None, flags, saved, True)

    forward = {"kernel": kernel_fwd, "gatelab": forward_fn(layer, x), "torch": forward_fn(peer, x)}
    training = {"kernel": kernel_train, "gatelab": train_fn(layer, xg), "torch": train_fn(peer, xg)}
    return forward, training


def timed(fns: dict, rounds: int, calls: int) -> dict:
    """us per call: speed.py's interleaved medians of ``calls`` calls in a row (one call of
    a short sequence is too short to time alone)."""

    def repeated(fn):
        def run():
            for _ in range(calls):
                fn()

        return run

    ms = interleaved_ms({k: repeated(fn) for k, fn in fns.items()}, rounds)
    return {k: v * 1e3 / calls for k, v in ms.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run (few rounds)")
    args = ap.parse_args(argv)
    policy = os.environ.get("OMP_WAIT_POLICY", "(unset)")
    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY "
        f"{policy}, load {os.getloadavg()[0]:.2f}"
    )
    print(
        "| T | pass | kernel us | gatelab us | torch us | gatelab - kernel us | torch / gatelab |"
    )
    print("|---|---|---|---|---|---|---|")
    for T in (1, 100):
        forward, training = fns(T)
        calls = (200 if T == 1 else 10) if not args.quick else 2
        rounds = 15 if not args.quick else 2
        for name, group in (("forward", forward), ("train", training)):
            t = timed(group, rounds, calls)
            print(
                f"| {T} | {name} | {t['kernel']:.1f} | {t['gatelab']:.1f} | {t['torch']:.1f} | "
                f"{t['gatelab'] - t['kernel']:.1f} | {t['torch'] / t['gatelab']:.2f} |"
            )
    print(f"# load after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
