"""The 1cycle policy: one rise and one long fall of the learning rate, with momentum moving the other way.

Smith and Topin (2018), "Super-Convergence: Very Fast Training of Neural Networks Using
Large Learning Rates", arXiv:1708.07120; in the two-phase form of fastai and PyTorch's
`OneCycleLR`.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from lepton_keras.validation import check_choice, check_int, check_number, check_positive, check_unit_interval

ANNEALS = ("cos", "linear")


def anneal(start, end, progress, kind: str = "cos"):
    """From `start` (progress 0) to `end` (progress 1): cosine or linear interpolation."""
    if kind == "cos":
        return end + (start - end) / 2.0 * (ops.cos(math.pi * progress) + 1.0)
    return start + (end - start) * progress


def one_cycle(step, total_steps: int, pct_start: float, start, peak, end, kind: str = "cos"):
    """`start` at step 0 -> `peak` at step pct_start * total - 1 -> `end` at step total - 1, then `end`.

    Computed in float64 (the cosine's tail loses its relative precision in float32), returned as float32.
    """
    step = ops.cast(step, "float64")
    peak_step = float(pct_start * total_steps) - 1.0
    last_step = float(total_steps - 1)
    rising = anneal(start, peak, ops.minimum(step, peak_step) / peak_step, kind)
    falling = anneal(peak, end, ops.clip((step - peak_step) / (last_step - peak_step), 0.0, 1.0), kind)
    return ops.cast(ops.where(step <= peak_step, rising, falling), "float32")


@keras.saving.register_keras_serializable(package="lepton_keras")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """One cycle: warm up to a large learning rate, then anneal far below the start (the 1cycle policy).

    When to use it: to train in a fixed, known number of steps with a large maximal rate
    (found with an LR range test), often in far fewer epochs ("super-convergence"). Pair
    it with `lepton_keras.callbacks.CycleMomentum(schedule)`, which moves the optimizer's
    momentum (SGD) or beta_1 (Adam) by `momentum(step)`, down while the rate rises.

    The two-phase form of fastai and PyTorch's `OneCycleLR` (three_phase=False), with
    max = `maximal_learning_rate`, T = `total_steps`, P = pct_start * T - 1 (the peak step):

        lr_0 = max / div_factor,   lr_min = lr_0 / final_div_factor
        step <= P:          lr = anneal(lr_0, max, step / P)
        P < step <= T - 1:  lr = anneal(max, lr_min, (step - P) / (T - 1 - P))
        step > T - 1:       lr = lr_min  (PyTorch raises an error there)
        cos:     anneal(a, b, p) = b + (a - b) / 2 * (1 + cos(pi p))
        linear:  anneal(a, b, p) = a + (b - a) * p

    and the momentum, the inverse cycle: anneal(max_momentum, base_momentum, step / P),
    then anneal(base_momentum, max_momentum, ...), then max_momentum. `step` is the
    optimizer's iteration count: step 0 sets the first update, as in PyTorch.

    Args:
        maximal_learning_rate: max, the peak rate (a number > 0).
        total_steps: T, the number of training steps (an integer >= 2).
        pct_start: the fraction of the steps spent rising, in (0, 1), with pct_start * T > 1
            (default 0.3, PyTorch's; fastai uses 0.25).
        div_factor: lr_0 = max / div_factor (default 25.0).
        final_div_factor: lr_min = lr_0 / final_div_factor (default 1e4, PyTorch's).
        anneal: "cos" (default) or "linear".
        base_momentum: the momentum at the peak rate (default 0.85).
        max_momentum: the momentum at the start and the end (default 0.95).

    Example:
        schedule = OneCycle(0.1, total_steps=epochs * steps_per_epoch)
        model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.95), loss=...)
        model.fit(..., epochs=epochs, callbacks=[CycleMomentum(schedule)])

    References:
        Smith and Topin (2018), "Super-Convergence: Very Fast Training of Neural Networks Using Large
        Learning Rates", arXiv:1708.07120. Smith (2018), "A disciplined approach to neural network
        hyper-parameters: Part 1", arXiv:1803.09820 (the cyclical momentum).
    """

    def __init__(self, maximal_learning_rate: float, total_steps: int, *, pct_start: float = 0.3,
                 div_factor: float = 25.0, final_div_factor: float = 1e4, anneal: str = "cos",
                 base_momentum: float = 0.85, max_momentum: float = 0.95):  # fmt: skip
        self.maximal_learning_rate = check_positive("maximal_learning_rate", maximal_learning_rate)
        self.total_steps = check_int("total_steps", total_steps, minimum=2)
        self.pct_start = check_number(
            "pct_start", pct_start, lambda x: 0.0 < x < 1.0 and x * self.total_steps > 1.0,
            f"a number in (0, 1) with pct_start * total_steps > 1 (total_steps={total_steps})",
        )  # fmt: skip
        self.div_factor = check_positive("div_factor", div_factor)
        self.final_div_factor = check_positive("final_div_factor", final_div_factor)
        self.anneal = check_choice("anneal", anneal, ANNEALS)
        self.base_momentum = check_unit_interval("base_momentum", base_momentum)
        self.max_momentum = check_unit_interval("max_momentum", max_momentum)

    @property
    def initial_learning_rate(self) -> float:
        return self.maximal_learning_rate / self.div_factor

    @property
    def minimal_learning_rate(self) -> float:
        return self.initial_learning_rate / self.final_div_factor

    def __call__(self, step):
        return one_cycle(step, self.total_steps, self.pct_start, self.initial_learning_rate,
                         self.maximal_learning_rate, self.minimal_learning_rate, self.anneal)  # fmt: skip

    def momentum(self, step):
        """The momentum (SGD) or beta_1 (Adam) for `step`: high, down to `base_momentum` at the peak, up again."""
        return one_cycle(step, self.total_steps, self.pct_start, self.max_momentum, self.base_momentum,
                         self.max_momentum, self.anneal)  # fmt: skip

    def get_config(self):
        return {
            "maximal_learning_rate": self.maximal_learning_rate,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
            "anneal": self.anneal,
            "base_momentum": self.base_momentum,
            "max_momentum": self.max_momentum,
        }

