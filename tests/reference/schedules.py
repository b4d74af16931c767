"""Float64 references of the learning-rate schedules, one step at a time, written from their papers.

- Warmup: Goyal et al. (2017), arXiv:1706.02677, Section 2.2 ("gradual warmup").
- Cyclical learning rates: Smith (2017), arXiv:1506.01186, Section 3.1 and its reference code.
- 1cycle: Smith and Topin (2018), arXiv:1708.07120, as PyTorch's OneCycleLR (three_phase=False)
  computes it: phase ends at pct_start * total - 1 and total - 1, per-phase cosine/linear annealing.
- Warmup-stable-decay: Hu et al. (2024), arXiv:2404.06395, Section 4.1; sqrt cooldown of
  Hägele et al. (2024), arXiv:2405.18392.
- Inverse square root: Vaswani et al. (2017), arXiv:1706.03762, Eq. (3), steps counted from 1.

Every schedule takes a Python int step and returns a Python float.
"""

import math

import numpy as np


def warmup(target, warmup_steps, step, start_factor=0.0, kind="linear", offset_target=False):
    """Goyal's gradual warmup from start_factor * target(0), then the target (shifted or not)."""
    if step >= warmup_steps:
        return target(step - warmup_steps if offset_target else step)
    lr_start = start_factor * target(0)
    lr_end = target(0 if offset_target else warmup_steps)
    fraction = step / warmup_steps
    if kind == "linear":
        return lr_start + fraction * (lr_end - lr_start)
    return lr_start * (lr_end / lr_start) ** fraction


def cyclical(base_lr, max_lr, step_size, step, mode="triangular", gamma=1.0):
    """Smith (2017): the triangle wave, its halving amplitude, or its exponential decay."""
    cycle = math.floor(1 + step / (2 * step_size))
    x = abs(step / step_size - 2 * cycle + 1)
    if mode == "triangular":
        scale = 1.0
    elif mode == "triangular2":
        scale = 1.0 / 2 ** (cycle - 1)
    else:
        scale = gamma**step
    return base_lr + (max_lr - base_lr) * max(0.0, 1 - x) * scale


def _anneal_cos(start, end, pct):
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def _anneal_linear(start, end, pct):
    return (end - start) * pct + start


def one_cycle(max_lr, total_steps, step, pct_start=0.3, div_factor=25.0, final_div_factor=1e4, anneal="cos",
              base_momentum=0.85, max_momentum=0.95):  # fmt: skip
    """(learning rate, momentum) of PyTorch's OneCycleLR at `step`; the last values after total_steps - 1."""
    initial_lr = max_lr / div_factor
    min_lr = initial_lr / final_div_factor
    annealing = _anneal_cos if anneal == "cos" else _anneal_linear
    phases = [
        (float(pct_start * total_steps) - 1, initial_lr, max_lr, max_momentum, base_momentum),
        (float(total_steps) - 1, max_lr, min_lr, base_momentum, max_momentum),
    ]
    step = min(step, total_steps - 1)
    start_step = 0.0
    for index, (end_step, lr_start, lr_end, momentum_start, momentum_end) in enumerate(phases):
        if step <= end_step or index == len(phases) - 1:
            pct = (step - start_step) / (end_step - start_step)
            return annealing(lr_start, lr_end, pct), annealing(momentum_start, momentum_end, pct)
        start_step = end_step


def warmup_stable_decay(peak, warmup_steps, stable_steps, decay_steps, step, final=0.0, decay="linear"):
    """MiniCPM's WSD: linear warmup, constant peak, then a decay of the given shape to `final`."""
    if step < warmup_steps:
        return peak * step / warmup_steps
    if step < warmup_steps + stable_steps:
        return peak
    if step >= warmup_steps + stable_steps + decay_steps:
        return final
    p = (step - warmup_steps - stable_steps) / decay_steps
    if decay == "linear":
        shape = p
    elif decay == "cosine":
        shape = 0.5 * (1 - math.cos(math.pi * p))
    else:
        shape = math.sqrt(p)
    return peak - (peak - final) * shape


def transformer(d_model, warmup_steps, step, scale=1.0):
    """Vaswani et al. Eq. (3) for the optimizer's iteration `step` (step_num = step + 1)."""
    step_num = step + 1
    return scale * d_model**-0.5 * min(step_num**-0.5, step_num * warmup_steps**-1.5)


def inverse_sqrt_peak(peak, warmup_steps, step):
    """Linear rise to `peak` at step_num = warmup_steps, then peak * sqrt(warmup_steps / step_num)."""
    step_num = step + 1
    if step_num <= warmup_steps:
        return peak * step_num / warmup_steps
    return peak * math.sqrt(warmup_steps / step_num)


def cosine_decay(initial_lr, decay_steps, step, alpha=0.0):
    """Cosine annealing without restarts (Loshchilov and Hutter 2016, arXiv:1608.03983), as Keras' CosineDecay."""
    fraction = min(step, decay_steps) / decay_steps
    return initial_lr * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * fraction)) + alpha)


# Optimizers with a learning rate and a momentum that change every step.


def sgd(weights, gradient_fn, learning_rates, momentums):
    """SGD with heavy-ball momentum as Keras writes it: v = mu v - lr g; w = w + v (mu = 0: plain SGD)."""
    w = np.asarray(weights, np.float64)
    velocity = np.zeros_like(w)
    for lr, mu in zip(learning_rates, momentums):
        velocity = mu * velocity - lr * gradient_fn(w)
        w = w + velocity
    return w


def adam(weights, gradient_fn, learning_rates, beta_1s, beta_2=0.999, epsilon=1e-7):
    """Kingma and Ba (2014), arXiv:1412.6980, Algorithm 1 with the bias correction folded into the step
    size (Section 2) as Keras does, and beta_1 of step t used in place of the constant (m_t and 1 - beta_1^t)."""
    w = np.asarray(weights, np.float64)
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, (lr, beta_1) in enumerate(zip(learning_rates, beta_1s), start=1):
        g = gradient_fn(w)
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g**2
        alpha = lr * math.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        w = w - alpha * m / (np.sqrt(v) + epsilon)
    return w


def rmsprop(weights, gradient_fn, learning_rates, momentums, rho=0.9, epsilon=1e-7):
    """RMSprop (Tieleman and Hinton 2012, Lecture 6.5) with heavy-ball momentum on its step, as Keras writes it:
    v = rho v + (1 - rho) g^2;  m = mu m + lr g / sqrt(v + epsilon);  w = w - m."""
    w = np.asarray(weights, np.float64)
    v, m = np.zeros_like(w), np.zeros_like(w)
    for lr, mu in zip(learning_rates, momentums):
        g = gradient_fn(w)
        v = rho * v + (1 - rho) * g**2
        m = mu * m + lr * g / np.sqrt(v + epsilon)
        w = w - m
    return w
