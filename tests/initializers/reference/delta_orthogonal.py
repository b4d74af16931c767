"""Float64 NumPy reference of the delta-orthogonal kernel: Xiao et al. (2018), "Dynamical Isometry and a Mean
Field Theory of CNNs", arXiv:1806.05393, Algorithm 2.

A kernel of shape (k_1, ..., k_d, C_in, C_out) is zero except at the centre tap (k_1 // 2, ..., k_d // 2),
which holds gain * H with H H^T = I (C_in <= C_out) or H^T H = I (C_in > C_out).
"""

from __future__ import annotations

import numpy as np


def centre_tap(shape) -> tuple[int, ...]:
    """Index of the centre tap of a kernel of `shape` = (*spatial, in, out)."""
    return tuple(size // 2 for size in shape[:-2])


def off_centre_taps(kernel: np.ndarray) -> np.ndarray:
    """Every tap but the centre one, as an array of shape (taps - 1, in, out)."""
    spatial = kernel.shape[:-2]
    mask = np.ones(spatial, dtype=bool)
    mask[centre_tap(kernel.shape)] = False
    return np.asarray(kernel, np.float64)[mask]


def semi_orthogonality_error(matrix: np.ndarray, gain: float = 1.0) -> float:
    """max |M M^T / gain^2 - I| for a wide or square M (rows <= columns), else max |M^T M / gain^2 - I|."""
    matrix = np.asarray(matrix, np.float64)
    rows, columns = matrix.shape
    gram = matrix @ matrix.T if rows <= columns else matrix.T @ matrix
    return float(np.max(np.abs(gram / gain**2 - np.eye(min(rows, columns)))))
