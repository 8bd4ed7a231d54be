"""Models that leave gatelab: Keras 3 weights both ways (h5py, never TensorFlow)."""

from .keras import from_keras, to_keras_weights

__all__ = ["from_keras", "to_keras_weights"]
