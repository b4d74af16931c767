"""Float64 reference of OneCycle: 1cycle of Smith and Topin (2018), arXiv:1708.07120, as PyTorch's OneCycleLR
(three_phase=False) computes it: phase ends at pct_start * total - 1 and total - 1, per-phase cosine/linear annealing.

It takes a Python int step and returns Python floats.
"""

import math


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
