"""Argument checks shared by every public constructor and function of lepton_keras.

One message format everywhere: the argument, what is allowed, the value received.

    >>> check_positive("learning_rate", -1.0)
    Traceback (most recent call last):
    ...
    ValueError: learning_rate must be a finite number > 0, received: -1.0

Each check returns the value normalised (a Python float, int or bool), so a constructor
writes `self.beta_1 = check_unit_interval("beta_1", beta_1)`. Numbers must be real
numbers (Python or NumPy scalars, not bools, not strings); NaN is never accepted, and
infinity only where a check says so. This module imports neither TensorFlow nor Keras at
import time, so the launcher and the data helpers use it too.
"""

from __future__ import annotations

import math
import numbers
import os
import sys
from collections.abc import Callable, Iterable


def invalid(name: str, value, allowed: str) -> ValueError:
    """The ValueError of every check: "<name> must be <allowed>, received: <value!r>"."""
    return ValueError(f"{name} must be {allowed}, received: {value!r}")


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_number(
    name: str,
    value,
    condition: Callable[[float], bool] = lambda x: True,
    description: str = "a finite number",
    *,
    allow_infinite: bool = False,
    allow_none: bool = False,
) -> float | None:
    """`value` as a float when it is a real number, not NaN, finite unless `allow_infinite`,
    and `condition(value)` holds; None passes with `allow_none`; else ValueError."""
    if value is None and allow_none:
        return None
    allowed = description + (" or None" if allow_none else "")
    if not _is_real(value):
        raise invalid(name, value, allowed)
    number = float(value)
    if math.isnan(number) or (math.isinf(number) and not allow_infinite) or not condition(number):
        raise invalid(name, value, allowed)
    return number


def check_positive(name: str, value, *, allow_none: bool = False, allow_infinite: bool = False) -> float | None:
    """A float > 0, finite unless `allow_infinite`."""
    description = "a number > 0" if allow_infinite else "a finite number > 0"
    return check_number(name, value, lambda x: x > 0.0, description,
                        allow_infinite=allow_infinite, allow_none=allow_none)


def check_non_negative(name: str, value, *, allow_none: bool = False, allow_infinite: bool = False) -> float | None:
    """A float >= 0, finite unless `allow_infinite`."""
    description = "a number >= 0" if allow_infinite else "a finite number >= 0"
    return check_number(name, value, lambda x: x >= 0.0, description,
                        allow_infinite=allow_infinite, allow_none=allow_none)


def check_unit_interval(name: str, value, *, open_at_zero: bool = False, closed_at_one: bool = False) -> float:
    """A float in [0, 1) by default; (0, ...) with `open_at_zero`, (..., 1] with `closed_at_one`."""
    low, high = ("(0" if open_at_zero else "[0"), ("1]" if closed_at_one else "1)")
    return check_number(
        name,
        value,
        lambda x: (x > 0.0 if open_at_zero else x >= 0.0) and (x <= 1.0 if closed_at_one else x < 1.0),
        f"a number in {low}, {high}",
    )


def check_int(name: str, value, *, minimum: int | None = None, maximum: int | None = None,
              allow_none: bool = False) -> int | None:
    """An integer (Python or NumPy, not bool, not a float such as 2.0) within [minimum, maximum]."""
    if value is None and allow_none:
        return None
    bounds = [f">= {minimum}" if minimum is not None else "", f"<= {maximum}" if maximum is not None else ""]
    allowed = " and ".join(["an integer", *filter(None, bounds)]).replace("integer and", "integer")
    allowed += " or None" if allow_none else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise invalid(name, value, allowed)
    number = int(value)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise invalid(name, value, allowed)
    return number


def check_bool(name: str, value) -> bool:
    """True or False themselves (the string "False" is not False)."""
    if not isinstance(value, bool):
        import numpy as np

        if not isinstance(value, np.bool_):
            raise invalid(name, value, "True or False")
    return bool(value)


def check_choice(name: str, value, choices: Iterable[str]) -> str:
    """One of `choices` (strings, compared exactly)."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise invalid(name, value, "one of " + ", ".join(repr(choice) for choice in choices))
    return value


def check_string(name: str, value, *, allow_none: bool = False) -> str | None:
    """A non-empty string."""
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value:
        raise invalid(name, value, "a non-empty string" + (" or None" if allow_none else ""))
    return value


def check_strings(name: str, value, *, allow_none: bool = False) -> tuple[str, ...]:
    """A list or tuple of non-empty strings, as a tuple (None gives () with `allow_none`)."""
    if value is None and allow_none:
        return ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(part, str) and part for part in value):
        raise invalid(name, value, "a list or tuple of non-empty strings" + (" or None" if allow_none else ""))
    return tuple(value)


def check_path(name: str, value) -> str:
    """A non-empty path (a str or os.PathLike), as a str."""
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise invalid(name, value, "a non-empty path (a str or os.PathLike)")
    return os.fspath(value)


def check_directory(name: str, value, *, allow_none: bool = False) -> str | None:
    """A path a directory can be at: a directory, or nothing yet under an existing directory
    (it is created when first written), never a file; None passes with `allow_none`."""
    if value is None and allow_none:
        return None
    allowed = "a directory path (an existing directory, or one that can be created)" + (" or None" if allow_none else "")
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise invalid(name, value, allowed)
    path = os.fspath(value)
    existing = os.path.abspath(path)
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise invalid(name, value, f"{allowed}; {existing!r} is a file")
    return path


def check_strategy(name: str, value, *, allow_none: bool = True):
    """A `tf.distribute.Strategy` (or None). Imports no TensorFlow: without it, nothing is one."""
    if value is None and allow_none:
        return None
    tensorflow = sys.modules.get("tensorflow")
    if tensorflow is None or not isinstance(value, tensorflow.distribute.Strategy):
        raise invalid(name, value, "a tf.distribute.Strategy" + (" or None" if allow_none else ""))
    return value


def check_learning_rate(name: str, value):
    """An optimizer's learning rate: a finite number >= 0, a LearningRateSchedule or a callable.

    Numbers come back as Python floats; schedules and callables as they are. 0 is allowed:
    callbacks (Keras's LearningRateScheduler, a warm-up from 0) set it, and a model saved at
    that moment must load again.
    """
    allowed = "a finite number >= 0, a LearningRateSchedule or a callable"
    if _is_real(value):
        return check_number(name, value, lambda x: x >= 0.0, allowed)
    if callable(value):
        return value
    import keras

    if isinstance(value, keras.optimizers.schedules.LearningRateSchedule):
        return value
    raise invalid(name, value, allowed)


# Keras's own optimizer keywords (keras.optimizers.Optimizer.__init__), checked where our optimizers and
# wrappers receive them: Keras takes NaN, infinities and strings there and fails (or trains to NaN) later.
_KERAS_OPTIMIZER_CHECKS = {
    "weight_decay": lambda name, value: check_non_negative(name, value, allow_none=True),
    "clipnorm": lambda name, value: check_positive(name, value, allow_none=True),
    "clipvalue": lambda name, value: check_positive(name, value, allow_none=True),
    "global_clipnorm": lambda name, value: check_positive(name, value, allow_none=True),
    "use_ema": check_bool,
    "ema_momentum": lambda name, value: check_unit_interval(name, value, closed_at_one=True),
    "ema_overwrite_frequency": lambda name, value: check_int(name, value, minimum=1, allow_none=True),
    "loss_scale_factor": lambda name, value: check_positive(name, value, allow_none=True),
    "gradient_accumulation_steps": lambda name, value: check_int(name, value, minimum=2, allow_none=True),
    "name": lambda name, value: check_string(name, value, allow_none=True),
}


def check_keras_optimizer_options(options: dict) -> dict:
    """Keras's optimizer keywords in `options` (weight_decay, clipnorm, clipvalue, global_clipnorm,
    use_ema, ema_momentum, ema_overwrite_frequency, loss_scale_factor, gradient_accumulation_steps,
    name) checked as ours are; returns `options` with the checked values. Other keys pass unchanged
    (Keras names a keyword it does not know)."""
    return {key: _KERAS_OPTIMIZER_CHECKS[key](key, value) if key in _KERAS_OPTIMIZER_CHECKS else value
            for key, value in options.items()}  # fmt: skip
