"""Neural-network building blocks on agnograd Tensors, for every backend.

``Module`` finds its parameters in its attributes (nested modules, lists and dicts included);
``Linear``, ``Sequential``, ``MLP``, ``Dropout`` and activation layers build networks;
``agnograd.nn.functional`` holds activations and numerically stable losses; ``agnograd.nn.init``
the Glorot and He initialisers, drawn on the host from a seed so every backend starts from the
same weights; ``agnograd.nn.utils`` gradient clipping; ``save_training_state`` /
``load_training_state`` resumable, checksummed checkpoints of a whole run.
"""

from __future__ import annotations

from ..backends.host import HostRNG, host_rng
from . import functional, init, utils
from .layers import ACTIVATIONS, GELU, MLP, Dropout, Linear, ReLU, Sequential, Sigmoid, Softplus, Tanh
from .module import Module, StateDictError, functional_call
from .training_state import CorruptFileError, load_training_state, save_training_state

__all__ = [
    "Module", "StateDictError", "functional_call", "Linear", "Sequential", "MLP", "Dropout",
    "ReLU", "Tanh", "Sigmoid", "GELU", "Softplus", "ACTIVATIONS", "functional", "init",
    "host_rng", "HostRNG",
    "utils",
    "save_training_state", "load_training_state", "CorruptFileError",
]
