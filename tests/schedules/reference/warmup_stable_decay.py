"""Float64 reference of WarmupStableDecay: Hu et al. (2024), arXiv:2404.06395, Section 4.1; the sqrt cooldown
of Hägele et al. (2024), arXiv:2405.18392.

It takes a Python int step and returns a Python float.
"""

import math


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
