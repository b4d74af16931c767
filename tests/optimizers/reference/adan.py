"""Float64 NumPy reference of Adan: Xie et al. (2022), arXiv:2208.06677, Algorithm 1.

"Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep Models", with the bias
corrections of the authors' code and betas as decay rates (the paper's beta_i = 1 - these).
`params` is a list of arrays and `grads[t][i]` the gradient of variable i at step t + 1; returns the
final params. `weight_decay` is the paper's proximal decay: x <- x / (1 + learning_rate * weight_decay).
"""

import numpy as np


def adan(params, grads, *, learning_rate=1e-3, beta_1=0.98, beta_2=0.92, beta_3=0.99, epsilon=1e-8,
         weight_decay=0.0):  # fmt: skip
    x = [np.array(p, dtype=np.float64) for p in params]
    m = [np.zeros_like(p) for p in x]
    v = [np.zeros_like(p) for p in x]
    n = [np.zeros_like(p) for p in x]
    previous = None
    for k, step_grads in enumerate(grads, start=1):
        g = [np.array(gi, dtype=np.float64) for gi in step_grads]
        for i in range(len(x)):
            diff = np.zeros_like(g[i]) if previous is None else g[i] - previous[i]
            m[i] = beta_1 * m[i] + (1 - beta_1) * g[i]
            v[i] = beta_2 * v[i] + (1 - beta_2) * diff
            n[i] = beta_3 * n[i] + (1 - beta_3) * (g[i] + beta_2 * diff) ** 2
            eta = learning_rate / (np.sqrt(n[i] / (1 - beta_3**k)) + epsilon)
            update = m[i] / (1 - beta_1**k) + beta_2 * v[i] / (1 - beta_2**k)
            x[i] = (x[i] - eta * update) / (1 + learning_rate * (weight_decay or 0.0))
        previous = g
    return x
