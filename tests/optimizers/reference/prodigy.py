"""Float64 NumPy reference of Prodigy: Mishchenko and Defazio (2023), arXiv:2306.06101, Algorithm 3.

"Prodigy: An Expeditiously Adaptive Parameter-Free Learner", with the options of the authors'
code (d_coef, growth_rate, safeguard_warmup, bias correction, weight decay). `params` is a list
of arrays and `grads[t][i]` the gradient of variable i at step t + 1; returns the final params.
"""

import math

import numpy as np


def prodigy(params, grads, *, learning_rate=1.0, beta_1=0.9, beta_2=0.999, beta_3=None, epsilon=1e-8, d0=1e-6,
            d_coef=1.0, growth_rate=math.inf, safeguard_warmup=False, bias_correction=False, weight_decay=0.0,
            decoupled_weight_decay=True, return_d=False):  # fmt: skip
    """Prodigy with d updated at the end of each step (as in the paper); `return_d` adds the d history.

    `learning_rate` may be a list (one value per step). d_history[k] is the d used at step k.
    """
    x = [np.array(p, dtype=np.float64) for p in params]
    x0 = [p.copy() for p in x]
    m = [np.zeros_like(p) for p in x]
    v = [np.zeros_like(p) for p in x]
    s = [np.zeros_like(p) for p in x]
    beta_3 = math.sqrt(beta_2) if beta_3 is None else beta_3
    weight_decay = weight_decay or 0.0
    d, d_max, r = d0, d0, 0.0
    d_history = []
    for k, step_grads in enumerate(grads):
        d_history.append(d)
        lr = learning_rate[k] if isinstance(learning_rate, (list, tuple)) else learning_rate
        if lr == 0.0:
            continue
        b = math.sqrt(1 - beta_2 ** (k + 1)) / (1 - beta_1 ** (k + 1)) if bias_correction else 1.0
        dlr = d * lr * b
        g = [np.array(gi, dtype=np.float64) for gi in step_grads]
        if not decoupled_weight_decay:
            g = [gi + weight_decay * xi for gi, xi in zip(g, x)]
        r = beta_3 * r + (1 - beta_3) * d * dlr * sum(float(np.sum(gi * (x0i - xi))) for gi, x0i, xi in zip(g, x0, x))
        for i in range(len(x)):
            m[i] = beta_1 * m[i] + (1 - beta_1) * d * g[i]
            v[i] = beta_2 * v[i] + (1 - beta_2) * d**2 * g[i] ** 2
            s[i] = beta_3 * s[i] + (1 - beta_3) * d * (d if safeguard_warmup else dlr) * g[i]
        s_norm = sum(float(np.sum(np.abs(si))) for si in s)
        next_d = d
        if s_norm > 0:
            d_hat = d_coef * r / s_norm
            grown = max(d, d_hat) if d == d0 else d
            d_max = max(d_max, d_hat)
            next_d = min(d_max, grown * growth_rate)
        for i in range(len(x)):
            decay = weight_decay if decoupled_weight_decay else 0.0
            x[i] = x[i] * (1 - decay * dlr) - dlr * m[i] / (np.sqrt(v[i]) + d * epsilon)
        d = next_d
    d_history.append(d)
    return (x, d_history) if return_d else x
