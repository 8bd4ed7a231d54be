"""Models that leave gatelab: ONNX export and Keras 3 weights, both ways.

- :func:`to_onnx` writes a recurrent layer, an LSTM -> Dense model or a char LM as an
  ONNX graph: one native ``LSTM`` / ``GRU`` / ``RNN`` node per layer where the operator
  expresses the cell, a ``Scan`` over the step equations elsewhere;
- :func:`export_run` writes a whole run folder's model (``gatelab export RUN``);
- :func:`from_keras` reads ``.keras`` archives and ``.weights.h5`` files, and
  :func:`to_keras_weights` writes ``.weights.h5`` files that Keras 3 loads (h5py only,
  never TensorFlow, never unpickling).

``onnx`` and ``h5py`` are imported only when they are used (``pip install
gatelab[interop]``). See docs/interop.md for the gate orders and what maps to what.
"""

from gatelab.interop.keras import from_keras, to_keras_weights
from gatelab.interop.onnx import export_run, to_onnx

__all__ = ["export_run", "from_keras", "to_keras_weights", "to_onnx"]
