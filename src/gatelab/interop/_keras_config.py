"""Reading a ``.keras`` archive's ``config.json``: the layers, checked, as torch modules.

Only :data:`gatelab.interop._keras_modules.SUPPORTED_LAYERS` are built; a ``Lambda`` or any
other class is refused, naming the layer; a functional model must be a chain. Used by
:func:`gatelab.interop.keras.from_keras`.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import nn

from gatelab.errors import DataError
from gatelab.interop._keras_layout import _layer_keys, _layers_group, _load_into
from gatelab.interop._keras_modules import (
    _LSTM_ACTIVATIONS,
    _LSTM_GATE_ACTIVATIONS,
    DENSE_ACTIVATIONS,
    MERGE_MODES,
    RECURRENT,
    SUPPORTED_LAYERS,
    Dense,
    KerasModel,
    Recurrent,
)
from gatelab.nn.equations import CellSpec
from gatelab.nn.layers import GRU, LSTM, RNN

log = logging.getLogger(__name__)


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


def _model_dtype(layers, source: str) -> torch.dtype:
    kinds = set()
    layers.visititems(lambda name, obj: kinds.add(obj.dtype) if hasattr(obj, "dtype") else None)
    if kinds - {np.dtype("float32"), np.dtype("float64")}:
        raise DataError(
            f"{source} holds weights of dtypes {sorted(str(k) for k in kinds)}; gatelab reads "
            "float32 and float64 Keras models"
        )
    return torch.float64 if kinds == {np.dtype("float64")} else torch.float32


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
