"""Float64 NumPy references of Schedule-Free AdamW and SGD: Defazio et al. (2024), arXiv:2405.15682.

"The Road Less Scheduled", Algorithm 1 (Schedule-Free AdamW), with the x, y and z sequences kept
explicitly as in the paper (and the authors' `adamw_schedulefree_reference.py`), not in the
y-only form of their fast code and of lepton_keras:

    z_t = z_{t-1} - lr_t (g_t / (sqrt(v_t / (1 - beta_2^t)) + epsilon) + weight_decay y_{t-1})
    x_t = (1 - c_t) x_{t-1} + c_t z_t,      y_t = (1 - beta_1) z_t + beta_1 x_t

with g_t the gradient at y_{t-1}, x_0 = y_0 = z_0 the initial weights, lr_t the learning rate
times the warm-up min(t / warmup_steps, 1), lr_max the largest lr_t so far and
c_t = t^r lr_max^weight_lr_power / sum_i i^r lr_max,i^weight_lr_power. The warm-up, r,
weight_lr_power, epsilon inside the denominator and the decay at y are the authors' code's
(the paper's Algorithm 1 writes the warm-up and the lr_max^2 weighting; the options were ported
from the authors' equations, not from lepton_keras).

`params` is a list of arrays and `grads[t][i]` the gradient of variable i at step t + 1;
`learning_rate` a number or a callable of the 0-based step (a Keras LearningRateSchedule).
Returns the final y (the model's weights during training); `return_x=True` returns x too.
"""

import numpy as np


def _averaging_weights(steps, learning_rate, warmup_steps, r, weight_lr_power):
    """(lr_t, c_t) for t = 1..steps."""
    lr_max, weight_sum, result = 0.0, 0.0, []
    for t in range(1, steps + 1):
        lr = float(learning_rate(t - 1)) if callable(learning_rate) else float(learning_rate)
        lr *= min(t / warmup_steps, 1.0) if warmup_steps else 1.0
        lr_max = max(lr_max, lr)
        weight = t**r * lr_max**weight_lr_power
        weight_sum += weight
        result.append((lr, weight / weight_sum if weight_sum > 0 else 0.0))
    return result


def _schedule_free(params, grads, direction, *, learning_rate, interpolation, weight_decay, warmup_steps, r,
                   weight_lr_power, return_x):  # fmt: skip
    y = [np.array(p, dtype=np.float64) for p in params]
    z = [w.copy() for w in y]
    x = [w.copy() for w in y]
    weights = _averaging_weights(len(grads), learning_rate, warmup_steps, r, weight_lr_power)
    for t, (step_grads, (lr, c)) in enumerate(zip(grads, weights), start=1):
        for i, g in enumerate(step_grads):
            d = direction(i, t, np.asarray(g, np.float64)) + weight_decay * y[i]
            z[i] = z[i] - lr * d
            x[i] = (1.0 - c) * x[i] + c * z[i]
            y[i] = (1.0 - interpolation) * z[i] + interpolation * x[i]
    return (y, x) if return_x else y


def schedule_free_adamw(params, grads, *, learning_rate=0.0025, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                        weight_decay=None, warmup_steps=0, r=0.0, weight_lr_power=2.0, return_x=False):  # fmt: skip
    v = [np.zeros(np.shape(p)) for p in params]

    def adam_direction(i, t, g):
        v[i] = beta_2 * v[i] + (1.0 - beta_2) * g * g
        return g / (np.sqrt(v[i] / (1.0 - beta_2**t)) + epsilon)

    return _schedule_free(params, grads, adam_direction, learning_rate=learning_rate, interpolation=beta_1,
                          weight_decay=weight_decay or 0.0, warmup_steps=warmup_steps, r=r,
                          weight_lr_power=weight_lr_power, return_x=return_x)  # fmt: skip


def schedule_free_sgd(params, grads, *, learning_rate=1.0, momentum=0.9, weight_decay=None, warmup_steps=0, r=0.0,
                      weight_lr_power=2.0, return_x=False):  # fmt: skip
    return _schedule_free(params, grads, lambda i, t, g: g, learning_rate=learning_rate, interpolation=momentum,
                          weight_decay=weight_decay or 0.0, warmup_steps=warmup_steps, r=r,
                          weight_lr_power=weight_lr_power, return_x=return_x)  # fmt: skip
