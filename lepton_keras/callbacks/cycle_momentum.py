"""Cyclical momentum: set the optimizer's momentum (or Adam's beta_1) from a schedule at every step.

Smith (2018), "A disciplined approach to neural network hyper-parameters: Part 1 -- learning
rate, batch size, momentum, and weight decay", arXiv:1803.09820, Section 4.3; used by the
1cycle policy of Smith and Topin (2018), arXiv:1708.07120.
"""

from __future__ import annotations

import numbers
import operator

import keras
from keras import ops

from lepton_keras.callbacks.learning_rate import innermost_optimizer
from lepton_keras.distribute.keras_compat import set_attribute_untracked
from lepton_keras.validation import invalid

ATTRIBUTES = ("beta_1", "momentum")  # the first the optimizer has; PyTorch's OneCycleLR picks the same


def _static_comparison(name: str):
    compare, tensor_compare = getattr(operator, name), getattr(keras.Variable, f"__{name}__")

    def method(self, other):
        if isinstance(other, numbers.Real) and not isinstance(other, bool):
            return compare(self.static_value, other)
        return tensor_compare(self, other)

    return method


class _ScheduledHyperparameter(keras.Variable):
    """A non-trainable float32 variable that stands in for a float hyperparameter during training.

    Optimizers test some hyperparameters against numbers in Python, while building and
    while tracing a step (SGD: `if self.momentum != 0`, RMSprop: `if self.momentum > 0`, to
    know whether they keep a velocity). A traced step cannot read a variable's value in
    Python, so comparisons with numbers answer as for `static_value`, the float the
    variable replaced; in every other use (`ops.cast`, arithmetic) it is the variable.
    """

    def __init__(self, value: float, static_value: float, name: str):
        super().__init__(value, dtype="float32", trainable=False, name=name)
        self.static_value = static_value

    __eq__, __ne__ = _static_comparison("eq"), _static_comparison("ne")
    __lt__, __le__ = _static_comparison("lt"), _static_comparison("le")
    __gt__, __ge__ = _static_comparison("gt"), _static_comparison("ge")


@keras.saving.register_keras_serializable(package="lepton_keras")
class CycleMomentum(keras.callbacks.Callback):
    """Sets the optimizer's beta_1 (Adam family) or momentum (SGD, RMSprop) to `schedule.momentum(step)` each step.

    When to use it: with `OneCycle` (or any object with a `momentum(step)` method), for the
    cyclical momentum of the 1cycle policy: momentum falls while the learning rate rises
    and rises while it falls, which Smith found lets the large rates train stably.

    Before each batch, with `step` the optimizer's iteration count:

        Adam family:    beta_1   = schedule.momentum(step)
        SGD, RMSprop:   momentum = schedule.momentum(step)

    Keras bakes a float hyperparameter into the traced train step, so the callback holds
    the value in a non-trainable variable, assigned before every batch, and the train
    function is retraced at the start of training. The optimizer's attribute is that
    variable only while the train function runs (when a step may be traced: the callback
    wraps `model.train_function`, and wraps it again if another callback re-makes it), and
    a float (the value just used) at all other times, so `get_config` and saving
    (ModelCheckpoint, BackupAndRestore, at any batch and in any order of the callbacks)
    record a number; the variable is not tracked by the optimizer, so its variables and
    saved files stay the same. With `steps_per_execution` > 1 the momentum changes once
    per execution. Wrappers are looked through by their `inner_optimizer` attribute. An
    optimizer already built as SGD with momentum=0 keeps no velocity and is refused:
    create it with momentum > 0 (the value is overwritten).

    Args:
        schedule: an object with a `momentum(step)` method returning a float scalar, such
            as `lepton_keras.schedules.OneCycle`.

    Example:
        schedule = OneCycle(0.1, total_steps=epochs * steps_per_epoch)
        model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9), loss=...)
        model.fit(x, y, epochs=epochs, callbacks=[CycleMomentum(schedule)])

    References:
        Smith (2018), "A disciplined approach to neural network hyper-parameters: Part 1", arXiv:1803.09820.
    """

    def __init__(self, schedule):
        super().__init__()
        if not callable(getattr(schedule, "momentum", None)):
            raise invalid("schedule", schedule, "an object with a momentum(step) method, such as OneCycle")
        self.schedule = schedule
        self._optimizer = self._attribute = self._variable = None

    def get_config(self):
        return {"schedule": keras.saving.serialize_keras_object(self.schedule)}

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["schedule"]))

    def on_train_begin(self, logs=None):
        optimizer = innermost_optimizer(self.model.optimizer)
        attribute = next((name for name in ATTRIBUTES if hasattr(optimizer, name)), None)
        if attribute is None:
            raise ValueError(
                f"CycleMomentum needs an optimizer with a `momentum` (SGD) or `beta_1` (Adam family) "
                f"attribute; received {type(optimizer).__name__}"
            )
        current = getattr(optimizer, attribute)
        if not isinstance(current, numbers.Real):
            raise ValueError(f"CycleMomentum needs a number as the optimizer's {attribute}; received {current!r}")
        if attribute == "momentum" and optimizer.built and current == 0:
            raise ValueError(
                f"{type(optimizer).__name__} was built with momentum=0 and keeps no velocity; "
                "create it with momentum > 0 to schedule its momentum"
            )
        first = self._scheduled(optimizer)
        static_value = first if current == 0 else float(current)
        with self.model.distribute_strategy.scope():
            self._variable = _ScheduledHyperparameter(first, static_value, name=f"scheduled_{attribute}")
        self._optimizer, self._attribute = optimizer, attribute
        self.model.make_train_function(force=True)  # a step traced before holds the float

    def on_train_batch_begin(self, batch, logs=None):
        self._variable.assign(self._scheduled(self._optimizer))
        if getattr(self.model.train_function, "scheduled_by", None) is not self:  # new, or re-made by a callback
            self.model.train_function = self._with_variable(self.model.train_function)

    def on_train_end(self, logs=None):
        train_function = self.model.train_function
        if getattr(train_function, "scheduled_by", None) is self:
            self.model.train_function = train_function.unwrapped
        self._optimizer = self._attribute = self._variable = None

    def _with_variable(self, train_function):
        """`train_function` with the optimizer's attribute set to the variable while it runs, a float otherwise."""
        optimizer, attribute, variable = self._optimizer, self._attribute, self._variable

        def run(*args, **kwargs):
            # Bypasses the optimizer's attribute tracking: the variable must not join its saved state.
            set_attribute_untracked(optimizer, attribute, variable)
            try:
                return train_function(*args, **kwargs)
            finally:
                setattr(optimizer, attribute, float(ops.convert_to_numpy(variable)))

        run.scheduled_by, run.unwrapped = self, train_function
        return run

    def _scheduled(self, optimizer) -> float:
        return float(ops.convert_to_numpy(self.schedule.momentum(optimizer.iterations)))
