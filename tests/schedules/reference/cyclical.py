"""Float64 reference of CyclicalLearningRate: Smith (2017), arXiv:1506.01186, Section 3.1 and its reference code.

It takes a Python int step and returns a Python float.
"""

import math


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
