"""Backends: how one layer in one direction is run over a whole sequence.

Every backend offers the same functions with the same contract (time-major ``x (T, B,
I)``, prefix-masked by ``lengths``; see :func:`gatelab.nn.backends.reference.lstm_layer`):

- ``reference``: a Python loop over :mod:`gatelab.nn.equations`; autograd does backward. The oracle.
- ``native``: the framework's fused kernels (standard LSTM, GRU, RNN); traces replayed.
- ``fused``: gatelab's C++ time loops for every cell spec, with hand-written backward.
"""
