"""Float64 NumPy reference of periodic parameter synchronisation (local SGD, post-local SGD, DiLoCo).

R independent copies of an inner optimizer (objects of tests/optimizers/reference/wrapper.py,
each with its own state) train the two-layer regression network of `network_gradients` on
their own shards: replica r takes rows [r b, (r + 1) b) of global batch t, b = B / R. The first
`warmup_steps` steps are synchronous (every copy steps on the mean of the shards' gradients,
the global-batch gradient). After step warmup_steps + k H the copies are replaced by their
mean (Lin et al. 2020, "Don't Use Large Mini-Batches, Use Local SGD", Algorithm 1), or, with
an outer Nesterov SGD (Douillard et al. 2023, "DiLoCo", Algorithm 1), the anchor a takes the
step on the mean delta d = a - mean_r(w_r):

    m <- mu m + d;   a <- a - lr (d + mu m);   w_r <- a

At the end, where the copies disagree, they are averaged (the full sync of the end of `fit`),
the optimizers' moment estimates too.
"""

from __future__ import annotations

import numpy as np


def network_gradients(params, x, y):
    """Gradients of mean((tanh(x W1 + b1) W2 + b2 - y)^2) over the batch and the outputs."""
    w1, b1, w2, b2 = params
    hidden = np.tanh(x @ w1 + b1)
    out = hidden @ w2 + b2
    d_out = 2.0 * (out - y) / out.size
    d_hidden = (d_out @ w2.T) * (1.0 - hidden**2)
    return [x.T @ d_hidden, d_hidden.sum(0), hidden.T @ d_out, d_out.sum(0)]


def periodic_sync_training(params, x, y, *, make_optimizer, replicas, every, steps, global_batch_size,
                           warmup_steps=0, outer_learning_rate=None, outer_momentum=0.0):  # fmt: skip
    """The replicas' weights after `steps` steps and the end's full sync; also each replica's optimizer."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    copies = [[np.array(p, np.float64) for p in params] for _ in range(replicas)]
    optimizers = [make_optimizer() for _ in range(replicas)]
    shard = global_batch_size // replicas
    anchor, momentum = None, None
    for step in range(steps):
        rows = slice(step * global_batch_size, (step + 1) * global_batch_size)
        shards = [(x[rows][r * shard:(r + 1) * shard], y[rows][r * shard:(r + 1) * shard]) for r in range(replicas)]
        gradients = [network_gradients(copies[r], *shards[r]) for r in range(replicas)]
        if step < warmup_steps:
            mean = [np.mean(parts, axis=0) for parts in zip(*gradients)]
            gradients = [mean] * replicas
        elif anchor is None:
            anchor = [p.copy() for p in copies[0]]
            momentum = [np.zeros_like(p) for p in anchor]
        copies = [optimizer.step(copy, grads) for optimizer, copy, grads in zip(optimizers, copies, gradients)]
        done = step + 1
        if done > warmup_steps and (done - warmup_steps) % every == 0:
            mean = [np.mean(parts, axis=0) for parts in zip(*copies)]
            if outer_learning_rate is not None:
                delta = [a - w for a, w in zip(anchor, mean)]
                momentum = [outer_momentum * m + d for m, d in zip(momentum, delta)]
                anchor = [a - outer_learning_rate * (d + outer_momentum * m) for a, d, m in zip(anchor, delta, momentum)]
                mean = anchor
            else:
                anchor = mean
            copies = [[p.copy() for p in mean] for _ in range(replicas)]
    if any(not np.array_equal(a, b) for copy in copies[1:] for a, b in zip(copy, copies[0])):
        average_moments(optimizers)
        copies = [[np.mean(parts, axis=0) for parts in zip(*copies)]] * replicas
    return copies[0], optimizers


def average_moments(optimizers):
    """Replaces each optimizer's moment estimates (m, v: lists of arrays) with their mean over the replicas."""
    for slot in ("m", "v"):
        if getattr(optimizers[0], slot, None) is None:
            continue
        mean = [np.mean(parts, axis=0) for parts in zip(*(getattr(o, slot) for o in optimizers))]
        for optimizer in optimizers:
            setattr(optimizer, slot, [m.copy() for m in mean])
