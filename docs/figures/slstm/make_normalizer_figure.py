"""The sLSTM's normalizer at work: the figure of docs/why-gates-in-0-1.md.

    PYTHONPATH=src python docs/figures/slstm/make_normalizer_figure.py

Trains an sLSTM (32 units) on parity for 400 steps (lengths 1-40; about 20 s on one
core), then traces one test string of 160 bits and plots, for the three units whose
normalizer spans the widest range: the input gate's exponent log i_t = i~_t (the gate
exp(i~_t) is far outside (0, 1)) beside the stabilizer m_t; the stabilised normalizer
n_t beside |c_t| (|c_t| <= n_t, since |z| < 1); and the output h_t = o_t c_t / n_t, a
weighted mean of the candidates that stays in (-1, 1) however large the gates are.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from gatelab import experiments as ex

OUT = Path(__file__).resolve().parent / "normalizer.png"


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    result = ex.run_experiment(
        task="parity",
        variant="slstm",
        steps=400,
        hidden_size=32,
        batch_size=32,
        lr=1e-2,
        init="uniform",
        target=None,
        valid_size=200,
        test_size=200,
    )
    task = ex.resolve_task("parity")
    batch = task._batch(1, 160, 160, seed=7)
    model = result.model
    with torch.no_grad():
        _, tr = model(batch.x, batch.lengths, return_trace=True)
    d = {k: v[0, 0] for k, v in tr.items()}  # (T, H): layer 0, sequence 0
    log_i = torch.log(d["input_gate"]) + d["stabilizer"]  # i~ = log i' + m
    log_N = torch.log(d["normalizer"]) + d["stabilizer"]  # the unstabilised normalizer
    units = (log_N.max(0).values - log_N.min(0).values).argsort(descending=True)[:3]
    bits = batch.x[0].argmax(-1)
    parity = torch.cumsum(bits, 0) % 2
    t = torch.arange(len(bits))

    fig, axes = plt.subplots(4, 1, figsize=(10, 9), sharex=True)
    axes[0].step(t, bits, where="mid", color="0.3", label="input bit")
    axes[0].step(t, parity + 1.5, where="mid", color="C3", label="running parity (+1.5)")
    axes[0].set_yticks([])
    axes[0].legend(loc="upper right", fontsize=8)
    axes[0].set_title(
        f"sLSTM on parity (trained on lengths 1-40, test accuracy on 40-256: "
        f"{result.metric:.3f}); one string of {len(bits)} bits"
    )
    for k, u in enumerate(units.tolist()):
        c = f"C{k}"
        axes[1].plot(t, log_i[:, u], color=c, lw=0.8, label=f"unit {u}: log i = i~")
        axes[1].plot(t, d["stabilizer"][:, u], color=c, lw=1.6, ls="--", label=f"unit {u}: m")
        axes[2].plot(t, d["normalizer"][:, u], color=c, lw=1.6, label=f"unit {u}: n")
        axes[2].plot(t, d["cell"][:, u].abs(), color=c, lw=0.8, ls=":", label=f"unit {u}: |c|")
        axes[3].plot(t, d["hidden"][:, u], color=c, label=f"unit {u}")
    axes[1].axhline(0.0, color="k", lw=0.5)
    axes[1].set_ylabel("log i_t (gate > 1 above 0)\nand stabilizer m_t")
    axes[1].legend(loc="upper right", fontsize=7, ncol=3)
    axes[2].set_ylabel("normalizer n_t and |c_t|\n(stabilised; |c_t| <= n_t)")
    axes[2].legend(loc="upper right", fontsize=7, ncol=3)
    axes[3].set_ylabel("h_t = o_t c_t / n_t")
    axes[3].set_ylim(-1.05, 1.05)
    axes[3].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(OUT, dpi=110)
    print(
        f"wrote {OUT}; units {units.tolist()}; max log i {float(log_i.max()):.1f}; max log N "
        f"{float(log_N.max()):.1f}; max n {float(d['normalizer'].max()):.2f}; test "
        f"accuracy {result.metric:.3f}"
    )


if __name__ == "__main__":
    main()
