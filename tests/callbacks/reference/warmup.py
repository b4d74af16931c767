"""Float64 reference of LearningRateWarmup: Goyal et al. (2017), arXiv:1706.02677, Section 2.2 ("gradual warmup":
from eta/k, raised by a constant amount each iteration, to eta after W iterations), in Horovod's form
lr = lr_0 / size * (epoch * (size - 1) / warmup_epochs + 1) with a fractional epoch.
"""

import numpy as np


def warmup_multipliers(steps, warmup_steps, initial_factor):
    """The warmup multiplier of each step 0..steps-1 (Horovod's formula with size = 1 / initial_factor)."""
    size = 1.0 / initial_factor
    fractional_epoch = np.minimum(np.arange(steps, dtype=np.float64) / warmup_steps, 1.0)
    return (fractional_epoch * (size - 1.0) + 1.0) / size
