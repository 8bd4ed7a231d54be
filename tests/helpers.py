"""Shared test helpers.

Core (layers): tolerances per dtype, seeded modules, forward+backward snapshots.
Models, training, estimators and command line: tiny synthetic tasks a small model learns
in a second, and writers of the file formats the command line reads. Real data sets live
at ``../shared/data`` from the repository root; :func:`shared_data` skips a test when
they are absent (a fresh clone).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from gatelab.train.fit import Callback, TensorData

# The one tolerance table: ``torch.testing.assert_close(a, b, **TOL[dtype])`` for values
# that two implementations of the same math compute in different orders.
TOL = {
    torch.float64: {"rtol": 0.0, "atol": 1e-10},
    torch.float32: {"rtol": 1e-5, "atol": 1e-5},
}


def assert_close(a, b, dtype=torch.float64, what=""):
    torch.testing.assert_close(a, b, **TOL[dtype], msg=lambda m: f"{what}: {m}")


def make_input(T, B, I, *, batch_first=False, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (B, T, I) if batch_first else (T, B, I)
    return torch.randn(shape, generator=g, dtype=dtype).requires_grad_()


def make_packed(lengths, I, *, dtype=torch.float64, seed=0):
    """-> (padded (T, B, I) leaf, PackedSequence with enforce_sorted=False)."""
    g = torch.Generator().manual_seed(seed)
    padded = torch.randn(max(lengths), len(lengths), I, generator=g, dtype=dtype)
    padded.requires_grad_()
    return padded, pack_padded_sequence(padded, torch.tensor(lengths), enforce_sorted=False)


def make_hx(module, B, *, lstm=True, dtype=torch.float64, seed=1, unbatched=False):
    g = torch.Generator().manual_seed(seed)
    LD = module.num_layers * (2 if module.bidirectional else 1)
    batch = () if unbatched else (B,)
    out_size = module.proj_size if getattr(module, "proj_size", 0) else module.hidden_size
    h0 = torch.randn(LD, *batch, out_size, generator=g, dtype=dtype).requires_grad_()
    if not lstm:
        return h0
    c0 = torch.randn(LD, *batch, module.hidden_size, generator=g, dtype=dtype).requires_grad_()
    return h0, c0


def forward_backward(module, x, hx=None, *, leaves=(), seed=2):
    """Run ``module(x, hx)``, backprop a random linear functional of every output.

    Returns ``{name: tensor}`` with the outputs, the final states and the gradients of every
    parameter and of each leaf in ``leaves`` (inputs, h0, c0).
    """
    for leaf in leaves:
        leaf.grad = None
    module.zero_grad()
    output, state = module(x, hx)[:2]
    out = output.data if isinstance(output, PackedSequence) else output
    states = state if isinstance(state, tuple) else (state,)
    g = torch.Generator().manual_seed(seed)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in (out, *states))
    loss.backward()
    snap = {"output": out.detach()}
    for k, s in enumerate(states):
        snap[f"state{k}"] = s.detach()
    for name, p in module.named_parameters():
        snap[f"grad:{name}"] = p.grad.detach().clone()
    for k, leaf in enumerate(leaves):
        snap[f"grad:leaf{k}"] = leaf.grad.detach().clone()
    return snap


def assert_same_snapshots(a, b, dtype=torch.float64):
    assert a.keys() == b.keys()
    for k in a:
        assert_close(a[k], b[k], dtype, what=k)


REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()  # the one path to the real data

POSITIVE = ("good", "great", "fine", "lovely", "superb")
NEGATIVE = ("bad", "awful", "poor", "dull", "boring")
FILLER = ("the", "a", "movie", "film", "is", "was", "very", "plot", "and", "it")


def shared_data(*parts: str) -> Path:
    """A path under the real data folder; skips the test when the folder is absent."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(
            f"real data not available: {SHARED_DATA} does not exist (it lives outside the "
            "repository, at ../shared/data from the repository root)"
        )
    return SHARED_DATA.joinpath(*parts)


def sentiment_texts(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Texts of filler words plus one sentiment word; the label is that word's side."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        positive = bool(rng.integers(2))
        words = list(rng.choice(FILLER, rng.integers(2, 9)))
        words.insert(
            int(rng.integers(len(words) + 1)), rng.choice(POSITIVE if positive else NEGATIVE)
        )
        texts.append(" ".join(words))
        labels.append("pos" if positive else "neg")
    return texts, labels


def shape_series(n: int, T: int = 16, seed: int = 0, channels: int = 1):
    """Series of noise with a bump early (class "early") or late (class "late")."""
    rng = np.random.default_rng(seed)
    X = rng.normal(scale=0.3, size=(n, T, channels))
    y = rng.integers(2, size=n)
    t = np.arange(T)
    for i in range(n):
        centre = T // 4 if y[i] == 0 else 3 * T // 4
        X[i, :, 0] += 2.0 * np.exp(-0.5 * ((t - centre) / 1.5) ** 2)
    return X, np.where(y == 0, "early", "late")


def rocket_model(head_weight: float = 1.0):
    """A tiny lstm-rocket classifier (3 classes, 200 kernel features) whose ridge is fitted
    to 9 seeded series of unequal lengths: ``(model, x (9, 12, 1), lengths (9,))``, in
    training mode."""
    from gatelab.models.heads import ModelConfig, SequenceClassifier

    config = ModelConfig(
        input_size=1, hidden_size=4, output_size=3, kernel_features=200,
        kernel_length=12, kernel_ridge=True, head_weight=head_weight,
    )  # fmt: skip
    torch.manual_seed(0)
    model = SequenceClassifier(config)
    x, lengths = torch.randn(9, 12, 1), torch.tensor([12, 12, 9, 4, 12, 7, 12, 12, 5])
    model.kernels.fit_biases(x, lengths, torch.arange(9) % 3)
    return model, x, lengths


def token_data(n: int = 96, T: int = 10, vocab: int = 12, seed: int = 0) -> TensorData:
    """Token-id sequences of random lengths; class 1 when token 5 occurs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(2, vocab, (n, T), generator=g)
    lengths = torch.randint(2, T + 1, (n,), generator=g)
    for i in range(n):
        x[i, lengths[i] :] = 0
    y = (x == 5).any(dim=1).long()
    return TensorData(x, lengths, y)


def write_tsv(path: Path, texts, labels, header: str = "sentence\tlabel") -> Path:
    lines = [header] + [f"{t}\t{y}" for t, y in zip(texts, labels)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_ts(path: Path, X, y, problem: str = "Toy") -> Path:
    """An sktime ``.ts`` file of univariate series ``X (N, T)`` or ``(N, T, 1)``."""
    X = np.asarray(X)
    X = X[..., 0] if X.ndim == 3 else X
    classes = sorted(set(map(str, y)))
    lines = [
        f"@problemName {problem}",
        "@timeStamps false",
        "@univariate true",
        "@equalLength true",
        f"@seriesLength {X.shape[1]}",
        f"@classLabel true {' '.join(classes)}",
        "@data",
    ]
    lines += [",".join(f"{v:.5f}" for v in row) + f":{label}" for row, label in zip(X, y)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def sine_series(n: int = 160, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 50 + 10 * np.sin(2 * np.pi * t / 12) + rng.normal(scale=0.2, size=n)


def write_series_csv(path: Path, values, name: str = "value") -> Path:
    lines = [f'"year","{name}"'] + [f"{1900 + i},{v:.4f}" for i, v in enumerate(values)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class StopAfterEpochs(Callback):
    """Raises KeyboardInterrupt (an interrupted run) at the ``n``-th epoch end it sees,
    counted over every ``fit`` it is passed to (an estimator's members in turn)."""

    def __init__(self, n: int) -> None:
        self.n, self.seen = n, 0

    def on_epoch_end(self, epoch, logs):
        self.seen += 1
        if self.seen == self.n:
            raise KeyboardInterrupt


def state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Every tensor of the two state dicts is bit-identical."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def ar2(n: int, seed: int = 0) -> np.ndarray:
    """An AR(2) series with a constant: x_t = 1 + 0.6 x_{t-1} - 0.3 x_{t-2} + noise."""
    rng = np.random.default_rng(seed)
    x = np.zeros(n)
    for t in range(2, n):
        x[t] = 1.0 + 0.6 * x[t - 1] - 0.3 * x[t - 2] + rng.normal()
    return x


def seasonal_trend(n: int, period: int = 12, seed: int = 0) -> np.ndarray:
    """A linear trend plus a sine of ``period`` steps plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 100 + 2.0 * t + 15 * np.sin(2 * np.pi * t / period) + rng.normal(scale=1.0, size=n)


#: ``hwm()`` for the child scripts of :func:`run_child_json`: the peak RSS of this process
#: image in bytes (``VmHWM``; ``ru_maxrss`` carries a forking parent's peak across exec, so
#: a child of the whole test suite would read the suite's peak).
PEAK_RSS = """
def hwm():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
"""


def run_child_json(script: str, *args: object, timeout: float = 600) -> dict:
    """Run Python source ``script`` (with :data:`PEAK_RSS` defined) in a fresh interpreter
    on this tree's ``src`` with one OpenMP thread; returns the JSON of its last stdout
    line. A failing child fails the test with its stderr."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", PEAK_RSS + script, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])
