"""One self-contained HTML page that shows a recurrent layer's gates on one input.

:func:`report_data` runs a layer over one sequence and gathers everything the page
shows (a JSON-able dict); :func:`render_html` turns it into one HTML file that works
offline from ``file://`` (inline CSS, JS and SVG from ``gatelab/report/``; no CDN, no
library); :func:`write_pngs` draws the same figures as PNG files with matplotlib.

The page: the input's steps (tokens or series values) with each gate's activation as a
heatmap under them (rows = units of one gate, or the gates of one unit; choosable layer,
gate and unit; values on hover), the saturation scatter per gate, the cell's
keep-vs-write flow, the gradient flow through time when given, and the cell's equations.

Safety: every piece of text written into the HTML is escaped with :func:`html.escape`;
the data travel as JSON inside ``<script type="application/json">`` with ``<``, ``>`` and
``&`` written as ``\\u003c``, ``\\u003e``, ``\\u0026``, so no string (``</script>`` in a
user's text included) can end the script element; the page's script puts text into the
page only through ``textContent`` and ``setAttribute``; and a Content-Security-Policy
allows only the page's own script (by its SHA-256) to run.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from gatelab.insight.analysis import cell_flow, gate_saturation, saturation_thresholds, trace_of
from gatelab.nn.layers import GRU, LSTM, RNN
from gatelab.nn.trace import GateTrace, GRUTrace
from gatelab.train.runs import atomic_write_bytes, atomic_write_text

__all__ = ["SERIES", "json_for_html", "render_html", "report_data", "write_pngs", "write_report"]

log = logging.getLogger(__name__)

# Trace field -> (label, short label). The order is the heatmap's row order.
SERIES: dict[str, tuple[str, str]] = {
    "input_gate": ("input gate i_t", "i"),
    "forget_gate": ("forget gate f_t", "f"),
    "candidate": ("candidate g_t", "g"),
    "output_gate": ("output gate o_t", "o"),
    "cell": ("cell state c_t", "c"),
    "normalizer": ("normalizer n_t (sLSTM)", "n"),
    "stabilizer": ("stabilizer m_t (sLSTM)", "m"),
    "hidden": ("hidden state h_t", "h"),
    "reset_gate": ("reset gate r_t", "r"),
    "update_gate": ("update gate z_t", "z"),
}
SIGNIFICANT = 4  # significant digits of the values in the page's JSON: plenty for colour and hover


def json_for_html(obj: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">``.

    ``<``, ``>`` and ``&`` become ``\\u003c``, ``\\u003e`` and ``\\u0026`` (JSON escapes
    the parser turns back), so no value can close the element or open a comment. NaN
    and infinities are refused (they are not JSON): pass None instead.
    """
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _round(x: Any) -> Any:
    if isinstance(x, float):
        return None if not math.isfinite(x) else float(f"{x:.{SIGNIFICANT}g}")
    if isinstance(x, list):
        return [_round(v) for v in x]
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    return x


def _series_range(name: str, values: Tensor, model) -> list[float]:
    spec = getattr(model, "spec", None)
    if name in ("input_gate", "forget_gate", "output_gate", "reset_gate", "update_gate"):
        lo, _ = saturation_thresholds(spec)
        return [-1.0, 1.0] if lo < 0 else [0.0, 1.0]
    bounded = name == "candidate" and (spec is None or spec.candidate_activation == "tanh")
    bounded |= name == "hidden" and (spec is None or spec.output_activation == "tanh")
    if bounded:
        return [-1.0, 1.0]
    m = float(values.abs().max()) if values.numel() else 1.0
    m = m if math.isfinite(m) and m > 0 else 1.0
    return [-m, m]


def report_data(
    model: LSTM | GRU | RNN,
    input: Tensor,
    *,
    labels: Sequence[str],
    title: str = "gatelab report",
    subtitle: str = "",
    marks: Sequence[int] = (),
    saturation_input: Tensor | Any | None = None,
    gradient_flow: Mapping[str, Any] | None = None,
    results: Sequence[Mapping[str, Any]] | None = None,
    notes: Sequence[str] = (),
    default_series: str = "input_gate",
    default_unit: int | None = None,
    default_rows: str = "units",
) -> dict[str, Any]:
    """Everything the report shows, as a JSON-able dict.

    Args:
        model: a gatelab ``LSTM``, ``GRU`` or ``RNN`` layer.
        input: ONE sequence as the layer takes it: ``(T, I)`` (unbatched).
        labels: ``T`` strings, the steps' tokens or values as the reader should see them.
        title, subtitle: the page's heading (plain text; escaped).
        marks: steps to highlight (e.g. the adding problem's marked steps).
        saturation_input: a batch (tensor or PackedSequence, as the layer takes it) to
            measure saturation on; default: the one sequence.
        gradient_flow: ``{"models": [{"name", "hidden": [T]}], "note": str}`` or None.
        results: rows of a results table (dicts with the same keys; plain values).
        notes: lines of text under the results.
        default_series, default_unit, default_rows: what the heatmap shows first; the
            default unit is the one whose input gate (or first series) varies most over the
            sequence; rows ``"units"`` (of the default series) or ``"gates"`` (of the unit).

    Over 80 lines on purpose: it checks its arguments and then writes the report's whole
    JSON format in one pass, so that the format reads in one place.
    """
    if not isinstance(model, (LSTM, GRU, RNN)):
        raise TypeError(f"expected a gatelab LSTM, GRU or RNN, got {type(model).__name__}")
    if default_rows not in ("units", "gates"):
        raise ValueError(f"default_rows={default_rows!r}; expected 'units' or 'gates'")
    if not isinstance(input, Tensor) or input.dim() != 2:
        shape = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
        raise ValueError(f"input has shape {shape}; expected one sequence (T, input_size)")
    T = input.shape[0]
    if T == 0:
        raise ValueError("the input is empty (0 steps); expected at least one step")
    labels = [str(s) for s in labels]
    if len(labels) != T:
        raise ValueError(f"got {len(labels)} labels for {T} steps; expected one per step")
    marks = sorted({int(t) for t in marks if 0 <= int(t) < T})
    trace = trace_of(model, input)  # unbatched: fields (L*D, T, H), mask (T,)
    names = [n for n in SERIES if n in trace.names()]
    D = trace.num_directions
    hidden_size = model.hidden_size
    layers = []
    for k in range(trace.num_layers * D):
        layer, direction = divmod(k, D)
        values = {}
        for name in names:
            v = getattr(trace, name)[k]  # (T, H)
            values[name] = v.tolist()
        entry: dict[str, Any] = {
            "name": f"layer {layer}" + (" (reverse)" if direction else ""),
            "layer": layer,
            "direction": direction,
            "values": values,
            "flow": None,
        }
        if isinstance(trace, GateTrace):
            batched = _batched(trace)
            entry["flow"] = cell_flow(batched, layer=layer, direction=direction).to_dict(0)
        layers.append(entry)
    series = []
    for name in names:
        if name == "hidden" and getattr(model, "proj_size", 0):
            continue  # projected h has proj_size columns, not one per unit
        label, short = SERIES[name]
        series.append(
            {
                "key": name,
                "label": label,
                "short": short,
                "range": _series_range(name, getattr(trace, name), model),
            }
        )
    saturation, saturation_note = [], None
    if isinstance(trace, (GateTrace, GRUTrace)):
        sat_trace = trace if saturation_input is None else trace_of(model, saturation_input)
        low, high = saturation_thresholds(getattr(model, "spec", None))
        sat = gate_saturation(_batched(sat_trace), low=low, high=high, bins=20)
        saturation = [s.to_dict() for s in sat]
        if saturation_input is None:
            saturation_note = f"over the {T} steps of this input"
        else:
            saturation_note = f"over {int(sat_trace.mask.sum())} steps of a held-out batch"
    else:
        saturation_note = "A vanilla RNN has no gates, so nothing saturates."
    keys = [s["key"] for s in series]
    default_index = keys.index(default_series) if default_series in keys else 0
    if default_unit is None:
        v = getattr(trace, keys[default_index])[-1]  # (T, H), top layer
        default_unit = int(v.std(0).argmax()) if T > 1 else 0
    data = {
        "title": str(title),
        "tokens": labels,
        "marks": marks,
        "hidden_size": hidden_size,
        "series": series,
        "layers": layers,
        "saturation": saturation,
        "saturation_note": saturation_note,
        "gradient_flow": dict(gradient_flow) if gradient_flow else None,
        "default_series": default_index,
        "default_unit": default_unit,
        "default_rows": default_rows,
    }
    data = _round(data)
    # Plain-text parts, rendered server-side (escaped), not read by the script.
    data["subtitle"] = str(subtitle)
    data["equations"] = _equations(model)
    data["results"] = [dict(r) for r in results] if results else []
    data["notes"] = [str(n) for n in notes]
    return data


def _batched(trace):
    """An unbatched trace with a batch axis of 1 (time-major), for the analysis functions."""
    if trace.mask.dim() == 2:
        return trace
    fields = {k: v.unsqueeze(2) for k, v in trace.items()}  # (L*D, T, 1, H)
    return type(trace)(
        mask=trace.mask.unsqueeze(1),
        batch_first=False,
        num_directions=trace.num_directions,
        **fields,
    )


def _equations(model) -> str:
    if isinstance(model, LSTM):
        return model.spec.describe()
    if isinstance(model, GRU):
        return (
            "r_t = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)\n"
            "z_t = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)\n"
            "n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn))\n"
            "h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}"
        )
    act = "tanh" if getattr(model, "nonlinearity", "tanh") == "tanh" else "relu"
    return f"h_t = {act}(W_ih x_t + b_ih + W_hh h_{{t-1}} + b_hh)"


# --------------------------------------------------------------------------- HTML


def _asset(name: str) -> str:
    return (resources.files("gatelab.insight") / "assets" / name).read_text(encoding="utf-8")


def _summary_html(data: Mapping[str, Any]) -> str:
    e = html.escape
    parts = []
    rows = data.get("results") or []
    if rows:
        cols = list(rows[0].keys())
        head = "".join(f"<th>{e(str(c))}</th>" for c in cols)
        body = ""
        for r in rows:
            cells = "".join(f"<td>{e(_cell(r.get(c)))}</td>" for c in cols)
            body += f"<tr>{cells}</tr>"
        parts.append(
            f'<table class="results" id="results"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>"
        )
    notes = data.get("notes") or []
    if notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    if not parts:
        return ""
    return '<section id="summary"><h2>Results</h2>' + "".join(parts) + "</section>"


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else "–"
    return "–" if v is None else str(v)


def render_html(data: Mapping[str, Any]) -> str:
    """The report page for :func:`report_data`'s dict, as one HTML string."""
    from gatelab._version import __version__

    js = _asset("report.js")
    script_hash = base64.b64encode(hashlib.sha256(js.encode("utf-8")).digest()).decode()
    payload = {k: v for k, v in data.items() if k not in ("subtitle", "equations", "notes")}
    parts = {
        "title": html.escape(str(data.get("title", "gatelab report"))),
        "subtitle": html.escape(str(data.get("subtitle", ""))),
        "version": html.escape(__version__),
        "summary": _summary_html(data),
        "equations": html.escape(str(data.get("equations", ""))),
        "css": _asset("report.css"),
        "script_hash": f"'sha256-{script_hash}'",
        "data": json_for_html(payload),
        "js": js,
    }
    # One pass over the template: no part is ever scanned for placeholders again.
    return re.sub(r"@@(\w+)@@", lambda m: parts[m.group(1)], _asset("template.html"))


def write_report(data: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write :func:`render_html` of ``data`` to ``path`` (UTF-8, atomically); returns the
    path."""
    path = Path(path)
    atomic_write_text(path, render_html(data))
    log.info("wrote report %s", path)
    return path


# --------------------------------------------------------------------------- PNG


def write_pngs(data: Mapping[str, Any], out_dir: str | os.PathLike) -> list[Path]:
    """The report's figures as PNG files (matplotlib, Agg): ``gates.png`` (every gate of
    the default unit), ``units.png`` (every unit of the default gate), ``saturation.png``,
    ``flow.png`` and, when present, ``gradient_flow.png``. Top layer shown.

    Over 80 lines on purpose: five figures in a row that share the step axis and colour
    helpers defined inside; split, each would need them passed around."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("--png needs matplotlib: pip install matplotlib") from err
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    layer = data["layers"][_top_forward(data)]
    tokens, T = data["tokens"], len(data["tokens"])
    unit = int(data.get("default_unit", 0))
    series = data["series"]
    written = []
    tick = max(1, math.ceil(T / 40))

    def steps_axis(ax):
        ax.set_xticks(range(0, T, tick))
        ax.set_xticklabels([tokens[t] for t in range(0, T, tick)], rotation=90, fontsize=6)
        for t in data.get("marks", []):
            ax.axvline(t, color="#b2182b", lw=0.8, ls="--", alpha=0.6)

    def cmap_for(rng):
        return ("Blues", rng[0], rng[1]) if rng[0] >= 0 else ("RdBu", rng[0], rng[1])

    fig, axes = plt.subplots(len(series), 1, figsize=(min(16, 2 + T * 0.12), 0.9 * len(series) + 1))
    axes = list(axes) if len(series) > 1 else [axes]
    for ax, s in zip(axes, series):
        row = np.asarray(layer["values"][s["key"]], dtype=float)[:, unit][None, :]  # (1, T)
        cmap, lo, hi = cmap_for(s["range"])
        im = ax.imshow(row, aspect="auto", cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01)
        ax.set_yticks([0])
        ax.set_yticklabels([s["short"]])
        ax.set_xticks([])
        for t in data.get("marks", []):
            ax.axvline(t, color="#b2182b", lw=0.8, ls="--", alpha=0.6)
    steps_axis(axes[-1])
    fig.suptitle(f"{layer['name']}, unit {unit}: every gate per step", fontsize=9)
    written.append(_save(fig, out_dir / "gates.png"))

    s = series[int(data.get("default_series", 0))]
    values = np.asarray(layer["values"][s["key"]], dtype=float).T  # (H, T)
    fig, ax = plt.subplots(figsize=(min(16, 2 + T * 0.12), min(10, 1 + values.shape[0] * 0.12)))
    cmap, lo, hi = cmap_for(s["range"])
    im = ax.imshow(values, aspect="auto", cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.03)
    ax.set_ylabel("unit")
    steps_axis(ax)
    ax.set_title(f"{layer['name']}: {s['label']} per unit and step", fontsize=9)
    written.append(_save(fig, out_dir / "units.png"))

    sat = [
        x
        for x in data.get("saturation", [])
        if x["layer"] == layer["layer"] and x["direction"] == layer["direction"]
    ]
    if sat:
        fig, ax = plt.subplots(figsize=(4.2, 4))
        for x in sat:
            ax.scatter(x["left"], x["right"], s=10, alpha=0.7, label=x["gate"].replace("_", " "))
        ax.plot([0, 1], [1, 0], color="#bbb", ls="--", lw=0.8)
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"left-saturated fraction (< {sat[0]['low']:g})")
        ax.set_ylabel(f"right-saturated fraction (> {sat[0]['high']:g})")
        ax.legend(fontsize=7)
        ax.set_title(f"{layer['name']}: gate saturation per unit", fontsize=9)
        written.append(_save(fig, out_dir / "saturation.png"))

    flow = layer.get("flow")
    if flow:
        fig, ax = plt.subplots(figsize=(min(12, 3 + T * 0.06), 2.6))
        ax.plot(flow["keep"], label="kept: mean |f ⊙ c_{t-1}|", color="#1b9e77")
        ax.plot(flow["write"], label="written: mean |i ⊙ g|", color="#d95f02")
        for t in data.get("marks", []):
            ax.axvline(t, color="#b2182b", lw=0.8, ls="--", alpha=0.6)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        ax.set_title(f"{layer['name']}: what the cell keeps and writes", fontsize=9)
        written.append(_save(fig, out_dir / "flow.png"))

    g = data.get("gradient_flow")
    if g and g.get("models"):
        written.append(gradient_flow_png(g, out_dir / "gradient_flow.png"))
    return written


def gradient_flow_png(g: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """``‖∂loss/∂h_t‖`` against t for each model of ``g`` (log scale), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    for m in g["models"]:
        values = [v if v and v > 0 else float("nan") for v in m["hidden"]]
        ax.semilogy(values, label=m["name"])
    ax.set_xlabel("step t")
    ax.set_ylabel("‖∂loss/∂h_t‖")
    ax.legend(fontsize=7)
    ax.set_title(g.get("title", "gradient flow through time"), fontsize=9)
    return _save(fig, Path(path))


def _top_forward(data: Mapping[str, Any]) -> int:
    layers = data["layers"]
    top = max(entry["layer"] for entry in layers)
    return next(k for k, entry in enumerate(layers) if entry["layer"] == top)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
