"""From a run folder (or the demo's models) and one input to the report's data.

:func:`explain_run` reads only a run folder, turns ``--text`` or ``--data`` into the
model's input, and returns :func:`gatelab.insight.report.report_data`'s dict; :func:`demo_report`
writes the demo's report; :func:`gradient_flow_comparison` measures the gradient flow of
several models on the same batch of a task.

Input policy: an empty input is refused; an input longer than the longest sequence the
model saw in training is truncated to that length with a warning (the gates past it would
show extrapolation, not what was learned).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence

from gatelab.errors import DataError, GatelabError
from gatelab.insight.analysis import gradient_flow
from gatelab.insight.report import report_data, write_report
from gatelab.tasks import synthetic as ex
from gatelab.tasks.estimator_kinds import EstimatorInput
from gatelab.tasks.problems import read_sequence
from gatelab.tasks.registry import TASK_KINDS, read_task
from gatelab.train import runs

__all__ = [
    "ExplainError",
    "demo_report",
    "explain_run",
    "gradient_flow_comparison",
    "max_length",
    "parse_sequence",
]

log = logging.getLogger(__name__)

SATURATION_SEQUENCES = 200


class ExplainError(GatelabError, ValueError):
    """The run folder or the input cannot be explained (the message says why)."""


def max_length(config: ex.ExperimentConfig) -> int:
    """The longest sequence a synthetic-task model saw in training."""
    return ex.max_steps(config)


# --------------------------------------------------------------------------- input


def parse_sequence(config: ex.ExperimentConfig, *, text: str | None, data: Path | None) -> Tensor:
    """``--text`` or ``--data`` -> one sequence ``(T, input_size)`` for a synthetic task
    (:func:`gatelab.tasks.problems.read_sequence`); bad input raises :class:`ExplainError`."""
    try:
        return read_sequence(ex.resolve_task(config.task), text=text, data=data)
    except DataError as err:
        raise ExplainError(str(err)) from err


# --------------------------------------------------------------------------- gradient flow


def gradient_flow_comparison(
    task: str,
    *,
    T: int | None = None,
    hidden_size: int = 64,
    seed: int = 0,
    n: int = 32,
    models: Mapping[str, ex.TaskModel] | None = None,
    fresh: tuple[str, ...] = ("lstm", "gru", "rnn"),
    forget_bias: float = 1.0,
) -> dict[str, Any]:
    """``‖∂loss/∂h_t‖`` against t for several models on the same ``n`` sequences.

    Args:
        task, T: the task and length.
        models: trained models by display name (e.g. ``{"LSTM (trained)": model}``).
        fresh: untrained models (at their init, seeded) to add: ``"lstm"`` (uniform init,
            ``forget_bias``), ``"lstm-chrono"`` (chrono init), ``"gru"``, ``"rnn"``.
    Returns:
        ``{"models": [{"name", "hidden": [T], "input": [T], "loss"}], "note", "task",
        "T"}``, JSON-able, for :func:`gatelab.insight.report.report_data`.
    """
    t = ex.resolve_task(task)
    T = T or t.default_T
    batch = t.sample(n, T, ex.TEST_SEED + 1)
    entries = dict(models or {})
    names = {
        "lstm": f"LSTM (init, forget bias {forget_bias:g})",
        "lstm-chrono": "LSTM (chrono init)",
        "gru": "GRU (init)",
        "rnn": "RNN (init)",
    }
    for kind in fresh:
        if kind not in names:
            raise ValueError(f"fresh model {kind!r}; expected some of {', '.join(names)}")
        torch.manual_seed(seed)
        cfg = ex.ExperimentConfig(
            task=t.name,
            model=kind.split("-")[0],
            init="chrono" if kind == "lstm-chrono" else "uniform",
            T=T,
            hidden_size=hidden_size,
            forget_bias=forget_bias,
        )
        entries[names[kind]] = ex.build_model(cfg)
    out = []
    for name, model in entries.items():

        def loss_fn(output, last, model=model):
            if model.per_step:
                return t.loss(model.head(output.transpose(0, 1)), batch.y)
            return t.loss(model.head(last), batch.y)

        lengths = None if t.per_step else batch.lengths
        g = gradient_flow(model.rnn, batch.x, loss_fn, lengths=lengths)
        out.append(
            {
                "name": name,
                "hidden": g.hidden[-1].tolist(),
                "input": g.input.tolist(),
                "loss": g.loss,
            }
        )
    note = (
        f"{t.name}, T={T}: mean over {n} sequences of the gradient of the task's loss at the "
        "end with respect to h_t, for trained and untrained (init) models."
    )
    return {"models": out, "note": note, "task": t.name, "T": T}


# --------------------------------------------------------------------------- explain


def explain_run(
    run_dir: str | os.PathLike,
    *,
    text: str | None = None,
    data: str | os.PathLike | None = None,
    seed: int | None = None,
    gradient: bool = False,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The report data of a run folder's model on one input.

    Reads the run's ``config.json`` once, finds its kind in the one registry
    (:mod:`gatelab.tasks.registry`) and asks the kind for the report's input.

    Args:
        run_dir: a run folder of a kind the registry explains: a synthetic task
            (:func:`gatelab.tasks.synthetic.save_run`) or an estimator
            (``text-classifier``, ``series-classifier``, ``forecaster``; see
            :func:`gatelab.tasks.estimator_kinds.explain_input`).
        text, data: the input (see :func:`parse_sequence`); neither: a sequence sampled
            from the task with ``seed`` (default 0), with its marked steps (synthetic tasks
            only: another kind refuses a seed).
        gradient: add the gradient flow (this model, and an LSTM, GRU and RNN at init).
        warn: called with a one-line message when the input is truncated.
    Raises:
        ExplainError (a ValueError) with a one-line message.
    """
    try:
        kind, config = read_task(run_dir)
        if kind.explain is None:
            able = [k.name for k in TASK_KINDS.values() if k.explain is not None]
            raise ExplainError(
                f"run folder '{run_dir}' holds a {kind.name!r} run; explain traces "
                f"{', '.join(able)} runs"
            )
        inp = kind.explain(run_dir, config, text=text, data=data, seed=seed, warn=warn)
    except runs.RunFolderError as err:
        raise ExplainError(f"cannot explain '{run_dir}': {err}") from err
    except DataError as err:
        raise ExplainError(str(err)) from err
    if isinstance(inp, ex.SyntheticInput):
        return _synthetic_report(inp, gradient)
    return _estimator_report(inp, gradient)


def _synthetic_report(inp: ex.SyntheticInput, gradient: bool) -> dict[str, Any]:
    """The report of a synthetic-task run on its input: the gates, the prediction,
    saturation over held-out sequences, the saved results and the gradient flow."""
    config, model, task, x = inp.config, inp.model, inp.task, inp.x
    with torch.no_grad():
        pred = model(x[None], torch.tensor([x.shape[0]]))[0]
    batch = task.sample(SATURATION_SEQUENCES, config.T, ex.TEST_SEED)
    packed = pack_padded_sequence(batch.x, batch.lengths, batch_first=True, enforce_sorted=False)
    flow = None
    if gradient:
        flow = gradient_flow_comparison(
            task.name,
            T=config.T,
            hidden_size=config.hidden_size,
            seed=config.seed,
            models={f"{config.model.upper()} (this run)": model},
            fresh=("lstm", "lstm-chrono", "gru", "rnn"),
        )
    kind = config.model.upper() + (f" ({config.variant})" if config.model == "lstm" else "")
    marks = task.marks(x)
    notes = [f"Saturation is measured over {SATURATION_SEQUENCES} held-out sequences."]
    unit, rows = None, "units"
    if task.name == "adding" and config.model == "lstm" and len(marks) == 2:
        unit, memory = _memory_unit(model, x, marks)
        notes, rows = memory + notes, "gates"
    return report_data(
        model.rnn,
        x,
        labels=task.input_labels(x),
        title=f"{kind} on {task.name}: gates on {inp.source}",
        subtitle=(
            f"hidden size {config.hidden_size}, trained {config.steps} steps max on "
            f"{task.name} (T={config.T}). {task.describe(pred, inp.target)}"
        ),
        marks=marks,
        saturation_input=packed,
        gradient_flow=flow,
        results=_results_rows(inp.results, config, task.metric),
        notes=notes,
        default_unit=unit,
        default_rows=rows,
    )


def _results_rows(r: dict[str, Any], config, metric: str) -> list[dict[str, Any]]:
    if metric not in r:
        return []
    return [
        {
            "model": config.model.upper(),
            f"test {metric}": r[metric],
            "steps": r.get("steps"),
            "seconds": r.get("seconds"),
        }
    ]


# --------------------------------------------------------------------------- demo


def demo_report(
    results: Mapping[str, ex.ExperimentResult], path: str | os.PathLike, *, seed: int = 7
) -> Path:
    """The demo's report: the LSTM's gates on one held-out adding sequence, with the
    results table, saturation over held-out sequences and the gradient flow of the trained
    LSTM and RNN and of fresh LSTM, GRU and RNN."""
    lstm = results["lstm"]
    config = lstm.config
    task = ex.resolve_task("adding")
    pool = task.sample(64, config.T, ex.TEST_SEED + seed)
    with torch.no_grad():
        pred = lstm.model(pool.x, pool.lengths)
    solved = (pred - pool.y).abs().squeeze(-1) < 0.04
    gap = (pool.positions[:, 1] - pool.positions[:, 0]).abs().float()
    k = int(torch.argmax(gap + 1000 * solved.float()))  # a solved one, markers far apart
    x = pool.x[k, : int(pool.lengths[k])]
    marks = sorted(int(p) for p in pool.positions[k])
    unit, notes = _memory_unit(lstm.model, x, marks)
    batch = task.sample(SATURATION_SEQUENCES, config.T, ex.TEST_SEED)
    packed = pack_padded_sequence(batch.x, batch.lengths, batch_first=True, enforce_sorted=False)
    flow = gradient_flow_comparison(
        "adding",
        T=config.T,
        hidden_size=config.hidden_size,
        seed=config.seed,
        models={f"{name.upper()} (trained)": r.model for name, r in results.items()},
        fresh=("lstm", "lstm-chrono", "gru", "rnn"),
        forget_bias=1.0,
    )
    rows = [
        {
            "model": "vanilla RNN" if name == "rnn" else "LSTM",
            "solved (|error| < 0.04)": r.metric,
            "test sequences": r.config.test_size,
            "steps": r.steps,
            "train seconds": round(r.seconds, 1),
        }
        for name, r in sorted(results.items(), key=lambda kv: kv[0] != "rnn")
    ]
    out = float(pred[k, 0])
    data = report_data(
        lstm.model.rnn,
        x,
        labels=task.input_labels(x),
        title=f"The adding problem, T={config.T}: what the LSTM's gates do",
        subtitle=(
            f"A held-out sequence of {x.shape[0]} steps; the two marked values (*) are at "
            f"steps {marks[0]} and {marks[1]}. Target {float(pool.y[k, 0]):.4f}, LSTM output "
            f"{out:.4f}."
        ),
        marks=marks,
        saturation_input=packed,
        gradient_flow=flow,
        results=rows,
        notes=[
            *notes,
            "Each column of the heatmap is one step: its label is the value and * marks the "
            "two values to add.",
            f"Saturation is measured over {SATURATION_SEQUENCES} held-out sequences.",
        ],
        default_unit=unit,
        default_rows="gates",
    )
    return write_report(data, path)


def _memory_unit(model: ex.TaskModel, x: Tensor, marks: list[int]) -> tuple[int, list[str]]:
    """The unit that best stores the marked values: its input gate open at the marks and
    shut elsewhere, its forget gate near 1 from the first mark to the end."""
    with torch.no_grad():
        _, _, trace = model.rnn(x[None], return_trace=True)
    i = trace.input_gate[0, 0]  # (T, H)
    f = trace.forget_gate[0, 0]
    T = x.shape[0]
    at = torch.zeros(T, dtype=torch.bool)
    at[marks] = True
    i_marks = i[at].min(0).values  # (H,)
    i_else = i[~at].mean(0)
    f_hold = f[marks[0] + 1 :].mean(0) if marks[0] + 1 < T else f.mean(0)
    score = i_marks - i_else + f_hold
    u = int(score.argmax())
    notes = [
        f"Unit {u}: its input gate is {float(i[marks[0], u]):.2f} and "
        f"{float(i[marks[1], u]):.2f} at the marked steps {marks[0]} and {marks[1]}, and "
        f"{float(i_else[u]):.2f} on average elsewhere; its forget gate averages "
        f"{float(f_hold[u]):.3f} (min {float(f[marks[0] + 1 :, u].min()):.3f}) from the "
        "first mark to the end, so the cell keeps what was written."
    ]
    return u, notes


# --------------------------------------------------------------------------- estimators


def _estimator_report(inp: EstimatorInput, gradient: bool) -> dict[str, Any]:
    """The report of an estimator run on its input (:class:`EstimatorInput`): the gates
    of its LSTM on what the LSTM reads, the prediction and the gradient flow."""
    est, net, kind = inp.estimator, inp.net, inp.estimator.task
    with torch.no_grad():
        e = net.lstm_input(inp.x)[0]  # (T, E): what the LSTM reads
        out = net(inp.x)[0]
    subtitle = _estimator_prediction(est, kind, out, inp.forecast)
    flow = _estimator_gradient(net, e, kind) if gradient else None
    lstm = net.lstm
    variant = getattr(est, "variant", "standard")
    return report_data(
        lstm,
        e,
        labels=inp.labels,
        title=f"{kind}: the LSTM's gates on this input",
        subtitle=(
            f"LSTM ({variant}), hidden size {lstm.hidden_size}, {lstm.num_layers} layer(s)"
            f"{', bidirectional' if lstm.bidirectional else ''}. {subtitle}"
        ),
        gradient_flow=flow,
        notes=[*inp.notes, "Saturation is measured over the steps of this input."],
    )


def _estimator_prediction(est, kind: str, out: Tensor, forecast=None) -> str:
    if kind == "forecaster":
        values = forecast
        return "Forecast: " + ", ".join(f"{v:.4g}" for v in values) + "."
    p = out.softmax(-1)
    k = int(p.argmax())
    return f"Predicted class: {est.classes_[k]} (p = {float(p[k]):.3f}, first model)."


def _estimator_gradient(net, e: Tensor, kind: str) -> dict[str, Any]:
    """Gradient of the predicted class's log-probability (or the first forecast value)
    with respect to each ``h_t``, through the model's own pooling and head."""
    lstm = net.lstm
    if lstm.bidirectional:
        raise ExplainError(
            "--gradient-flow measures unidirectional LSTMs; this model is bidirectional"
        )
    pooling = net.config.pooling

    def loss_fn(output, last):  # output (T, 1, P)
        pooled = {"last": last, "mean": output.mean(0), "max": output.amax(0)}[pooling]
        y = net.head(pooled)[0]
        if kind == "forecaster":
            return y[0]
        return y.log_softmax(-1).max()

    g = gradient_flow(lstm, e[None], loss_fn)
    what = "the first forecast value" if kind == "forecaster" else "log p(predicted class)"
    return {
        "models": [
            {"name": "this model", "hidden": g.hidden[-1].tolist(), "input": g.input.tolist()}
        ],
        "note": f"gradient of {what} with respect to h_t of the top layer, on this input.",
    }
