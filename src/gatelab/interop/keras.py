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

import io
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

from torch import nn

from gatelab.errors import DataError
from gatelab.interop._keras_config import _build_model, _model_layers
from gatelab.interop._keras_layout import _keras_layers, _layer_keys, _load_into
from gatelab.interop._keras_modules import (
    DENSE_ACTIVATIONS,
    SUPPORTED_LAYERS,
    WEIGHTS_FILE,
    Dense,
    KerasModel,
    Recurrent,
    _h5py,
)
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
