"""Float64 NumPy reference of MADGRAD: Defazio and Jelassi (2021), arXiv:2101.11075, Algorithm 1.

"Adaptivity without Compromise: A Momentumized, Adaptive, Dual Averaged Gradient Method for
Stochastic Optimization", with the authors' decoupled decay (`decouple_decay`: after the step,
from the iterate before it). `params` is a list of arrays and `grads[t][i]` the gradient of
variable i at step t + 1; returns the final params.
"""

import math

import numpy as np


def madgrad(params, grads, *, learning_rate=1e-2, momentum=0.9, epsilon=1e-6, weight_decay=0.0,
            decoupled_weight_decay=True):  # fmt: skip
    """Algorithm 1 of the paper; the decoupled decay is the authors' `decouple_decay` (after the step).

    Without momentum the authors' code re-derives x0 = x + s / (nu^(1/3) + epsilon) from the
    iterate before each step (so the decoupled decay accumulates in it); so does this reference.
    """
    x = [np.array(p, dtype=np.float64) for p in params]
    x0 = [p.copy() for p in x]
    s = [np.zeros_like(p) for p in x]
    nu = [np.zeros_like(p) for p in x]
    c = 1 - momentum
    weight_decay = weight_decay or 0.0
    for k, step_grads in enumerate(grads):
        lam = learning_rate * math.sqrt(k + 1)
        for i, g in enumerate(np.array(gi, dtype=np.float64) for gi in step_grads):
            if not decoupled_weight_decay:
                g = g + weight_decay * x[i]  # the paper's decay: an L2 term in the gradient
            if momentum == 0:
                rms = np.cbrt(nu[i]) + epsilon
                x0[i] = x[i] + np.divide(s[i], rms, out=np.zeros_like(s[i]), where=rms > 0)
            s[i] = s[i] + lam * g
            nu[i] = nu[i] + lam * g**2
            rms = np.cbrt(nu[i]) + epsilon
            z = x0[i] - np.divide(s[i], rms, out=np.zeros_like(s[i]), where=rms > 0)
            x_old = x[i]
            x[i] = (1 - c) * x[i] + c * z
            if decoupled_weight_decay:
                x[i] = x[i] - learning_rate * weight_decay * x_old  # the authors' decouple_decay
    return x
