"""Float64 reference of InverseSquareRootDecay: Vaswani et al. (2017), arXiv:1706.03762, Eq. (3), steps counted
from 1, and its form with a given peak learning rate.

Each function takes a Python int step and returns a Python float.
"""

import math


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
