"""Neural-network building blocks on agnograd Tensors, for every backend.

``Module`` finds its parameters in its attributes (nested modules, lists and dicts included);
``Linear``, ``Conv1d``/``Conv2d``, pooling, ``LayerNorm``, ``Embedding``, ``Sequential``,
``ModuleList``/``ModuleDict``, ``MLP``, ``Dropout``, ``Flatten`` and activation layers build networks;
``RNN``/``LSTM``/``GRU``, their cells and ``MultiheadAttention`` are PyTorch's recurrent and
attention layers (``agnograd.nn.recurrent``, ``agnograd.nn.attention``);
``agnograd.nn.functional`` holds activations and numerically stable losses; ``agnograd.nn.init``
the Glorot and He initialisers, drawn on the host from a seed so every backend starts from the
same weights; ``agnograd.nn.utils`` gradient clipping; ``save_training_state`` /
``load_training_state`` resumable, checksummed checkpoints of a whole run.
"""

from __future__ import annotations

from ..backends.host import HostRNG, host_rng
from . import functional, init, utils
from .attention import MultiheadAttention  # rnn: attention
from .conv import (
    AvgPool1d,
    AvgPool2d,
    Conv1d,
    Conv2d,
    ConvTranspose1d,
    ConvTranspose2d,
    MaxPool1d,
    MaxPool2d,
)
from .layers import (
    ACTIVATIONS,
    ELU,
    GELU,
    MLP,
    BatchNorm1d,
    BatchNorm2d,
    Dropout,
    Embedding,
    Flatten,
    GroupNorm,
    Identity,
    InstanceNorm1d,
    InstanceNorm2d,
    LayerNorm,
    LeakyReLU,
    Linear,
    ModuleDict,
    ModuleList,
    ParameterDict,
    ParameterList,
    ReLU,
    Sequential,
    Sigmoid,
    SiLU,
    Softplus,
    Tanh,
    Unflatten,
)
from .loss import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    MSELoss,
    NLLLoss,
    SmoothL1Loss,
)
from .module import IncompatibleKeys, Module, Parameter, StateDictError, functional_call
from .recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell  # rnn: recurrent layers
from .training_state import CorruptFileError, load_training_state, save_training_state

__all__ = [
    "Module", "Parameter", "StateDictError", "IncompatibleKeys", "functional_call", "Linear",
    "Conv1d", "Conv2d", "MaxPool1d",
    "MaxPool2d", "AvgPool1d", "AvgPool2d", "LayerNorm", "Embedding", "Sequential", "ModuleList",
    "ModuleDict", "ParameterList", "ParameterDict", "MLP", "Dropout", "Flatten", "Unflatten",
    "Identity", "ReLU", "Tanh", "Sigmoid", "GELU",
    "Softplus", "LeakyReLU", "ELU", "SiLU", "ACTIVATIONS", "functional", "init", "host_rng",
    "HostRNG", "ConvTranspose1d", "ConvTranspose2d",
    "utils", "CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss", "HuberLoss", "SmoothL1Loss",
    "BCELoss", "BCEWithLogitsLoss", "KLDivLoss", "save_training_state", "load_training_state",
    "CorruptFileError",
    "BatchNorm1d", "BatchNorm2d", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d",
    "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "MultiheadAttention",  # rnn
]
