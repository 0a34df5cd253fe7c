"""Gradient clipping, as ``torch.nn.utils``: :func:`clip_grad_norm_` and :func:`clip_grad_value_`;
:func:`parameters_to_vector` and :func:`vector_to_parameters`.

Both work on the device without reading anything on the host, so they can sit inside a step
recorded by :func:`agnograd.capture` (between ``loss.backward()`` and ``optimizer.step()``).
They change the gradients in place, under :func:`agnograd.no_grad`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import agnograd as ag

from ..capture import _state as _capture

__all__ = ["clip_grad_norm_", "clip_grad_value_", "parameters_to_vector", "vector_to_parameters"]


def _grads(parameters: ag.Tensor | Iterable[ag.Tensor]) -> list[ag.Tensor]:
    params = [parameters] if isinstance(parameters, ag.Tensor) else list(parameters)
    for p in params:
        if not isinstance(p, ag.Tensor):
            raise TypeError(f"expected Tensors (e.g. model.parameters()), not {type(p).__name__}")
    return [p.grad for p in params if p.grad is not None]


def clip_grad_norm_(parameters: ag.Tensor | Iterable[ag.Tensor], max_norm: float,
                    norm_type: float = 2.0, error_if_nonfinite: bool = False,
                    foreach: bool | None = None) -> ag.Tensor:
    """Scale the gradients of ``parameters`` in place so that their total norm is at most
    ``max_norm``, as ``torch.nn.utils.clip_grad_norm_``.

    The total norm is the ``norm_type``-norm of all gradients taken together (``math.inf``:
    the largest absolute value). Every gradient is multiplied by
    ``min(1, max_norm / (total + 1e-6))``, computed on the device: no host read, so the call
    may be recorded by :func:`agnograd.capture`. Parameters without a gradient are skipped.

    Args:
        parameters: a Tensor or an iterable of Tensors (e.g. ``model.parameters()``).
        max_norm: the largest total norm allowed.
        norm_type: the order of the norm (``2.0``, ``1.0``, ``math.inf``, ...).
        error_if_nonfinite: raise if the total norm is NaN or infinite (this reads the norm
            on the host, so it cannot be recorded by :func:`agnograd.capture`).
        foreach: PyTorch's choice of kernel; accepted and ignored (the result is the same).

    Returns:
        The total norm of the gradients before clipping, a 0-d Tensor on their backend.

    Raises:
        RuntimeError: ``error_if_nonfinite`` and the total norm is NaN or infinite (the
            gradients are then left unchanged).
        agnograd.CaptureError: ``error_if_nonfinite=True`` inside a recorded step.
    """
    max_norm, norm_type = float(max_norm), float(norm_type)
    grads = _grads(parameters)
    if error_if_nonfinite and _capture.capturing():
        raise _capture.CaptureError(
            f"clip_grad_norm_(error_if_nonfinite=True) inside a step recorded by {_capture.who()}: the "
            "check reads the total norm on the host, a synchronisation a recording cannot "
            "contain; pass error_if_nonfinite=False (the default) inside the step, or check "
            "ag.isfinite(total) outside it")
    if not grads:
        return ag.tensor(0.0)
    with ag.no_grad():
        dtype = ag.result_type(*[g.dtype for g in grads]) if len(grads) > 1 else grads[0].dtype
        norms = [ag.astype(ag.linalg.vector_norm(g, ord=norm_type), dtype) for g in grads]
        stacked = ag.stack(norms) if len(norms) > 1 else ag.reshape(norms[0], (1,))
        if norm_type == math.inf:
            total = ag.max(stacked)
        else:
            total = ag.linalg.vector_norm(stacked, ord=norm_type)
        if error_if_nonfinite and not bool(ag.isfinite(total).item()):
            raise RuntimeError(
                f"clip_grad_norm_: the total norm of order {norm_type} of the gradients of "
                f"{len(grads)} parameter(s) is {float(total.item())}; they cannot be clipped. "
                "Pass error_if_nonfinite=False to scale them anyway (the result is NaN), or "
                "find where the loss stops being finite (ag.detect_anomaly)")
        scale = ag.minimum(max_norm / (total + 1e-6), 1.0)
        for g in grads:
            g *= ag.astype(scale, g.dtype)
    return total


def clip_grad_value_(parameters: ag.Tensor | Iterable[ag.Tensor], clip_value: float,
                     foreach: bool | None = None) -> None:
    """Clamp every gradient of ``parameters`` to ``[-clip_value, clip_value]``, in place, as
    ``torch.nn.utils.clip_grad_value_`` (no host read: may be recorded by
    :func:`agnograd.capture`). ``foreach`` (PyTorch's choice of kernel) is accepted and
    ignored."""
    clip_value = float(clip_value)
    if not clip_value >= 0:
        raise ValueError(f"clip_grad_value_: clip_value must be non-negative, not {clip_value}")
    with ag.no_grad():
        for g in _grads(parameters):
            g[...] = ag.clip(g, -clip_value, clip_value)


def parameters_to_vector(parameters: Iterable[ag.Tensor]) -> ag.Tensor:
    """The parameters flattened and joined into one 1-D Tensor, in order, as
    ``torch.nn.utils.parameters_to_vector`` (differentiable: a concatenation of reshapes).

    Raises:
        TypeError: an entry is not a Tensor.
        ValueError: no parameters, or they are on several backends or devices.
    """
    params = [parameters] if isinstance(parameters, ag.Tensor) else list(parameters)
    for p in params:
        if not isinstance(p, ag.Tensor):
            raise TypeError(f"parameters_to_vector: expected Tensors (e.g. model.parameters()), "
                            f"not {type(p).__name__}")
    if not params:
        raise ValueError("parameters_to_vector: no parameters to join")
    where = {(p.backend, str(p.device)) for p in params}
    if len(where) > 1:
        raise ValueError(f"parameters_to_vector: the parameters are on several backends or "
                         f"devices ({sorted(where)}); move the model to one first")
    return ag.concat([ag.reshape(p, (-1,)) for p in params])


def vector_to_parameters(vec: ag.Tensor, parameters: Iterable[ag.Tensor]) -> None:
    """Copy consecutive slices of the 1-D ``vec`` into the parameters, in order (each
    reshaped to its parameter's shape and converted to its dtype), in place under
    :func:`agnograd.no_grad`, as ``torch.nn.utils.vector_to_parameters``.

    Raises:
        TypeError: ``vec`` or an entry of ``parameters`` is not a Tensor.
        ValueError: ``vec`` is not 1-D, or its length is not the parameters' total size
            (PyTorch ignores a longer vector's tail; here it is an error).
    """
    if not isinstance(vec, ag.Tensor):
        raise TypeError(f"vector_to_parameters: expected a Tensor for vec, not {type(vec).__name__}")
    params = [parameters] if isinstance(parameters, ag.Tensor) else list(parameters)
    for p in params:
        if not isinstance(p, ag.Tensor):
            raise TypeError(f"vector_to_parameters: expected Tensors (e.g. model.parameters()), "
                            f"not {type(p).__name__}")
    total = sum(p.size or 0 for p in params)
    if vec.ndim != 1 or vec.shape[0] != total:
        raise ValueError(f"vector_to_parameters: vec has shape {vec.shape}, but the "
                         f"{len(params)} parameter(s) hold {total} values: pass a 1-D vector of "
                         "that length (from parameters_to_vector)")
    start = 0
    with ag.no_grad():
        for p in params:
            n = p.size or 0
            piece = ag.reshape(vec.detach()[start:start + n], tuple(p.shape))
            piece = ag.asarray(ag.to_backend(piece, p.backend), device=p.device)
            p[...] = ag.astype(piece, p.dtype)
            start += n
