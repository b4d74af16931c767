"""Float64 NumPy reference of AdaBelief: Zhuang et al. (2020), arXiv:2010.07468, Algorithm 2.

"AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed Gradients".
`params` is a list of arrays and `grads[t][i]` the gradient of variable i at step t + 1; returns the
final params. `weight_decay` is Keras's decoupled weight decay, applied before each step as Keras
does: w <- w - learning_rate * weight_decay * w.
"""

import numpy as np


def adabelief(params, grads, *, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-16, weight_decay=0.0):
    params = [np.array(p, dtype=np.float64) for p in params]
    m = [np.zeros_like(w) for w in params]
    s = [np.zeros_like(w) for w in params]
    for t, step_grads in enumerate(grads, start=1):
        for i, g in enumerate(step_grads):
            g = np.asarray(g, np.float64)
            w = params[i] - learning_rate * weight_decay * params[i]
            m[i] = beta_1 * m[i] + (1.0 - beta_1) * g
            s[i] = beta_2 * s[i] + (1.0 - beta_2) * (g - m[i]) ** 2 + epsilon
            m_hat = m[i] / (1.0 - beta_1**t)
            s_hat = s[i] / (1.0 - beta_2**t)
            params[i] = w - learning_rate * m_hat / (np.sqrt(s_hat) + epsilon)
    return params
