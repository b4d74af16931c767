"""Float64 NumPy references of Adan, AdEMAMix, MADGRAD and Prodigy, written from their papers.

Each takes `params` (a list of arrays) and `grads` (grads[t][i]: the gradient of variable i at
step t) and returns the final params; the gradients are fixed in advance, as in the table tests.

- Adan: Xie et al. (2022), arXiv:2208.06677, Algorithm 1, with the bias corrections of the
  authors' code and betas as decay rates (the paper's beta_i = 1 - these).
- AdEMAMix: Pagliardini et al. (2024), arXiv:2409.03033, Algorithm 1 and the schedulers of Section 3.
- MADGRAD: Defazio and Jelassi (2021), arXiv:2101.11075, Algorithm 1, with the authors' decoupled
  decay (`decouple_decay`: after the step, from the iterate before it).
- Prodigy: Mishchenko and Defazio (2023), arXiv:2306.06101, Algorithm 3, with the options of
  the authors' code (d_coef, growth_rate, safeguard_warmup, bias correction, weight decay).
"""

import math

import numpy as np


def _float64(arrays):
    return [np.array(a, dtype=np.float64) for a in arrays]


def adan(params, grads, *, learning_rate=1e-3, beta_1=0.98, beta_2=0.92, beta_3=0.99, epsilon=1e-8,
         weight_decay=0.0):  # fmt: skip
    x = _float64(params)
    m = [np.zeros_like(p) for p in x]
    v = [np.zeros_like(p) for p in x]
    n = [np.zeros_like(p) for p in x]
    previous = None
    for k, step_grads in enumerate(grads, start=1):
        g = _float64(step_grads)
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


def ademamix(params, grads, *, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, beta_3=0.9999, alpha=5.0,
             alpha_beta3_warmup_steps=None, epsilon=1e-8, weight_decay=0.0):  # fmt: skip
    x = _float64(params)
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
        for i, g in enumerate(_float64(step_grads)):
            x[i] = x[i] - learning_rate * (weight_decay or 0.0) * x[i]  # the paper's lambda term, decoupled
            m1[i] = beta_1 * m1[i] + (1 - beta_1) * g
            m2[i] = beta_3_t * m2[i] + (1 - beta_3_t) * g
            nu[i] = beta_2 * nu[i] + (1 - beta_2) * g**2
            m1_hat = m1[i] / (1 - beta_1**t)
            nu_hat = nu[i] / (1 - beta_2**t)
            x[i] = x[i] - learning_rate * (m1_hat + alpha_t * m2[i]) / (np.sqrt(nu_hat) + epsilon)
    return x


def madgrad(params, grads, *, learning_rate=1e-2, momentum=0.9, epsilon=1e-6, weight_decay=0.0,
            decoupled_weight_decay=True):  # fmt: skip
    """Algorithm 1 of the paper; the decoupled decay is the authors' `decouple_decay` (after the step).

    Without momentum the authors' code re-derives x0 = x + s / (nu^(1/3) + epsilon) from the
    iterate before each step (so the decoupled decay accumulates in it); so does this reference.
    """
    x = _float64(params)
    x0 = [p.copy() for p in x]
    s = [np.zeros_like(p) for p in x]
    nu = [np.zeros_like(p) for p in x]
    c = 1 - momentum
    weight_decay = weight_decay or 0.0
    for k, step_grads in enumerate(grads):
        lam = learning_rate * math.sqrt(k + 1)
        for i, g in enumerate(_float64(step_grads)):
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


def prodigy(params, grads, *, learning_rate=1.0, beta_1=0.9, beta_2=0.999, beta_3=None, epsilon=1e-8, d0=1e-6,
            d_coef=1.0, growth_rate=math.inf, safeguard_warmup=False, bias_correction=False, weight_decay=0.0,
            decoupled_weight_decay=True, return_d=False):  # fmt: skip
    """Prodigy with d updated at the end of each step (as in the paper); `return_d` adds the d history.

    `learning_rate` may be a list (one value per step). d_history[k] is the d used at step k.
    """
    x = _float64(params)
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
        g = _float64(step_grads)
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
