"""Gradual warmup in front of any learning-rate schedule or constant.

Goyal, Dollár, Girshick, Noordhuis, Wesolowski, Kyrola, Tulloch, Jia and He (2017),
"Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", arXiv:1706.02677.
"""

from __future__ import annotations

import math
import numbers

import keras
from keras import ops

KINDS = ("linear", "exponential")


def warmup_learning_rate(step, warmup_steps: float, start, end, kind: str = "linear"):
    """The warmup rate at `step` in [0, warmup_steps]: from `start` at step 0 to `end` at `warmup_steps`.

    linear:       start + (end - start) * step / warmup_steps
    exponential:  start * (end / start) ** (step / warmup_steps)
    """
    progress = ops.cast(step, "float64") / float(max(warmup_steps, 1))
    start, end = ops.cast(start, "float64"), ops.cast(end, "float64")
    if kind == "linear":
        return start + (end - start) * progress
    return start * ops.power(end / start, progress)


@keras.saving.register_keras_serializable(package="lepton_keras")
class Warmup(keras.optimizers.schedules.LearningRateSchedule):
    """Ramps the learning rate up to a target schedule (or constant), then follows the target.

    When to use it: with large batches or large learning rates, where the first steps at
    the full rate diverge or hurt the final accuracy (the linear scaling rule of Goyal et
    al. needs it beyond a few thousand examples per batch), and in front of any decay.

    With W = `warmup_steps`, s = `start_factor`, target(t) the wrapped schedule, and
    lr_end = target(W) (or target(0) with `offset_target=True`), lr_0 = s * target(0):

        step < W, linear:       lr = lr_0 + (lr_end - lr_0) * step / W
        step < W, exponential:  lr = lr_0 * (lr_end / lr_0) ** (step / W)
        step >= W:              lr = target(step)       (offset_target=False, the default)
                                lr = target(step - W)   (offset_target=True)

    By default the target keeps its own step count, as in the paper, where the warmup
    replaces the first epochs of the step schedule and its boundaries stay where they
    were; with `offset_target=True` the target starts at step W from its own step 0
    (Keras' `CosineDecay(warmup_steps=...)` does this). Both are continuous at W.

    Args:
        target: a LearningRateSchedule, or a number for a constant learning rate.
        warmup_steps: W, a non-negative integer; 0 turns the warmup off.
        start_factor: s, the first rate as a fraction of target(0) (default None: 0.0 for
            "linear", 0.01 for "exponential", which needs s > 0).
        kind: "linear" (default, the paper's) or "exponential" (geometric interpolation).
        offset_target: follow target(step - W) after the warmup (default False).

    Example:
        decay = keras.optimizers.schedules.PiecewiseConstantDecay([30_000, 60_000], [0.4, 0.04, 0.004])
        schedule = Warmup(decay, warmup_steps=2_500, start_factor=0.1 / 0.4)  # the paper's 5 epochs from 0.1
        optimizer = keras.optimizers.SGD(schedule, momentum=0.9)

    References:
        Goyal et al. (2017), "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", arXiv:1706.02677.
    """

    def __init__(self, target, warmup_steps: int, *, start_factor: float | None = None, kind: str = "linear",
                 offset_target: bool = False):  # fmt: skip
        if isinstance(target, dict):
            target = keras.optimizers.schedules.deserialize(target)
        if not isinstance(target, keras.optimizers.schedules.LearningRateSchedule) and not (
            _is_real(target) and target >= 0
        ):
            raise ValueError(f"target must be a LearningRateSchedule or a number >= 0; received target={target!r}")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, numbers.Integral) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0; received warmup_steps={warmup_steps!r}")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; received kind={kind!r}")
        if start_factor is None:
            start_factor = 0.0 if kind == "linear" else 0.01
        low = "> 0" if kind == "exponential" else ">= 0"
        if not _is_real(start_factor) or start_factor < 0 or (kind == "exponential" and start_factor == 0):
            raise ValueError(
                f"start_factor must be a number {low} for kind={kind!r}; received start_factor={start_factor!r}"
            )
        if not isinstance(offset_target, bool):
            raise ValueError(f"offset_target must be True or False; received offset_target={offset_target!r}")
        self.target = target
        self.warmup_steps = int(warmup_steps)
        self.start_factor = float(start_factor)
        self.kind = kind
        self.offset_target = offset_target

    def _target(self, step):
        if isinstance(self.target, keras.optimizers.schedules.LearningRateSchedule):
            return ops.cast(self.target(step), "float64")
        return ops.convert_to_tensor(self.target, "float64")

    def __call__(self, step):
        step = ops.convert_to_tensor(step)
        warmup_steps = ops.cast(self.warmup_steps, step.dtype)
        first = self._target(ops.zeros_like(step))
        if self.offset_target:
            end = first
            after = self._target(ops.maximum(step - warmup_steps, ops.zeros_like(step)))
        else:
            end = self._target(warmup_steps)
            after = self._target(step)
        during = warmup_learning_rate(step, self.warmup_steps, self.start_factor * first, end, self.kind)
        return ops.cast(ops.where(step < warmup_steps, during, after), "float32")

    def get_config(self):
        target = self.target
        if isinstance(target, keras.optimizers.schedules.LearningRateSchedule):
            target = keras.optimizers.schedules.serialize(target)
        return {
            "target": target,
            "warmup_steps": self.warmup_steps,
            "start_factor": self.start_factor,
            "kind": self.kind,
            "offset_target": self.offset_target,
        }


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
