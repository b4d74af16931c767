"""Float64 NumPy references of RAdam, AdaBelief, Yogi, NovoGrad and LARS, written from their papers.

- RAdam: Liu et al. (2020), arXiv:1908.03265, Algorithm 2 (epsilon added to sqrt(v_hat), as the
  authors' code).
- AdaBelief: Zhuang et al. (2020), arXiv:2010.07468, Algorithm 2.
- Yogi: Zaheer et al. (2018), NeurIPS, Algorithm 2 (no bias correction, v_0 = initial accumulator).
- NovoGrad: Ginsburg et al. (2019), arXiv:1905.11286, Algorithm 1 (v_1 = ||g_1||^2).
- LARS: You, Gitman and Ginsburg (2017), arXiv:1708.03888, Algorithm 1.

Each function takes `params`, a list of arrays, and `grads`, where `grads[t][i]` is the gradient of
variable i at step t + 1, and returns the list of final params. `weight_decay` is Keras's decoupled
weight decay, applied before each step as Keras does: w <- w - learning_rate * weight_decay * w.
"""

import numpy as np


def _as_float64(arrays):
    return [np.array(a, dtype=np.float64) for a in arrays]


def _decoupled_decay(w, learning_rate, weight_decay):
    return w - learning_rate * weight_decay * w


def radam(params, grads, *, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=0.0):
    params = _as_float64(params)
    m = [np.zeros_like(w) for w in params]
    v = [np.zeros_like(w) for w in params]
    rho_inf = 2.0 / (1.0 - beta_2) - 1.0
    for t, step_grads in enumerate(grads, start=1):
        rho_t = rho_inf - 2.0 * t * beta_2**t / (1.0 - beta_2**t)
        for i, g in enumerate(step_grads):
            g = np.asarray(g, np.float64)
            w = _decoupled_decay(params[i], learning_rate, weight_decay)
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


def adabelief(params, grads, *, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-16, weight_decay=0.0):
    params = _as_float64(params)
    m = [np.zeros_like(w) for w in params]
    s = [np.zeros_like(w) for w in params]
    for t, step_grads in enumerate(grads, start=1):
        for i, g in enumerate(step_grads):
            g = np.asarray(g, np.float64)
            w = _decoupled_decay(params[i], learning_rate, weight_decay)
            m[i] = beta_1 * m[i] + (1.0 - beta_1) * g
            s[i] = beta_2 * s[i] + (1.0 - beta_2) * (g - m[i]) ** 2 + epsilon
            m_hat = m[i] / (1.0 - beta_1**t)
            s_hat = s[i] / (1.0 - beta_2**t)
            params[i] = w - learning_rate * m_hat / (np.sqrt(s_hat) + epsilon)
    return params


def yogi(params, grads, *, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-3, initial_accumulator_value=1e-6,
         weight_decay=0.0):  # fmt: skip
    params = _as_float64(params)
    m = [np.zeros_like(w) for w in params]
    v = [np.full_like(w, initial_accumulator_value) for w in params]
    for step_grads in grads:
        for i, g in enumerate(step_grads):
            g = np.asarray(g, np.float64)
            w = _decoupled_decay(params[i], learning_rate, weight_decay)
            m[i] = beta_1 * m[i] + (1.0 - beta_1) * g
            v[i] = v[i] - (1.0 - beta_2) * np.sign(v[i] - g * g) * g * g
            params[i] = w - learning_rate * m[i] / (np.sqrt(v[i]) + epsilon)
    return params


def novograd(params, grads, *, learning_rate, beta_1=0.95, beta_2=0.98, epsilon=1e-8, momentum_weight_decay=0.0,
             grad_averaging=False, weight_decay=0.0):  # fmt: skip
    params = _as_float64(params)
    m = [np.zeros_like(w) for w in params]
    v = [0.0 for _ in params]
    for t, step_grads in enumerate(grads, start=1):
        for i, g in enumerate(step_grads):
            g = np.asarray(g, np.float64)
            w = _decoupled_decay(params[i], learning_rate, weight_decay)
            squared_norm = float(np.sum(g * g))
            v[i] = squared_norm if t == 1 else beta_2 * v[i] + (1.0 - beta_2) * squared_norm
            normalized = g / (np.sqrt(v[i]) + epsilon) + momentum_weight_decay * w
            m[i] = beta_1 * m[i] + ((1.0 - beta_1) if grad_averaging else 1.0) * normalized
            params[i] = w - learning_rate * m[i]
    return params


def lars(params, grads, *, learning_rate, momentum=0.9, trust_coefficient=0.001, momentum_weight_decay=0.0,
         epsilon=1e-8, adapted=None, weight_decay=0.0):  # fmt: skip
    """`adapted[i]` False gives variable i the plain momentum-SGD step (default: all adapted)."""
    params = _as_float64(params)
    adapted = [True] * len(params) if adapted is None else adapted
    velocity = [np.zeros_like(w) for w in params]
    for step_grads in grads:
        for i, g in enumerate(step_grads):
            g = np.asarray(g, np.float64)
            w = _decoupled_decay(params[i], learning_rate, weight_decay)
            if adapted[i]:
                w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
                local_lr = 1.0
                if w_norm > 0 and g_norm > 0:
                    local_lr = trust_coefficient * w_norm / (g_norm + momentum_weight_decay * w_norm + epsilon)
                velocity[i] = momentum * velocity[i] + learning_rate * local_lr * (g + momentum_weight_decay * w)
            else:
                velocity[i] = momentum * velocity[i] + learning_rate * g
            params[i] = w - velocity[i]
    return params
