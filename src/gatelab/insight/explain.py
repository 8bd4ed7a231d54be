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

import csv
import io
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence

from gatelab.errors import GatelabError
from gatelab.insight.analysis import gradient_flow
from gatelab.insight.report import report_data, write_report
from gatelab.tasks import synthetic as ex
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
EXPLAINED_KINDS = ("text-classifier", "series-classifier", "forecaster")


class ExplainError(GatelabError, ValueError):
    """The run folder or the input cannot be explained (the message says why)."""


def max_length(config: ex.ExperimentConfig) -> int:
    """The longest sequence a synthetic-task model saw in training."""
    return ex.max_steps(config)


# --------------------------------------------------------------------------- input


def parse_sequence(config: ex.ExperimentConfig, *, text: str | None, data: Path | None) -> Tensor:
    """``--text`` or ``--data`` -> one sequence ``(T, input_size)`` for a synthetic task.

    ``--data``: a CSV (or whitespace-separated) file with one row per step and
    ``input_size`` numeric columns (adding: ``value, marker``); a header row is skipped.
    ``--text``: symbols, one per character or separated by spaces: temporal order
    ``E a b c d X Y B``; copy ``1..8``, ``_`` blank, ``:`` delimiter; adding
    ``value,marker`` pairs separated by spaces or semicolons.
    """
    task = ex.resolve_task(config.task)
    if data is not None:
        try:
            raw = Path(data).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ExplainError(f"cannot read --data file '{data}': {err}") from err
        rows = _numeric_rows(raw, str(data), task.input_size)
    else:
        if text is None:
            raise ExplainError("no input: give --text or --data")
        if not text.strip():
            raise ExplainError("the text is empty; expected at least one step")
        if task.name == "adding":
            pairs = [p for p in text.replace(";", " ").split() if p]
            rows = _numeric_rows("\n".join(pairs), "--text", task.input_size)
        else:
            return _symbols(task, text)
    if not rows:
        raise ExplainError(f"--data file '{data}' has no rows; expected one row per step")
    return torch.tensor(rows, dtype=torch.float32)


def _numeric_rows(raw: str, where: str, width: int) -> list[list[float]]:
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
            raise ExplainError(
                f"{where}: row {k + 1} is {','.join(cells)!r}; expected {width} numbers"
            ) from None
        if len(values) != width:
            raise ExplainError(
                f"{where}: row {k + 1} has {len(values)} values; expected {width} per step"
            )
        rows.append(values)
    return rows


def _symbols(task, text: str) -> Tensor:
    from gatelab.data import synthetic

    if task.name == "temporal-order":
        alphabet = list(synthetic.TEMPORAL_ORDER_SYMBOLS)
    elif task.chance is not None:  # a formal language: parity 0 1, cycle navigation 0 + -
        alphabet = list(task.symbols)
    else:  # copy
        alphabet = ["_", *(str(s) for s in range(1, task.n_symbols + 1)), ":"]
    tokens = text.split() if " " in text.strip() else list(text.strip())
    bad = [t for t in tokens if t not in alphabet]
    if bad:
        raise ExplainError(
            f"--text has symbol(s) {', '.join(map(repr, bad[:5]))} that the {task.name} task "
            f"does not know; expected some of {' '.join(alphabet)}"
        )
    ids = torch.tensor([alphabet.index(t) for t in tokens])
    return torch.nn.functional.one_hot(ids, task.input_size).float()  # (T, I)


def _marks(task_name: str, x: Tensor) -> list[int]:
    if task_name == "adding":
        return [int(t) for t in torch.nonzero(x[:, 1] > 0.5).flatten()]
    if task_name == "temporal-order":
        from gatelab.data import synthetic

        ix = synthetic.TEMPORAL_ORDER_SYMBOLS.index("X")
        return [int(t) for t in torch.nonzero(x[:, ix:].sum(-1) > 0).flatten()]
    ids = x.argmax(-1)
    return [int(t) for t in torch.nonzero(ids > 0).flatten()]


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
    seed: int = 0,
    gradient: bool = False,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The report data of a run folder's model on one input.

    Args:
        run_dir: a run folder: of :func:`gatelab.tasks.synthetic.save_run` (a synthetic task),
            or of an estimator (``text-classifier``, ``series-classifier``,
            ``forecaster``; see :func:`_explain_estimator`).
        text, data: the input (see :func:`parse_sequence`); neither: a sequence sampled
            from the task with ``seed``, with its marked steps (synthetic tasks only).
        gradient: add the gradient flow (this model, and an LSTM, GRU and RNN at init).
        warn: called with a one-line message when the input is truncated.
    Raises:
        ExplainError / RunFolderError (ValueErrors) with a one-line message.
    """
    try:
        kind = runs.read_config(run_dir)["task"]
        if kind != ex.RUN_TASK:
            return _explain_estimator(run_dir, text=text, data=data, gradient=gradient, warn=warn)
        config, model = ex.load_run(run_dir)
    except runs.RunFolderError as err:
        raise ExplainError(f"cannot explain '{run_dir}': {err}") from err
    task = ex.resolve_task(config.task)
    limit = max_length(config)
    target = None
    if text is None and data is None:
        sample = task.sample(1, config.T, seed)
        x = sample.x[0, : int(sample.lengths[0])]
        target = sample.y[0]
        source = f"a {task.name} sequence sampled with seed {seed}"
    else:
        x = parse_sequence(config, text=text, data=Path(data) if data is not None else None)
        source = "the given text" if text is not None else f"'{data}'"
    if x.shape[0] == 0:
        raise ExplainError("the input is empty; expected at least one step")
    if x.shape[0] > limit:
        message = (
            f"the input has {x.shape[0]} steps, longer than the {limit} the model saw in "
            f"training; explaining its first {limit} steps"
        )
        log.warning(message)
        if warn is not None:
            warn(message)
        x = x[:limit]
    with torch.no_grad():
        pred = model(x[None], torch.tensor([x.shape[0]]))[0]
    prediction = _describe_prediction(task, pred, target)
    batch = task.sample(SATURATION_SEQUENCES, config.T, ex.TEST_SEED)
    packed = pack_padded_sequence(batch.x, batch.lengths, batch_first=True, enforce_sorted=False)
    results = _results_rows(run_dir, config)
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
    marks = _marks(task.name, x)
    notes = [f"Saturation is measured over {SATURATION_SEQUENCES} held-out sequences."]
    unit, rows = None, "units"
    if task.name == "adding" and config.model == "lstm" and len(marks) == 2:
        unit, memory = _memory_unit(model, x, marks)
        notes, rows = memory + notes, "gates"
    return report_data(
        model.rnn,
        x,
        labels=task.input_labels(x),
        title=f"{kind} on {task.name}: gates on {source}",
        subtitle=(
            f"hidden size {config.hidden_size}, trained {config.steps} steps max on "
            f"{task.name} (T={config.T}). {prediction}"
        ),
        marks=marks,
        saturation_input=packed,
        gradient_flow=flow,
        results=results,
        notes=notes,
        default_unit=unit,
        default_rows=rows,
    )


def _describe_prediction(task, pred: Tensor, target: Tensor | None) -> str:
    if task.name == "adding":
        s = f"Output for this input: {float(pred[0]):.4f}"
        if target is not None:
            err = abs(float(pred[0]) - float(target[0]))
            verdict = "solved" if err < 0.04 else "not solved"
            s += f" (target {float(target[0]):.4f}, |error| {err:.4f}: {verdict})"
        return s + "."
    if task.name == "temporal-order":
        from gatelab.data import synthetic

        names = synthetic.temporal_order(1, seed=0)[3]
        k = int(pred.argmax())
        return f"Predicted class: {names[k]} (p = {float(pred.softmax(-1)[k]):.3f})."
    if task.chance is not None:  # a formal language: one class at the last step
        k = int(pred.argmax())
        s = f"Predicted class: {k} (p = {float(pred.softmax(-1)[k]):.3f})"
        return s + (f", target {int(target)}." if target is not None else ".")
    copied = pred[-task.copy_length :].argmax(-1).tolist()
    return f"Copied symbols: {' '.join(str(c) for c in copied)}."


def _results_rows(run_dir, config) -> list[dict[str, Any]]:
    import json

    try:
        raw = json.loads((Path(run_dir) / runs.CONFIG_FILE).read_text(encoding="utf-8"))
        r = raw.get("results", {})
    except (OSError, ValueError):
        return []
    metric = ex.resolve_task(config.task).metric
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


def _explain_estimator(
    run_dir, *, text: str | None, data, gradient: bool, warn: Callable[[str], None] | None
) -> dict[str, Any]:
    """The report data of an estimator's run folder (:mod:`gatelab.estimators`).

    ``text-classifier``: ``--text``, tokenised as in training and cut to the estimator's
    ``max_len`` (with a warning). ``series-classifier``: ``--data``, a numeric CSV with a
    row per step and a column per channel, normalised as in training. ``forecaster``:
    ``--data``, one column; the model sees its last ``history`` values (a warning says
    so when the file is longer). An ensemble shows its first member.
    """
    from gatelab import estimators

    est = estimators.load(run_dir)
    if est.task not in EXPLAINED_KINDS:
        raise ExplainError(
            f"run folder '{run_dir}' holds a {est.task!r} run; explain traces "
            f"{', '.join(EXPLAINED_KINDS)} and synthetic-task runs"
        )
    net = est.model_
    members = getattr(net, "members", None)
    notes = []
    if members is not None:
        notes.append(f"An ensemble of {len(members)} models: the report shows the first.")
        net = members[0]
    kind = est.task
    forecast = None
    if kind == "text-classifier":
        if data is not None or text is None:
            raise ExplainError(f"a {kind} run is explained on --text, not --data")
        if not text.strip():
            raise ExplainError("the text is empty; expected at least one word")
        tokens = est.tokenizer_(text)
        if not tokens:
            raise ExplainError(f"the text {text[:40]!r} has no tokens the tokenizer keeps")
        if est.max_len and len(tokens) > est.max_len:
            _say(
                warn,
                f"the text has {len(tokens)} tokens, more than the {est.max_len} the model saw "
                f"in training (max_len); explaining its first {est.max_len}",
            )
            tokens = tokens[: est.max_len]
        ids = torch.tensor([est.vocab_.encode(tokens)])  # (1, T)
        x = ids
        labels = tokens
    else:
        if text is not None or data is None:
            raise ExplainError(f"a {kind} run is explained on --data FILE, not --text")
        width = getattr(est, "n_channels_", 1) if kind == "series-classifier" else 1
        raw = Path(data).read_text(encoding="utf-8") if Path(data).is_file() else None
        if raw is None:
            raise ExplainError(f"cannot read --data file '{data}': no such file")
        series = torch.tensor(_numeric_rows(raw, str(data), width), dtype=torch.float64)
        if series.shape[0] == 0:
            raise ExplainError(f"--data file '{data}' has no rows; expected one row per step")
        if kind == "forecaster":
            history = est.history_steps_
            if series.shape[0] < history:
                raise ExplainError(
                    f"--data has {series.shape[0]} steps; the forecaster needs its history of "
                    f"{history}"
                )
            if series.shape[0] > history:
                _say(
                    warn,
                    f"the series has {series.shape[0]} steps; the forecaster reads its last "
                    f"history={history}, so the report shows those",
                )
            series = series[-history:]
            window = series[:, 0].numpy()[None, :]  # (1, history)
            x = est._windows_data(window, None).inputs
            forecast = est.predict(window).reshape(-1)  # linear part + LSTM term
        else:
            x = est._inputs([series.numpy()]).inputs  # (1, T, C), normalised as in training
        labels = [",".join(f"{v:.3g}" for v in row) for row in series.tolist()]
    with torch.no_grad():
        e = net.lstm_input(x)[0]  # (T, E): what the LSTM reads
        out = net(x)[0]
    subtitle = _estimator_prediction(est, kind, out, forecast)
    flow = None
    if gradient:
        flow = _estimator_gradient(net, e, kind)
    lstm = net.lstm
    variant = getattr(est, "variant", "standard")
    return report_data(
        lstm,
        e,
        labels=labels,
        title=f"{kind}: the LSTM's gates on this input",
        subtitle=(
            f"LSTM ({variant}), hidden size {lstm.hidden_size}, {lstm.num_layers} layer(s)"
            f"{', bidirectional' if lstm.bidirectional else ''}. {subtitle}"
        ),
        gradient_flow=flow,
        notes=[*notes, "Saturation is measured over the steps of this input."],
    )


def _say(warn: Callable[[str], None] | None, message: str) -> None:
    log.warning(message)
    if warn is not None:
        warn(message)


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
