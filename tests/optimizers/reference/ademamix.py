"""Float64 NumPy reference of AdEMAMix: Pagliardini et al. (2024), arXiv:2409.03033, Algorithm 1.

"The AdEMAMix Optimizer: Better, Faster, Older", with the alpha and beta_3 schedulers of Section 3.
`params` is a list of arrays and `grads[t][i]` the gradient of variable i at step t + 1; returns the
final params. `weight_decay` is the paper's lambda term, decoupled and applied before each step.
"""

import math

import numpy as np


def ademamix(params, grads, *, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, beta_3=0.9999, alpha=5.0,
             alpha_beta3_warmup_steps=None, epsilon=1e-8, weight_decay=0.0):  # fmt: skip
    x = [np.array(p, dtype=np.float64) for p in params]
    m1 = [np.zeros_like(p) for p in x]
    m2 = [np.zeros_like(p) for p in x]
    nu = [np.zeros_like(p) for p in x]
    for t, step_grads in enumerate(grads, start=1):
        if alpha_beta3_warmup_steps is None:
            alpha_t, beta_3_t = alpha, beta_3
        else:
            T = alpha_beta3_warmup_steps
            alpha_t = min(t * alpha / T, alpha)
            exponent = math.log(beta_1) * math.log(beta_3) / ((1 - t / T) * math.log(beta_3) + t / T * math.log(beta_1))
            beta_3_t = min(math.exp(exponent), beta_3)
        for i, g in enumerate(np.array(gi, dtype=np.float64) for gi in step_grads):
            x[i] = x[i] - learning_rate * (weight_decay or 0.0) * x[i]  # the paper's lambda term, decoupled
            m1[i] = beta_1 * m1[i] + (1 - beta_1) * g
            m2[i] = beta_3_t * m2[i] + (1 - beta_3_t) * g
            nu[i] = beta_2 * nu[i] + (1 - beta_2) * g**2
            m1_hat = m1[i] / (1 - beta_1**t)
            nu_hat = nu[i] / (1 - beta_2**t)
            x[i] = x[i] - learning_rate * (m1_hat + alpha_t * m2[i]) / (np.sqrt(nu_hat) + epsilon)
    return x
