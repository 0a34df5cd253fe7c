"""Small data sets shipped with agnograd.

``load_digits`` reads the UCI handwritten digits (1,797 8x8 images of the digits 0-9, pixels
0..16) from ``agnograd/data/digits.csv.gz`` -- the copy scikit-learn bundles of the test part of
the UCI "Optical Recognition of Handwritten Digits" data set (E. Alpaydin, C. Kaynak, 1998;
licence CC BY 4.0; see ``agnograd/data/README.md``).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import agnograd as ag

from .backends.host import host_rng, load_csv

__all__ = ["load_digits", "train_test_split", "DIGITS_SOURCE"]

DIGITS_SOURCE = ("UCI ML Repository, Optical Recognition of Handwritten Digits (E. Alpaydin, "
                 "C. Kaynak, 1998), CC BY 4.0, https://doi.org/10.24432/C50P49")


def load_digits(backend: str | None = None, dtype: Any = None, scale: bool = True
                ) -> tuple[ag.Tensor, ag.Tensor]:
    """The 1,797 digits as ``(X, y)``: ``X`` of shape ``(1797, 64)`` (pixels divided by 16 when
    ``scale``, dtype ``dtype``, default float32) and integer labels ``y`` of shape ``(1797,)``
    (int64), both on ``backend``."""
    ref = resources.files("agnograd") / "data" / "digits.csv.gz"
    with resources.as_file(ref) as path:
        table = load_csv(path)
    if table.shape != (1797, 65):
        raise ValueError(f"{path}: expected a 1797 x 65 table, found {table.shape}")
    pixels = table[:, :64] / 16.0 if scale else table[:, :64]
    X = ag.tensor(pixels, backend=backend, dtype=ag.float32 if dtype is None else dtype)
    y = ag.tensor(table[:, 64].astype("int64"), backend=backend)
    return X, y


def train_test_split(*arrays: ag.Tensor, test_fraction: float = 0.2, seed: int | None = 0
                     ) -> list[ag.Tensor]:
    """Shuffle the rows of ``arrays`` (all of one length) with a seeded host permutation and split
    them: returns ``[a_train, a_test, b_train, b_test, ...]``."""
    if not arrays:
        raise ValueError("train_test_split needs at least one array")
    n = arrays[0].shape[0]
    if any(a.shape[0] != n for a in arrays):
        raise ValueError("train_test_split: the arrays have different numbers of rows")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), not {test_fraction}")
    n_test = max(1, int(round(n * test_fraction)))
    perm = host_rng(seed).permutation(n)
    out = []
    for a in arrays:
        idx = ag.tensor(perm, backend=a.backend, device=a.device)
        shuffled = ag.take(a, idx, axis=0)
        out += [shuffled[n_test:, ...], shuffled[:n_test, ...]]
    return out
