"""A learning-rate schedule times a multiplier held in a variable, so callbacks can scale any schedule."""

from __future__ import annotations

import keras
from keras import ops

from lepton_keras.validation import check_number, check_positive


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
        base: a LearningRateSchedule, or a finite number >= 0 for a constant learning rate.
        multiplier: the starting multiplier, a finite number > 0 (default 1.0). `get_config`
            records its current value (and the base, serialized with
            `keras.saving.serialize_keras_object`), so a saved model reloads with the learning
            rate it had, in any process that has imported lepton_keras.

    Example:
        schedule = MultipliedSchedule(keras.optimizers.schedules.CosineDecay(1e-3, 1000))
        optimizer = keras.optimizers.SGD(schedule)
        schedule.multiplier.assign(0.5)   # the whole cosine curve, halved
    """

    def __init__(self, base, multiplier: float = 1.0):
        if not isinstance(base, keras.optimizers.schedules.LearningRateSchedule):
            base = check_number("base", base, lambda x: x >= 0.0, "a LearningRateSchedule or a finite number >= 0")
        self.base = base
        self.multiplier = keras.Variable(check_positive("multiplier", multiplier), dtype="float32", trainable=False,
                                         name="lr_multiplier")  # fmt: skip

    def __call__(self, step):
        base = self.base(step) if callable(self.base) else self.base
        return ops.cast(self.multiplier, "float32") * ops.cast(base, "float32")

    def get_config(self):
        return {
            "base": keras.saving.serialize_keras_object(self.base),
            "multiplier": float(ops.convert_to_numpy(self.multiplier)),
        }

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["base"]), config["multiplier"])
