"""Cyclical learning rates: a triangle wave between a lower and an upper bound.

Smith (2017), "Cyclical Learning Rates for Training Neural Networks", arXiv:1506.01186.
"""

from __future__ import annotations

import keras
from keras import ops

from lepton_keras.validation import check_choice, check_non_negative, check_number, check_positive

MODES = ("triangular", "triangular2", "exp_range")


def cyclical_learning_rate(step, initial_learning_rate, maximal_learning_rate, step_size, mode="triangular",
                           gamma=1.0):  # fmt: skip
    """Smith's closed form at `step` (computed in float64, returned as float32): see `CyclicalLearningRate`."""
    step = ops.cast(step, "float64")
    step_size = float(step_size)
    cycle = ops.floor(1.0 + step / (2.0 * step_size))
    x = ops.abs(step / step_size - 2.0 * cycle + 1.0)
    if mode == "triangular":
        scale = ops.ones_like(step)
    elif mode == "triangular2":
        scale = ops.power(2.0, 1.0 - cycle)
    else:
        scale = ops.power(float(gamma), step)
    amplitude = (maximal_learning_rate - initial_learning_rate) * ops.maximum(0.0, 1.0 - x)
    return ops.cast(initial_learning_rate + amplitude * scale, "float32")


@keras.saving.register_keras_serializable(package="lepton_keras")
class CyclicalLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """Cycles the learning rate linearly between a base and a maximal rate (Smith's CLR).

    When to use it: to train without tuning a fixed rate or a decay, or, with one short
    cycle, as the "LR range test" that finds sensible bounds (Smith: the bounds where the
    accuracy starts and stops rising). The paper suggests a half-cycle `step_size` of 2 to
    10 epochs and ending training at the end of a cycle (a trough).

    With base = `initial_learning_rate`, max = `maximal_learning_rate`, s = `step_size`:

        cycle = floor(1 + step / (2 s))
        x     = |step / s - 2 cycle + 1|
        lr    = base + (max - base) * max(0, 1 - x) * scale

        triangular:   scale = 1
        triangular2:  scale = 1 / 2 ** (cycle - 1)   (the amplitude halves every cycle)
        exp_range:    scale = gamma ** step

    The rate is `base` at step 0 and at every multiple of 2 s, and peaks at odd multiples of s.

    Args:
        initial_learning_rate: base, the lower bound (a finite number >= 0; 0 lets the rate touch 0).
        maximal_learning_rate: max, the upper bound (a finite number > 0).
        step_size: s, the steps in half a cycle (a number > 0).
        mode: "triangular" (default), "triangular2" or "exp_range".
        gamma: the per-step decay of the amplitude in "exp_range", in (0, 1] (default 1.0).

    Example:
        schedule = CyclicalLearningRate(1e-4, 1e-2, step_size=2_000, mode="triangular2")
        optimizer = keras.optimizers.SGD(schedule, momentum=0.9)

    References:
        Smith (2017), "Cyclical Learning Rates for Training Neural Networks", arXiv:1506.01186.
    """

    def __init__(self, initial_learning_rate: float, maximal_learning_rate: float, step_size: float,
                 mode: str = "triangular", gamma: float = 1.0):  # fmt: skip
        self.initial_learning_rate = check_non_negative("initial_learning_rate", initial_learning_rate)
        self.maximal_learning_rate = check_positive("maximal_learning_rate", maximal_learning_rate)
        self.step_size = check_positive("step_size", step_size)
        self.mode = check_choice("mode", mode, MODES)
        self.gamma = check_number("gamma", gamma, lambda x: 0.0 < x <= 1.0, "a number in (0, 1]")

    def __call__(self, step):
        return cyclical_learning_rate(step, self.initial_learning_rate, self.maximal_learning_rate, self.step_size,
                                      self.mode, self.gamma)  # fmt: skip

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "maximal_learning_rate": self.maximal_learning_rate,
            "step_size": self.step_size,
            "mode": self.mode,
            "gamma": self.gamma,
        }

