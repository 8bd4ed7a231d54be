"""``gatelab evaluate`` and ``gatelab predict``: use a trained run folder.

Both read only the run folder and dispatch on its task kind through the one registry,
:data:`gatelab.tasks.registry.TASK_KINDS`; a kind without ``evaluate`` / ``predict`` there
is refused, naming the kinds that have them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from gatelab.cli import app
from gatelab.cli.common import CommandError, clean_errors, console
from gatelab.cli.options import HELP, SOURCE_FILE, Fill, column_ref
from gatelab.tasks.registry import TASK_KINDS, TaskKind, read_task
from gatelab.train.runs import read_json


def _open(
    run_dir: Path, command: str, column: str | None, fill: str | None
) -> tuple[TaskKind, Any, dict[str, Any]]:
    """The run's kind (config.json read once), the fitted object ``command`` uses and
    the options it reads; an option it does not read for this kind is an error, not a
    no-op."""
    kind, _ = read_task(run_dir)
    if getattr(kind, command) is None:
        able = sorted(k.name for k in TASK_KINDS.values() if getattr(k, command) is not None)
        raise CommandError(
            f"run folder '{run_dir}' holds a {kind.name!r} run, which this gatelab cannot "
            f"{command}; it can {command} {', '.join(able)}"
        )
    reads = kind.evaluate_options if command == "evaluate" else kind.predict_options
    for name, value in {"column": column, "fill": fill}.items():
        if value is not None and name not in reads:
            what = f"--{', --'.join(reads)}" if reads else "neither --column nor --fill"
            raise CommandError(
                f"--{name} does not apply to a {kind.name} run: {command} reads {what} for "
                "it; drop the option"
            )
    path = run_dir / SOURCE_FILE
    source = read_json(path, "source file") if path.exists() else {}
    return kind, kind.load(run_dir), {"column": column_ref(column), "fill": fill, "source": source}


@app.command("evaluate")
@clean_errors
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help=HELP["evaluate_run"], show_default=False)],
    data: Annotated[Path, typer.Option("--data", help=HELP["evaluate_data"], show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help=HELP["evaluate_json"])] = False,
    column: Annotated[str | None, typer.Option("--column", help=HELP["evaluate_column"])] = None,
    fill: Fill = None,
) -> None:
    """Score a trained run on labelled data: accuracy and macro F1 for classifiers, RMSE
    and MAE of every forecast window for forecasters."""
    kind, fitted, options = _open(run_dir, "evaluate", column, fill)
    metrics = kind.evaluate(fitted, data, options)
    if as_json:
        typer.echo(json.dumps(metrics))
        return
    from rich.table import Table

    table = Table(title=f"{kind.name} {run_dir} on {data}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4f}")
    console().print(table)


@app.command("predict")
@clean_errors
def predict(
    run_dir: Annotated[Path, typer.Argument(help=HELP["predict_run"], show_default=False)],
    texts: Annotated[
        list[str] | None, typer.Argument(help=HELP["predict_texts"], show_default=False)
    ] = None,
    data: Annotated[Path | None, typer.Option("--data", help=HELP["predict_data"])] = None,
    as_json: Annotated[bool, typer.Option("--json", help=HELP["predict_json"])] = False,
    column: Annotated[str | None, typer.Option("--column", help=HELP["predict_column"])] = None,
    fill: Fill = None,
) -> None:
    """Predict with a trained run: labels and probabilities for classifiers, the next
    values for a forecaster."""
    kind, fitted, options = _open(run_dir, "predict", column, fill)
    rows = kind.predict(fitted, list(texts or []), data, options)
    note = kind.predict_note(rows) if kind.predict_note is not None else None
    if note:
        console(stderr=True).print(note)
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
        return
    from rich.table import Table

    table = Table(title=f"{kind.name} {run_dir}")
    columns = list(rows[0]) if rows else []
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row[c]) for c in columns))
    console().print(table)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v:.3f}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    return str(value)
