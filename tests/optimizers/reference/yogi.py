"""Float64 NumPy reference of Yogi: Zaheer et al. (2018), NeurIPS, Algorithm 2.

"Adaptive Methods for Nonconvex Optimization", without bias correction, v_0 = the initial
accumulator.
`params` is a list of arrays and `grads[t][i]` the gradient of variable i at step t + 1; returns the
final params. `weight_decay` is Keras's decoupled weight decay, applied before each step as Keras
does: w <- w - learning_rate * weight_decay * w.
"""

import numpy as np


def yogi(params, grads, *, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-3, initial_accumulator_value=1e-6,
         weight_decay=0.0):  # fmt: skip
    params = [np.array(p, dtype=np.float64) for p in params]
    m = [np.zeros_like(w) for w in params]
    v = [np.full_like(w, initial_accumulator_value) for w in params]
    for step_grads in grads:
        for i, g in enumerate(step_grads):
            g = np.asarray(g, np.float64)
            w = params[i] - learning_rate * weight_decay * params[i]
            m[i] = beta_1 * m[i] + (1.0 - beta_1) * g
            v[i] = v[i] - (1.0 - beta_2) * np.sign(v[i] - g * g) * g * g
            params[i] = w - learning_rate * m[i] / (np.sqrt(v[i]) + epsilon)
    return params
