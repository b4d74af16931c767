"""Float64 NumPy reference of Lookahead, written from the paper.

Zhang, Lucas, Hinton and Ba (2019), "Lookahead Optimizer: k steps forward, 1 step back",
arXiv:1907.08610, Algorithm 1.
"""

from __future__ import annotations

from tests.optimizers.reference.gradient_clipping import Clipping
from tests.optimizers.reference.wrapper import Adam, Sgd, Wrapper, float64_copies, run


class Lookahead(Wrapper):
    """After every k-th fast update, phi += alpha (theta - phi); theta = phi."""

    def __init__(self, inner, sync_period, slow_step_size):
        super().__init__(inner)
        self.k, self.alpha, self.slow = sync_period, slow_step_size, None

    def step(self, params, grads):
        if self.slow is None:
            self.slow = float64_copies(params)
        before = self.updates
        params = self.inner.step(params, grads)
        if self.updates > before and self.updates % self.k == 0:
            self.slow = [s + self.alpha * (p - s) for s, p in zip(self.slow, params)]
            params = float64_copies(self.slow)
        return params


def lookahead_sgd(params, grads, *, learning_rate, sync_period, slow_step_size, momentum=0.0, weight_decay=0.0):
    return run(Lookahead(Sgd(learning_rate, momentum, weight_decay), sync_period, slow_step_size), params, grads)


def lookahead_adam(params, grads, *, learning_rate, sync_period, slow_step_size, beta_1, beta_2, weight_decay=0.0):
    inner = Adam(learning_rate, beta_1, beta_2, weight_decay=weight_decay)
    return run(Lookahead(inner, sync_period, slow_step_size), params, grads)


def lookahead_clipping_adam(params, grads, *, learning_rate, sync_period, slow_step_size, global_norm, beta_1, beta_2,
                            weight_decay=0.0):
    inner = Clipping(Adam(learning_rate, beta_1, beta_2, weight_decay=weight_decay), global_norm=global_norm)
    return run(Lookahead(inner, sync_period, slow_step_size), params, grads)
