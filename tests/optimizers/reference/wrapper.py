"""Float64 NumPy pieces the wrapper references share: Keras's SGD and Adam (inner optimizers), a base, a driver.

Each optimizer is a small object with `step(params, grads) -> params` and `updates` (the
number of weight updates so far); wrappers hold an inner one, so compositions read as in
the library: Lookahead(Clipping(Adam(...))). `run` steps such an object over grads, where
grads[t][i] is the gradient of variable i at step t.
"""

from __future__ import annotations

import numpy as np


def float64_copies(arrays):
    return [np.array(a, dtype=np.float64) for a in arrays]


class Sgd:
    """SGD with heavy-ball momentum as Keras writes it (m <- mu m - lr g; w <- w + m), decoupled decay first."""

    def __init__(self, learning_rate, momentum=0.0, weight_decay=0.0):
        self.lr, self.mu, self.wd = learning_rate, momentum, weight_decay
        self.m, self.updates = None, 0

    def step(self, params, grads):
        if self.m is None:
            self.m = [np.zeros_like(p) for p in params]
        self.updates += 1
        out = []
        for i, (w, g) in enumerate(zip(params, grads)):
            w = w - self.lr * self.wd * w
            self.m[i] = self.mu * self.m[i] - self.lr * g
            out.append(w + self.m[i])
        return out


class Adam:
    """Adam (Kingma and Ba 2015, arXiv:1412.6980) in the paper's efficient form of the end of Section 2:

    alpha_t = lr sqrt(1 - beta_2^t) / (1 - beta_1^t);  w <- w - alpha_t m_t / (sqrt(v_t) + eps_hat)
    """

    def __init__(self, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=0.0):
        self.lr, self.b1, self.b2, self.eps, self.wd = learning_rate, beta_1, beta_2, epsilon, weight_decay
        self.m = self.v = None
        self.updates = 0

    def step(self, params, grads):
        if self.m is None:
            self.m = [np.zeros_like(p) for p in params]
            self.v = [np.zeros_like(p) for p in params]
        self.updates += 1
        t = self.updates
        alpha = self.lr * np.sqrt(1 - self.b2**t) / (1 - self.b1**t)
        out = []
        for i, (w, g) in enumerate(zip(params, grads)):
            w = w - self.lr * self.wd * w
            self.m[i] = self.b1 * self.m[i] + (1 - self.b1) * g
            self.v[i] = self.b2 * self.v[i] + (1 - self.b2) * g * g
            out.append(w - alpha * self.m[i] / (np.sqrt(self.v[i]) + self.eps))
        return out


class Wrapper:
    """A reference wrapper: counts the updates of the optimizer it wraps."""

    def __init__(self, inner):
        self.inner = inner

    @property
    def updates(self):
        return self.inner.updates


def run(optimizer, params, grads):
    """Final params after the reference optimizer's steps over `grads` (float64)."""
    params = float64_copies(params)
    for step_grads in grads:
        params = optimizer.step(params, float64_copies(step_grads))
    return params


def adam(params, grads, *, learning_rate, beta_1, beta_2, weight_decay=0.0):
    """Adam's final params (the reference of a wrapper that must not change the inner optimizer's numbers)."""
    return run(Adam(learning_rate, beta_1, beta_2, weight_decay=weight_decay), params, grads)
