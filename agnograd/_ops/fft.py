"""The Array API ``fft`` extension over agnograd Tensors, each transform with its VJP rule.

Convention (PyTorch's, see docs/complex.md): for a real loss ``L`` and a complex ``z = x + iy``
the gradient is ``z̄ = ∂L/∂x + i·∂L/∂y``; for a complex-linear map ``y = A z`` the VJP is the
adjoint ``z̄ = Aᴴ ḡ``, and for a real input the VJP is ``Re(Aᴴ ḡ)``.

Write ``c(m)`` for the scale of a forward transform under norm ``m`` (1, 1/√n, 1/n for
"backward", "ortho", "forward") and ``dual(m)`` for the norm that swaps them ("backward" <->
"forward", "ortho" stays). The adjoint of ``fft(norm=m)`` is ``c(m)·n·ifft_backward =
ifft(norm=dual(m))``, and the same holds for every pair below, so every rule is again a
transform of this module and ``create_graph=True`` differentiates it once more:

* ``fft``/``fftn`` (m):   ``x̄ = fit(ifftn(ḡ, norm=dual(m)))``
* ``ifft``/``ifftn`` (m): ``x̄ = fit(fftn(ḡ, norm=dual(m)))``
* ``rfft``/``rfftn`` (m): ``x̄ = fit(Re ifftn(ḡ zero-padded to n on the last axis, norm=dual(m)))``
  -- the adjoint of "keep bins 0..n//2 of the full transform" is zero-padding, not Hermitian
  completion; taking ``Re`` is the real input.
* ``irfft``/``irfftn`` (m): ``h̄ = fit(w·rfftn(ḡ, norm=dual(m)))``, ``w = 1`` for the DC bin
  and, for even ``n``, the Nyquist bin (each appears once in the output), ``2`` for the others
  (each appears twice, as itself and its conjugate). The imaginary parts of the DC and Nyquist
  bins do not reach the output; their gradient is 0 (``rfft`` of a real ``ḡ`` is real there).
* ``hfft`` (m) ``= irfft(conj(x), norm=dual(m))``: ``x̄ = fit(w·ihfft(ḡ, norm=dual(m)))``.
* ``ihfft`` (m) ``= conj(rfft(x, norm=dual(m)))``: ``x̄ = fit(Re fft(ḡ padded to n, norm=dual(m)))``.
* ``fftshift``/``ifftshift``: a roll; the VJP is the inverse shift.

``fit`` undoes the forward's ``n``/``s``: the forward zero-pads or truncates the input along each
transformed axis first, and the adjoint of zero-padding is truncation (and vice versa). Real
inputs of ``fft``/``ifft``/``fftn``/``ifftn``/``irfft``/``irfftn``/``hfft`` are cast to complex
first (a recorded ``astype``, whose VJP takes the real part). Output dtypes follow the standard
(float32 in, complex64 out); a backend that upcasts is cast back.
"""

from __future__ import annotations

from typing import Any

from .._dtypes import ALL
from ..autograd.forward import defjvp
from ._common import (
    Tensor,
    from_backend_dtype,
    grad_on,
    normalize_axis,
    record,
    to_backend_dtype,
    to_tensor,
    wrap,
)
from .data_types import astype

__all__: list[str] = []  # the names are public through agnograd.fft only
EXTENSION_ALL: list[str] = [
    "fft", "ifft", "fftn", "ifftn", "rfft", "irfft", "rfftn", "irfftn", "hfft", "ihfft",
    "fftfreq", "rfftfreq", "fftshift", "ifftshift",
]

_DUAL = {"backward": "forward", "ortho": "ortho", "forward": "backward"}


# ---------------------------------------------------------------------------------------------
# Arguments


def _ns(x: Tensor, fn: str) -> Any:
    """The backend's fft namespace, or a clear error."""
    ns = getattr(x._backend.xp, "fft", None)
    if ns is None:
        raise NotImplementedError(
            f"fft.{fn}: backend '{x._backend.name}' has no fft extension in its Array API "
            "namespace; move the tensor to a backend that has one (numpy, cupy, torch, "
            "array_api_strict) with ag.to_backend"
        )
    return ns


def _norm(norm: str, fn: str) -> str:
    if norm not in _DUAL:
        raise ValueError(f"fft.{fn}: norm must be 'backward', 'ortho' or 'forward', not {norm!r}")
    return norm


def _kind_dtype(raw_dt: Any, xp: Any, kind: str) -> Any:
    """The backend dtype of kind ``"f"`` or ``"c"`` with ``raw_dt``'s precision."""
    d = from_backend_dtype(raw_dt)
    bits = d.bits if d.kind == "f" else d.bits // 2
    return to_backend_dtype(xp, ALL[f"float{bits}" if kind == "f" else f"complex{2 * bits}"])


def _input(x: Any, fn: str, want: str) -> Tensor:
    """``x`` as a floating Tensor: complex for ``want="c"`` (a real one is cast, recorded), real
    for ``want="f"`` (a complex one is refused)."""
    t: Tensor = to_tensor(x, f"fft.{fn}")
    if t.ndim == 0:
        raise ValueError(f"fft.{fn}: needs an array of at least one dimension, not a 0-d one")
    kind = from_backend_dtype(t.data.dtype).kind
    if kind not in "fc":
        raise TypeError(f"fft.{fn}: needs a floating-point input, not {t.dtype.name}; cast "
                        "first, e.g. ag.astype(x, ag.float64)")
    if want == "f" and kind == "c":
        raise TypeError(f"fft.{fn}: takes a real input, not {t.dtype.name} (shape {t.shape}); "
                        "use fft.fft/fftn for complex inputs, or pass ag.real(x)")
    if want == "c" and kind == "f":
        return astype(t, _kind_dtype(t.data.dtype, t._backend.xp, "c"))
    return t


def _axes(ndim: int, s: Any, axes: Any, fn: str) -> tuple[int, ...]:
    if axes is None:
        if s is None:
            return tuple(range(ndim))
        if len(s) > ndim:
            raise ValueError(f"fft.{fn}: s={s!r} has more entries than the input has axes ({ndim})")
        return tuple(range(ndim - len(s), ndim))
    out = tuple(normalize_axis(a, ndim, f"fft.{fn}") for a in axes)
    if len(set(out)) != len(out):
        raise ValueError(f"fft.{fn}: repeated axis in axes={axes!r}")
    if s is not None and len(s) != len(out):
        raise ValueError(f"fft.{fn}: s={s!r} and axes={axes!r} must have the same length")
    return out


def _lengths(shape: tuple[int, ...], s: Any, axes: tuple[int, ...], fn: str,
             last_default: int | None = None) -> tuple[int, ...]:
    """The transform length along each axis (``-1`` and ``None`` mean the input's, except the
    last axis of a complex-to-real transform, whose default is ``last_default``)."""
    out = []
    for k, a in enumerate(axes):
        n = None if s is None else s[k]
        if n is None or n == -1:
            n = last_default if (last_default is not None and k == len(axes) - 1) else shape[a]
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"fft.{fn}: invalid transform length {n!r} along axis {a}; "
                             "lengths must be positive integers")
        out.append(n)
    return tuple(out)


def _c2r_default(shape: tuple[int, ...], axis: int, fn: str) -> int:
    m = shape[axis]
    if m < 2:
        raise ValueError(f"fft.{fn}: the default output length 2·(m-1) is {2 * (m - 1)} for "
                         f"m = {m} input bins along axis {axis}; pass n (or s) explicitly")
    return 2 * (m - 1)


def _finish(y: Any, x: Tensor, kind: str) -> Any:
    """The backend's result in the standard's dtype (kind ``"c"`` or ``"f"``, x's precision)."""
    b = x._backend
    want = _kind_dtype(x.data.dtype, b.xp, kind)
    if y.dtype != want:
        y = b.xp.astype(y, want)
    return b.fix(y)


def _needs(x: Tensor) -> bool:
    return x._requires_grad and grad_on()


# ---------------------------------------------------------------------------------------------
# Helpers of the rules (raw arrays with the backend's namespace, or Tensors with agnograd's)


def _complex(xp: Any, g: Any, cdt: Any) -> Any:
    """A cotangent that arrived real (``real(fft(x))`` sends one) as complex: the same number."""
    return g if xp.isdtype(g.dtype, "complex floating") else xp.astype(g, cdt)


def _resize(xp: Any, a: Any, axis: int, length: int, device: Any) -> Any:
    """``a`` truncated or zero-padded (at the end) to ``length`` along ``axis``."""
    have = a.shape[axis]
    if have == length:
        return a
    if type(a) is Tensor:
        return _resize_op(a, axis, length, device)
    if have > length:
        return a[(slice(None),) * axis + (slice(0, length), ...)]
    shape = list(a.shape)
    shape[axis] = length - have
    return xp.concat([a, xp.zeros(tuple(shape), dtype=a.dtype, device=device)], axis=axis)


def _resize_op(a: Tensor, axis: int, length: int, device: Any) -> Tensor:
    """Differentiable :func:`_resize` (rules under ``create_graph``). VJP: resize back (the
    adjoint of zero-padding is truncation, and of truncation zero-padding)."""
    b = a._backend
    y = _resize(b.xp, a.data, axis, length, device)
    if _needs(a):
        return record("fft_resize", b.fix(y), b, (a,), (_resize_back,),
                      params=(axis, a.shape[axis], device))
    return wrap(y, b)


def _resize_back(xp: Any, g: Any, axis: int, length: int, device: Any) -> Any:
    return _resize(xp, g, axis, length, device)


def _fit(xp: Any, a: Any, axes: tuple[int, ...], lengths: tuple[int, ...], device: Any) -> Any:
    for ax, n in zip(axes, lengths):
        a = _resize(xp, a, ax, n, device)
    return a


def _bin_weights(x: Tensor, n: int, axis: int, ndim: int) -> Any:
    """``w`` of the complex-to-real rules along ``axis``: 1 for bin 0 and (even ``n``) bin
    n/2, which appear once in the output, 2 for the others; shaped to broadcast."""
    b = x._backend
    xp = b.xp
    rdt = _kind_dtype(x.data.dtype, xp, "f")
    k = xp.arange(n // 2 + 1, device=b.device_of(x.data))
    w = 2.0 - xp.astype(k == 0, rdt)
    if n % 2 == 0:
        w = w - xp.astype(k == n // 2, rdt)
    return b.fix(xp.reshape(w, (n // 2 + 1,) + (1,) * (ndim - 1 - axis)))


# ---------------------------------------------------------------------------------------------
# The rules. Params: (axes, transform lengths, input lengths, norm, complex dtype, device)


def _fftn_back(xp: Any, g: Any, axes: Any, s: Any, lens: Any, norm: str, cdt: Any,
               dev: Any) -> Any:
    g = xp.fft.ifftn(_complex(xp, g, cdt), axes=axes, norm=_DUAL[norm])
    return _fit(xp, g, axes, lens, dev)


def _ifftn_back(xp: Any, g: Any, axes: Any, s: Any, lens: Any, norm: str, cdt: Any,
                dev: Any) -> Any:
    g = xp.fft.fftn(_complex(xp, g, cdt), axes=axes, norm=_DUAL[norm])
    return _fit(xp, g, axes, lens, dev)


def _rfftn_back(xp: Any, g: Any, axes: Any, s: Any, lens: Any, norm: str, cdt: Any,
                dev: Any) -> Any:
    # ifftn's s zero-pads the half spectrum to the full length n on the last axis.
    g = xp.real(xp.fft.ifftn(_complex(xp, g, cdt), s=s, axes=axes, norm=_DUAL[norm]))
    return _fit(xp, g, axes, lens, dev)


def _irfftn_back(xp: Any, g: Any, w: Any, axes: Any, s: Any, lens: Any, norm: str, cdt: Any,
                 dev: Any) -> Any:
    g = xp.fft.rfftn(g, axes=axes, norm=_DUAL[norm]) * w
    return _fit(xp, g, axes, lens, dev)


def _hfft_back(xp: Any, g: Any, w: Any, axes: Any, s: Any, lens: Any, norm: str, cdt: Any,
               dev: Any) -> Any:
    g = xp.fft.ihfft(g, axis=axes[0], norm=_DUAL[norm]) * w
    return _fit(xp, g, axes, lens, dev)


def _ihfft_back(xp: Any, g: Any, axes: Any, s: Any, lens: Any, norm: str, cdt: Any,
                dev: Any) -> Any:
    g = xp.real(xp.fft.fft(_complex(xp, g, cdt), n=s[0], axis=axes[0], norm=_DUAL[norm]))
    return _fit(xp, g, axes, lens, dev)



# JVP rules (forward mode): every transform is (R-)linear, so its JVP is the transform itself
# applied to the tangent, with the same lengths, axes and norm.
defjvp(_fftn_back, lambda xp, v, y, axes, s, lens, norm, cdt, dev: xp.fft.fftn(
    _complex(xp, v, cdt), s=s, axes=axes, norm=norm))
defjvp(_ifftn_back, lambda xp, v, y, axes, s, lens, norm, cdt, dev: xp.fft.ifftn(
    _complex(xp, v, cdt), s=s, axes=axes, norm=norm))
defjvp(_rfftn_back, lambda xp, v, y, axes, s, lens, norm, cdt, dev: xp.fft.rfftn(
    v, s=s, axes=axes, norm=norm))
defjvp(_irfftn_back, lambda xp, v, y, w, axes, s, lens, norm, cdt, dev: xp.fft.irfftn(
    _complex(xp, v, cdt), s=s, axes=axes, norm=norm))
defjvp(_hfft_back, lambda xp, v, y, w, axes, s, lens, norm, cdt, dev: xp.fft.hfft(
    _complex(xp, v, cdt), n=s[0], axis=axes[0], norm=norm))
defjvp(_ihfft_back, lambda xp, v, y, axes, s, lens, norm, cdt, dev: xp.fft.ihfft(
    v, n=s[0], axis=axes[0], norm=norm))


# ---------------------------------------------------------------------------------------------
# The transforms


def _transform(fn: str, x: Any, s: Any, axes: Any, norm: str, one_d: bool) -> Tensor:
    """Every transform: ``fn`` names it, ``one_d`` says whether ``s``/``axes`` came as
    ``n``/``axis`` (and the backend's 1-d function is called)."""
    norm = _norm(norm, fn)
    real_in = fn in ("rfft", "rfftn", "ihfft")
    c2r = fn in ("irfft", "irfftn", "hfft")
    x = _input(x, fn, "f" if real_in else "c")
    ns = _ns(x, fn)
    shape = x.shape
    ax = _axes(x.ndim, s, axes, fn)
    # The default last length 2·(m-1) only where s leaves it open (s=(1,) with m = 1 is valid).
    open_last = s is None or s[-1] is None or s[-1] == -1
    last = _c2r_default(shape, ax[-1], fn) if c2r and ax and open_last else None
    lengths = _lengths(shape, s, ax, fn, last)
    if one_d:
        y = getattr(ns, fn)(x.data, n=lengths[0], axis=ax[0], norm=norm)
    else:
        y = getattr(ns, fn)(x.data, s=lengths, axes=ax, norm=norm)
    y = _finish(y, x, "f" if c2r else "c")
    b = x._backend
    if not _needs(x):
        return wrap(y, b)
    cdt = _kind_dtype(x.data.dtype, b.xp, "c")
    params = (ax, lengths, tuple(shape[a] for a in ax), norm, cdt, b.device_of(x.data))
    if c2r:
        w = _bin_weights(x, lengths[-1], ax[-1], x.ndim)
        c2r_rule = _hfft_back if fn == "hfft" else _irfftn_back
        return record(fn, y, b, (x,), (c2r_rule,), saved=(w,), params=params)
    rule = {"fft": _fftn_back, "fftn": _fftn_back, "ifft": _ifftn_back, "ifftn": _ifftn_back,
            "rfft": _rfftn_back, "rfftn": _rfftn_back, "ihfft": _ihfft_back}[fn]
    return record(fn, y, b, (x,), (rule,), params=params)


def fft(x: Any, /, *, n: int | None = None, axis: int = -1, norm: str = "backward") -> Tensor:
    """One-dimensional discrete Fourier transform along ``axis`` (zero-padded or truncated to
    ``n`` first). A real input is taken as complex. VJP: ``x̄ = ifft(ḡ, norm=dual(norm))``,
    truncated or zero-padded back to the input's length."""
    return _transform("fft", x, (n,), (axis,), norm, True)


def ifft(x: Any, /, *, n: int | None = None, axis: int = -1, norm: str = "backward") -> Tensor:
    """One-dimensional inverse discrete Fourier transform. VJP: ``x̄ = fft(ḡ,
    norm=dual(norm))``, fitted back to the input's length."""
    return _transform("ifft", x, (n,), (axis,), norm, True)


def fftn(x: Any, /, *, s: Any = None, axes: Any = None, norm: str = "backward") -> Tensor:
    """n-dimensional discrete Fourier transform over ``axes`` (lengths ``s``). VJP: ``x̄ =
    ifftn(ḡ, norm=dual(norm))``, fitted back to the input's shape."""
    return _transform("fftn", x, None if s is None else tuple(s),
                      None if axes is None else tuple(axes), norm, False)


def ifftn(x: Any, /, *, s: Any = None, axes: Any = None, norm: str = "backward") -> Tensor:
    """n-dimensional inverse discrete Fourier transform. VJP: ``x̄ = fftn(ḡ,
    norm=dual(norm))``, fitted back to the input's shape."""
    return _transform("ifftn", x, None if s is None else tuple(s),
                      None if axes is None else tuple(axes), norm, False)


def rfft(x: Any, /, *, n: int | None = None, axis: int = -1, norm: str = "backward") -> Tensor:
    """Transform of a real input: bins ``0..n//2`` of ``fft``. VJP: ``x̄ = Re ifft(ḡ
    zero-padded to n, norm=dual(norm))``, fitted back to the input's length."""
    return _transform("rfft", x, (n,), (axis,), norm, True)


def irfft(x: Any, /, *, n: int | None = None, axis: int = -1, norm: str = "backward") -> Tensor:
    """Inverse of ``rfft``: a real output of length ``n`` (default ``2·(m-1)``) from ``m``
    Hermitian half-spectrum bins. VJP: ``x̄ = w·rfft(ḡ, norm=dual(norm))`` (``w`` 1 at DC and
    the even-``n`` Nyquist bin, else 2), fitted back to ``m`` bins."""
    return _transform("irfft", x, (n,), (axis,), norm, True)


def rfftn(x: Any, /, *, s: Any = None, axes: Any = None, norm: str = "backward") -> Tensor:
    """n-dimensional ``rfft`` (the half spectrum on the last of ``axes``). VJP: ``x̄ = Re
    ifftn(ḡ, s, norm=dual(norm))``, fitted back to the input's shape."""
    return _transform("rfftn", x, None if s is None else tuple(s),
                      None if axes is None else tuple(axes), norm, False)


def irfftn(x: Any, /, *, s: Any = None, axes: Any = None, norm: str = "backward") -> Tensor:
    """n-dimensional ``irfft``. VJP: ``x̄ = w·rfftn(ḡ, norm=dual(norm))`` (``w`` on the last
    axis, as for ``irfft``), fitted back to the input's shape."""
    return _transform("irfftn", x, None if s is None else tuple(s),
                      None if axes is None else tuple(axes), norm, False)


def hfft(x: Any, /, *, n: int | None = None, axis: int = -1, norm: str = "backward") -> Tensor:
    """Transform of a Hermitian-symmetric signal given by its first half: a real output of
    length ``n`` (default ``2·(m-1)``); ``irfft(conj(x), norm=dual(norm))``. VJP: ``x̄ =
    w·ihfft(ḡ, norm=dual(norm))``, fitted back to ``m`` bins."""
    return _transform("hfft", x, (n,), (axis,), norm, True)


def ihfft(x: Any, /, *, n: int | None = None, axis: int = -1, norm: str = "backward") -> Tensor:
    """Inverse of ``hfft`` for a real input: ``conj(rfft(x, norm=dual(norm)))``. VJP: ``x̄ =
    Re fft(ḡ zero-padded to n, norm=dual(norm))``, fitted back to the input's length."""
    return _transform("ihfft", x, (n,), (axis,), norm, True)


def _shift(fn: str, x: Any, axes: Any) -> Tensor:
    x = to_tensor(x, f"fft.{fn}")
    ns = _ns(x, fn)
    ax = tuple(range(x.ndim)) if axes is None else (
        (normalize_axis(axes, x.ndim, f"fft.{fn}"),) if isinstance(axes, int)
        else tuple(normalize_axis(a, x.ndim, f"fft.{fn}") for a in axes))
    b = x._backend
    y = b.fix(getattr(ns, fn)(x.data, axes=ax))
    if _needs(x):
        back = _ifftshift_back if fn == "fftshift" else _fftshift_back
        return record(fn, y, b, (x,), (back,), params=(ax,))
    return wrap(y, b)


def _ifftshift_back(xp: Any, g: Any, axes: Any) -> Any:
    return xp.fft.ifftshift(g, axes=axes)


def _fftshift_back(xp: Any, g: Any, axes: Any) -> Any:
    return xp.fft.fftshift(g, axes=axes)



# JVP: fftshift's VJP is ifftshift and the other way round; each JVP is the op itself.
defjvp(_ifftshift_back, lambda xp, v, y, axes: xp.fft.fftshift(v, axes=axes))
defjvp(_fftshift_back, lambda xp, v, y, axes: xp.fft.ifftshift(v, axes=axes))


def fftshift(x: Any, /, *, axes: Any = None) -> Tensor:
    """Moves the zero-frequency bin to the centre (a roll by ``n//2`` along ``axes``, all by
    default). VJP: ``x̄ = ifftshift(ḡ)``, the inverse roll."""
    return _shift("fftshift", x, axes)


def ifftshift(x: Any, /, *, axes: Any = None) -> Tensor:
    """Inverse of ``fftshift``. VJP: ``x̄ = fftshift(ḡ)``."""
    return _shift("ifftshift", x, axes)


def _freq(fn: str, n: int, d: float, dtype: Any, device: Any) -> Tensor:
    from .creation import _creation_backend

    b = _creation_backend(device)
    ns = getattr(b.xp, "fft", None)
    if ns is None:
        raise NotImplementedError(f"fft.{fn}: backend '{b.name}' has no fft extension")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"fft.{fn}: n must be a positive integer, not {n!r}")
    kw: dict[str, Any] = {}
    if dtype is not None:
        dt = to_backend_dtype(b.xp, dtype)
        if from_backend_dtype(dt).kind != "f":
            raise TypeError(f"fft.{fn}: dtype must be a real floating dtype, not {dtype!r}")
        kw["dtype"] = dt
    if device is not None:
        kw["device"] = device
    return wrap(b.fix(getattr(ns, fn)(n, d=d, **kw)), b)


def fftfreq(n: int, /, *, d: float = 1.0, dtype: Any = None, device: Any = None) -> Tensor:
    """The sample frequencies of ``fft`` for length ``n`` and sample spacing ``d``. A creation
    function: never requires grad."""
    return _freq("fftfreq", n, d, dtype, device)


def rfftfreq(n: int, /, *, d: float = 1.0, dtype: Any = None, device: Any = None) -> Tensor:
    """The sample frequencies of ``rfft`` (``n//2 + 1`` of them). A creation function: never
    requires grad."""
    return _freq("rfftfreq", n, d, dtype, device)


for _f in (fft, ifft, fftn, ifftn, rfft, irfft, rfftn, irfftn, hfft, ihfft, fftfreq, rfftfreq,
           fftshift, ifftshift):
    _f.__module__ = "agnograd.fft"
