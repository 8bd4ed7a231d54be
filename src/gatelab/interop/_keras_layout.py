"""Keras's weight layout against gatelab's, both ways (see :mod:`gatelab.interop.keras`).

:func:`_keras_layers` describes a torch module as the Keras layers it is (their
serialized config and, per HDF5 group, the tensors to read or write, in Keras's order
and shapes); :func:`_load_into` fills a module from an open ``.weights.h5`` file by that
description. Used by :func:`gatelab.interop.keras.from_keras` and ``to_keras_weights``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gatelab.errors import DataError
from gatelab.interop._keras_modules import _LSTM_ACTIVATIONS, _LSTM_GATE_ACTIVATIONS, Recurrent
from gatelab.nn.equations import CellSpec
from gatelab.nn.layers import GRU, LSTM, RNN

log = logging.getLogger(__name__)


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
