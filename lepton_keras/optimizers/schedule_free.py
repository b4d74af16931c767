"""Schedule-Free AdamW and SGD: no learning-rate schedule, an interpolated average of the iterates instead.

Defazio, Yang, Mehta, Mishchenko, Khaled and Cutkosky (2024), "The Road Less Scheduled",
NeurIPS 2024, arXiv:2405.15682; the authors' package `schedulefree` (1.4.x,
github.com/facebookresearch/schedule_free).
"""

from __future__ import annotations

import keras
from keras import ops

from lepton_keras.distribute.keras_compat import excluded_from_weight_decay, optimizer_variable_index
from lepton_keras.optimizers.base import STEP_DTYPE, LeptonOptimizer, one_minus_power, scalar, step_number
from lepton_keras.validation import check_int, check_non_negative, check_unit_interval


def schedule_free_averaging_weight(new_step, learning_rate, lr_max, weight_sum, *, step, r, weight_lr_power):
    """(lr_max, weight_sum, c): the running scalars after step `step` (1, 2, ...) and its averaging weight c.

    With `new_step` (the step's first variable update) lr_max and weight_sum take the step in;
    otherwise they already have. `learning_rate` is the step's, warm-up included (float64 scalars):

        lr_max <- max(lr_max, lr_t)
        weight_sum <- weight_sum + t^r lr_max^weight_lr_power
        c = t^r lr_max^weight_lr_power / weight_sum     (0 while weight_sum = 0)
    """
    lr_max = ops.where(new_step, ops.maximum(lr_max, learning_rate), lr_max)
    weight = ops.power(step, r) * ops.power(lr_max, weight_lr_power)
    weight_sum = ops.where(new_step, weight_sum + weight, weight_sum)
    positive = ops.greater(weight_sum, 0.0)
    return lr_max, weight_sum, ops.where(positive, weight / ops.where(positive, weight_sum, 1.0), 0.0)


def schedule_free_step(y, z, direction, *, averaging_weight, learning_rate, y_step):
    """(y, z) after a step along `direction` (the gradient, preconditioned, plus weight decay at y).

    x_t = (1 - c) x_{t-1} + c z_t with z_t = z_{t-1} - lr d and y_t = (1 - beta) z_t + beta x_t,
    written without x as the authors' code does: `y_step` is lr (beta (1 - c) - 1).
    """
    return y + averaging_weight * (z - y) + y_step * direction, z - learning_rate * direction


def schedule_free_adamw_update(y, z, v, started, gradient, *, averaging_weight, learning_rate, y_step, beta_2,
                               one_minus_beta_2, bias_correction_2, epsilon, weight_decay):  # fmt: skip
    """One Schedule-Free AdamW step; returns (y, z, v, started) without assigning anything.

    z starts at y where `started` is 0 (the variable's first step). `bias_correction_2` is
    1 - beta_2^t; the scalars are in the variable's dtype, computed in double precision.
    """
    z = ops.where(ops.greater(started, 0), z, y)
    v = beta_2 * v + one_minus_beta_2 * ops.square(gradient)
    direction = gradient / (ops.sqrt(v / bias_correction_2) + epsilon) + weight_decay * y
    y, z = schedule_free_step(y, z, direction, averaging_weight=averaging_weight, learning_rate=learning_rate,
                              y_step=y_step)  # fmt: skip
    return y, z, v, ops.ones_like(started)


def schedule_free_sgd_update(y, z, started, gradient, *, averaging_weight, learning_rate, y_step, weight_decay):
    """One Schedule-Free SGD step; returns (y, z, started) without assigning anything (z starts at y)."""
    z = ops.where(ops.greater(started, 0), z, y)
    y, z = schedule_free_step(y, z, gradient + weight_decay * y, averaging_weight=averaging_weight,
                              learning_rate=learning_rate, y_step=y_step)  # fmt: skip
    return y, z, ops.ones_like(started)


def schedule_free_evaluation_point(y, z, *, interpolation):
    """x = (y - (1 - beta) z) / beta, the averaged weights to evaluate, from the training weights y and z.

    Written as the authors' `eval()`: y + (1 - 1 / beta) (z - y).
    """
    return y + (1.0 - 1.0 / interpolation) * (z - y)


class ScheduleFree(LeptonOptimizer):
    """The base of ScheduleFreeAdamW and ScheduleFreeSGD: the slot z, the averaging weights and the warm-up.

    Subclasses give `interpolation` (beta) and `update_step`. The model's weights are y, the
    point where the gradient is taken; `evaluation_weights` gives x, the average to evaluate.
    """

    def __init__(self, learning_rate, *, weight_decay=None, warmup_steps=0, r=0.0, weight_lr_power=2.0, name=None,
                 **kwargs):  # fmt: skip
        # The decay is applied at y inside the step (the authors' form); Keras's form is off.
        super().__init__(learning_rate, name=name, weight_decay=None, **kwargs)
        self.schedule_free_weight_decay = check_non_negative("weight_decay", weight_decay, allow_none=True)
        self.warmup_steps = check_int("warmup_steps", warmup_steps, minimum=0)
        self.r = check_non_negative("r", r)
        self.weight_lr_power = check_non_negative("weight_lr_power", weight_lr_power)

    @property
    def interpolation(self) -> float:
        """beta, the weight of x in y = (1 - beta) z + beta x."""
        raise NotImplementedError

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._z = self.add_optimizer_variables(var_list, "z")
        # 1 once z holds the weights: z is set at the variable's first step, whatever built the
        # optimizer (Keras's symbolic build would lose an assignment made here).
        self._z_started = [
            self.add_variable((), dtype=variable.dtype, name=f"{variable.path.replace('/', '_')}_z_started")
            for variable in var_list
        ]
        # lr_max, the sum of the averaging weights, and the step they last took in (-1: none).
        self.lr_max = self.add_variable((), dtype=STEP_DTYPE, name="lr_max")
        self.weight_sum = self.add_variable((), dtype=STEP_DTYPE, name="weight_sum")
        self.averaging_step = self.add_variable((), initializer=keras.initializers.Constant(-1), dtype="int64",
                                                name="averaging_step")  # fmt: skip

    def step_scalars(self, variable, learning_rate) -> dict:
        """The scalars of `schedule_free_step` for `variable` (assigning lr_max and weight_sum once per step)."""
        t = step_number(self.iterations)
        lr = scalar(learning_rate, STEP_DTYPE)
        if self.warmup_steps:
            lr = lr * ops.minimum(t / float(self.warmup_steps), 1.0)
        step = ops.cast(self.iterations, "int64")
        lr_max, weight_sum, c = schedule_free_averaging_weight(
            ops.not_equal(self.averaging_step, step), lr, self.lr_max, self.weight_sum, step=t,
            r=scalar(self.r, STEP_DTYPE), weight_lr_power=scalar(self.weight_lr_power, STEP_DTYPE))  # fmt: skip
        self.assign(self.lr_max, lr_max)
        self.assign(self.weight_sum, weight_sum)
        self.assign(self.averaging_step, step)
        decay = self.schedule_free_weight_decay or 0.0
        if excluded_from_weight_decay(self, variable):
            decay = 0.0
        dtype = variable.dtype
        return {
            "averaging_weight": scalar(c, dtype),
            "learning_rate": scalar(lr, dtype),
            "y_step": scalar(lr * (self.interpolation * (1.0 - c) - 1.0), dtype),
            "weight_decay": scalar(decay, dtype),
        }

    def slots(self, variable):
        """(z, started) of `variable`; KeyError for a variable this optimizer does not train."""
        index = optimizer_variable_index(self, variable)
        return self._z[index], self._z_started[index]

    def evaluation_weights(self, variables) -> list:
        """x for each of `variables` (tensors; y itself for a variable that has not taken a step yet)."""
        points = []
        for variable in variables:
            z, started = self.slots(variable)
            x = schedule_free_evaluation_point(variable.value, z.value, interpolation=scalar(self.interpolation,
                                                                                               variable.dtype))
            points.append(ops.where(ops.greater(started.value, 0), x, variable.value))
        return points

    def get_config(self):
        return {
            **super().get_config(),
            "weight_decay": self.schedule_free_weight_decay,
            "warmup_steps": self.warmup_steps,
            "r": self.r,
            "weight_lr_power": self.weight_lr_power,
        }


@keras.saving.register_keras_serializable(package="lepton_keras")
class ScheduleFreeAdamW(ScheduleFree):
    """Schedule-Free AdamW: Adam steps on z, evaluated at a running average x, with no schedule to tune.

    When to use it: in place of AdamW with a cosine or linear decay, when the length of
    training is not known in advance or you would rather not tune a schedule (the paper
    matches or beats tuned schedules across vision and language tasks). Keep a warm-up
    (`warmup_steps`); evaluate and save at x (`lepton_keras.callbacks.ScheduleFreeEvaluation`
    in `fit`, `lepton_keras.callbacks.schedule_free_eval(model)` in a custom loop).

    The model's weights during training are y; z and x start at the initial weights. With
    gradient g_t taken at y_{t-1}, t = 1, 2, ... (the authors' `AdamWScheduleFree`):

        lr_t = lr min(t / warmup_steps, 1)            lr_max = max(lr_max, lr_t)
        c_t = t^r lr_max^weight_lr_power / sum_{i<=t} i^r lr_max,i^weight_lr_power
        v_t = beta_2 v_{t-1} + (1 - beta_2) g_t^2
        d_t = g_t / (sqrt(v_t / (1 - beta_2^t)) + epsilon) + weight_decay y_{t-1}
        z_t = z_{t-1} - lr_t d_t
        x_t = (1 - c_t) x_{t-1} + c_t z_t
        y_t = (1 - beta_1) z_t + beta_1 x_t

    x is not stored: x_{t-1} = (y_{t-1} - (1 - beta_1) z_{t-1}) / beta_1, from the OLD z.
    With the default weight_lr_power = 2, steps taken during the warm-up weigh less in x.

    Differences from the authors' code (schedulefree 1.4.1): none in the update (float64 runs
    agree to 4e-16 of the distance moved, warm-up, weight decay, r and a changing learning
    rate included). The authors keep lr_max,
    the weight sum and the step count per parameter group; here they are the optimizer's, and
    the learning rate may be a Keras schedule (lr_t above is then the schedule's value times
    the warm-up). Keras's own `weight_decay` form is replaced by the authors' (at y, inside
    d_t); `exclude_from_weight_decay(...)` is honoured. The authors' `train()`/`eval()`
    switch is lepton_keras.callbacks.ScheduleFreeEvaluation and schedule_free_eval.

    Args:
        learning_rate: lr, a finite float > 0, a `keras.optimizers.schedules.LearningRateSchedule`
            or a callable (default 0.0025).
        beta_1: the interpolation beta between z and x, in (0, 1) (default 0.9).
        beta_2: decay rate of the second moment v, in [0, 1) (default 0.999).
        epsilon: added to the root, >= 0 (default 1e-8).
        weight_decay: decay at y, >= 0 or None (default None: none).
        warmup_steps: steps of linear warm-up of the learning rate, >= 0 (default 0).
        r: the power of t in the averaging weights, >= 0 (default 0.0).
        weight_lr_power: the power of lr_max in the averaging weights, >= 0 (default 2.0).
        fused_updates: compile each variable's update with XLA into one kernel (default True).
        **kwargs: Keras's other optimizer keywords (clipnorm, ..., name).

    Example:
        import keras
        import numpy as np
        import lepton_keras

        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer=lepton_keras.optimizers.ScheduleFreeAdamW(1e-3, warmup_steps=10), loss="mse")
        model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0,
                  callbacks=[lepton_keras.callbacks.ScheduleFreeEvaluation()])

    References:
        Defazio et al. (2024), "The Road Less Scheduled", arXiv:2405.15682.
    """

    def __init__(self, learning_rate=0.0025, beta_1=0.9, beta_2=0.999, epsilon=1e-8, weight_decay=None,
                 warmup_steps=0, r=0.0, weight_lr_power=2.0, name="schedule_free_adamw", **kwargs):  # fmt: skip
        super().__init__(learning_rate, weight_decay=weight_decay, warmup_steps=warmup_steps, r=r,
                         weight_lr_power=weight_lr_power, name=name, **kwargs)  # fmt: skip
        self.beta_1 = check_unit_interval("beta_1", beta_1, open_at_zero=True)
        self.beta_2 = check_unit_interval("beta_2", beta_2)
        self.epsilon = check_non_negative("epsilon", epsilon)

    @property
    def interpolation(self) -> float:
        return self.beta_1

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._v = self.add_optimizer_variables(var_list, "v")

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        z, started = self.slots(variable)
        v = self._v[optimizer_variable_index(self, variable)]
        self.update_in_place(
            schedule_free_adamw_update,
            (variable, z, v, started),
            variable,
            z,
            v,
            started,
            ops.cast(gradient, dtype),
            beta_2=scalar(self.beta_2, dtype),
            one_minus_beta_2=scalar(1.0 - self.beta_2, dtype),
            bias_correction_2=scalar(one_minus_power(self.beta_2, step_number(self.iterations)), dtype),
            epsilon=scalar(self.epsilon, dtype),
            **self.step_scalars(variable, learning_rate),
        )

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="lepton_keras")
class ScheduleFreeSGD(ScheduleFree):
    """Schedule-Free SGD: SGD steps on z, evaluated at a running average x, with no schedule to tune.

    When to use it: in place of momentum SGD with a step or cosine schedule (image
    classification with batch norm, convex problems), when the length of training is not
    known in advance. Its learning rates are those of SGD times about 10 to 50 (the authors'
    default is 1.0). Evaluate and save at x (`lepton_keras.callbacks.ScheduleFreeEvaluation`,
    `lepton_keras.callbacks.schedule_free_eval`).

    The update of ScheduleFreeAdamW with d_t = g_t + weight_decay y_{t-1} (the authors'
    `SGDScheduleFree`), beta being `momentum`:

        z_t = z_{t-1} - lr_t d_t
        x_t = (1 - c_t) x_{t-1} + c_t z_t
        y_t = (1 - momentum) z_t + momentum x_t

    with lr_t and c_t as in ScheduleFreeAdamW. Differences from the authors' code: as for
    ScheduleFreeAdamW (none in the update).

    Args:
        learning_rate: lr, a finite float > 0, a `keras.optimizers.schedules.LearningRateSchedule`
            or a callable (default 1.0).
        momentum: the interpolation beta between z and x, in (0, 1) (default 0.9).
        weight_decay: decay at y, >= 0 or None (default None: none).
        warmup_steps: steps of linear warm-up of the learning rate, >= 0 (default 0).
        r: the power of t in the averaging weights, >= 0 (default 0.0).
        weight_lr_power: the power of lr_max in the averaging weights, >= 0 (default 2.0).
        fused_updates: compile each variable's update with XLA into one kernel (default True).
        **kwargs: Keras's other optimizer keywords (clipnorm, ..., name).

    Example:
        import keras
        import numpy as np
        import lepton_keras

        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer=lepton_keras.optimizers.ScheduleFreeSGD(0.1, warmup_steps=10), loss="mse")
        model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0,
                  callbacks=[lepton_keras.callbacks.ScheduleFreeEvaluation()])

    References:
        Defazio et al. (2024), "The Road Less Scheduled", arXiv:2405.15682.
    """

    def __init__(self, learning_rate=1.0, momentum=0.9, weight_decay=None, warmup_steps=0, r=0.0,
                 weight_lr_power=2.0, name="schedule_free_sgd", **kwargs):  # fmt: skip
        super().__init__(learning_rate, weight_decay=weight_decay, warmup_steps=warmup_steps, r=r,
                         weight_lr_power=weight_lr_power, name=name, **kwargs)  # fmt: skip
        self.momentum = check_unit_interval("momentum", momentum, open_at_zero=True)

    @property
    def interpolation(self) -> float:
        return self.momentum

    def update_step(self, gradient, variable, learning_rate):
        z, started = self.slots(variable)
        self.update_in_place(
            schedule_free_sgd_update,
            (variable, z, started),
            variable,
            z,
            started,
            ops.cast(gradient, variable.dtype),
            **self.step_scalars(variable, learning_rate),
        )

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum}
