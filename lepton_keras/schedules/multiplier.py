"""A learning-rate schedule times a multiplier held in a variable, so callbacks can scale any schedule."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="lepton_keras")
class MultipliedSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`multiplier * base(step)`, with the multiplier in a non-trainable variable.

    When to use it: when a callback must change the learning rate of an optimizer built
    with a schedule. Keras raises TypeError when a callback assigns the learning rate of
    such an optimizer; scaling the multiplier instead keeps the schedule's shape and
    scales it (ReduceLROnPlateau, DivergenceGuard and LearningRateWarmup do this).
    The callbacks wrap a plain schedule in a MultipliedSchedule themselves when training
    begins, so you rarely need to build one by hand.

        lr(step) = multiplier * base(step)

    Args:
        base: a LearningRateSchedule, or a number for a constant learning rate.
        multiplier: the starting multiplier (default 1.0). `get_config` records its current
            value, so a saved model reloads with the learning rate it had.

    Example:
        schedule = MultipliedSchedule(keras.optimizers.schedules.CosineDecay(1e-3, 1000))
        optimizer = keras.optimizers.SGD(schedule)
        schedule.multiplier.assign(0.5)   # the whole cosine curve, halved
    """

    def __init__(self, base, multiplier: float = 1.0):
        if isinstance(base, dict):
            base = keras.optimizers.schedules.deserialize(base)
        if not (isinstance(base, keras.optimizers.schedules.LearningRateSchedule) or _is_number(base)):
            raise ValueError(f"base must be a LearningRateSchedule or a number; received base={base!r}")
        if not _is_number(multiplier) or not multiplier > 0:
            raise ValueError(f"multiplier must be a positive number; received multiplier={multiplier!r}")
        self.base = base
        self.multiplier = keras.Variable(float(multiplier), dtype="float32", trainable=False, name="lr_multiplier")

    def __call__(self, step):
        base = self.base(step) if callable(self.base) else self.base
        return ops.cast(self.multiplier, "float32") * ops.cast(base, "float32")

    def get_config(self):
        base = self.base
        if isinstance(base, keras.optimizers.schedules.LearningRateSchedule):
            base = keras.optimizers.schedules.serialize(base)
        return {"base": base, "multiplier": float(ops.convert_to_numpy(self.multiplier))}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
