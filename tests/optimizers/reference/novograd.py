"""Float64 NumPy reference of NovoGrad: Ginsburg et al. (2019), arXiv:1905.11286, Algorithm 1.

"Stochastic Gradient Methods with Layer-wise Adaptive Moments for Training of Deep Networks",
with v_1 = ||g_1||^2.
`params` is a list of arrays and `grads[t][i]` the gradient of variable i at step t + 1; returns the
final params. `weight_decay` is Keras's decoupled weight decay, applied before each step as Keras
does: w <- w - learning_rate * weight_decay * w; `momentum_weight_decay` is the paper's d.
"""

import numpy as np


def novograd(params, grads, *, learning_rate, beta_1=0.95, beta_2=0.98, epsilon=1e-8, momentum_weight_decay=0.0,
             grad_averaging=False, weight_decay=0.0):  # fmt: skip
    params = [np.array(p, dtype=np.float64) for p in params]
    m = [np.zeros_like(w) for w in params]
    v = [0.0 for _ in params]
    for t, step_grads in enumerate(grads, start=1):
        for i, g in enumerate(step_grads):
            g = np.asarray(g, np.float64)
            w = params[i] - learning_rate * weight_decay * params[i]
            squared_norm = float(np.sum(g * g))
            v[i] = squared_norm if t == 1 else beta_2 * v[i] + (1.0 - beta_2) * squared_norm
            normalized = g / (np.sqrt(v[i]) + epsilon) + momentum_weight_decay * w
            m[i] = beta_1 * m[i] + ((1.0 - beta_1) if grad_averaging else 1.0) * normalized
            params[i] = w - learning_rate * m[i]
    return params
