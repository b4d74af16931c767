"""Float64 NumPy reference of stochastic depth: Huang et al. (2016), "Deep Networks with Stochastic Depth",
arXiv:1603.09382, Eq. (2) and Section 3 ("Test-time")."""

import numpy as np


def stochastic_depth(shortcut, residual, survival_probability, keep=None):
    """H = shortcut + b * residual while training (keep = b), shortcut + p * residual at test time."""
    shortcut, residual = np.asarray(shortcut, np.float64), np.asarray(residual, np.float64)
    factor = survival_probability if keep is None else np.asarray(keep, np.float64)
    return shortcut + factor * residual
