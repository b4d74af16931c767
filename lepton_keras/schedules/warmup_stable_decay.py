"""Warmup-stable-decay (WSD): a linear warmup, a long constant stage, then a short decay.

Hu et al. (2024), "MiniCPM: Unveiling the Potential of Small Language Models with Scalable
Training Strategies", arXiv:2404.06395; the "1 - sqrt" decay from Hägele et al. (2024),
"Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations", arXiv:2405.18392.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from lepton_keras.validation import check_choice, check_int, check_number, check_positive

DECAYS = ("linear", "cosine", "sqrt")


def decay_shape(progress, kind: str):
    """The fraction of the way from the peak to the final rate after `progress` in [0, 1] of the decay."""
    if kind == "linear":
        return progress
    if kind == "cosine":
        return (1.0 - ops.cos(math.pi * progress)) / 2.0
    return ops.sqrt(progress)


def warmup_stable_decay(step, peak, warmup_steps: int, stable_steps: int, decay_steps: int, final, kind: str):
    """The WSD rate at `step` (computed in float64, returned as float32): see `WarmupStableDecay`."""
    step = ops.cast(step, "float64")
    warming = peak * step / float(max(warmup_steps, 1))
    decay_start = float(warmup_steps + stable_steps)
    progress = ops.clip((step - decay_start) / float(max(decay_steps, 1)), 0.0, 1.0)
    if decay_steps == 0:  # no decay stage: straight to the final rate
        progress = ops.cast(step >= decay_start, "float64")
    decaying = peak + (final - peak) * decay_shape(progress, kind)
    return ops.cast(ops.where(step < float(warmup_steps), warming, decaying), "float32")


@keras.saving.register_keras_serializable(package="lepton_keras")
class WarmupStableDecay(keras.optimizers.schedules.LearningRateSchedule):
    """A linear warmup to a peak rate, the peak held for most of training, then a short decay.

    When to use it: for long pre-training runs whose length is not fixed in advance. The
    stable stage can be extended, and a checkpoint taken from it can be decayed at any
    time, which gives a trained model at every budget from one run (MiniCPM: the decay
    needs about 10% of the steps to match a cosine schedule of the same length).

    With W, S, D the warmup, stable and decay steps, and p = (step - W - S) / D:

        step < W:                lr = peak * step / W
        W <= step < W + S:       lr = peak
        W + S <= step < W+S+D:   lr = peak + (final - peak) * f(p)
        step >= W + S + D:       lr = final
        linear: f(p) = p;  cosine: f(p) = (1 - cos(pi p)) / 2;  sqrt: f(p) = sqrt(p)

    ("sqrt" is the "1 - sqrt" cooldown of Hägele et al., which they found better than linear.)

    Args:
        peak_learning_rate: the rate of the stable stage (a number > 0).
        warmup_steps, stable_steps, decay_steps: W, S, D (integers >= 0).
        final_learning_rate: the rate at the end of the decay and after it (default 0.0),
            a number in [0, peak_learning_rate].
        decay: the decay shape f, "linear" (default), "cosine" or "sqrt".

    Example:
        schedule = WarmupStableDecay(3e-4, warmup_steps=2_000, stable_steps=80_000, decay_steps=8_000)
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=0.1)

    References:
        Hu et al. (2024), "MiniCPM: Unveiling the Potential of Small Language Models with Scalable
        Training Strategies", arXiv:2404.06395. Hägele et al. (2024), "Scaling Laws and
        Compute-Optimal Training Beyond Fixed Training Durations", arXiv:2405.18392.
    """

    def __init__(self, peak_learning_rate: float, warmup_steps: int, stable_steps: int, decay_steps: int, *,
                 final_learning_rate: float = 0.0, decay: str = "linear"):  # fmt: skip
        self.peak_learning_rate = check_positive("peak_learning_rate", peak_learning_rate)
        self.warmup_steps = check_int("warmup_steps", warmup_steps, minimum=0)
        self.stable_steps = check_int("stable_steps", stable_steps, minimum=0)
        self.decay_steps = check_int("decay_steps", decay_steps, minimum=0)
        self.final_learning_rate = check_number(
            "final_learning_rate", final_learning_rate, lambda x: 0.0 <= x <= self.peak_learning_rate,
            f"a number in [0, peak_learning_rate={peak_learning_rate}]",
        )  # fmt: skip
        self.decay = check_choice("decay", decay, DECAYS)

    def __call__(self, step):
        return warmup_stable_decay(step, self.peak_learning_rate, self.warmup_steps, self.stable_steps,
                                   self.decay_steps, self.final_learning_rate, self.decay)  # fmt: skip

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "warmup_steps": self.warmup_steps,
            "stable_steps": self.stable_steps,
            "decay_steps": self.decay_steps,
            "final_learning_rate": self.final_learning_rate,
            "decay": self.decay,
        }

