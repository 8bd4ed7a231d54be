"""The synthetic long-time-lag tasks as training problems: what each samples (train and
test sets), its loss, its per-sequence score and metric, and how a person writes one of
its sequences (``--text``) and reads the model's output (for reports).

Tasks (``--task`` names):

- ``adding``: the adding problem; regression of ``0.5 + (X1 + X2) / 4`` at the last real
  step, MSE loss; metric ``solved`` = fraction of test sequences with absolute error
  < 0.04 (the paper's criterion). Sequences have lengths ``T .. T + T/10``; batches are
  packed, so padding never reaches the model.
- ``temporal-order``: Experiment 6a; classification of the order of ``X``/``Y`` at the
  last real step; metric ``accuracy``. Lengths ``T .. T + T/10`` (the paper: T = 100), the
  relevant positions scaled with ``T``.
- ``copy``: the copy-memory problem (Arjovsky et al. 2016) with delay ``T``;
  per-step classification; metric ``accuracy`` over the copied symbols.
- ``parity``, ``cycle-navigation``: regular languages of Deletang et al. (2023), as the
  xLSTM paper (Beck et al. 2024) uses them: train on lengths ``1 .. T`` (default 40),
  test on lengths ``T .. 256`` (length generalisation); metric ``accuracy`` of the class
  at the last real step, and the paper's ``scaled_accuracy`` = (accuracy - chance) / (1
  - chance): 0 is chance, 1 perfect. The held-out (``valid``) set has training lengths.

:mod:`gatelab.tasks.synthetic` trains on them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gatelab.data import synthetic
from gatelab.errors import DataError

__all__ = ["TASKS", "Batch", "numeric_rows", "read_sequence", "resolve_task"]


@dataclass
class Batch:
    """``x (B, T, I)`` float32, ``lengths (B,)`` int64, targets ``y`` and, where the task
    has them, the ``positions (B, k)`` of the steps that matter."""

    x: Tensor
    lengths: Tensor
    y: Tensor
    positions: Tensor | None = None


class _Task:
    name = ""
    metric = ""
    default_T = 100
    input_size = 1
    output_size = 1
    per_step = False  # one prediction per step (copy) instead of one per sequence
    chance: float | None = None  # accuracy of guessing, where a scaled accuracy applies

    def sample(self, n: int, T: int, seed: int) -> Batch:
        raise NotImplementedError

    def sample_test(self, n: int, T: int, seed: int) -> Batch:
        """The test set: the training distribution, unless the task tests generalisation."""
        return self.sample(n, T, seed)

    def scaled(self, accuracy: float) -> float | None:
        """(accuracy - chance) / (1 - chance): 0 at chance, 1 perfect (xLSTM's measure)."""
        if self.chance is None:
            return None
        return (accuracy - self.chance) / (1.0 - self.chance)

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def score(self, out: Tensor, y: Tensor) -> Tensor:
        """Per-sequence score in [0, 1] ``(B,)``; the metric is its mean."""
        raise NotImplementedError

    def input_labels(self, x: Tensor) -> list[str]:
        """A short label per step of one sequence ``x (T, I)``, for reports."""
        return [f"{t}" for t in range(x.shape[0])]

    def alphabet(self) -> list[str]:
        """The symbols of a one-hot task, in input order, as ``--text`` writes them."""
        raise NotImplementedError

    def parse_text(self, text: str) -> Tensor:
        """``--text`` -> one sequence ``(T, input_size)``: symbols, one per character or
        separated by spaces (:meth:`alphabet`)."""
        alphabet = self.alphabet()
        tokens = text.split() if " " in text.strip() else list(text.strip())
        bad = [t for t in tokens if t not in alphabet]
        if bad:
            raise DataError(
                f"--text has symbol(s) {', '.join(map(repr, bad[:5]))} that the {self.name} "
                f"task does not know; expected some of {' '.join(alphabet)}"
            )
        ids = torch.tensor([alphabet.index(t) for t in tokens])
        return F.one_hot(ids, self.input_size).float()  # (T, I)

    def marks(self, x: Tensor) -> list[int]:
        """The steps of one sequence ``x (T, I)`` that matter (a symbol, not a blank)."""
        return [int(t) for t in torch.nonzero(x.argmax(-1) > 0).flatten()]

    def describe(self, pred: Tensor, target: Tensor | None) -> str:
        """One sentence on the model's output ``pred`` for one sequence."""
        k = int(pred.argmax())
        s = f"Predicted class: {k} (p = {float(pred.softmax(-1)[k]):.3f})"
        return s + (f", target {int(target)}." if target is not None else ".")


class _Adding(_Task):
    name = "adding"
    metric = "solved"
    input_size = 2

    def sample(self, n: int, T: int, seed: int) -> Batch:
        X, lengths, y, pos = synthetic.adding_problem(n, T, seed=seed, return_positions=True)
        return Batch(
            torch.from_numpy(X),
            torch.from_numpy(lengths),
            torch.from_numpy(y)[:, None],  # (B, 1)
            torch.from_numpy(pos),
        )

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        return F.mse_loss(out, y)

    def score(self, out: Tensor, y: Tensor) -> Tensor:
        return ((out - y).abs() < synthetic.ADDING_TOLERANCE).float().squeeze(-1)

    def input_labels(self, x: Tensor) -> list[str]:
        return [f"{v:+.2f}" + ("*" if m > 0 else "") for v, m in x.tolist()]

    def parse_text(self, text: str) -> Tensor:
        """``value,marker`` pairs separated by spaces or semicolons."""
        pairs = [p for p in text.replace(";", " ").split() if p]
        rows = numeric_rows("\n".join(pairs), "--text", self.input_size)
        return torch.tensor(rows, dtype=torch.float32)

    def marks(self, x: Tensor) -> list[int]:
        return [int(t) for t in torch.nonzero(x[:, 1] > 0.5).flatten()]

    def describe(self, pred: Tensor, target: Tensor | None) -> str:
        s = f"Output for this input: {float(pred[0]):.4f}"
        if target is not None:
            err = abs(float(pred[0]) - float(target[0]))
            verdict = "solved" if err < synthetic.ADDING_TOLERANCE else "not solved"
            s += f" (target {float(target[0]):.4f}, |error| {err:.4f}: {verdict})"
        return s + "."


class _TemporalOrder(_Task):
    name = "temporal-order"
    metric = "accuracy"
    input_size = len(synthetic.TEMPORAL_ORDER_SYMBOLS)
    output_size = 4

    def sample(self, n: int, T: int, seed: int) -> Batch:
        X, lengths, y, _, pos = synthetic.temporal_order(n, T, seed=seed, return_positions=True)
        return Batch(*(torch.from_numpy(a) for a in (X, lengths, y, pos)))

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(out, y)

    def score(self, out: Tensor, y: Tensor) -> Tensor:
        return (out.argmax(-1) == y).float()

    def input_labels(self, x: Tensor) -> list[str]:
        return [synthetic.TEMPORAL_ORDER_SYMBOLS[int(k)] for k in x.argmax(-1)]

    def alphabet(self) -> list[str]:
        return list(synthetic.TEMPORAL_ORDER_SYMBOLS)

    def marks(self, x: Tensor) -> list[int]:
        ix = synthetic.TEMPORAL_ORDER_SYMBOLS.index("X")
        return [int(t) for t in torch.nonzero(x[:, ix:].sum(-1) > 0).flatten()]

    def describe(self, pred: Tensor, target: Tensor | None) -> str:
        names = synthetic.temporal_order(1, seed=0)[3]
        k = int(pred.argmax())
        return f"Predicted class: {names[k]} (p = {float(pred.softmax(-1)[k]):.3f})."


class _Copy(_Task):
    name = "copy"
    metric = "accuracy"
    default_T = 30
    n_symbols = 8
    copy_length = 10
    input_size = n_symbols + 2  # blank, symbols 1..8, delimiter
    output_size = n_symbols + 1  # blank and symbols
    per_step = True

    def sample(self, n: int, T: int, seed: int) -> Batch:
        X, Y = synthetic.copy_task(
            n, T, seed=seed, n_symbols=self.n_symbols, copy_length=self.copy_length
        )
        x = F.one_hot(torch.from_numpy(X), self.input_size).float()  # (B, T', I)
        lengths = torch.full((n,), X.shape[1], dtype=torch.int64)
        return Batch(x, lengths, torch.from_numpy(Y))

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(out.flatten(0, 1), y.flatten())

    def score(self, out: Tensor, y: Tensor) -> Tensor:
        k = self.copy_length
        return (out[:, -k:].argmax(-1) == y[:, -k:]).float().mean(-1)

    def input_labels(self, x: Tensor) -> list[str]:
        names = self.alphabet()
        return [names[int(k)] for k in x.argmax(-1)]

    def alphabet(self) -> list[str]:
        return ["_", *(str(s) for s in range(1, self.n_symbols + 1)), ":"]

    def describe(self, pred: Tensor, target: Tensor | None) -> str:
        copied = pred[-self.copy_length :].argmax(-1).tolist()
        return f"Copied symbols: {' '.join(str(c) for c in copied)}."


class _FormalLanguage(_Task):
    """A regular-language task: one class at the last real step; train on lengths ``1 ..
    T``, test on ``T .. test_max_length``."""

    metric = "accuracy"
    default_T = 40
    test_max_length = 256

    def __init__(
        self,
        name: str,
        symbols: tuple[str, ...],
        output_size: int,
        generator: Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]],
    ) -> None:
        self.name, self.symbols, self.generator = name, symbols, generator
        self.input_size, self.output_size = len(symbols), output_size
        self.chance = 1.0 / output_size

    def _batch(self, n: int, lo: int, hi: int, seed: int) -> Batch:
        X, lengths, y = self.generator(n, lo, hi, seed=seed)
        return Batch(*(torch.from_numpy(a) for a in (X, lengths, y)))

    def sample(self, n: int, T: int, seed: int) -> Batch:
        return self._batch(n, 1, T, seed)

    def sample_test(self, n: int, T: int, seed: int) -> Batch:
        return self._batch(n, T, max(T, self.test_max_length), seed)

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(out, y)

    def score(self, out: Tensor, y: Tensor) -> Tensor:
        return (out.argmax(-1) == y).float()

    def input_labels(self, x: Tensor) -> list[str]:
        return [
            self.symbols[int(k)] if float(x[t].sum()) > 0 else ""
            for t, k in enumerate(x.argmax(-1))
        ]

    def alphabet(self) -> list[str]:
        return list(self.symbols)


_PARITY = _FormalLanguage("parity", ("0", "1"), 2, synthetic.parity)
_CYCLE_NAVIGATION = _FormalLanguage(
    "cycle-navigation", ("0", "+", "-"), 5, synthetic.cycle_navigation
)


TASKS: dict[str, _Task] = {
    t.name: t for t in (_Adding(), _TemporalOrder(), _Copy(), _PARITY, _CYCLE_NAVIGATION)
}


def resolve_task(name: str) -> _Task:
    """The task called ``name`` (``temporal_order`` is accepted for ``temporal-order``)."""
    key = name.replace("_", "-") if isinstance(name, str) else name
    if key not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")
    return TASKS[key]


def numeric_rows(raw: str, where: str, width: int) -> list[list[float]]:
    """The rows of a CSV (or tab- or whitespace-separated) text of ``width`` numbers each;
    a first row that is not numeric is a header and skipped, ``#`` lines are comments.

    Raises ``DataError`` naming ``where``, the row and what was expected."""
    rows = []
    sample = raw[:2048]
    delimiter = "," if "," in sample else ("\t" if "\t" in sample else None)
    lines = [ln for ln in raw.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if delimiter:
        parsed = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter))
    else:
        parsed = [ln.split() for ln in lines]
    for k, cells in enumerate(parsed):
        cells = [c.strip() for c in cells if c.strip()]
        try:
            values = [float(c) for c in cells]
        except ValueError:
            if k == 0 and rows == []:
                continue  # a header
            raise DataError(
                f"{where}: row {k + 1} is {','.join(cells)!r}; expected {width} numbers"
            ) from None
        if len(values) != width:
            raise DataError(
                f"{where}: row {k + 1} has {len(values)} values; expected {width} per step"
            )
        rows.append(values)
    return rows


def read_sequence(task: _Task, *, text: str | None, data: Path | None) -> Tensor:
    """``--text`` or ``--data`` -> one sequence ``(T, input_size)`` of a synthetic task.

    ``--data``: a CSV (or whitespace-separated) file with one row per step and
    ``input_size`` numeric columns (adding: ``value, marker``); a header row is skipped.
    ``--text``: symbols, one per character or separated by spaces: temporal order
    ``E a b c d X Y B``; copy ``1..8``, ``_`` blank, ``:`` delimiter; adding
    ``value,marker`` pairs separated by spaces or semicolons.
    """
    if data is not None:
        try:
            raw = Path(data).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"cannot read --data file '{data}': {err}") from err
        rows = numeric_rows(raw, str(data), task.input_size)
        if not rows:
            raise DataError(f"--data file '{data}' has no rows; expected one row per step")
        return torch.tensor(rows, dtype=torch.float32)
    if text is None:
        raise DataError("no input: give --text or --data")
    if not text.strip():
        raise DataError("the text is empty; expected at least one step")
    return task.parse_text(text)
