"""The Transformer's schedule: a linear warmup, then decay with the inverse square root of the step.

Vaswani, Shazeer, Parmar, Uszkoreit, Jones, Gomez, Kaiser and Polosukhin (2017), "Attention Is
All You Need", arXiv:1706.03762, Section 5.3.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from lepton_keras.validation import check_int, check_positive, invalid


def inverse_sqrt_decay(step, coefficient: float, warmup_steps: int):
    """coefficient * min(n ** -0.5, n * warmup_steps ** -1.5) with n = step + 1 (in float64, returned as float32)."""
    n = ops.cast(step, "float64") + 1.0
    return ops.cast(coefficient * ops.minimum(1.0 / ops.sqrt(n), n * float(warmup_steps) ** -1.5), "float32")


@keras.saving.register_keras_serializable(package="lepton_keras")
class InverseSquareRootDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Rises linearly for `warmup_steps` steps, then falls as 1 / sqrt(step) (the Transformer schedule).

    When to use it: for Transformers trained with Adam (the paper uses beta_1 = 0.9,
    beta_2 = 0.98, epsilon = 1e-9, warmup 4000 steps), and wherever a schedule must not
    depend on the total number of steps.

    With n = step + 1 (the paper counts steps from 1; Keras' optimizer iterations from 0,
    so the first update uses n = 1) and W = `warmup_steps`:

        lr = scale * d_model ** -0.5 * min(n ** -0.5, n * W ** -1.5)      (the paper's form)
        lr = peak_learning_rate * min(n / W, sqrt(W / n))                 (given a peak instead)

    Both rise linearly to their peak at n = W (scale / sqrt(d_model W) in the paper's form)
    and then decay as 1 / sqrt(n). Give exactly one of `d_model` and `peak_learning_rate`.

    Args:
        warmup_steps: W, an integer >= 1 (default 4000, the paper's).
        d_model: the model width of the paper's form (an integer >= 1), or None.
        scale: a factor on the paper's form (default 1.0; many codebases tune it).
        peak_learning_rate: the rate at n = W of the plain form (a number > 0), or None.

    Example:
        schedule = InverseSquareRootDecay(4000, d_model=512)
        optimizer = keras.optimizers.Adam(schedule, beta_1=0.9, beta_2=0.98, epsilon=1e-9)

    References:
        Vaswani et al. (2017), "Attention Is All You Need", arXiv:1706.03762, Eq. (3).
    """

    def __init__(self, warmup_steps: int = 4000, *, d_model: int | None = None, scale: float = 1.0,
                 peak_learning_rate: float | None = None):  # fmt: skip
        self.warmup_steps = check_int("warmup_steps", warmup_steps, minimum=1)
        self.d_model = check_int("d_model", d_model, minimum=1, allow_none=True)
        self.scale = check_positive("scale", scale)
        self.peak_learning_rate = check_positive("peak_learning_rate", peak_learning_rate, allow_none=True)
        if (d_model is None) == (peak_learning_rate is None):
            raise invalid("d_model, peak_learning_rate", (d_model, peak_learning_rate), "exactly one given")
        if peak_learning_rate is not None and self.scale != 1.0:
            raise invalid("scale", scale, "1.0 with peak_learning_rate (it applies to the d_model form only)")

    @property
    def coefficient(self) -> float:
        """The factor in front of min(n ** -0.5, n W ** -1.5)."""
        if self.d_model is not None:
            return self.scale / math.sqrt(self.d_model)
        return self.peak_learning_rate * math.sqrt(self.warmup_steps)

    def __call__(self, step):
        return inverse_sqrt_decay(step, self.coefficient, self.warmup_steps)

    def get_config(self):
        return {
            "warmup_steps": self.warmup_steps,
            "d_model": self.d_model,
            "scale": self.scale,
            "peak_learning_rate": self.peak_learning_rate,
        }

