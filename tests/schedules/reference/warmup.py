"""Float64 reference of Warmup, one step at a time: Goyal et al. (2017), arXiv:1706.02677, Section 2.2
("gradual warmup"), and the cosine decay the tests warm up to.

Every function takes a Python int step and returns a Python float.
"""

import math


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


def cosine_decay(initial_lr, decay_steps, step, alpha=0.0):
    """Cosine annealing without restarts (Loshchilov and Hutter 2016, arXiv:1608.03983), as Keras' CosineDecay."""
    fraction = min(step, decay_steps) / decay_steps
    return initial_lr * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * fraction)) + alpha)
