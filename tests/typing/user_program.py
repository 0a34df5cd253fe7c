"""A user's script, as one would write it: ``tests/test_typing.py`` type-checks it with
``mypy --strict`` (it is never imported by pytest; ``conftest.py`` here keeps it out).

Each ``assert_type`` fails the check if the public API's static types drift: a name that stops
being visible, an operator Tensor no longer declares, an op whose result is no longer a Tensor.
"""

from __future__ import annotations

from typing import Any

from typing_extensions import assert_type

import agnograd as ag
from agnograd import nn, optim
from agnograd.nn import functional as F

# Creation, dtypes, backends.
x = ag.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
w = ag.zeros((2, 3), dtype=ag.float32)
b = ag.asarray([0.1, 0.2, 0.3])
assert_type(x, ag.Tensor)
assert_type(w, ag.Tensor)
backend: ag.Backend = ag.get_backend("numpy")
dt: ag.DType = ag.float32
one = ag.ones_like(x)

# Ops from the namespace and Tensor's operators.
h = ag.tanh(ag.astype(x, ag.float32) @ w + b)
assert_type(h, ag.Tensor)
assert_type(x @ x, ag.Tensor)
assert_type(x + 1.0, ag.Tensor)
assert_type(2.0 * x, ag.Tensor)
assert_type(1 - x, ag.Tensor)
assert_type(x / x, ag.Tensor)
assert_type(x ** 2, ag.Tensor)
assert_type(-x, ag.Tensor)
assert_type(abs(x), ag.Tensor)
assert_type(x[0], ag.Tensor)
assert_type(x[:, 1], ag.Tensor)
assert_type(x.T, ag.Tensor)
assert_type(x.mT, ag.Tensor)
assert_type(x > 0, ag.Tensor)
assert_type(x == one, ag.Tensor)
assert_type(x.sum(), ag.Tensor)
assert_type(x.mean(axis=0), ag.Tensor)
assert_type(x.reshape(4), ag.Tensor)
assert_type(ag.sum(x), ag.Tensor)
assert_type(ag.mean(ag.exp(x)), ag.Tensor)
assert_type(ag.linalg.inv(x), ag.Tensor)
assert_type(ag.linalg.vector_norm(x), ag.Tensor)
assert_type(ag.where(x > 2.0, x, 0.0), ag.Tensor)
assert_type(ag.maximum(x, 0.0), ag.Tensor)
shape: tuple[int, ...] = x.shape
n: int = x.ndim


def loss_fn(params: ag.Tensor) -> ag.Tensor:
    return ag.sum(ag.square(params @ x))


# Gradients.
loss = loss_fn(x)
loss.backward()
g: ag.Tensor | None = x.grad
value, grads = ag.value_and_grad(loss_fn)(x)
dx = ag.grad(loss_fn)(x)
print(float(loss.item()), value, grads, dx, g, shape, n, backend, dt)

with ag.no_grad():
    x -= 0.1 * (x.grad if x.grad is not None else ag.zeros_like(x))
    x *= 0.5

# A training loop.
model = nn.MLP([2, 8, 3], activation="tanh", seed=0)
layer = nn.Linear(3, 3, seed=1)
opt = optim.Adam(model.parameters() + layer.parameters(), lr=1e-2, capturable=True)
inputs = ag.asarray([[0.0, 1.0], [1.0, 0.0]], dtype=ag.float32)  # the layers' dtype
labels = ag.asarray([0, 2])


def step(xb: ag.Tensor, yb: ag.Tensor) -> ag.Tensor:
    opt.zero_grad()
    logits: ag.Tensor = layer(model(xb))
    loss = F.cross_entropy(logits, yb)
    loss.backward()
    opt.step()
    return loss


for _ in range(3):
    step_loss = step(inputs, labels)
    assert_type(step_loss, ag.Tensor)

captured: ag.CapturedStep = ag.capture(step, inputs, labels)
out: Any = captured(inputs, labels)
probs = F.softmax(layer(model(inputs)), axis=-1)
assert_type(probs, ag.Tensor)
