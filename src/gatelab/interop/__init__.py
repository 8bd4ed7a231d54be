"""Models that leave gatelab: ONNX export (and Keras 3 weights, both ways).

- :func:`to_onnx` writes a recurrent layer, an LSTM -> Dense model or a char LM as an
  ONNX graph: one native ``LSTM`` / ``GRU`` / ``RNN`` node per layer where the operator
  expresses the cell, a ``Scan`` over the step equations elsewhere;
- :func:`export_run` writes a whole run folder's model (``gatelab export RUN``).

``onnx`` is imported only when an export runs (``pip install gatelab[interop]``).
See docs/interop.md for the gate orders and what maps to what.
"""

from .onnx import export_run, to_onnx

__all__ = ["export_run", "to_onnx"]
