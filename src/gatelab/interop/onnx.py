"""Export to ONNX: recurrent layers, LSTM -> Dense models, the char LM and run folders.

The graph is built node by node with ``onnx.helper`` (no tracing), so each layer becomes
exactly the node promised:

- an LSTM whose cell the ONNX ``LSTM`` operator expresses (``standard``, ``peephole``,
  ``cifg``, ``niaf``, ``noaf``, ``tanh_gates`` and their combinations, without
  projection) becomes ONE native ``LSTM`` node per layer, both directions in it; ``GRU``
  and ``RNN`` likewise become ``GRU`` (``linear_before_reset=1``, torch's form, or 0 for
  ``reset_after=False``) and
  ``RNN`` nodes;
- every other cell (layer norm, a missing gate, ``proj_size``) becomes, per layer and
  direction, one ``MatMul`` for the input projection of all steps and a ``Scan`` over
  the step equations of :func:`gatelab.nn.equations.lstm_step`;
- the sLSTM cell (``variant="slstm"`` or any ``CellSpec(normalizer=True)``: exponential
  or sigmoid gates in log space, the stabilizer ``m``, ``num_heads`` block-diagonal
  recurrence) becomes the same ``MatMul`` and a ``Scan`` over
  :func:`gatelab.nn.equations.slstm_step` carrying the state ``(h, c, n, m)``; the graph takes
  ``h0, c0, n0, m0`` and returns ``output, h_n, c_n, n_n, m_n``, as the layer does (a
  :class:`gatelab.CharLM` with the sLSTM cell likewise).

Padded batches take ``lengths (B,)``: the native nodes read them as ``sequence_lens``,
the Scan form as a step mask (padded steps carry the state and output zeros) and the
reverse direction reads each sequence reversed within its own length
(``ReverseSequence``). The graph computes in float32 and exports inference behaviour
(dropout off). See docs/interop.md.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gatelab.interop._onnx_graph import Builder, lower_recurrent, recurrent_kind
from gatelab.interop._onnx_models import (
    _char_lm_graph,
    _char_lm_ports,
    _check_lengths,
    _forecaster_graph,
    _is_ensemble,
    _model_outputs,
    _model_ports,
    _Port,
    _series_normalize,
    _state_names,
)
from gatelab.models.charlm import CharLM
from gatelab.models.heads import _SequenceModel
from gatelab.tasks.registry import TASK_KINDS, read_task
from gatelab.train.runs import RunFolderError, atomic_write_bytes

__all__ = ["DEFAULT_OPSET", "OPSETS", "export_run", "to_onnx"]

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
OPSETS = range(17, 22)  # LayerNormalization needs 17; tested on 17 and 20
IO_NAMES = (  # graph inputs and outputs; no inner value takes these names
    *("input", "h0", "c0", "n0", "m0", "lengths", "ids", "series", "window"),
    *("output", "h_n", "c_n", "n_n", "m_n", "logits", "probabilities", "forecast"),
)


def _require_onnx():
    try:
        import onnx
    except ImportError as err:  # pragma: no cover - onnx is in the dev extra
        raise ImportError(
            "ONNX export needs the onnx package: pip install gatelab[interop]"
        ) from err
    return onnx


# --------------------------------------------------------------------------- graph I/O


def _check_example_inputs(example_inputs) -> tuple[Tensor, ...]:
    if isinstance(example_inputs, Tensor):
        raise TypeError(
            "example_inputs must be a tuple of tensors, as for torch.onnx.export; got a "
            "single Tensor: wrap it as (x,)"
        )
    if not isinstance(example_inputs, (tuple, list)) or not example_inputs:
        raise TypeError(
            f"example_inputs must be a non-empty tuple of tensors, got "
            f"{type(example_inputs).__name__}: {example_inputs!r:.80}"
        )
    for k, t in enumerate(example_inputs):
        if not isinstance(t, Tensor):
            raise TypeError(
                f"example_inputs[{k}] is a {type(t).__name__}; expected a Tensor (pass an "
                "LSTM state (h0, c0) as two tensors, not a tuple)"
            )
        if t.is_floating_point() and t.dtype != torch.float32:
            raise TypeError(
                f"example_inputs[{k}] has dtype {t.dtype}; expected torch.float32 (the "
                "exported graph computes in float32)"
            )
        if not t.is_floating_point() and t.dtype != torch.int64:
            raise TypeError(
                f"example_inputs[{k}] has dtype {t.dtype}; expected float32 values or "
                "int64 ids / lengths"
            )
    return tuple(example_inputs)


# --------------------------------------------------------------------------- pieces


def _refuse_unexpressed_cells(module: nn.Module) -> None:
    """An LSTM whose input or forget gate has its own activation (without the sLSTM's
    normalizer) is neither the ONNX LSTM operator nor the Scan form: refused, never
    exported as something else."""
    from gatelab.nn.layers import LSTM

    for name, sub in module.named_modules():
        if not isinstance(sub, LSTM) or sub.spec.normalizer:
            continue
        spec = sub.spec
        for gate in ("input", "forget"):
            act = getattr(spec, f"{gate}_gate_activation", None)
            if act is not None and act != spec.gate_activation:
                where = f" (at {name!r})" if name else ""
                raise TypeError(
                    f"to_onnx does not export an LSTM cell{where} whose {gate} gate has its "
                    f"own activation ({act!r}, the other gates {spec.gate_activation!r}): the "
                    "ONNX LSTM operator and gatelab's Scan form use one gate activation"
                )


def _recurrent_ports(module: nn.Module, inputs: tuple[Tensor, ...]):
    """Ports of a recurrent layer: ``input``, [``h0`` [, ``c0``]], [``lengths``]."""
    state_names = _state_names(module)
    n_states = len(state_names)
    floats = [t for t in inputs if t.is_floating_point()]
    ints = [t for t in inputs if not t.is_floating_point()]
    what = type(module).__name__
    if not inputs[0].is_floating_point() or inputs[0].dim() != 3:
        raise ValueError(
            f"{what}: example_inputs[0] must be a batched float32 input of 3 dimensions "
            f"({'(B, T, I)' if module.batch_first else '(T, B, I)'}), got "
            f"{inputs[0].dtype} {tuple(inputs[0].shape)}"
        )
    if (
        len(floats) not in (1, 1 + n_states)
        or len(ints) > 1
        or (ints and inputs[-1] is not ints[0])
    ):
        forms = f"(input,), (input, {', '.join(state_names)})"
        raise ValueError(
            f"{what}: example_inputs must be {forms}, each optionally followed by int64 "
            f"lengths (B,); got {len(inputs)} tensors of dtypes "
            f"{[str(t.dtype) for t in inputs]}"
        )
    bt = (0, 1) if module.batch_first else (1, 0)
    B, T = inputs[0].shape[bt[0]], inputs[0].shape[bt[1]]
    ports = [_Port("input", inputs[0], {bt[0]: "batch", bt[1]: "time"})]
    for name, t in zip(state_names, floats[1:]):
        ports.append(_Port(name, t, {1: "batch"}))
    if ints:
        _check_lengths(ints[0], B, T, what)
        ports.append(_Port("lengths", ints[0], {0: "batch"}))
    return ports


def _recurrent_graph(b: Builder, module: nn.Module, ports) -> list[str]:
    names = {p.name for p in ports}
    x = "input"
    if module.batch_first:
        x = b.op("Transpose", [x], perm=[1, 0, 2])  # (B, T, I) -> (T, B, I)
    lengths = "lengths" if "lengths" in names else None
    state0 = tuple(n for n in _state_names(module) if n in names) or None
    y, states = lower_recurrent(b, module, x, lengths, state0)
    if module.batch_first:
        y = b.op("Transpose", [y], perm=[1, 0, 2])
    return [y, *states]


# --------------------------------------------------------------------------- public API


def _check_opset(opset) -> int:
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in OPSETS:
        raise ValueError(
            f"opset={opset!r}; expected an int in [{OPSETS.start}, {OPSETS.stop - 1}] "
            "(LayerNormalization, used by the layernorm variant, needs 17)"
        )
    return opset


def _finish(
    onnx,
    b: Builder,
    in_ports,
    outputs: list[str],
    out_ports,
    dynamic_axes,
    path,
    metadata: dict[str, str],
) -> Path:
    for port, name in zip(out_ports, outputs):
        b.op_to("Identity", [name], [port.name])
    valid = [p.name for p in in_ports] + [p.name for p in out_ports]
    if dynamic_axes is not None:
        if not isinstance(dynamic_axes, dict):
            raise TypeError(
                f"dynamic_axes must be a dict {{name: axes}} or None, got "
                f"{type(dynamic_axes).__name__}"
            )
        unknown = sorted(set(dynamic_axes) - set(valid))
        if unknown:
            raise ValueError(f"dynamic_axes names {unknown}; the graph's names are {valid}")

    def axes(port):
        if dynamic_axes is None:
            return None
        given = dynamic_axes.get(port.name, {})
        if isinstance(given, dict):
            return {int(k): str(v) for k, v in given.items()}
        return {int(k): f"{port.name}_dim{k}" for k in given}

    graph = onnx.helper.make_graph(
        b.nodes,
        "gatelab",
        [p.info(onnx, axes(p)) for p in in_ports],
        [p.info(onnx, axes(p)) for p in out_ports],
        b.initializers,
    )
    model = onnx.helper.make_model(
        graph,
        opset_imports=[onnx.helper.make_opsetid("", b.opset)],
        producer_name="gatelab",
        producer_version=_version(),
    )
    model.ir_version = min(model.ir_version, 10)  # what onnxruntime >= 1.18 reads
    onnx.helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (str or os.PathLike), got {path!r}")
    written = atomic_write_bytes(os.fspath(path), model.SerializeToString())
    kinds = sorted({n.op_type for n in b.nodes if n.op_type in ("LSTM", "GRU", "RNN", "Scan")})
    logger.info("wrote %s: %d nodes, recurrent %s", written, len(b.nodes), kinds)
    return written


def _version() -> str:
    from gatelab._version import __version__

    return __version__


def _example_outputs(module: nn.Module, inputs: tuple[Tensor, ...], kind: str):
    """Run ``module`` on the example once (eval mode, no grad): the output shapes."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            if kind == "recurrent":
                from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

                x, rest = inputs[0], list(inputs[1:])
                lengths = rest.pop() if rest and not rest[-1].is_floating_point() else None
                hx = None if not rest else (rest[0] if len(rest) == 1 else tuple(rest))
                if lengths is not None:
                    packed = pack_padded_sequence(
                        x, lengths.cpu(), batch_first=module.batch_first, enforce_sorted=False
                    )
                    out, state = module(packed, hx)
                    T = x.shape[1 if module.batch_first else 0]
                    out, _ = pad_packed_sequence(
                        out, batch_first=module.batch_first, total_length=T
                    )
                else:
                    out, state = module(x, hx)
                return [out, *(state if isinstance(state, tuple) else (state,))]
            if kind == "charlm":
                state = tuple(inputs[1:]) if len(inputs) > 1 else None
                logits, state_n = module(inputs[0], state)
                return [logits, *state_n]
            return [module(*inputs)]
    finally:
        module.train(was_training)


def to_onnx(
    module: nn.Module,
    path: str | os.PathLike,
    example_inputs: Sequence[Tensor],
    *,
    dynamic_axes: dict[str, Any] | None = None,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Write ``module`` as an ONNX model to ``path`` (inference behaviour, float32).

    Args:
        module: a recurrent layer (:class:`gatelab.LSTM` of any variant, ``gatelab.GRU``,
            ``gatelab.RNN``, or ``torch.nn.LSTM / GRU / RNN``), an LSTM -> Dense model
            (:class:`gatelab.models.heads.SequenceClassifier`, ``SequenceRegressor``,
            ``ForecastNet``, or an estimator's ensemble ``est.model_``), or a
            :class:`gatelab.CharLM`.
        path: the ``.onnx`` file to write (atomically).
        example_inputs: a tuple of tensors as for ``torch.onnx.export``; they fix the
            graph's input names, dtypes and the static axes:

            - recurrent layer: ``(input,)``, ``(input, h0)`` (GRU, RNN),
              ``(input, h0, c0)`` (LSTM) or ``(input, h0, c0, n0, m0)`` (sLSTM, whose
              outputs add ``n_n``, ``m_n``); input ``(T, B, I)`` (``(B, T, I)`` with
              ``batch_first``); each form may end with int64 ``lengths (B,)`` for a padded
              batch (graph inputs ``input``, ``h0``, ``c0``, ``lengths``; outputs
              ``output`` zero at padded steps as ``pad_packed_sequence`` gives it, ``h_n``,
              ``c_n`` after each sequence's last real step);
            - model: ``(x,)`` or ``(x, lengths)`` as its ``forward`` (inputs ``input``,
              ``lengths``; output ``output``, the logits or values ``forward`` returns);
            - CharLM: ``(ids,)`` or ``(ids, h0, c0)`` (outputs ``logits (B, T, V)``,
              ``h_n``, ``c_n``); with the sLSTM cell ``(ids, h0, c0, n0, m0)`` and
              ``n_n``, ``m_n`` added.
        dynamic_axes: None makes the batch and time axes of every input and output dynamic;
            a dict ``{name: [axis, ...] or {axis: "label"}}`` as for ``torch.onnx.export``
            makes exactly those dynamic and every other axis fixed to the example's size.
        opset: the ONNX opset, 17 to 21.

    Returns:
        The path written.

    Raises:
        TypeError: an unsupported module, or
            example_inputs that are not a tuple of tensors of the expected dtypes.
            ValueError: shapes that do not fit the module, a bad opset or dynamic_axes.
            ImportError: the onnx package is missing.
    """
    onnx = _require_onnx()
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    inputs = _check_example_inputs(example_inputs)
    _refuse_unexpressed_cells(module)
    b = Builder(onnx, _check_opset(opset), reserved=IO_NAMES)
    in_ports, outputs, out_names, examples, dyn = _module_graph(b, module, inputs)
    out_ports = [_Port(n, t, d) for n, t, d in zip(out_names, examples, dyn)]
    return _finish(onnx, b, in_ports, outputs, out_ports, dynamic_axes, path, _meta(module))


def _module_graph(b: Builder, module: nn.Module, inputs: tuple[Tensor, ...]):
    """The nodes of ``module`` on ``b`` -> (input ports, output values, output names,
    example outputs, dynamic axes per output)."""
    if recurrent_kind(module) is not None:
        in_ports = _recurrent_ports(module, inputs)
        examples = _example_outputs(module, inputs, "recurrent")
        outputs = _recurrent_graph(b, module, in_ports)
        time_axis = 1 if module.batch_first else 0
        out_names = ["output"] + [n[:-1] + "_n" for n in _state_names(module)]
        dyn = [{1 - time_axis: "batch", time_axis: "time"}] + [{1: "batch"}] * (len(outputs) - 1)
    elif isinstance(module, _SequenceModel) or _is_ensemble(module):
        in_ports = _model_ports(module, inputs)
        examples = _example_outputs(module, inputs, "model")
        lengths = "lengths" if len(inputs) == 2 else None
        outputs = [_model_outputs(b, module, "input", lengths)]
        out_names, dyn = ["output"], [{0: "batch"}]
    elif isinstance(module, CharLM):
        in_ports = _char_lm_ports(module, inputs)
        examples = _example_outputs(module, inputs, "charlm")
        names = _state_names(module.lstm)
        state0 = names if len(inputs) > 1 else None
        outputs = _char_lm_graph(b, module, "ids", state0)
        out_names = ["logits"] + [n[:-1] + "_n" for n in names]
        dyn = [{0: "batch", 1: "time"}] + [{1: "batch"}] * len(names)
    else:
        raise TypeError(
            f"cannot export a {type(module).__name__} to ONNX; expected gatelab.LSTM / GRU / "
            "RNN, torch.nn.LSTM / GRU / RNN, a gatelab.models.heads LSTM -> Dense model, or a "
            "gatelab.CharLM (for a fitted estimator pass est.model_, or export its run "
            "folder with gatelab.interop.export_run)"
        )
    return in_ports, outputs, out_names, examples, dyn


def _meta(module: nn.Module, **extra: str) -> dict[str, str]:
    meta = {"gatelab_module": type(module).__name__}
    net = getattr(module, "network", module)  # a text classifier's WithLinear: its network
    lstm = getattr(net, "lstm", None) or (net.members[0].lstm if _is_ensemble(net) else net)
    spec = getattr(lstm, "spec", None)
    if spec is not None:
        meta["gatelab_cell"] = spec.describe()
    meta.update(extra)
    return meta


# --------------------------------------------------------------------------- run folders


def _refuse_run_cells(model: nn.Module, task: str, run: Path) -> None:
    try:
        _refuse_unexpressed_cells(model)
    except TypeError as err:
        raise RunFolderError(f"cannot export the {task} run '{run}': {err}") from None


def export_run(
    run_dir: str | os.PathLike, path: str | os.PathLike, *, opset: int = DEFAULT_OPSET
) -> Path:
    """Export the model of a run folder to ONNX, with what turns its input into numbers
    that the graph can hold (scalers, normalisation) and softmax on classifiers.

    Graphs by task kind (``B`` and ``T`` dynamic; ``lengths (B,)`` int64 real steps):

    - ``text-classifier``: ``ids (B, T)`` int64 (the run's ``vocab.json``, then the
      ``words`` of ``linear.json`` for a run with a linear part; 0 pads), ``lengths`` ->
      ``probabilities (B, classes)``, the linear part mixed in; metadata ``labels``;
    - ``series-classifier``: ``series (B, T, C)`` float32 raw values (steps past a
      series' length are ignored), ``lengths`` -> ``probabilities``; the run's
      normalisation, level channels, patches and LSTM-FCN branch are in the graph;
    - ``forecaster``: ``window (B, history_steps_)`` raw values -> ``forecast (B,
      horizon)`` in the series' units: the linear part plus the weighted LSTM term, each
      from its own transform of the window;
    - ``char-lm``: ``ids (B, T)`` (``T = 1`` is one step), ``h0``, ``c0`` ``(L, B, H)``
      -> ``logits (B, T, V)``, ``h_n``, ``c_n``; metadata ``chars`` (the vocabulary); with
      the sLSTM cell also ``n0``, ``m0`` -> ``n_n``, ``m_n``.

    Raises:
        RunFolderError: a missing or corrupt run folder, a task kind that does not
            export (the translator: its beam search is a Python loop), or a run whose
            LSTM cell neither ONNX form computes (a gate with its own activation), named
            with the run kind.
    """
    onnx = _require_onnx()
    run = Path(run_dir)
    kind, _ = read_task(run)  # the one registry of task kinds says which kinds export
    task = kind.name
    if not kind.exports:
        exported = [k.name for k in TASK_KINDS.values() if k.exports]
        raise RunFolderError(
            f"run folder '{run}' holds a {task!r} run, which does not export to ONNX; "
            f"expected one of {', '.join(exported)}"
        )
    b = Builder(onnx, _check_opset(opset), reserved=IO_NAMES)
    meta = {"gatelab_task": task}
    if task in ("text-classifier", "series-classifier"):
        est = kind.load(run)
        model = est.model_.cpu().eval()
        _refuse_run_cells(model, task, run)
        meta["labels"] = json.dumps([str(c) for c in est.classes_])
        x_name = "ids" if task == "text-classifier" else "series"
        C = getattr(est, "n_channels_", model.config.input_size)
        x_ex = torch.ones(2, 3, dtype=torch.long) if x_name == "ids" else torch.zeros(2, 3, C)
        in_ports = [
            _Port(x_name, x_ex, {0: "batch", 1: "time"}),
            _Port("lengths", torch.full((2,), 3), {0: "batch"}),
        ]
        x = x_name
        if task == "series-classifier":
            x = _series_normalize(b, x, "lengths", est)
        probs = b.op("Softmax", [_model_outputs(b, model, x, "lengths")], axis=-1)
        outputs = [probs]
        out_ports = [_Port("probabilities", torch.zeros(2, len(est.classes_)), {0: "batch"})]
    elif task == "forecaster":
        est = kind.load(run)
        model = est.model_.cpu().eval()
        _refuse_run_cells(model, task, run)
        in_ports = [_Port("window", torch.zeros(2, est.history_steps_), {0: "batch"})]
        outputs = [_forecaster_graph(b, est, model, "window")]
        out_ports = [_Port("forecast", torch.zeros(2, est.horizon), {0: "batch"})]
    else:  # char-lm
        from gatelab.tasks.sequence import load_char_lm

        model = load_char_lm(run)
        _refuse_run_cells(model, task, run)
        meta["chars"] = json.dumps(model.vocab.chars)
        L, H = model.lstm.num_layers, model.lstm.hidden_size
        state = torch.zeros(L, 2, H)
        names = _state_names(model.lstm)  # h0, c0 (and n0, m0 for the sLSTM)
        in_ports = [_Port("ids", torch.zeros(2, 1, dtype=torch.long), {0: "batch", 1: "time"})]
        in_ports += [_Port(n, state, {1: "batch"}) for n in names]
        outputs = _char_lm_graph(b, model, "ids", names)
        out_ports = [_Port("logits", torch.zeros(2, 1, len(model.vocab)), {0: "batch", 1: "time"})]
        out_ports += [_Port(n[:-1] + "_n", state, {1: "batch"}) for n in names]
    meta.update(_meta(model))
    return _finish(onnx, b, in_ports, outputs, out_ports, None, path, meta)
