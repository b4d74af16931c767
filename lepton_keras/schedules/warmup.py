"""Gradual warmup in front of any learning-rate schedule or constant.

Goyal, Dollár, Girshick, Noordhuis, Wesolowski, Kyrola, Tulloch, Jia and He (2017),
"Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", arXiv:1706.02677.
"""

from __future__ import annotations

import keras
from keras import ops

from lepton_keras.validation import check_bool, check_choice, check_int, check_number

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
        target: a LearningRateSchedule, or a finite number >= 0 for a constant learning rate.
        warmup_steps: W, an integer >= 0; 0 turns the warmup off.
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
        if not isinstance(target, keras.optimizers.schedules.LearningRateSchedule):
            target = check_number("target", target, lambda x: x >= 0.0,
                                  "a LearningRateSchedule or a finite number >= 0")  # fmt: skip
        self.target = target
        self.warmup_steps = check_int("warmup_steps", warmup_steps, minimum=0)
        self.kind = check_choice("kind", kind, KINDS)
        if start_factor is None:
            start_factor = 0.0 if kind == "linear" else 0.01
        if kind == "exponential":
            self.start_factor = check_number("start_factor", start_factor, lambda x: x > 0.0,
                                             "a finite number > 0 for kind='exponential'")  # fmt: skip
        else:
            self.start_factor = check_number("start_factor", start_factor, lambda x: x >= 0.0,
                                             "a finite number >= 0 for kind='linear'")  # fmt: skip
        self.offset_target = check_bool("offset_target", offset_target)

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
        return {
            "target": keras.saving.serialize_keras_object(self.target),
            "warmup_steps": self.warmup_steps,
            "start_factor": self.start_factor,
            "kind": self.kind,
            "offset_target": self.offset_target,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(keras.saving.deserialize_keras_object(config.pop("target")), **config)
