"""The network layer: the gate equations, the drop-in layers and cell, their traces and
the backends that run them (reference, native, fused C++ kernels)."""
