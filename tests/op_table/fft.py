"""Table records: the ``fft`` extension, every differentiable function of it.

Odd and even transform lengths, ``n``/``s`` shorter and longer than the input (truncation and
zero-padding), each ``norm``, complex128 inputs and, where the function takes them, float64
ones (real inputs of ``fft``-type transforms are cast to complex, and their gradient is the real
part). Complex outputs are checked through ``Re(sum(conj(v)·y))`` for a random complex ``v``, and
complex inputs by finite differences along both their real and imaginary parts (see
``agnograd.testing.check_grad``).
"""

from __future__ import annotations

import agnograd as ag

from .core import Op, category

NORMS = ("backward", "ortho", "forward")


def _complex(rng, shapes):
    return [rng.uniform(-1.0, 1.0, size=s) + 1j * rng.uniform(-1.0, 1.0, size=s) for s in shapes]


def _real(rng, shapes):
    return [rng.uniform(-1.0, 1.0, size=s) for s in shapes]


def _op(name, fn, cases, make):
    return Op(f"fft.{name}", fn, cases, make=make)


F = ag.fft
OPS: list[Op] = []
for _norm in NORMS:
    # One record per function and norm, on an odd and an even length.
    OPS += [
        _op(f"fft-{_norm}", lambda x, m=_norm: F.fft(x, norm=m), [((2, 5),), ((6,),)], _complex),
        _op(f"ifft-{_norm}", lambda x, m=_norm: F.ifft(x, norm=m), [((2, 5),), ((6,),)], _complex),
        _op(f"fftn-{_norm}", lambda x, m=_norm: F.fftn(x, norm=m), [((3, 4),)], _complex),
        _op(f"ifftn-{_norm}", lambda x, m=_norm: F.ifftn(x, norm=m), [((3, 4),)], _complex),
        _op(f"rfft-{_norm}", lambda x, m=_norm: F.rfft(x, norm=m), [((2, 5),), ((6,),)], _real),
        # irfft's default n = 2(m-1) is even; n = 2m-1 is the odd length with the same bins.
        _op(f"irfft-{_norm}", lambda x, m=_norm: F.irfft(x, norm=m), [((2, 4),)], _complex),
        _op(f"irfft-odd-{_norm}", lambda x, m=_norm: F.irfft(x, n=7, norm=m), [((2, 4),)],
            _complex),
        _op(f"rfftn-{_norm}", lambda x, m=_norm: F.rfftn(x, norm=m), [((3, 4),), ((2, 5),)], _real),
        _op(f"irfftn-{_norm}", lambda x, m=_norm: F.irfftn(x, norm=m), [((3, 4),)], _complex),
        _op(f"irfftn-odd-{_norm}", lambda x, m=_norm: F.irfftn(x, s=(3, 5), norm=m), [((3, 3),)],
            _complex),
        _op(f"hfft-{_norm}", lambda x, m=_norm: F.hfft(x, norm=m), [((2, 4),)], _complex),
        _op(f"hfft-odd-{_norm}", lambda x, m=_norm: F.hfft(x, n=5, norm=m), [((2, 3),)], _complex),
        _op(f"ihfft-{_norm}", lambda x, m=_norm: F.ihfft(x, norm=m), [((2, 5),), ((6,),)], _real),
    ]

OPS += [
    # n / s longer than the input (zero-padding) and shorter (truncation), other axes.
    _op("fft-n-pad", lambda x: F.fft(x, n=8), [((2, 5),)], _complex),
    _op("fft-n-truncate-ortho", lambda x: F.fft(x, n=3, norm="ortho"), [((2, 6),)], _complex),
    _op("fft-axis0-real-input", lambda x: F.fft(x, axis=0), [((5, 2),)], _real),
    _op("ifft-n-pad-forward", lambda x: F.ifft(x, n=7, axis=0, norm="forward"), [((4, 2),)],
        _complex),
    _op("ifft-n-truncate-real-input", lambda x: F.ifft(x, n=4), [((2, 7),)], _real),
    _op("fftn-s-pad-truncate", lambda x: F.fftn(x, s=(2, 6)), [((3, 4),)], _complex),
    _op("fftn-axes-real-input", lambda x: F.fftn(x, axes=(0, 2), norm="ortho"), [((2, 3, 3),)],
        _real),
    _op("ifftn-s-axes", lambda x: F.ifftn(x, s=(5, 2), axes=(1, 0)), [((3, 4),)], _complex),
    _op("rfft-n-pad", lambda x: F.rfft(x, n=9), [((2, 6),)], _real),
    _op("rfft-n-truncate-even", lambda x: F.rfft(x, n=4, norm="ortho"), [((2, 5),)], _real),
    _op("rfft-axis0", lambda x: F.rfft(x, axis=0, norm="forward"), [((5, 3),)], _real),
    _op("irfft-n-pad", lambda x: F.irfft(x, n=12), [((2, 4),)], _complex),
    _op("irfft-n-truncate-odd", lambda x: F.irfft(x, n=5, norm="ortho"), [((2, 5),)], _complex),
    _op("irfft-real-input-axis0", lambda x: F.irfft(x, axis=0), [((4, 2),)], _real),
    _op("rfftn-s-pad-truncate", lambda x: F.rfftn(x, s=(2, 7)), [((3, 4),)], _real),
    _op("rfftn-axes", lambda x: F.rfftn(x, axes=(1, 0), norm="ortho"), [((4, 3),)], _real),
    _op("irfftn-s-pad", lambda x: F.irfftn(x, s=(4, 8), norm="forward"), [((3, 3),)], _complex),
    _op("irfftn-s-truncate", lambda x: F.irfftn(x, s=(2, 4)), [((3, 4),)], _complex),
    _op("irfftn-axes", lambda x: F.irfftn(x, axes=(0,), norm="ortho"), [((4, 2),)], _complex),
    _op("hfft-n-pad", lambda x: F.hfft(x, n=10, norm="ortho"), [((2, 3),)], _complex),
    _op("hfft-n-truncate", lambda x: F.hfft(x, n=4, norm="forward"), [((2, 5),)], _complex),
    _op("hfft-real-input", lambda x: F.hfft(x, axis=0), [((3, 2),)], _real),
    _op("ihfft-n-pad", lambda x: F.ihfft(x, n=8, norm="ortho"), [((2, 5),)], _real),
    _op("ihfft-n-truncate", lambda x: F.ihfft(x, n=3, axis=0), [((6, 2),)], _real),
    _op("fftshift", lambda x: F.fftshift(x), [((2, 5),), ((6,),)], _complex),
    _op("fftshift-axes-real", lambda x: F.fftshift(x, axes=(1,)), [((3, 5),)], _real),
    _op("ifftshift", lambda x: F.ifftshift(x), [((3, 4),), ((5,),)], _complex),
    _op("ifftshift-axes-real", lambda x: F.ifftshift(x, axes=0), [((5, 2),)], _real),
    # A real -> complex -> real chain of transforms, with a nonlinearity between them: the
    # second-order check then has a non-zero Hessian to compare.
    _op("irfft-rfft-chain", lambda x: F.irfft(F.rfft(x * x, norm="ortho"), n=5) ** 2, [((5,),)],
        _real),
    _op("hfft-ihfft-chain", lambda x: F.hfft(F.ihfft(x ** 3), n=6, norm="forward") * x,
        [((6,),)], _real),
]

category("fft", OPS)
