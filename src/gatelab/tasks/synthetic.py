"""Seeded experiments on the synthetic long-time-lag tasks, on a fixed budget.

A compact trainer for the tasks of :mod:`gatelab.data.synthetic`: every step draws a
fresh batch from the task's generator (the data are unlimited, as in Hochreiter &
Schmidhuber 1997), trains a recurrent layer and a linear head with Adam, gradient
clipping and a cosine-decayed learning rate, checks a held-out set every
``eval_every`` steps and stops at the budget (steps and/or seconds) or once the held-out
metric reaches ``target``. The final metric is measured on a separate test set (1000
sequences by default), the same for every model, so runs on the same task compare.

The tasks (``--task`` names) are :mod:`gatelab.tasks.problems`.

A finished run is saved as a run folder of :mod:`gatelab.train.runs` (see :func:`save_run`,
:func:`load_run`): ``config.json`` (the run-folder header ``gatelab_version, format,
task="synthetic"`` plus an ``experiment`` section, this module's
:class:`ExperimentConfig`, and ``results``) and ``model.safetensors`` (the model's state
dict), written atomically, nothing pickled.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from gatelab._config import config_fields
from gatelab.errors import DataError, TrainingDiverged
from gatelab.nn.equations import PRESETS, resolve_spec
from gatelab.nn.layers import BACKENDS, GRU, LSTM, RNN
from gatelab.tasks.problems import TASKS, Batch, read_sequence, resolve_task
from gatelab.train import runs
from gatelab.train.files import json_safe

__all__ = [
    "MODELS",
    "TASKS",
    "Batch",
    "ExperimentConfig",
    "ExperimentResult",
    "Progress",
    "SyntheticInput",
    "TaskModel",
    "build_model",
    "evaluate",
    "explain_input",
    "load_run",
    "resolve_task",
    "run_experiment",
    "save_run",
]

log = logging.getLogger(__name__)

MODELS = ("lstm", "gru", "rnn")
# What ablate accepts beside the LSTM presets: the other recurrent layers, as baselines.
OTHER_MODELS = ("gru", "rnn")
INITS = ("uniform", "chrono")
RUN_TASK = "synthetic"  # the ``task`` entry of config.json for these run folders
# Seeds of the held-out sets: fixed, so every model of a task sees the same sequences.
VALID_SEED = 1_000_003
TEST_SEED = 2_000_003


# --------------------------------------------------------------------------- model


class TaskModel(nn.Module):
    """A recurrent layer (gatelab ``LSTM``, ``GRU`` or ``RNN``) and a linear head.

    ``forward(x (B, T, I), lengths (B,) | None, *, return_trace=False)`` returns
    ``(B, out)`` from each sequence's last real step, or ``(B, T, out)`` for a per-step
    task; with ``return_trace`` also the layer's trace (batch-first, its ``mask`` marking
    the real steps).

    Padding sits after each sequence's end and the layer is unidirectional, so the output
    at a sequence's last real step never sees its padding: gathering it at ``lengths - 1``
    from the padded batch equals running the packed batch. It is also 5x faster: torch's
    CPU LSTM on a packed batch (B=64, H=64, T=110) took 318 ms per forward+backward
    against 60 ms padded on this machine. With a trace asked for, the batch is packed,
    so that the trace's mask is right.
    """

    def __init__(
        self,
        model: str,
        input_size: int,
        hidden_size: int,
        output_size: int,
        *,
        variant: str = "standard",
        forget_bias: float | None = None,
        backend: str = "auto",
        per_step: bool = False,
    ) -> None:
        super().__init__()
        if model == "lstm":
            self.rnn = LSTM(
                input_size,
                hidden_size,
                batch_first=True,
                variant=variant,
                forget_bias=forget_bias,
                backend=backend,
            )
        elif model == "gru":
            self.rnn = GRU(input_size, hidden_size, batch_first=True, backend=backend)
        elif model == "rnn":
            self.rnn = RNN(input_size, hidden_size, batch_first=True, backend=backend)
        else:
            raise ValueError(f"model={model!r}; expected one of {', '.join(MODELS)}")
        self.kind = model
        self.per_step = per_step
        self.head = nn.Linear(hidden_size, output_size)

    def forward(self, x: Tensor, lengths: Tensor | None = None, *, return_trace: bool = False):
        B, T = x.shape[:2]
        trace = None
        if return_trace:
            inp = x
            if lengths is not None and bool((lengths != T).any()):
                inp = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, _, trace = self.rnn(inp, return_trace=True)
            if inp is not x:
                out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
        else:
            out, _ = self.rnn(x)  # (B, T, H)
        if self.per_step:
            y = self.head(out)  # (B, T, out)
        else:
            last = out[:, -1] if lengths is None else out[torch.arange(B), lengths - 1]
            y = self.head(last)  # (B, out)
        return (y, trace) if return_trace else y


# --------------------------------------------------------------------------- config


@dataclass
class ExperimentConfig:
    """One training run on a synthetic task; JSON-serialisable.

    Attributes:
        task: a :data:`TASKS` name (``"adding"``, ``"temporal-order"``, ``"copy"``,
            ``"parity"``, ``"cycle-navigation"``).
        model: ``"lstm"``, ``"gru"`` or ``"rnn"`` (vanilla tanh RNN).
        variant: LSTM preset (:data:`gatelab.PRESETS`); GRU and RNN take only
            ``"standard"`` (they have no LSTM cell to vary).
        T: sequence length (minimal length for ``adding`` and ``temporal-order``; delay
            for ``copy``; longest training length for ``parity`` and
            ``cycle-navigation``); None takes the task's default.
        hidden_size: units of the recurrent layer.
        forget_bias: LSTM forget-gate bias at init (applied only to specs that have a
            forget gate of their own; ``init="chrono"`` replaces it).
        init: ``"uniform"`` (the layer's own init, torch.nn's rule, plus ``forget_bias``)
            or ``"chrono"`` (:meth:`gatelab.LSTM.chrono_init_`, for an LSTM; ``t_max`` =
            the longest sequence of the task).
        steps: budget in optimiser steps.
        seconds: budget in wall-clock seconds (None: no time limit).
        batch_size, lr: Adam's batch and peak learning rate.
        min_lr: final learning rate as a fraction of ``lr`` (cosine decay over ``steps``).
        clip_norm: global gradient-norm clipping.
        eval_every: steps between held-out checks.
        valid_size, test_size: sequences in the held-out and the test set.
        target: stop once the held-out metric reaches this (None: never early).
        seed: seeds the initial weights and the training stream.
        backend: the layer's backend.
    """

    task: str = "adding"
    model: str = "lstm"
    variant: str = "standard"
    T: int | None = None
    hidden_size: int = 64
    forget_bias: float = 1.0
    init: str = "uniform"
    steps: int = 3000
    seconds: float | None = None
    batch_size: int = 64
    lr: float = 1e-2
    min_lr: float = 0.05
    clip_norm: float = 1.0
    eval_every: int = 100
    valid_size: int = 500
    test_size: int = 1000
    target: float | None = 0.99
    seed: int = 0
    backend: str = "auto"

    def __post_init__(self) -> None:
        self.task = resolve_task(self.task).name
        if self.model not in MODELS:
            raise ValueError(f"model={self.model!r}; expected one of {', '.join(MODELS)}")
        if self.variant not in PRESETS:
            raise ValueError(
                f"unknown LSTM variant {self.variant!r}; expected one of {', '.join(PRESETS)}"
            )
        if self.backend not in BACKENDS:
            raise ValueError(f"backend={self.backend!r}; expected one of {', '.join(BACKENDS)}")
        if self.model != "lstm" and self.variant != "standard":
            raise ValueError(
                f"variant={self.variant!r} applies to model='lstm' only; model={self.model!r} "
                "has no LSTM cell to vary (use variant='standard')"
            )
        if self.model != "lstm" and self.backend == "fused":
            raise ValueError(
                f"backend='fused' runs the LSTM only; model={self.model!r} runs on 'auto', "
                "'native' or 'reference'"
            )
        if self.T is None:
            self.T = resolve_task(self.task).default_T
        if self.init not in INITS:
            raise ValueError(f"init={self.init!r}; expected one of {', '.join(INITS)}")
        for name, minimum in (
            ("T", 10),
            ("hidden_size", 1),
            ("steps", 1),
            ("batch_size", 1),
            ("eval_every", 1),
            ("valid_size", 1),
            ("test_size", 1),
            ("seed", 0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name}={value!r}; expected an int >= {minimum}")
        for name in ("lr", "clip_norm"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
                raise ValueError(f"{name}={value!r}; expected a positive number")
        if not 0.0 <= self.min_lr <= 1.0:
            raise ValueError(f"min_lr={self.min_lr!r}; expected a fraction in [0, 1]")
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"seconds={self.seconds!r}; expected a positive number or None")

    @property
    def spec_forget_bias(self) -> float | None:
        """The forget bias the LSTM gets: None where the spec has no forget weights."""
        if self.model != "lstm" or not resolve_spec(self.variant).has_forget_weights:
            return None
        return self.forget_bias

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExperimentConfig:
        d = config_fields(cls, d, "experiment config")
        if d.get("model", "lstm") != "lstm":
            # run folders written before these were refused: a GRU/RNN ignored the variant
            # and ran backend 'fused' as 'auto'
            for key, old, value in (("variant", None, "standard"), ("backend", "fused", "auto")):
                if key in d and d[key] != value and old in (None, d[key]):
                    log.warning(
                        "the experiment config has model=%r with %s=%r, which had no effect "
                        "(a run folder from an older gatelab); read as %s=%r",
                        d["model"],
                        key,
                        d[key],
                        key,
                        value,
                    )
                    d[key] = value
        return cls(**d)


def build_model(config: ExperimentConfig) -> TaskModel:
    """The model ``config`` describes, initialised from torch's global RNG."""
    task = resolve_task(config.task)
    model = TaskModel(
        config.model,
        task.input_size,
        config.hidden_size,
        task.output_size,
        variant=config.variant,
        forget_bias=config.spec_forget_bias,
        backend=config.backend,
        per_step=task.per_step,
    )
    if config.init == "chrono" and config.model == "lstm":
        model.rnn.chrono_init_(max_steps(config))
    return model


def max_steps(config: ExperimentConfig) -> int:
    """The longest sequence of ``config``'s task (``T + T // 10`` for adding)."""
    return int(resolve_task(config.task).sample(1, config.T, 0).x.shape[1])


# --------------------------------------------------------------------------- training


@dataclass
class Progress:
    """What the trainer reports to its callback after each step.

    ``metric`` is the held-out metric when it was measured at this step, else None.
    """

    step: int
    steps: int
    loss: float
    metric: float | None
    elapsed: float
    config: ExperimentConfig


@dataclass
class ExperimentResult:
    """A finished run: the trained model, its config and what it scored.

    Attributes:
        metric: the task's metric on the test set (``solved`` for adding).
        valid_metric: the last held-out metric.
        steps: optimiser steps taken; seconds: training wall time (without the test).
        history: ``[{"step", "loss", "valid"}]`` at each held-out check.
        stopped: ``"target"``, ``"steps"`` or ``"seconds"``.
    """

    config: ExperimentConfig
    model: TaskModel
    metric: float
    valid_metric: float
    steps: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    stopped: str = "steps"

    @property
    def metric_name(self) -> str:
        return resolve_task(self.config.task).metric

    def summary(self) -> dict[str, Any]:
        """JSON-able: config, metric (by its name), ``scaled_accuracy`` where the task
        has one, steps, seconds, stopped, history."""
        scaled = resolve_task(self.config.task).scaled(self.metric)
        return {
            "config": self.config.to_dict(),
            self.metric_name: self.metric,
            **({} if scaled is None else {"scaled_accuracy": scaled}),
            "valid": self.valid_metric,
            "steps": self.steps,
            "seconds": round(self.seconds, 2),
            "stopped": self.stopped,
            "history": self.history,
        }


@torch.no_grad()
def evaluate(model: TaskModel, task: str, batch: Batch, batch_size: int = 1000) -> float:
    """Mean of the task's per-sequence score over ``batch``, in eval mode."""
    t = resolve_task(task)
    was_training = model.training
    model.eval()
    scores = []
    for s in range(0, batch.x.shape[0], batch_size):
        sl = slice(s, s + batch_size)
        out = model(batch.x[sl], batch.lengths[sl])
        scores.append(t.score(out, batch.y[sl]))
    model.train(was_training)
    return float(torch.cat(scores).mean())


def _train_seed(seed: int, step: int) -> int:
    return (seed + 1) * 10_000_019 + step


def run_experiment(
    config: ExperimentConfig | None = None,
    *,
    callback: Callable[[Progress], None] | None = None,
    **overrides: Any,
) -> ExperimentResult:
    """Train one model on one synthetic task on a fixed budget; score it on the test set.

    Args:
        config: an :class:`ExperimentConfig`; keyword ``overrides`` replace its fields
            (or build one from the defaults).
        callback: called with a :class:`Progress` after every step.
    Returns:
        An :class:`ExperimentResult` with the trained model (in eval mode).
    """
    config = dataclasses.replace(config, **overrides) if config else ExperimentConfig(**overrides)
    task = resolve_task(config.task)
    torch.manual_seed(config.seed)
    model = build_model(config)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)

    def lr_factor(step: int) -> float:  # cosine from 1 to min_lr over the step budget
        frac = min(step / config.steps, 1.0)
        return config.min_lr + (1 - config.min_lr) * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    valid = task.sample(config.valid_size, config.T, VALID_SEED)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    valid_metric, stopped, step = math.nan, "steps", 0
    log.info("training %s on %s: %s", config.model, config.task, config.to_dict())
    for step in range(1, config.steps + 1):
        batch = task.sample(config.batch_size, config.T, _train_seed(config.seed, step))
        loss = task.loss(model(batch.x, batch.lengths), batch.y)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise TrainingDiverged(
                f"the loss became {loss_value} at step {step} of {config.model} on "
                f"{config.task} (lr={config.lr}); try a smaller lr"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
        opt.step()
        sched.step()
        elapsed = time.perf_counter() - start
        out_of_time = config.seconds is not None and elapsed >= config.seconds
        measured = None
        if step % config.eval_every == 0 or step == config.steps or out_of_time:
            valid_metric = measured = evaluate(model, config.task, valid)
            history.append({"step": step, "loss": loss_value, "valid": measured})
            log.info("step %d loss %.5f valid %s %.4f", step, loss_value, task.metric, measured)
        if callback is not None:
            callback(Progress(step, config.steps, loss_value, measured, elapsed, config))
        if measured is not None and config.target is not None and measured >= config.target:
            stopped = "target"
            break
        if out_of_time:
            stopped = "seconds"
            break
    seconds = time.perf_counter() - start
    model.eval()
    test = task.sample_test(config.test_size, config.T, TEST_SEED)
    metric = evaluate(model, config.task, test)
    log.info(
        "%s on %s: test %s %.4f after %d steps",
        config.model,
        config.task,
        task.metric,
        metric,
        step,
    )
    return ExperimentResult(config, model, metric, valid_metric, step, seconds, history, stopped)


# --------------------------------------------------------------------------- run folders


def save_run(result: ExperimentResult, run_dir: str | os.PathLike) -> Path:
    """Write ``result`` as a run folder with :mod:`gatelab.train.runs` (locked, atomic writes).

    ``config.json`` is the run-folder header ``{"gatelab_version", "format", "task":
    "synthetic"}`` plus ``"experiment"`` (the :class:`ExperimentConfig`), ``"results"``
    (metric, steps, seconds, history) and ``"inputs"`` (none: the data are generated from
    the config's seeds); ``model.safetensors`` is the model's state dict. A run already in
    ``run_dir`` is replaced (saving is the request): its config goes first, so a kill half
    way leaves a folder without a run, never new weights under an old config.
    """
    run_dir = Path(run_dir)
    summary = result.summary()
    summary.pop("config")
    with runs.run_lock(run_dir):
        runs.start_run(run_dir, RUN_TASK, {}, resume=False, overwrite=True)
        runs.atomic_write_tensors(run_dir / runs.WEIGHTS_FILE, result.model.state_dict())
        runs.write_config(
            run_dir,
            RUN_TASK,
            experiment=result.config.to_dict(),
            results=json_safe(summary),
            inputs={},
        )
    return run_dir


RunFolderError = runs.RunFolderError


def load_run(
    run_dir: str | os.PathLike, config: dict[str, Any] | None = None
) -> tuple[ExperimentConfig, TaskModel]:
    """Read a run folder :func:`save_run` wrote: ``(config, model in eval mode)``.

    ``config``: its ``config.json`` when the caller has read it already
    (:func:`gatelab.tasks.registry.read_task`); None reads it.

    Raises:
        RunFolderError: no such folder, a missing or corrupt ``config.json`` or weights
            file, another gatelab major version, or a run of another task kind.
    """
    raw = runs.read_config(run_dir) if config is None else config
    path = Path(run_dir) / runs.CONFIG_FILE
    if raw["task"] != RUN_TASK or "experiment" not in raw:
        raise RunFolderError(
            f"run folder '{run_dir}' holds a {raw['task']!r} run, not a synthetic-task "
            f"experiment (expected task {RUN_TASK!r} with an 'experiment' section)"
        )
    try:
        experiment = ExperimentConfig.from_dict(raw["experiment"])
    except (TypeError, ValueError) as err:
        raise RunFolderError(f"run config '{path}' is corrupt ({err})") from err
    model = build_model(experiment)
    runs.load_state(model, run_dir)
    model.eval()
    return experiment, model


# --------------------------------------------------------------------------- explain input


@dataclass
class SyntheticInput:
    """What a synthetic-task run's explain report reads: its config, model and task, one
    sequence ``x (T, I)`` (cut to the longest the model saw in training), its target when
    it was sampled, where it came from, and the run's saved ``results``."""

    config: ExperimentConfig
    model: TaskModel
    task: Any
    x: Tensor
    target: Tensor | None
    source: str
    results: dict[str, Any]


def explain_input(
    run_dir: str | os.PathLike,
    config: dict[str, Any],
    *,
    text: str | None = None,
    data: str | os.PathLike | None = None,
    seed: int | None = None,
    warn: Callable[[str], None] | None = None,
) -> SyntheticInput:
    """The input of a synthetic-task run's explain report: ``--text``, ``--data`` or,
    with neither, a sequence of the task sampled with ``seed`` (with its target). An input
    longer than the longest sequence the model saw in training is cut to that length
    with a warning (the gates past it would show extrapolation, not what was learned)."""
    seed = 0 if seed is None else seed
    experiment, model = load_run(run_dir, config)
    task = resolve_task(experiment.task)
    target = None
    if text is None and data is None:
        sample = task.sample(1, experiment.T, seed)
        x = sample.x[0, : int(sample.lengths[0])]
        target = sample.y[0]
        source = f"a {task.name} sequence sampled with seed {seed}"
    else:
        x = read_sequence(task, text=text, data=Path(data) if data is not None else None)
        source = "the given text" if text is not None else f"'{data}'"
    if x.shape[0] == 0:
        raise DataError("the input is empty; expected at least one step")
    limit = int(task.sample(1, experiment.T, 0).x.shape[1])  # the longest training sequence
    if x.shape[0] > limit:
        message = (
            f"the input has {x.shape[0]} steps, longer than the {limit} the model saw in "
            f"training; explaining its first {limit} steps"
        )
        log.warning(message)
        if warn is not None:
            warn(message)
        x = x[:limit]
    results = config.get("results")
    return SyntheticInput(
        experiment, model, task, x, target, source, results if isinstance(results, dict) else {}
    )
