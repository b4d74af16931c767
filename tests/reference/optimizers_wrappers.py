"""Float64 NumPy references for the optimizer wrappers, written from their papers.

Each optimizer is a small object with `step(params, grads) -> params` and `updates` (the
number of weight updates so far); wrappers hold an inner one, so compositions read as in
the library: Lookahead(Clipping(Adam(...))). The module-level functions have the
OptimizerSpec reference signature `f(params, grads, **options)` -> final params, where
grads[t][i] is the gradient of variable i at step t.
"""

from __future__ import annotations

import numpy as np


def _copy(arrays):
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


class _Wrapper:
    def __init__(self, inner):
        self.inner = inner

    @property
    def updates(self):
        return self.inner.updates


class Lookahead(_Wrapper):
    """Algorithm 1 of Zhang et al. (2019): after every k-th fast update, phi += alpha (theta - phi); theta = phi."""

    def __init__(self, inner, sync_period, slow_step_size):
        super().__init__(inner)
        self.k, self.alpha, self.slow = sync_period, slow_step_size, None

    def step(self, params, grads):
        if self.slow is None:
            self.slow = _copy(params)
        before = self.updates
        params = self.inner.step(params, grads)
        if self.updates > before and self.updates % self.k == 0:
            self.slow = [s + self.alpha * (p - s) for s, p in zip(self.slow, params)]
            params = _copy(self.slow)
        return params


class Accumulation(_Wrapper):
    """One inner update from the mean gradient of every `steps` consecutive micro-batches."""

    def __init__(self, inner, steps):
        super().__init__(inner)
        self.steps, self.buffer = steps, []

    def step(self, params, grads):
        self.buffer.append(_copy(grads))
        if len(self.buffer) < self.steps:
            return params
        mean = [np.mean([g[i] for g in self.buffer], axis=0) for i in range(len(grads))]
        self.buffer = []
        return self.inner.step(params, mean)


class Clipping(_Wrapper):
    """Clipping by global norm (Pascanu et al. 2013): g <- g min(1, c / ||(g_1, ..., g_n)||)."""

    def __init__(self, inner, global_norm):
        super().__init__(inner)
        self.c = global_norm

    def step(self, params, grads):
        total = np.sqrt(sum(np.sum(np.square(g)) for g in grads))
        return self.inner.step(params, [g * min(1.0, self.c / total) if total > 0 else g for g in grads])


def unit_norms(x):
    """||x_i|| of each output unit (last axis) for rank >= 2; the whole tensor's norm otherwise."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim <= 1:
        return np.sqrt(np.sum(x * x))
    return np.sqrt(np.sum(x * x, axis=tuple(range(x.ndim - 1)), keepdims=True))


class AdaptiveClipping(_Wrapper):
    """Section 4.1 of Brock et al. (2021), per unit i:
    if ||G_i|| / max(||W_i||, eps) > lambda then G_i <- lambda max(||W_i||, eps) G_i / ||G_i||."""

    def __init__(self, inner, clipping, epsilon, excluded=()):
        super().__init__(inner)
        self.clipping, self.eps, self.excluded = clipping, epsilon, set(excluded)

    def step(self, params, grads):
        clipped = []
        for i, (w, g) in enumerate(zip(params, grads)):
            if i in self.excluded:
                clipped.append(g)
                continue
            w_norm = np.maximum(unit_norms(w), self.eps)
            g_norm = unit_norms(g)
            ratio = np.divide(g_norm, w_norm)
            scale = np.where(ratio > self.clipping, self.clipping * w_norm / np.where(g_norm > 0, g_norm, 1.0), 1.0)
            clipped.append(g * scale)
        return self.inner.step(params, clipped)


class Centralization(_Wrapper):
    """Eq. (4) of Yong et al. (2020): each output unit's gradient minus its mean over the unit's inputs (rank >= 2)."""

    def __init__(self, inner, exclude_rank_one=True):
        super().__init__(inner)
        self.smallest_rank = 2 if exclude_rank_one else 1

    def step(self, params, grads):
        out = []
        for g in grads:
            g = np.asarray(g, dtype=np.float64)
            if g.ndim >= self.smallest_rank:
                axes = tuple(range(g.ndim - 1)) if g.ndim >= 2 else None
                g = g - np.mean(g, axis=axes, keepdims=g.ndim >= 2)
            out.append(g)
        return self.inner.step(params, out)


class Swa(_Wrapper):
    """Algorithm 1 of Izmailov et al. (2018): the plain mean of the weights after updates start, start + c, ..."""

    def __init__(self, inner, start_step, average_period):
        super().__init__(inner)
        self.start, self.period, self.snapshots = start_step, average_period, []

    def step(self, params, grads):
        before = self.updates
        params = self.inner.step(params, grads)
        t = self.updates
        if t > before and t >= self.start and (t - self.start) % self.period == 0:
            self.snapshots.append(_copy(params))
        return params

    @property
    def average(self):
        return [np.mean([s[i] for s in self.snapshots], axis=0) for i in range(len(self.snapshots[0]))]


class Ema(_Wrapper):
    """w_ema <- d_t w_ema + (1 - d_t) w_t from update start_step on (w_ema = w_t at the first);
    d_t = min(decay, (1 + t) / (10 + t)) with the warm-up of tf.train.ExponentialMovingAverage."""

    def __init__(self, inner, decay, start_step=0, use_warmup=False):
        super().__init__(inner)
        self.decay, self.start, self.warmup, self.average = decay, start_step, use_warmup, None

    def step(self, params, grads):
        before = self.updates
        params = self.inner.step(params, grads)
        t = self.updates
        if t > before and t >= self.start:
            d = min(self.decay, (1 + t) / (10 + t)) if self.warmup else self.decay
            if self.average is None:
                self.average = _copy(params)
            else:
                self.average = [d * a + (1 - d) * p for a, p in zip(self.average, params)]
        return params


def run(optimizer, params, grads):
    """Final params after the optimizer's steps over `grads` (float64)."""
    params = _copy(params)
    for step_grads in grads:
        params = optimizer.step(params, _copy(step_grads))
    return params


# --- OptimizerSpec references ------------------------------------------------------------


def lookahead_sgd(params, grads, *, learning_rate, sync_period, slow_step_size, momentum=0.0, weight_decay=0.0):
    return run(Lookahead(Sgd(learning_rate, momentum, weight_decay), sync_period, slow_step_size), params, grads)


def lookahead_adam(params, grads, *, learning_rate, sync_period, slow_step_size, beta_1, beta_2, weight_decay=0.0):
    inner = Adam(learning_rate, beta_1, beta_2, weight_decay=weight_decay)
    return run(Lookahead(inner, sync_period, slow_step_size), params, grads)


def lookahead_clipping_adam(params, grads, *, learning_rate, sync_period, slow_step_size, global_norm, beta_1, beta_2,
                            weight_decay=0.0):
    inner = Clipping(Adam(learning_rate, beta_1, beta_2, weight_decay=weight_decay), global_norm)
    return run(Lookahead(inner, sync_period, slow_step_size), params, grads)


def accumulation_adam(params, grads, *, learning_rate, steps, beta_1, beta_2, weight_decay=0.0):
    return run(Accumulation(Adam(learning_rate, beta_1, beta_2, weight_decay=weight_decay), steps), params, grads)


def accumulation_sgd(params, grads, *, learning_rate, steps, momentum=0.0, weight_decay=0.0):
    return run(Accumulation(Sgd(learning_rate, momentum, weight_decay), steps), params, grads)


def agc_sgd(params, grads, *, learning_rate, clipping, epsilon, momentum=0.0, weight_decay=0.0):
    return run(AdaptiveClipping(Sgd(learning_rate, momentum, weight_decay), clipping, epsilon), params, grads)


def centralization_sgd(params, grads, *, learning_rate, momentum=0.0, weight_decay=0.0):
    return run(Centralization(Sgd(learning_rate, momentum, weight_decay)), params, grads)


def swa_sgd(params, grads, *, learning_rate, start_step, average_period, momentum=0.0, weight_decay=0.0):
    """The training weights (the average does not change them); see `Swa.average` for the average."""
    return run(Swa(Sgd(learning_rate, momentum, weight_decay), start_step, average_period), params, grads)


def ema_adam(params, grads, *, learning_rate, decay, beta_1, beta_2, start_step=0, use_warmup=False, weight_decay=0.0):
    """The training weights (the average does not change them); see `Ema.average` for the average."""
    inner = Adam(learning_rate, beta_1, beta_2, weight_decay=weight_decay)
    return run(Ema(inner, decay, start_step, use_warmup), params, grads)
