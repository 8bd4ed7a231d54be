"""``gatelab demo``, ``gatelab explain``, ``gatelab ablate``: see the gates.

Bad input ends with one line ``error: ...`` on stderr and exit code 2 (1 when training
itself fails), never a traceback. Progress goes to stderr; ``--json`` prints only JSON.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from gatelab._config import pick_fields
from gatelab.cli import app, train_app
from gatelab.cli.common import (
    CommandError,
    Threads,
    check_positive,
    clean_errors,
    console,
    set_threads,
    warn,
)
from gatelab.train.runs import atomic_write_text

DEMO_T = 100


class _Progress:
    """A rich progress bar on stderr over a known number of steps (or nothing, quiet)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self._bar = None

    def __enter__(self):
        if not self.quiet:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[stats]}"),
                console=console(stderr=True),
                transient=False,
            )
            self._bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def runs(self, count: int, steps: int) -> Callable[[str, int, Any], None]:
        """One bar over ``count`` runs of ``steps`` each, for
        :func:`gatelab.insight.ablation.ablate`'s callback."""
        if self._bar is None:
            return lambda variant, seed, progress: None
        bar = self._bar
        tid = bar.add_task("ablation", total=count * steps, stats="")
        done = {"runs": 0, "offset": 0, "key": None}

        def callback(variant: str, seed: int, p) -> None:
            if done["key"] != (variant, seed):
                if done["key"] is not None:
                    done["runs"] += 1
                done["key"], done["offset"] = (variant, seed), done["runs"] * steps
            stats = f"run {done['runs'] + 1}/{count}: {variant} seed {seed}, loss {p.loss:.4f}"
            bar.update(tid, completed=done["offset"] + p.step, stats=stats)

        return callback

    def task(self, description: str, total: int) -> Callable[[Any], None]:
        """A callback for :func:`gatelab.tasks.synthetic.run_experiment` driving one bar; the
        bar stops (its clock too) at the run's last step."""
        if self._bar is None:
            return lambda progress: None
        bar = self._bar
        tid = bar.add_task(description, total=total, stats="")
        last = {"metric": None}

        def callback(p) -> None:
            if p.metric is not None:
                last["metric"] = p.metric
            metric = last["metric"]
            stats = f"loss {p.loss:.4f}" + ("" if metric is None else f"  held-out {metric:.3f}")
            stop = (
                p.step == p.steps
                or (
                    p.metric is not None
                    and p.config.target is not None
                    and p.metric >= p.config.target
                )
                or (p.config.seconds is not None and p.elapsed >= p.config.seconds)
            )
            bar.update(tid, completed=p.step, stats=stats, total=p.step if stop else total)
            if stop:
                bar.stop_task(tid)

        return callback


# ----------------------------------------------------------------- demo


@app.command("demo")
@clean_errors
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the run folders and the report.")] = Path(
        "runs/demo"
    ),
    as_json: Annotated[
        bool, typer.Option("--json", help="Print only the results as JSON.")
    ] = False,
    steps: Annotated[int, typer.Option(help="Step budget of each model.")] = 1000,
    seconds: Annotated[
        float | None, typer.Option(help="Wall-clock budget of each model (seconds).")
    ] = None,
    hidden_size: Annotated[int, typer.Option("--hidden-size", help="Units per model.")] = 32,
    T: Annotated[int, typer.Option("--T", help="Minimal sequence length.")] = DEMO_T,
    seed: Annotated[int, typer.Option(help="Seed of weights and training data.")] = 0,
    threads: Threads = None,
    test_size: Annotated[int, typer.Option("--test-size", help="Test sequences.")] = 1000,
) -> None:
    """Train a vanilla RNN and an LSTM on the adding problem (T=100) on the same budget,
    print the fraction of test sequences each solves (|error| < 0.04), and write the LSTM's
    gate report (the input gate opens at the two marked steps, the forget gate holds)."""
    from gatelab.insight.explain import demo_report
    from gatelab.tasks import synthetic as ex

    check_positive("--seconds", seconds)
    n_threads = set_threads(threads)
    start = time.perf_counter()
    load_before = _load()
    common = {
        "task": "adding",
        "T": T,
        "steps": steps,
        "seconds": seconds,
        "hidden_size": hidden_size,
        "seed": seed,
        "test_size": test_size,
        **DEMO_TRAINING,
    }
    results = {}
    with _Progress(quiet=as_json) as progress:
        for name in ("lstm", "rnn"):
            config = ex.ExperimentConfig(model=name, **common)
            label = "LSTM" if name == "lstm" else "RNN "
            results[name] = ex.run_experiment(config, callback=progress.task(label, steps))
    out.mkdir(parents=True, exist_ok=True)
    for name, result in results.items():
        ex.save_run(result, out / name)
    report = demo_report(results, out / "report.html")
    total = time.perf_counter() - start
    summary = {
        name: {
            "solved": r.metric,
            "steps": r.steps,
            "seconds": round(r.seconds, 1),
            "stopped": r.stopped,
            "run": str(out / name),
        }
        for name, r in results.items()
    }
    summary.update(
        {
            "report": str(report),
            "task": "adding",
            "T": T,
            "test_sequences": test_size,
            "tolerance": 0.04,
            "budget": {"steps": steps, "seconds": seconds},
            "wall_seconds": round(total, 1),
            "threads": n_threads,
            "load": [load_before, _load()],
        }
    )
    atomic_write_text(out / "results.json", json.dumps(summary, indent=2) + "\n")
    if as_json:
        typer.echo(json.dumps(summary))
        return
    _print_demo(results, summary, out)


def _print_demo(results: dict[str, Any], summary: dict[str, Any], out: Path) -> None:
    """The demo's results table, report and run folders, for a person."""
    from rich.table import Table

    T, test_size = summary["T"], summary["test_sequences"]
    table = Table(title=f"Adding problem, T={T}: {test_size} test sequences, |error| < 0.04")
    for col in ("model", "solved", "steps", "train seconds", "stopped"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, label in (("rnn", "vanilla RNN"), ("lstm", "LSTM")):
        r = results[name]
        table.add_row(label, f"{r.metric:.1%}", str(r.steps), f"{r.seconds:.0f}", r.stopped)
    shown = console()
    shown.print(table)
    shown.print(f"report: {summary['report']}")
    total, load_before = summary["wall_seconds"], summary["load"][0]
    shown.print(
        f"run folders: {out / 'lstm'}, {out / 'rnn'}; total {total:.0f} s on "
        f"{summary['threads']} thread(s), load {load_before:.1f} -> {_load():.1f}"
    )


# Tuned on this machine (2 shared cores). With torch.nn's uniform init and a forget bias
# of 1 (or 3, or 5) the LSTM sat on the trivial solution (predict 0.5, ~15% solved) for
# 2000+ steps at lr 3e-3..1e-2; chrono init (Tallec & Ollivier 2018) solved 99% of the
# held-out sequences after 400-500 steps with seeds 0-3 (12-20 s each). The RNN gets the
# same optimiser and budget; it has no gates for chrono init to set.
DEMO_TRAINING: dict[str, Any] = {
    "batch_size": 64,
    "lr": 1e-2,
    "min_lr": 0.05,
    "clip_norm": 1.0,
    "init": "chrono",
    "eval_every": 100,
    "valid_size": 500,
    "target": 0.99,
}


def _load() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return math.nan


# ----------------------------------------------------------------- ablate


@app.command("ablate")
@clean_errors
def ablate(
    task: Annotated[
        str, typer.Option(help="adding, temporal-order, copy, parity or cycle-navigation.")
    ] = "adding",
    variants: Annotated[
        str,
        typer.Option(
            help="Comma-separated LSTM presets (slstm included), and gru, rnn as baselines; "
            "standard is the baseline."
        ),
    ] = "standard,nig,nfg,nog,noaf,tanh_gates",
    seeds: Annotated[int, typer.Option(help="Seeds per variant (0..N-1).")] = 3,
    steps: Annotated[int, typer.Option(help="Step budget of every run.")] = 500,
    seconds: Annotated[
        float | None, typer.Option(help="Wall-clock budget of every run (seconds).")
    ] = None,
    hidden_size: Annotated[int, typer.Option("--hidden-size")] = 32,
    T: Annotated[int | None, typer.Option("--T", help="Sequence length (task default).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 32,
    lr: Annotated[float, typer.Option(help="Adam's peak learning rate.")] = 1e-2,
    init: Annotated[str, typer.Option(help="chrono, or uniform (+ forget bias 1).")] = "chrono",
    backend: Annotated[str, typer.Option(help="LSTM backend.")] = "auto",
    out: Annotated[Path, typer.Option(help="Folder for the Markdown and JSON tables.")] = Path(
        "runs/ablation"
    ),
    threads: Threads = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only the JSON.")] = False,
) -> None:
    """Train LSTM variants x seeds on one task on the same budget; print mean, std and
    Welch's t-test against standard (Greff et al. 2017), and write them as Markdown and
    JSON."""
    import warnings

    from gatelab.insight.ablation import ablate as run_ablation
    from gatelab.tasks import synthetic as ex

    t = ex.resolve_task(task)
    names = _variant_names(variants)
    if seeds < 1:
        raise CommandError(f"--seeds={seeds}; expected an int >= 1")
    check_positive("--seconds", seconds)
    n_threads = set_threads(threads)
    config = {
        "steps": steps,
        "seconds": seconds,
        "hidden_size": hidden_size,
        "T": T,
        "batch_size": batch_size,
        "lr": lr,
        "backend": backend,
        "init": init,
        "eval_every": max(1, steps // 5),
    }
    ex.ExperimentConfig(task=t.name, **config)  # check the budget before the first run
    with _Progress(quiet=as_json) as progress, warnings.catch_warnings():
        # The fused backend may be missing: variants then run on the reference loop, which
        # the library says once per reason; the table's seconds column shows the cost.
        warnings.filterwarnings("ignore", "gatelab.LSTM", RuntimeWarning)
        callback = progress.runs(len(names) * seeds, steps)

        result = run_ablation(t.name, names, seeds, callback=callback, **config)
    stem = f"ablation-{t.name}"
    command = (
        f"gatelab ablate --task {t.name} --variants {','.join(names)} --seeds {seeds} "
        f"--steps {steps}" + (f" --seconds {seconds:g}" if seconds else "") + f" --hidden-size "
        f"{hidden_size}" + (f" --T {T}" if T else "") + f" --batch-size {batch_size} --lr {lr:g} "
        f"--init {init} --out {out}"
    )
    _write_markdown(result, t, T, seeds, n_threads, command, out / f"{stem}.md")
    payload = result.to_dict()
    payload["threads"] = n_threads
    atomic_write_text(out / f"{stem}.json", json.dumps(payload, indent=2) + "\n")
    if as_json:
        typer.echo(json.dumps(payload))
        return
    _print_ablation(result, f"{t.name}: {result.metric}, {seeds} seed(s), {steps} steps each")
    console().print(f"wrote {out / (stem + '.md')} and {out / (stem + '.json')}")


def _write_markdown(result, t, T, seeds: int, n_threads: int, command: str, path: Path) -> None:
    """The ablation as Markdown: a header (task, metric, budget, time), the table (and
    the length generalisation of a formal language) and the command that made it."""
    from gatelab.insight.ablation import ablation_markdown

    md = ablation_markdown(result.table, metric=result.metric)
    if t.chance is not None:
        md += "\n" + _generalisation_markdown(result, t, T or t.default_T)
    header = (
        f"Ablation on `{t.name}` ({result.metric} on {config_test_size()} test sequences), "
        f"{seeds} seed(s) per variant, budget {json.dumps(result.budget)}; "
        f"{result.seconds:.0f} s on {n_threads} thread(s).\n\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, header + md + f"\n`{command}`\n")


def _variant_names(variants: str) -> list[str]:
    """``--variants``: LSTM presets and the other layers, each once."""
    from gatelab.nn.equations import PRESETS
    from gatelab.tasks.synthetic import OTHER_MODELS

    names = [v.strip() for v in variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in PRESETS and v not in OTHER_MODELS]
    if unknown or not names:
        raise CommandError(
            f"unknown variant(s) {', '.join(map(repr, unknown)) or '(none given)'}; valid "
            f"variants: {', '.join((*PRESETS, *OTHER_MODELS))}"
        )
    if len(set(names)) != len(names):
        raise CommandError(f"--variants lists a variant twice: {variants!r}")
    return names


def _print_ablation(result, title: str) -> None:
    """The ablation table (mean, std, n, Welch's t and p, seconds per run), for a person."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("variant", "mean", "std", "n", "t vs standard", "p (Welch)", "s/run"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for r in result.table:
        table.add_row(
            r.variant,
            f"{r.mean:.3f}",
            _num(r.std, ".3f"),
            str(len(r.values)),
            _num(r.t, ".2f"),
            _num(r.p, ".3g"),
            f"{r.extra.get('seconds', math.nan):.1f}",
        )
    console().print(table)


def _generalisation_markdown(result, task, T: int) -> str:
    """Length generalisation: test accuracy, the xLSTM paper's scaled accuracy (0 chance,
    1 perfect) and the accuracy at training lengths, per variant (means over seeds)."""
    lo, hi = T, max(T, task.test_max_length)
    lines = [
        f"| variant | accuracy, lengths {lo}-{hi} | scaled accuracy | per seed (scaled) | "
        f"accuracy, lengths 1-{T} |",
        "|---|---:|---:|---|---:|",
    ]
    for r in result.table:
        seeds = ", ".join(f"{task.scaled(v):.2f}" for v in r.values)
        lines.append(
            f"| {r.variant} | {r.mean:.3f} | {r.extra['scaled_accuracy']:.3f} | {seeds} | "
            f"{r.extra['valid']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def config_test_size() -> int:
    from gatelab.tasks.synthetic import ExperimentConfig

    return ExperimentConfig().test_size


def _num(v: float, spec: str) -> str:
    return "–" if v is None or math.isnan(v) else format(v, spec)


# ----------------------------------------------------------------- explain


@app.command("explain")
@clean_errors
def explain(
    run_dir: Annotated[Path, typer.Argument(help="A run folder.")],
    text: Annotated[str | None, typer.Option(help="The text to explain.")] = None,
    data: Annotated[
        Path | None, typer.Option(help="A file with one sequence (CSV: a row per step).")
    ] = None,
    out: Annotated[Path, typer.Option(help="The HTML report to write.")] = Path("report.html"),
    png: Annotated[Path | None, typer.Option(help="Also write the figures as PNG here.")] = None,
    gradient_flow: Annotated[
        bool, typer.Option("--gradient-flow", help="Add the gradient flow through time.")
    ] = False,
    seed: Annotated[
        int | None,
        typer.Option(help="Seed of a sampled sequence (synthetic runs without --text/--data)."),
    ] = None,
) -> None:
    """Write one self-contained HTML report of a trained model's gates on one input."""
    from gatelab.insight.explain import explain_run

    if text is not None and data is not None:
        raise CommandError("give either --text or --data, not both")
    if seed is not None and (text is not None or data is not None):
        raise CommandError("--seed picks a sampled sequence; it does not apply with --text/--data")
    result = explain_run(
        run_dir, text=text, data=data, seed=seed, gradient=gradient_flow, warn=warn
    )
    from gatelab.insight.report import write_pngs, write_report

    path = write_report(result, out)
    typer.echo(f"report: {path}")
    if png is not None:
        for p in write_pngs(result, png):
            typer.echo(f"figure: {p}")
    typer.echo("")
    typer.echo(saturation_markdown(result), nl=False)
    if gradient_flow:
        typer.echo("")
        typer.echo(gradient_markdown(result["gradient_flow"]), nl=False)


def saturation_markdown(data: dict[str, Any]) -> str:
    """The report's saturation as a Markdown table: per layer and gate, the mean over
    units of the left- and right-saturated fractions and of the gate's value."""
    sat = data.get("saturation") or []
    if not sat:
        return f"Gate saturation: {data.get('saturation_note', 'none')}\n"
    low, high = sat[0]["low"], sat[0]["high"]
    lines = [
        f"Gate saturation ({data.get('saturation_note', '')}; mean over units):",
        "",
        f"| layer | gate | left-saturated (< {low:g}) | right-saturated (> {high:g}) | mean |",
        "|---|---|---:|---:|---:|",
    ]
    for s in sat:
        n = len(s["left"])
        layer = f"{s['layer']}" + (" (reverse)" if s["direction"] else "")
        lines.append(
            f"| {layer} | {s['gate'].replace('_', ' ')} | {sum(s['left']) / n:.3f} | "
            f"{sum(s['right']) / n:.3f} | {sum(s['mean']) / n:.3f} |"
        )
    return "\n".join(lines) + "\n"


def gradient_markdown(g: dict[str, Any]) -> str:
    """``‖∂loss/∂h_t‖`` of each model at five steps, as a Markdown table."""
    T = len(g["models"][0]["hidden"])
    steps = sorted({0, T // 4, T // 2, (3 * T) // 4, T - 1})
    lines = [
        f"Gradient flow, ‖∂loss/∂h_t‖ ({g.get('note', '')}):",
        "",
        "| model | " + " | ".join(f"t={t}" for t in steps) + " |",
        "|---|" + "---:|" * len(steps),
    ]
    for m in g["models"]:
        cells = " | ".join(f"{m['hidden'][t]:.2e}" for t in steps)
        lines.append(f"| {m['name']} | {cells} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------- train synthetic


@train_app.command("synthetic")
@clean_errors
def train_synthetic(
    out: Annotated[Path, typer.Option(help="The run folder to write.")],
    task: Annotated[str, typer.Option(help="adding, temporal-order or copy.")] = "adding",
    model: Annotated[str, typer.Option(help="lstm, gru or rnn.")] = "lstm",
    variant: Annotated[str, typer.Option(help="LSTM preset.")] = "standard",
    init: Annotated[str, typer.Option(help="uniform (+ forget bias) or chrono.")] = "uniform",
    forget_bias: Annotated[
        float | None,
        typer.Option(
            "--forget-bias",
            help="Forget-gate bias at init (default 1.0); an LSTM with a forget gate and "
            "uniform init only.",
        ),
    ] = None,
    T: Annotated[int | None, typer.Option("--T", help="Sequence length (task default).")] = None,
    steps: Annotated[int, typer.Option(help="Step budget.")] = 1000,
    seconds: Annotated[float | None, typer.Option(help="Wall-clock budget (seconds).")] = None,
    hidden_size: Annotated[int, typer.Option("--hidden-size")] = 32,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 64,
    lr: Annotated[float, typer.Option(help="Adam's peak learning rate.")] = 1e-2,
    target: Annotated[
        float | None, typer.Option(help="Stop once the held-out metric reaches this.")
    ] = None,
    seed: Annotated[int, typer.Option()] = 0,
    threads: Threads = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Train one model on a synthetic long-time-lag task into a run folder (for explain)."""
    from gatelab.tasks import synthetic as ex

    check_positive("--seconds", seconds)
    options = {**locals(), "forget_bias": 1.0 if forget_bias is None else forget_bias}
    config = ex.ExperimentConfig(**pick_fields(ex.ExperimentConfig, options))
    if config.init == "chrono" and config.model != "lstm":
        raise CommandError(f"--init chrono sets LSTM gate biases; a {model} has no gates")
    if forget_bias is not None and (config.init == "chrono" or config.spec_forget_bias is None):
        why = "init chrono sets it" if config.init == "chrono" else f"{model} {variant} has none"
        raise CommandError(f"--forget-bias {forget_bias:g} has no effect: {why}; drop the option")
    n_threads = set_threads(threads)
    with _Progress(quiet=quiet) as progress:
        result = ex.run_experiment(config, callback=progress.task(f"{model} {variant}", steps))
    ex.save_run(result, out)
    typer.echo(
        f"{config.model} ({config.variant}) on {config.task}: test {result.metric_name} "
        f"{result.metric:.3f} after {result.steps} steps, {result.seconds:.0f} s on "
        f"{n_threads} thread(s); run folder {out}"
    )
