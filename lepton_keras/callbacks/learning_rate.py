"""Reading and changing an optimizer's learning rate, whether it is a number or a schedule.

Keras lets a callback assign the learning rate only when it is a variable; an optimizer
built with a LearningRateSchedule raises TypeError. These helpers scale a schedule
through `MultipliedSchedule` instead, and reach through wrappers (Lookahead, clipping,
LossScaleOptimizer), whose `learning_rate` is their inner optimizer's.
"""

from __future__ import annotations

from keras import ops

from lepton_keras.distribute.keras_compat import optimizer_schedule
from lepton_keras.schedules.multiplier import MultipliedSchedule


def innermost_optimizer(optimizer):
    """The optimizer inside any wrappers and LossScaleOptimizer (followed through `inner_optimizer`)."""
    while hasattr(optimizer, "inner_optimizer"):
        optimizer = optimizer.inner_optimizer
    return optimizer


def learning_rate_schedule(optimizer):
    """The (innermost) optimizer's LearningRateSchedule, or None when its learning rate is a variable."""
    return optimizer_schedule(innermost_optimizer(optimizer))


def current_learning_rate(optimizer) -> float:
    """The learning rate the next step will use (the schedule at the current step)."""
    return float(ops.convert_to_numpy(optimizer.learning_rate))


def ensure_scalable(optimizer) -> None:
    """Wraps a plain schedule in a MultipliedSchedule, so that `scale_learning_rate` works.

    Call it before the train function is traced (in `on_train_begin`): a traced step keeps
    the schedule it was traced with. Does nothing for a variable learning rate or a
    schedule that is already multiplied.
    """
    schedule = learning_rate_schedule(optimizer)
    if schedule is not None and not isinstance(schedule, MultipliedSchedule):
        innermost_optimizer(optimizer).learning_rate = MultipliedSchedule(schedule)


def learning_rate_multiplier(optimizer) -> float:
    """The MultipliedSchedule's multiplier, or 1.0 for a variable learning rate."""
    schedule = learning_rate_schedule(optimizer)
    if isinstance(schedule, MultipliedSchedule):
        return float(ops.convert_to_numpy(schedule.multiplier))
    return 1.0


def scale_learning_rate(optimizer, factor: float) -> None:
    """Multiplies the learning rate (a variable, or a multiplied schedule's multiplier) by `factor`."""
    schedule = learning_rate_schedule(optimizer)
    if schedule is None:
        target = innermost_optimizer(optimizer)
        target.learning_rate = float(ops.convert_to_numpy(target.learning_rate)) * factor
    elif isinstance(schedule, MultipliedSchedule):
        schedule.multiplier.assign(float(ops.convert_to_numpy(schedule.multiplier)) * factor)
    else:
        raise TypeError(
            f"the optimizer's learning rate is a {type(schedule).__name__}; call ensure_scalable(optimizer) "
            "before training starts, or build the optimizer with a MultipliedSchedule"
        )


def set_learning_rate(optimizer, value: float) -> None:
    """Sets the learning rate of the next step to `value` (through the multiplier for a schedule)."""
    if learning_rate_schedule(optimizer) is None:
        innermost_optimizer(optimizer).learning_rate = float(value)
        return
    current = current_learning_rate(optimizer)
    if current <= 0:
        raise ValueError(f"cannot scale a schedule whose current learning rate is {current} to {value}")
    scale_learning_rate(optimizer, value / current)
