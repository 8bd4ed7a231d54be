"""Shared helpers of the model, training, estimator and command-line tests.

Tiny synthetic tasks a small model learns in a second, and writers of the file formats
the command line reads. Real data sets live at ``../shared/data`` from the repository
root; :func:`shared_data` skips a test when they are absent (a fresh clone).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gatelab.training import TensorData

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()

ATOL = {torch.float32: 1e-5, torch.float64: 1e-10}

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


def state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Every tensor of the two state dicts is bit-identical."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
