"""Split a training set across sources: IID, or label-skewed by a Dirichlet(alpha) draw."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def partition(
    labels: torch.Tensor, sources: int, kind: str = "iid", alpha: float = 0.5, seed: int = 0, cap: int | None = None
) -> list[np.ndarray]:
    """Indices of the training samples each source holds (disjoint)."""
    rng = np.random.default_rng(seed)
    y = labels.numpy()
    if kind == "iid":
        parts = np.array_split(rng.permutation(len(y)), sources)
    elif kind == "dirichlet":
        parts_l: list[list[int]] = [[] for _ in range(sources)]
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            shares = rng.dirichlet(np.full(sources, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts_l[k].extend(chunk.tolist())
        parts = [rng.permutation(np.array(p, dtype=np.int64)) for p in parts_l]
    else:
        raise ValueError(f"unknown partition kind {kind!r}")
    if cap is not None:
        parts = [p[:cap] for p in parts]
    return [np.asarray(p, dtype=np.int64) for p in parts]
