"""Float64 NumPy reference of RAdam: Liu et al. (2020), arXiv:1908.03265, Algorithm 2.

"On the Variance of the Adaptive Learning Rate and Beyond", with epsilon added to sqrt(v_hat) as the
authors' code.
`params` is a list of arrays and `grads[t][i]` the gradient of variable i at step t + 1; returns the
final params. `weight_decay` is Keras's decoupled weight decay, applied before each step as Keras
does: w <- w - learning_rate * weight_decay * w.
"""

import numpy as np


def radam(params, grads, *, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=0.0):
    params = [np.array(p, dtype=np.float64) for p in params]
    m = [np.zeros_like(w) for w in params]
    v = [np.zeros_like(w) for w in params]
    rho_inf = 2.0 / (1.0 - beta_2) - 1.0
    for t, step_grads in enumerate(grads, start=1):
        rho_t = radam_rho(t, beta_2)
        for i, g in enumerate(step_grads):
            g = np.asarray(g, np.float64)
            w = params[i] - learning_rate * weight_decay * params[i]
            m[i] = beta_1 * m[i] + (1.0 - beta_1) * g
            v[i] = beta_2 * v[i] + (1.0 - beta_2) * g * g
            m_hat = m[i] / (1.0 - beta_1**t)
            if rho_t > 4.0:
                r_t = np.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
                v_hat = v[i] / (1.0 - beta_2**t)
                params[i] = w - learning_rate * r_t * m_hat / (np.sqrt(v_hat) + epsilon)
            else:
                params[i] = w - learning_rate * m_hat
    return params


def radam_rho(t, beta_2):
    """rho_t, the length of the approximated simple moving average at step t (Eq. (5))."""
    rho_inf = 2.0 / (1.0 - beta_2) - 1.0
    return rho_inf - 2.0 * t * beta_2**t / (1.0 - beta_2**t)
