"""Ablations: variants x seeds on one synthetic task on the same budget, and their statistics.

:func:`ablate` trains every variant with every seed
(:func:`gatelab.tasks.synthetic.run_experiment`);
:func:`ablation_table` gives the mean, standard deviation and Welch's t-test of each
variant against a baseline over seeds, in the manner of Greff et al. 2017 ("LSTM: A
Search Space Odyssey"); :func:`ablation_markdown` writes it as Markdown.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from gatelab.nn.equations import PRESETS
from gatelab.tasks.synthetic import (
    OTHER_MODELS,
    ExperimentConfig,
    Progress,
    resolve_task,
    run_experiment,
)

__all__ = [
    "AblationResult",
    "AblationRow",
    "ablate",
    "ablation_markdown",
    "ablation_table",
    "welch_t_test",
]


# --------------------------------------------------------------------------- statistics


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Welch's unequal-variance t-test of ``a`` against ``b``: ``(t, two-sided p)``.

    ``scipy.stats.ttest_ind(a, b, equal_var=False)``; ``(nan, nan)`` where it is undefined
    (fewer than 2 values in a group, or both groups constant).
    """
    try:
        from scipy import stats
    except ImportError as err:  # scipy is a dev extra today
        raise ImportError(
            "Welch's t-test needs scipy: pip install scipy (or gatelab[dev])"
        ) from err
    a, b = [float(v) for v in a], [float(v) for v in b]
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on zero variance; we return nan
        result = stats.ttest_ind(a, b, equal_var=False)
    return float(result.statistic), float(result.pvalue)


@dataclass
class AblationRow:
    """One variant's line of an ablation table."""

    variant: str
    values: list[float]
    mean: float
    std: float
    t: float = math.nan
    p: float = math.nan
    extra: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        def num(v: float) -> float | None:
            return None if math.isnan(v) else v

        return {
            "variant": self.variant,
            "values": self.values,
            "mean": self.mean,
            "std": num(self.std),
            "t": num(self.t),
            "p": num(self.p),
            **self.extra,
        }


def ablation_table(
    results: Mapping[str, Sequence[float]], baseline: str = "standard"
) -> list[AblationRow]:
    """Mean, sample standard deviation and Welch's t-test against ``baseline`` per variant.

    Args:
        results: ``{variant: [metric of each seed]}``.
        baseline: the variant the others are tested against (no test when absent).
    """
    rows = []
    base = results.get(baseline)
    for variant, values in results.items():
        values = [float(v) for v in values]
        if not values:
            raise ValueError(f"variant {variant!r} has no results")
        t = torch.tensor(values, dtype=torch.float64)
        std = float(t.std()) if len(values) > 1 else math.nan
        row = AblationRow(variant, values, float(t.mean()), std)
        if base is not None and variant != baseline:
            row.t, row.p = welch_t_test(values, base)
        rows.append(row)
    return rows


def ablation_markdown(rows: Sequence[AblationRow], metric: str = "metric") -> str:
    """The table as Markdown: variant, mean, std, seeds, Welch t and p against the
    baseline, and seconds per run when every row has ``extra["seconds"]``."""

    def fmt(v: float, spec: str) -> str:
        return "–" if math.isnan(v) else format(v, spec)

    seconds = all("seconds" in r.extra for r in rows)
    lines = [
        f"| variant | {metric} mean | std | n | t vs standard | p (Welch) |"
        + (" s/run |" if seconds else ""),
        "|---|---:|---:|---:|---:|---:|" + ("---:|" if seconds else ""),
    ]
    for r in rows:
        lines.append(
            f"| {r.variant} | {r.mean:.3f} | {fmt(r.std, '.3f')} | {len(r.values)} | "
            f"{fmt(r.t, '.2f')} | {fmt(r.p, '.3g')} |"
            + (f" {r.extra['seconds']:.1f} |" if seconds else "")
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- runs


@dataclass
class AblationResult:
    """An ablation: one :class:`ExperimentResult` summary per variant and seed.

    ``table`` holds the rows of :func:`ablation_table` (test metric per
    seed, mean, std, Welch's t-test against ``standard``).
    """

    task: str
    metric: str
    budget: dict[str, Any]
    runs: dict[str, list[dict[str, Any]]]
    table: list[AblationRow]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "metric": self.metric,
            "budget": self.budget,
            "seconds": round(self.seconds, 1),
            "table": [r.to_dict() for r in self.table],
            "runs": self.runs,
        }


def ablate(
    task: str,
    variants: Sequence[str],
    seeds: int | Sequence[int] = 3,
    *,
    callback: Callable[[str, int, Progress], None] | None = None,
    **config: Any,
) -> AblationResult:
    """Train every LSTM variant with every seed on the same task and budget.

    Args:
        task: a task name (:data:`gatelab.tasks.synthetic.TASKS`).
        variants: preset names, and ``"gru"``, ``"rnn"`` for those layers as baselines;
            ``standard`` is the baseline of the t-tests when present.
        seeds: a count ``n`` (seeds ``0 .. n-1``) or the seeds themselves.
        callback: ``callback(variant, seed, progress)`` after every step.
        config: :class:`gatelab.tasks.synthetic.ExperimentConfig` fields shared by all
            runs (the budget: ``steps``, ``seconds``, ``hidden_size``, ``T``...);
            ``target`` defaults to None here, so that every run spends the same budget.
    Returns:
        An :class:`AblationResult`.
    """
    t = resolve_task(task)
    variants = list(variants)
    unknown = [v for v in variants if v not in PRESETS and v not in OTHER_MODELS]
    if unknown or not variants:
        raise ValueError(
            f"unknown LSTM variant(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"expected some of {', '.join((*PRESETS, *OTHER_MODELS))}"
        )
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise ValueError(f"seeds={seeds!r}; expected at least one seed")
    config.setdefault("target", None)
    base = ExperimentConfig(task=t.name, model="lstm", **config)
    start = time.perf_counter()
    runs: dict[str, list[dict[str, Any]]] = {}
    for variant in variants:
        runs[variant] = []
        for seed in seed_list:
            cb = None if callback is None else (lambda p, v=variant, s=seed: callback(v, s, p))
            kind = {"model": variant, "variant": "standard"} if variant in OTHER_MODELS else {}
            result = run_experiment(base, seed=seed, callback=cb, **{"variant": variant, **kind})
            summary = result.summary()
            summary.pop("config")
            summary.pop("history")
            summary["seed"] = seed
            runs[variant].append(summary)
    table = ablation_table({v: [r[t.metric] for r in rs] for v, rs in runs.items()})
    for row in table:
        row.extra["seconds"] = round(float(np.mean([r["seconds"] for r in runs[row.variant]])), 1)
        if t.chance is not None:  # length generalisation: scaled test, and train lengths
            row.extra["scaled_accuracy"] = float(t.scaled(row.mean))
            row.extra["valid"] = float(np.mean([r["valid"] for r in runs[row.variant]]))
    budget = {
        k: getattr(base, k)
        for k in ("steps", "seconds", "batch_size", "hidden_size", "T", "lr", "init")
    }
    if base.init == "uniform":
        budget["forget_bias"] = base.forget_bias
    return AblationResult(t.name, t.metric, budget, runs, table, time.perf_counter() - start)
