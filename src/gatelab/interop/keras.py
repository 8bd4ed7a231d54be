"""Keras 3 weights both ways, without TensorFlow: ``.keras`` archives and ``.weights.h5``.

A ``.keras`` archive is a zip of ``config.json`` (the model's layers as JSON),
``metadata.json`` and ``model.weights.h5``. This module reads the JSON and the HDF5 file
(with h5py) and nothing else: it never imports Keras, never unpickles and never runs code
from a file. A ``Lambda`` layer (stored Python bytecode) or any class outside
:data:`SUPPORTED_LAYERS` is refused, naming the layer and its class.

Keras 3 writes the weights of a ``Sequential`` or functional model as one HDF5 group per
layer, ``layers/<key>/vars/<i>`` (``layers/<key>/cell/vars/<i>`` for a recurrent layer,
``layers/<key>/forward_layer/cell/vars/<i>`` and ``backward_layer`` for
``Bidirectional``), where ``<key>`` is the layer's class in snake case, numbered per class
in model order (``lstm``, ``lstm_1``, ``dense``; never the user's layer name), and ``<i>``
counts the layer's variables in creation order.

Weight layout (``I`` inputs, ``H`` units; PyTorch's ``(G*H, I)`` matrices are Keras's
``(I, G*H)`` kernels transposed)::

    Keras LSTM       kernel (I, 4H)   recurrent_kernel (H, 4H)   bias (4H,)     gates i, f, c, o
    torch LSTM       weight_ih (4H, I) weight_hh (4H, H)  bias_ih + bias_hh     gates i, f, g, o
    Keras GRU        kernel (I, 3H)   recurrent_kernel (H, 3H)   bias (2, 3H)   gates z, r, h
    (reset_after=False)                                          bias (3H,)
    torch GRU        weight_ih (3H, I) weight_hh (3H, H)  bias_ih, bias_hh      gates r, z, n
    Keras SimpleRNN  kernel (I, H)    recurrent_kernel (H, H)    bias (H,)
    Keras Dense      kernel (I, O)    bias (O,)                  torch Linear weight (O, I)
    Keras Embedding  embeddings (V, D)                           torch Embedding weight (V, D)

The LSTM gate orders agree (Keras's ``c`` is PyTorch's ``g``); a GRU swaps its first two
blocks. Keras's one LSTM bias is loaded into ``bias_ih`` with ``bias_hh`` zero, and
``bias_ih + bias_hh`` is written back. Keras's GRU with ``reset_after=True`` (its default)
is torch's GRU, input and recurrent bias included; ``reset_after=False`` applies the reset
gate before the recurrent matmul, ``tanh(W x + b + U (r ⊙ h))``, which is
``gatelab.GRU(reset_after=False)``: its one bias loads into ``bias_ih`` with ``bias_hh``
zero, and ``bias_ih + bias_hh`` is written back (exact: in that equation every bias is
added outside the reset gate).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import re
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gatelab.errors import DataError
from gatelab.nn.equations import CellSpec
from gatelab.nn.layers import GRU, LSTM, RNN
from gatelab.train.runs import atomic_write_bytes

__all__ = [
    "DENSE_ACTIVATIONS",
    "SUPPORTED_LAYERS",
    "Dense",
    "KerasModel",
    "Recurrent",
    "from_keras",
    "to_keras_weights",
]

log = logging.getLogger(__name__)

SUPPORTED_LAYERS = (
    "InputLayer",
    "Embedding",
    "LSTM",
    "GRU",
    "SimpleRNN",
    "Bidirectional",
    "Dense",
    "Dropout",
)
RECURRENT = ("LSTM", "GRU", "SimpleRNN")
MERGE_MODES = ("concat", "sum", "mul", "ave", None)
WEIGHTS_FILE = "model.weights.h5"

# Keras 3's activation by its serialized name -> the same function in torch. Keras's
# defaults where the name carries no argument: leaky_relu's slope is 0.2, gelu is exact,
# softmax and log_softmax act on the last axis, hard_sigmoid is relu6(x + 3) / 6.
DENSE_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "linear": lambda x: x,
    "relu": torch.relu,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.2),
    "relu6": F.relu6,
    "elu": F.elu,
    "selu": F.selu,
    "gelu": F.gelu,
    "silu": F.silu,
    "swish": F.silu,
    "mish": F.mish,
    "softplus": F.softplus,
    "softsign": F.softsign,
    "sigmoid": torch.sigmoid,
    "log_sigmoid": F.logsigmoid,
    "hard_sigmoid": F.hardsigmoid,
    "hard_silu": F.hardswish,
    "hard_swish": F.hardswish,
    "hard_tanh": F.hardtanh,
    "tanh": torch.tanh,
    "exponential": torch.exp,
    "softmax": lambda x: torch.softmax(x, dim=-1),
    "log_softmax": lambda x: torch.log_softmax(x, dim=-1),
}

# LSTM `recurrent_activation` -> CellSpec.gate_activation; `activation` -> the spec's
# candidate and output activation (Keras uses one activation for both).
_LSTM_GATE_ACTIVATIONS = {"sigmoid": "sigmoid", "tanh": "tanh"}
_LSTM_ACTIVATIONS = {"tanh": "tanh", "linear": "identity"}


def _h5py():
    try:
        import h5py
    except ImportError as err:
        raise ImportError(
            "reading and writing Keras weight files needs h5py, which is not installed; "
            "install it with `pip install gatelab[interop]`"
        ) from err
    return h5py


# ---------------------------------------------------------------------------- modules


class Dense(nn.Linear):
    """A Keras ``Dense`` layer: ``activation(x W^T + b)`` on the last axis.

    Args:
        in_features, out_features, bias: as ``torch.nn.Linear``.
        activation: a Keras activation name, one of :data:`DENSE_ACTIVATIONS`.

    Shapes: ``(*, in_features) -> (*, out_features)``. ``weight`` is ``(O, I)``, Keras's
    ``kernel (I, O)`` transposed.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        device=None,
        dtype=None,
    ) -> None:
        if activation not in DENSE_ACTIVATIONS:
            raise ValueError(
                f"activation={activation!r}; expected one of {', '.join(DENSE_ACTIVATIONS)}"
            )
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        return DENSE_ACTIVATIONS[self.activation](super().forward(x))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", activation={self.activation!r}"


class Recurrent(nn.Module):
    """A Keras ``LSTM`` / ``GRU`` / ``SimpleRNN`` layer, or ``Bidirectional`` of one,
    running on a gatelab layer (``self.rnn``, one layer, ``batch_first=True``).

    Args:
        rnn: a one-layer :class:`gatelab.LSTM`, :class:`gatelab.GRU` or
            :class:`gatelab.RNN` with ``batch_first=True`` (``bidirectional=True`` for a
            Keras ``Bidirectional``).
        return_sequences, return_state, go_backwards: as the Keras layer.
        merge_mode: for a bidirectional ``rnn``, how Keras's ``Bidirectional`` merges the
            two directions: ``"concat"``, ``"sum"``, ``"mul"``, ``"ave"`` or None (both
            returned).

    Shapes: input ``(B, T, I)``. Output ``(B, T, D*H)`` with ``return_sequences``, else
    ``(B, D*H)`` (``D = 2`` for ``concat``, else 1); with ``return_state`` Keras's list
    as a tuple: ``(output, h, c)`` for an LSTM, ``(output, h)`` otherwise, the forward
    direction's states before the backward's; ``merge_mode=None`` gives the two outputs
    in place of one.
    """

    def __init__(
        self,
        rnn: LSTM | GRU | RNN,
        *,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        merge_mode: str | None = "concat",
    ) -> None:
        super().__init__()
        if not isinstance(rnn, (LSTM, GRU, RNN)):
            raise TypeError(f"rnn must be a gatelab LSTM, GRU or RNN, got {type(rnn).__name__}")
        if rnn.num_layers != 1 or not rnn.batch_first or rnn.proj_size:
            raise ValueError(
                f"rnn={rnn}; expected one layer with batch_first=True and no projection, as a "
                "Keras recurrent layer"
            )
        if merge_mode not in MERGE_MODES:
            raise ValueError(f"merge_mode={merge_mode!r}; expected one of {MERGE_MODES}")
        if rnn.bidirectional and go_backwards:
            raise ValueError("go_backwards=True applies to a unidirectional rnn only")
        self.rnn = rnn
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.merge_mode = merge_mode

    def forward(self, x: Tensor):
        if not isinstance(x, Tensor) or x.dim() != 3:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"input has shape {got}; expected (batch, time, features)")
        if self.go_backwards:
            x = x.flip(1)  # Keras returns the steps in the order it ran them
        out, state = self.rnn(x)  # out (B, T, D*H)
        states = state if isinstance(state, tuple) else (state,)  # each (D, B, H)
        if not self.rnn.bidirectional:
            y = out if self.return_sequences else states[0][0]
            return (y, *(s[0] for s in states)) if self.return_state else y
        H = self.rnn.hidden_size
        if self.return_sequences:
            fw, bw = out[..., :H], out[..., H:]  # the backward half is already time-aligned
        else:
            fw, bw = states[0][0], states[0][1]
        if self.merge_mode == "concat":
            merged: tuple[Tensor, ...] = (torch.cat([fw, bw], dim=-1),)
        elif self.merge_mode == "sum":
            merged = (fw + bw,)
        elif self.merge_mode == "mul":
            merged = (fw * bw,)
        elif self.merge_mode == "ave":
            merged = ((fw + bw) / 2,)
        else:
            merged = (fw, bw)
        if self.return_state:
            return (*merged, *(s[0] for s in states), *(s[1] for s in states))
        return merged[0] if len(merged) == 1 else merged

    def extra_repr(self) -> str:
        flags = ("return_sequences", "return_state", "go_backwards")
        s = ", ".join(f"{k}=True" for k in flags if getattr(self, k))
        if self.rnn.bidirectional:
            s += (", " if s else "") + f"merge_mode={self.merge_mode!r}"
        return s


class KerasModel(nn.Sequential):
    """A Keras ``Sequential`` (or single-chain functional) model as torch modules, in
    Keras's layer order and under Keras's layer names: :class:`Recurrent`,
    :class:`Dense`, ``torch.nn.Embedding``, ``torch.nn.Dropout``.

    ``forward`` takes what the Keras model takes, batch first (token ids ``(B, T)`` for a
    model that starts with an ``Embedding``, else ``(B, T, I)``), and returns what Keras
    returns.
    """


# ---------------------------------------------------------------------------- weight layout


def _swap_zr(a: Tensor) -> Tensor:
    """Swap the first two of three gate blocks along the last axis: Keras's GRU order
    ``z, r, h`` <-> torch's ``r, z, n``. Its own inverse."""
    z, r, h = a.chunk(3, dim=-1)
    return torch.cat([r, z, h], dim=-1)


def _direction_to_keras(kind: str, p: dict[str, Tensor], reset_after: bool = True) -> list[Tensor]:
    """One layer-direction's torch parameters -> Keras's variables, in Keras's order."""
    if kind == "GRU":
        kernel, recurrent = _swap_zr(p["weight_ih"].T), _swap_zr(p["weight_hh"].T)
        if "bias_ih" not in p:
            return [kernel, recurrent]
        if not reset_after:  # one bias (3H,): b_hn is outside the reset gate here
            return [kernel, recurrent, _swap_zr(p["bias_ih"] + p["bias_hh"])]
        return [kernel, recurrent, torch.stack([_swap_zr(p["bias_ih"]), _swap_zr(p["bias_hh"])])]
    variables = [p["weight_ih"].T, p["weight_hh"].T]  # (I, G*H), (H, G*H)
    if "bias_ih" in p:
        variables.append(p["bias_ih"] + p["bias_hh"])
    return variables


def _direction_from_keras(
    kind: str, variables: list[Tensor], reset_after: bool = True
) -> dict[str, Tensor]:
    """Keras's variables of one recurrent layer -> the torch parameters by canonical name."""
    kernel, recurrent = variables[0], variables[1]
    if kind == "GRU":
        p = {"weight_ih": _swap_zr(kernel).T, "weight_hh": _swap_zr(recurrent).T}
        if len(variables) == 3 and not reset_after:
            p["bias_ih"] = _swap_zr(variables[2])
            p["bias_hh"] = torch.zeros_like(p["bias_ih"])
        elif len(variables) == 3:
            p["bias_ih"], p["bias_hh"] = _swap_zr(variables[2][0]), _swap_zr(variables[2][1])
        return p
    p = {"weight_ih": kernel.T, "weight_hh": recurrent.T}
    if len(variables) == 3:
        p["bias_ih"], p["bias_hh"] = variables[2], torch.zeros_like(variables[2])
    return p


@dataclass
class _Slot:
    """One Keras layer's (or one direction's) variables and where they live in the file."""

    group: str  # e.g. "lstm/cell/vars", under the file's "layers/"
    what: str  # the torch side, for messages
    names: list[str]  # the torch parameter each variable comes from
    get: Callable[[], list[Tensor]]  # torch -> Keras layout
    set: Callable[[list[Tensor]], None]  # Keras layout -> torch, in place


@dataclass
class _KerasLayer:
    config: dict[str, Any]  # Keras's serialized layer: {"module", "class_name", "config"}
    slots: list[_Slot]

    @property
    def keras_class(self) -> str:
        return self.config["class_name"]


def _serialized(cls: str, **config) -> dict[str, Any]:
    """A layer as Keras serializes it; ``keras.layers.deserialize`` builds it."""
    return {"module": "keras.layers", "class_name": cls, "config": config}


def _direction_params(module: nn.Module, layer: int, direction: int) -> dict[str, nn.Parameter]:
    suffix = f"_l{layer}{'_reverse' if direction else ''}"
    return {
        name[: -len(suffix)]: p for name, p in module.named_parameters() if name.endswith(suffix)
    }


def _lstm_activations(spec: CellSpec, what: str) -> dict[str, str]:
    """The Keras LSTM activations of a gatelab cell spec; raises when Keras has none."""
    keras_gate = {v: k for k, v in _LSTM_GATE_ACTIVATIONS.items()}.get(spec.gate_activation)
    keras_act = {v: k for k, v in _LSTM_ACTIVATIONS.items()}.get(spec.output_activation)
    base = dataclasses.replace(
        spec, gate_activation="sigmoid", candidate_activation="tanh", output_activation="tanh"
    )
    if (
        not base.is_standard
        or spec.candidate_activation != spec.output_activation
        or keras_gate is None
        or keras_act is None
    ):
        raise ValueError(
            f"{what} has cell {spec}; a Keras LSTM computes the standard cell with gates "
            f"sigmoid or tanh (recurrent_activation) and one activation, tanh or linear, for "
            "both the candidate and the cell output: peephole, cifg, nig, nfg, nog, niaf "
            "and noaf alone, and layernorm have no Keras LSTM"
        )
    return {"activation": keras_act, "recurrent_activation": keras_gate}


def _recurrent_layers(
    module: nn.Module, what: str, wrapper: Recurrent | None = None
) -> list[_KerasLayer]:
    """A gatelab or torch.nn LSTM / GRU / RNN -> one Keras layer per layer. Without a
    ``wrapper`` every layer returns its sequence, as the torch layer does."""
    if isinstance(module, (LSTM, nn.LSTM)):
        kind = "LSTM"
    elif isinstance(module, (GRU, nn.GRU)):
        kind = "GRU"
    else:
        kind = "SimpleRNN"
    if getattr(module, "proj_size", 0):
        raise ValueError(
            f"{what} has proj_size={module.proj_size}; Keras layers have no projection"
        )
    config: dict[str, Any] = {"units": module.hidden_size, "use_bias": bool(module.bias)}
    config["return_sequences"] = True if wrapper is None else wrapper.return_sequences
    if kind == "LSTM":
        spec = getattr(module, "spec", CellSpec())
        config.update(_lstm_activations(spec, what))
    elif kind == "GRU":
        config.update(activation="tanh", recurrent_activation="sigmoid")
        config["reset_after"] = getattr(module, "reset_after", True)  # torch.nn.GRU: True
    else:
        nonlinearity = getattr(module, "nonlinearity", "tanh")
        config["activation"] = nonlinearity
    reset_after = config.get("reset_after", True)
    out = []
    for layer in range(module.num_layers):
        slots = []
        directions = 2 if module.bidirectional else 1
        for direction in range(directions):
            p = _direction_params(module, layer, direction)
            sub = ("forward_layer/", "backward_layer/")[direction] if directions == 2 else ""

            def get(p=p, reset_after=reset_after) -> list[Tensor]:
                return [v.detach() for v in _direction_to_keras(kind, dict(p), reset_after)]

            def set_(variables: list[Tensor], p=p, reset_after=reset_after) -> None:
                new = _direction_from_keras(kind, variables, reset_after)
                with torch.no_grad():
                    for name, value in new.items():
                        p[name].copy_(value)

            sfx = f"_l{layer}{'_reverse' if direction else ''}"
            names = [f"weight_ih{sfx}", f"weight_hh{sfx}"]
            if "bias_ih" in p:
                joint = "stacked" if kind == "GRU" and reset_after else "summed"
                if kind == "GRU":
                    joint += f" (reset_after={reset_after})"
                names.append(f"bias_ih{sfx} and bias_hh{sfx} {joint}")
            what_dir = f"{what} layer {layer}{' reverse' if direction else ''}"
            slots.append(_Slot(f"{sub}cell/vars", what_dir, names, get, set_))
        last = layer == module.num_layers - 1
        layer_config = dict(config, return_sequences=config["return_sequences"] or not last)
        if wrapper is not None and wrapper.return_state:
            layer_config["return_state"] = True
        if wrapper is not None and wrapper.go_backwards:
            layer_config["go_backwards"] = True
        serialized = _serialized(kind, **layer_config)
        if directions == 2:
            merge_mode = "concat" if wrapper is None else wrapper.merge_mode
            serialized = _serialized("Bidirectional", layer=serialized, merge_mode=merge_mode)
        out.append(_KerasLayer(serialized, slots))
    return out


def _keras_layers(module: nn.Module, what: str = "module") -> list[_KerasLayer]:
    """The Keras layers, with weights, that ``module`` corresponds to, in model order."""
    if isinstance(module, (nn.Sequential, nn.ModuleList)):
        children = list(module.named_children())
    elif isinstance(module, (list, tuple)):
        children = list(enumerate(module))
    else:
        children = None
    if children is not None:
        out = []
        for name, child in children:
            out += _keras_layers(child, f"{what}[{name!r}] ({type(child).__name__})")
        return out
    if isinstance(module, Recurrent):
        return _recurrent_layers(module.rnn, f"{what}.rnn", module)
    if isinstance(module, (LSTM, GRU, RNN, nn.LSTM, nn.GRU, nn.RNN)):
        return _recurrent_layers(module, what)
    if isinstance(module, nn.Linear):

        def get() -> list[Tensor]:
            w = [module.weight.detach().T]
            return w + ([module.bias.detach()] if module.bias is not None else [])

        def set_(variables: list[Tensor]) -> None:
            with torch.no_grad():
                module.weight.copy_(variables[0].T)
                if module.bias is not None:
                    module.bias.copy_(variables[1])

        names = ["weight"] + (["bias"] if module.bias is not None else [])
        config = _serialized(
            "Dense",
            units=module.out_features,
            use_bias=module.bias is not None,
            activation=getattr(module, "activation", "linear"),
        )
        return [_KerasLayer(config, [_Slot("vars", what, names, get, set_)])]
    if isinstance(module, nn.Embedding):

        def get_e() -> list[Tensor]:
            return [module.weight.detach()]

        def set_e(variables: list[Tensor]) -> None:
            with torch.no_grad():
                module.weight.copy_(variables[0])

        config = _serialized(
            "Embedding", input_dim=module.num_embeddings, output_dim=module.embedding_dim
        )
        return [_KerasLayer(config, [_Slot("vars", what, ["weight"], get_e, set_e)])]
    if isinstance(module, (nn.Dropout, nn.Identity)):
        return []  # no weights: Keras's Dropout and InputLayer write no variables
    raise TypeError(
        f"{what} is a {type(module).__name__}, which has no Keras counterpart here; expected "
        "gatelab LSTM / GRU / RNN (or torch.nn's), torch.nn.Linear, gatelab.interop.keras."
        "Dense or Recurrent, torch.nn.Embedding, torch.nn.Dropout, or a sequence of these"
    )


def _snake_case(name: str) -> str:
    """Keras's ``naming.to_snake_case``: the group name of a layer class in the file."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _layer_keys(classes: list[str]) -> list[str]:
    """Keras's group per layer: the class in snake case, ``_1``, ``_2``... on repeats."""
    used: dict[str, int] = {}
    keys = []
    for cls in classes:
        name = _snake_case(cls)
        if name in used:
            used[name] += 1
            keys.append(f"{name}_{used[name]}")
        else:
            used[name] = 0
            keys.append(name)
    return keys


# ---------------------------------------------------------------------------- reading h5


def _layers_group(h5, source: str):
    for prefix in ("layers", "_layer_checkpoint_dependencies"):  # the second: Keras 2.13
        if prefix in h5:
            return h5[prefix]
    raise DataError(
        f"{source} has no 'layers' group (groups: {sorted(h5.keys())}); expected the weights "
        "of a Keras 3 Sequential or functional model, as model.save_weights writes them"
    )


def _read_slot(layers, key: str, slot: _Slot, source: str) -> list[Tensor]:
    """Read one slot's variables, checking count and shapes against the torch side."""
    path = f"{key}/{slot.group}"
    if path not in layers:
        raise DataError(
            f"{source} has no group 'layers/{path}' for {slot.what}; its layers are "
            f"{sorted(layers.keys())}"
        )
    group = layers[path]
    current = slot.get()
    names = sorted(group.keys(), key=lambda k: int(k) if k.isdigit() else -1)
    if names != [str(i) for i in range(len(current))]:
        raise DataError(
            f"{source} 'layers/{path}' holds variables {names}; {slot.what} needs "
            f"{len(current)} ({', '.join(slot.names)}), named 0..{len(current) - 1}"
        )
    out = []
    for i, (name, like) in enumerate(zip(slot.names, current)):
        data = group[str(i)]
        if not hasattr(data, "shape") or data.dtype.kind != "f":
            raise DataError(
                f"{source} 'layers/{path}/{i}' is not a floating-point array; expected {name}"
            )
        if tuple(data.shape) != tuple(like.shape):
            raise DataError(
                f"{source} 'layers/{path}/{i}' has shape {tuple(data.shape)}, but {slot.what} "
                f"needs {tuple(like.shape)} for {name} (Keras layout)"
            )
        value = torch.from_numpy(np.asarray(data[()], dtype=np.float64))
        out.append(value.to(dtype=like.dtype, device=like.device))
    return out


def _load_into(module, h5, source: str):
    """Fill ``module``'s parameters from an open Keras weights file."""
    plan = _keras_layers(module)
    layers = _layers_group(h5, source)
    keys = _layer_keys([layer.keras_class for layer in plan])
    read = []
    for key, layer in zip(keys, plan):
        # read every slot before writing any, so that a bad file leaves the module as it was
        read.append([(slot, _read_slot(layers, key, slot, source)) for slot in layer.slots])
    for slots in read:
        for slot, variables in slots:
            slot.set(variables)
    unused = sorted(
        set(layers.keys()) - set(keys) - {k for k in layers if not _has_vars(layers[k])}
    )
    if unused:
        log.warning("%s: layers %s hold weights that the module does not take", source, unused)
    return module


def _has_vars(group) -> bool:
    found = []
    group.visititems(lambda name, obj: found.append(name) if hasattr(obj, "shape") else None)
    return bool(found)


# ---------------------------------------------------------------------------- reading .keras


def _refuse(layer: dict, why: str) -> DataError:
    name = layer.get("config", {}).get("name", layer.get("name", "?"))
    return DataError(f"Keras layer {name!r} (class {layer.get('class_name')}): {why}")


def _check_supported(layer: Any, where: str) -> None:
    if not isinstance(layer, dict) or "class_name" not in layer:
        raise DataError(f"{where}: a layer entry is {layer!r:.100}; expected a Keras layer dict")
    if not isinstance(layer.get("config"), dict):
        raise DataError(
            f"{where}: layer {layer['class_name']!r} has config {layer.get('config')!r:.100}; "
            "expected a dict"
        )
    cls = layer["class_name"]
    registered = layer.get("registered_name")
    module = layer.get("module")
    if cls == "Lambda":
        raise _refuse(
            layer,
            "a Lambda layer holds Python code, which gatelab never runs (nor unpickles); "
            "rebuild the model without it",
        )
    if cls not in SUPPORTED_LAYERS or (registered not in (None, cls)) or module != "keras.layers":
        raise _refuse(
            layer,
            f"gatelab does not convert this layer (module {module!r}, registered as "
            f"{registered!r}); supported: keras.layers {', '.join(SUPPORTED_LAYERS)}",
        )


# Keras's defaults, for configs written by hand without them
_DEFAULT_ACTIVATION = {"activation": "tanh", "recurrent_activation": "sigmoid"}


def _activation(layer: dict, key: str, allowed: dict, what: str):
    default = "linear" if layer["class_name"] == "Dense" else _DEFAULT_ACTIVATION[key]
    value = layer["config"].get(key, default)
    value = "linear" if value is None else value
    if not isinstance(value, str) or value not in allowed:
        raise _refuse(
            layer,
            f"{key}={value!r} has no gatelab equivalent; {what}: {', '.join(allowed)}",
        )
    return allowed[value]


def _rnn_config(layer: dict) -> dict[str, Any]:
    """A Keras LSTM / GRU / SimpleRNN config -> gatelab constructor arguments; refuses
    what gatelab cannot compute."""
    cls, c = layer["class_name"], layer["config"]
    if c.get("stateful"):
        raise _refuse(layer, "stateful=True carries state between calls; gatelab does not")
    if not isinstance(c.get("units"), int) or c["units"] < 1:
        raise _refuse(layer, f"units={c.get('units')!r}; expected a positive int")
    args: dict[str, Any] = {"hidden_size": c["units"], "bias": bool(c.get("use_bias", True))}
    if cls == "LSTM":
        gate = _activation(
            layer,
            "recurrent_activation",
            _LSTM_GATE_ACTIVATIONS,
            "gatelab LSTM gates are (CellSpec.gate_activation)",
        )
        act = _activation(
            layer,
            "activation",
            _LSTM_ACTIVATIONS,
            "gatelab LSTM candidate and output activations are",
        )
        args["variant"] = CellSpec(
            gate_activation=gate, candidate_activation=act, output_activation=act
        )
    elif cls == "GRU":
        reset_after = c.get("reset_after", True)
        if not isinstance(reset_after, bool):
            raise _refuse(layer, f"reset_after={reset_after!r}; expected true or false")
        args["reset_after"] = reset_after
        _activation(layer, "activation", {"tanh": "tanh"}, "gatelab.GRU computes")
        _activation(layer, "recurrent_activation", {"sigmoid": "sigmoid"}, "gatelab.GRU gates are")
    else:
        args["nonlinearity"] = _activation(
            layer, "activation", {"tanh": "tanh", "relu": "relu"}, "gatelab.RNN computes"
        )
    return args


def _make_rnn(cls: str, input_size: int, args: dict, bidirectional: bool, dtype) -> nn.Module:
    common = {"batch_first": True, "bidirectional": bidirectional, "dtype": dtype}
    if cls == "LSTM":
        variant = args["variant"]
        return LSTM(input_size, args["hidden_size"], 1, args["bias"], variant=variant, **common)
    if cls == "GRU":
        reset_after = args["reset_after"]
        return GRU(
            input_size, args["hidden_size"], 1, args["bias"], reset_after=reset_after, **common
        )
    return RNN(input_size, args["hidden_size"], 1, args["nonlinearity"], args["bias"], **common)


def _first_kernel(layers, key: str, sub: str, layer: dict, source: str) -> tuple[int, ...]:
    path = f"{key}/{sub}vars/0"
    if path not in layers or not hasattr(layers[path], "shape"):
        raise _refuse(layer, f"{source} has no weights at 'layers/{path}'")
    return tuple(layers[path].shape)


def _build_layer(layer: dict, key: str, layers, source: str, dtype) -> nn.Module | None:
    """One supported Keras layer config -> its torch module (weights loaded later)."""
    cls, c = layer["class_name"], layer.get("config", {})
    if cls == "InputLayer":
        return None
    if cls == "Dropout":
        return nn.Dropout(float(c.get("rate", 0.0)))
    if cls == "Embedding":
        if c.get("mask_zero"):
            raise _refuse(
                layer,
                "mask_zero=True makes the following layers skip masked steps; gatelab does not "
                "convert Keras masks (pass lengths or a PackedSequence to gatelab.LSTM instead)",
            )
        shape = _first_kernel(layers, key, "", layer, source)
        want = (c.get("input_dim"), c.get("output_dim"))
        if shape != want:
            raise _refuse(
                layer,
                f"embeddings have shape {shape}; its config says (input_dim, output_dim) = {want}",
            )
        return nn.Embedding(shape[0], shape[1], dtype=dtype)
    if cls == "Dense":
        if c.get("quantization_config") or c.get("lora_rank"):
            raise _refuse(layer, "quantized or LoRA Dense layers are not converted")
        act = _activation(layer, "activation", {k: k for k in DENSE_ACTIVATIONS}, "supported")
        shape = _first_kernel(layers, key, "", layer, source)
        if len(shape) != 2 or shape[1] != c.get("units"):
            raise _refuse(
                layer, f"kernel has shape {shape}; its config says (input_dim, {c.get('units')})"
            )
        return Dense(shape[0], shape[1], bool(c.get("use_bias", True)), act, dtype=dtype)
    if cls in RECURRENT:
        args = _rnn_config(layer)
        shape = _first_kernel(layers, key, "cell/", layer, source)
        rnn = _make_rnn(cls, shape[0], args, False, dtype)
        return Recurrent(
            rnn,
            return_sequences=bool(c.get("return_sequences")),
            return_state=bool(c.get("return_state")),
            go_backwards=bool(c.get("go_backwards")),
        )
    # Bidirectional
    forward, backward = c.get("layer"), c.get("backward_layer")
    backward = forward if backward is None else backward  # Keras builds it from `layer`
    for inner in (forward, backward):
        _check_supported(inner, f"{source} Bidirectional {c.get('name')!r}")
        if inner["class_name"] not in RECURRENT:
            raise _refuse(inner, "Bidirectional wraps LSTM, GRU or SimpleRNN only here")
    merge_mode = c.get("merge_mode", "concat")
    if merge_mode not in MERGE_MODES:
        raise _refuse(layer, f"merge_mode={merge_mode!r}; expected one of {MERGE_MODES}")
    args, back_args = _rnn_config(forward), _rnn_config(backward)
    fc, bc = forward["config"], backward["config"]
    flags = ("return_sequences", "return_state")
    if (
        forward["class_name"] != backward["class_name"]
        or args != back_args
        or any(bool(fc.get(k)) != bool(bc.get(k)) for k in flags)
        or bool(fc.get("go_backwards"))
        or (backward is not forward and not bc.get("go_backwards"))
    ):
        raise _refuse(
            layer,
            "its forward and backward layers differ (class, units, activations, bias, "
            "return flags) or run the wrong way; gatelab's bidirectional layers share one "
            "configuration, the forward layer running forward",
        )
    shape = _first_kernel(layers, key, "forward_layer/cell/", layer, source)
    rnn = _make_rnn(forward["class_name"], shape[0], args, True, dtype)
    return Recurrent(
        rnn,
        return_sequences=bool(fc.get("return_sequences")),
        return_state=bool(fc.get("return_state")),
        merge_mode=merge_mode,
    )


def _model_layers(config: Any, source: str) -> list[dict]:
    """The layer configs of a Sequential or single-chain functional model, in order."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise DataError(f"{source} config.json is not a Keras model config: {config!r:.200}")
    cls = config["class_name"]
    layers = config.get("config", {}).get("layers")
    if cls not in ("Sequential", "Functional", "Model") or not isinstance(layers, list):
        raise DataError(
            f"{source} holds a Keras {cls} model (config class_name {cls!r}); gatelab converts "
            "a Sequential model or a functional model whose layers form one chain"
        )
    for layer in layers:
        _check_supported(layer, source)
    if cls == "Sequential":
        return layers
    previous = None
    for layer in layers:
        nodes = layer.get("inbound_nodes", [])
        if previous is None:
            if layer["class_name"] != "InputLayer" or nodes:
                raise _refuse(layer, "a functional model must start with its one Input")
        else:
            sources = _inbound_sources(nodes, layer)
            if sources != [previous]:
                raise _refuse(
                    layer,
                    f"it takes its input from {sources}, not only from the layer before it "
                    f"({previous!r}); gatelab converts functional models that are one chain "
                    "of layers, each called once",
                )
        previous = layer.get("name", layer.get("config", {}).get("name"))
    outputs = config["config"].get("output_layers")
    if outputs not in ([previous, 0, 0], [[previous, 0, 0]]):
        raise DataError(
            f"{source}: the model's outputs are {outputs}; expected the last layer "
            f"{previous!r} alone"
        )
    return layers


def _inbound_sources(nodes: Any, layer: dict) -> list[str]:
    sources = []
    for node in nodes if isinstance(nodes, list) else [nodes]:
        args = node.get("args", []) if isinstance(node, dict) else []
        kwargs = node.get("kwargs", {}) if isinstance(node, dict) else {}
        tensors = [k for k, v in kwargs.items() if "__keras_tensor__" in json.dumps(v)]
        if tensors:
            raise _refuse(layer, f"it is called with tensors for {tensors}; not converted")
        for arg in args:
            history = arg.get("config", {}).get("keras_history") if isinstance(arg, dict) else None
            sources.append(history[0] if history else repr(arg)[:60])
    return sources


def _read_archive(path: Path) -> tuple[dict, bytes]:
    """-> the config dict and the bytes of model.weights.h5; nothing else is read."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if "config.json" not in names or WEIGHTS_FILE not in names:
                raise DataError(
                    f"{path} is a zip holding {names[:10]}; a Keras 3 .keras archive holds "
                    f"config.json and {WEIGHTS_FILE}"
                )
            config_bytes = archive.read("config.json")
            weights = archive.read(WEIGHTS_FILE)
    except zipfile.BadZipFile as err:
        raise DataError(
            f"{path} is not a Keras .keras archive (a zip file): {err}; is the file complete?"
        ) from err
    try:
        config = json.loads(config_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: config.json is not valid JSON ({err})") from err
    return config, weights


def _open_h5(source, label: str):
    h5py = _h5py()
    try:
        return h5py.File(source, "r")
    except OSError as err:
        raise DataError(f"{label} is not a readable HDF5 weights file: {err}") from err


def _model_dtype(layers, source: str) -> torch.dtype:
    kinds = set()
    layers.visititems(lambda name, obj: kinds.add(obj.dtype) if hasattr(obj, "dtype") else None)
    if kinds - {np.dtype("float32"), np.dtype("float64")}:
        raise DataError(
            f"{source} holds weights of dtypes {sorted(str(k) for k in kinds)}; gatelab reads "
            "float32 and float64 Keras models"
        )
    return torch.float64 if kinds == {np.dtype("float64")} else torch.float32


def from_keras(
    path: str | os.PathLike, into: nn.Module | list | tuple | None = None
) -> nn.Module | list | tuple:
    """Load a Keras 3 model or its weights, without Keras or TensorFlow.

    Args:
        path: a ``.keras`` archive (``model.save("m.keras")``) or a ``.weights.h5`` file
            (``model.save_weights("m.weights.h5")``).
        into: the module to load the weights into, in place: a gatelab ``LSTM`` / ``GRU``
            / ``RNN`` (one Keras layer per layer: ``num_layers=2`` reads the Keras
            model's first two LSTM layers), a :class:`KerasModel` or a sequence of
            supported modules (see :func:`to_keras_weights`). Needed for a
            ``.weights.h5`` file, which holds no layer types.

    Returns:
        ``into``, or for a ``.keras`` archive without ``into`` a :class:`KerasModel`
        whose forward takes what the Keras model takes, batch first, and returns what it
        returns (recurrent layers run on gatelab layers: ``model[i].rnn``).

    Raises:
        DataError (a ValueError): an unsupported layer (named with its class), a Lambda
            layer (refused, never run), an activation or option gatelab cannot compute,
            weights whose shapes disagree with the module (both shapes named), a corrupt
            or incomplete file.
    """
    path = Path(path)
    if into is not None and not isinstance(into, (nn.Module, list, tuple)):
        raise TypeError(f"into must be a torch.nn.Module or None, got {type(into).__name__}")
    if not path.is_file():
        raise FileNotFoundError(f"Keras file {str(path)!r} does not exist")
    if path.suffix == ".keras":
        config, weights = _read_archive(path)
        source = f"{path}:{WEIGHTS_FILE}"
        with _open_h5(io.BytesIO(weights), source) as h5:
            if into is not None:
                _model_layers(config, str(path))  # refuse what we would not build either
                return _load_into(into, h5, source)
            return _build_model(config, h5, str(path), source)
    if into is None:
        raise ValueError(
            f"path={str(path)!r} is a weights file: it holds no layer types, so from_keras "
            "needs into=<the gatelab module to fill> (or a .keras archive, which holds both)"
        )
    with _open_h5(path, str(path)) as h5:
        return _load_into(into, h5, str(path))


def _build_model(config: dict, h5, path: str, source: str) -> KerasModel:
    layer_configs = _model_layers(config, path)
    layers = _layers_group(h5, source)
    dtype = _model_dtype(layers, source)
    keys = _layer_keys([layer["class_name"] for layer in layer_configs])
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    for layer, key in zip(layer_configs, keys):
        module = _build_layer(layer, key, layers, source, dtype)
        if module is not None:
            name = str(layer.get("config", {}).get("name", ""))
            ok = name.isidentifier() and not hasattr(KerasModel, name) and name not in modules
            modules[name if ok else key] = module
    model = KerasModel(modules)
    _load_into(model, h5, source)
    model.eval()
    log.info("loaded Keras model %s: %d layers", path, len(modules))
    return model


# ---------------------------------------------------------------------------- writing


def to_keras_weights(
    module: nn.Module | list | tuple, path: str | os.PathLike
) -> list[dict[str, Any]]:
    """Write ``module``'s weights as a Keras 3 ``.weights.h5`` file.

    Keras loads it with ``model.load_weights(path)`` into the matching model: a
    ``Sequential`` (or functional chain) whose layers with weights are, in order, the
    returned layers, which ``keras.layers.deserialize`` builds::

        layers = gatelab.to_keras_weights(model, "m.weights.h5")
        keras_model = keras.Sequential(
            [keras.Input((T, I)), *(keras.layers.deserialize(c) for c in layers)]
        )
        keras_model.load_weights("m.weights.h5")

    A gatelab layer of ``num_layers`` layers is that many Keras layers, each returning its
    sequence as the torch layer does (a :class:`Recurrent` keeps its own flags);
    ``bidirectional=True`` is a ``Bidirectional`` of each (``merge_mode="concat"``);
    ``torch.nn.Linear`` (or :class:`Dense`) a ``Dense``; ``torch.nn.Embedding`` an
    ``Embedding``. ``Dropout`` and ``InputLayer`` hold no weights and go anywhere.

    Args:
        module: a gatelab or torch.nn ``LSTM`` / ``GRU`` / ``RNN``, ``torch.nn.Linear``,
            ``torch.nn.Embedding``, a :class:`KerasModel` from :func:`from_keras`, or a
            ``torch.nn.Sequential`` / list of these. An LSTM's cell must be one Keras
            computes: standard, ``tanh_gates`` (``recurrent_activation="tanh"``), with
            identity candidate and output (``activation="linear"``) or not; no projection.
        path: the file to write; its name must end in ``.weights.h5`` (Keras's rule). It is
            written atomically (:func:`gatelab.train.runs.atomic_write_bytes`: a temporary file,
            fsync, rename), so it is never half-written, and it honours the umask.

    Returns:
        The Keras layers with weights, in order, as Keras serializes them
        (``{"module": "keras.layers", "class_name": "LSTM", "config": {"units": 32, ...}}``):
        the arguments that decide the weights and the outputs (``units``, ``use_bias``,
        ``activation``, ``recurrent_activation``, ``reset_after``, ``return_sequences``;
        ``layer`` and ``merge_mode`` for ``Bidirectional``; ``input_dim``, ``output_dim``
        for ``Embedding``), Keras's defaults for the rest.
    """
    path = Path(path)
    if not path.name.endswith(".weights.h5"):
        raise ValueError(
            f"path={str(path)!r}; Keras's load_weights needs a file name ending in .weights.h5"
        )
    plan = _keras_layers(module)
    if not plan:
        raise ValueError(f"module {type(module).__name__} has no layers with weights to write")
    h5py = _h5py()
    keys = _layer_keys([layer.keras_class for layer in plan])
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        h5.create_group("vars").attrs["name"] = "gatelab"
        layers = h5.create_group("layers")
        for key, layer in zip(keys, plan):
            layers.create_group(f"{key}/vars").attrs["name"] = key
            for slot in layer.slots:
                group = layers.require_group(f"{key}/{slot.group}")
                for i, value in enumerate(slot.get()):
                    group.create_dataset(str(i), data=value.detach().cpu().numpy())
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    log.info("wrote %d Keras layers to %s", len(plan), path)
    return [layer.config for layer in plan]
