"""MADGRAD: a momentumized, adaptive, dual-averaged gradient method.

Defazio and Jelassi (2021), "Adaptivity without Compromise: A Momentumized, Adaptive, Dual
Averaged Gradient Method for Stochastic Optimization", arXiv:2101.11075.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from lepton_keras.distribute.keras_compat import excluded_from_weight_decay
from lepton_keras.optimizers.base import STEP_DTYPE, LeptonOptimizer, scalar, step_number
from lepton_keras.validation import check_bool, check_non_negative, check_unit_interval


def madgrad_update(variable, gradient, x0, s, nu, *, weight, averaging, decay, epsilon, decays_x0: bool):
    """One MADGRAD step; returns (new_variable, new_s, new_nu), and new_x0 with `decays_x0`.

    `weight` is lambda_k = lr sqrt(k + 1), `averaging` c = 1 - momentum and `decay` lr times the
    decoupled weight decay (0 for none), all in the variable's dtype, computed in double
    precision. The decay is the authors' `decouple_decay`, after the step and from x_k; without
    momentum (`decays_x0`) it goes into x0, which the authors' code re-derives from the iterate.
    Where nu^(1/3) + epsilon is 0 (epsilon = 0 and no gradient yet), s is 0 too and the step
    leaves z at x0.
    """
    s = s + weight * gradient
    nu = nu + weight * ops.square(gradient)
    # nu^(1/3) as exp(log(nu) / 3) (0 at nu = 0): XLA's and TensorFlow's general power are several
    # times slower.
    denominator = ops.exp(ops.log(nu) / 3.0) + epsilon
    safe_denominator = ops.where(denominator > 0, denominator, ops.ones_like(denominator))
    z = x0 - ops.where(denominator > 0, s / safe_denominator, ops.zeros_like(s))
    new_variable = (1.0 - averaging) * variable + averaging * z - decay * variable
    if decays_x0:
        return new_variable, s, nu, x0 - decay * variable
    return new_variable, s, nu


@keras.saving.register_keras_serializable(package="lepton_keras")
class MADGRAD(LeptonOptimizer):
    """MADGRAD: dual averaging with a cube-root AdaGrad denominator and momentum by averaging.

    When to use it: where SGD with momentum generalises best but Adam trains faster (image
    classification, language models, recommendation): the paper reports MADGRAD matching or
    beating both. Its learning rate is on neither scale: tune it (the default 0.01 is the
    authors'), and it usually needs less weight decay than SGD, often none. Use the same
    learning-rate schedule as for SGD.

    With gradient g_k at step k = 0, 1, ... and the starting point x_0 (Algorithm 1 of the
    paper; c = 1 - momentum):

        lambda_k = lr sqrt(k + 1)
        s_{k+1} = s_k + lambda_k g_k
        nu_{k+1} = nu_k + lambda_k g_k^2
        z_{k+1} = x_0 - s_{k+1} / (nu_{k+1}^(1/3) + epsilon)
        x_{k+1} = (1 - c) x_k + c z_{k+1}

    x_0 is a slot, copied from the variable when the optimizer is built. With momentum = 0,
    x_{k+1} = z_{k+1}: plain dual averaging. Where the authors' code differs: it adds epsilon
    to lr; this class follows the paper (lambda_k = lr sqrt(k + 1)). The scalars (lambda_k,
    c) are computed in double precision and rounded once to the variable's dtype.

    Weight decay is handled here, not by Keras: `weight_decay` REPLACES Keras's form. By
    default (`decoupled_weight_decay=True`) it is the authors' `decouple_decay`, applied AFTER
    the step from the iterate before it: x_{k+1} = (1 - c) x_k + c z_{k+1} - lr weight_decay x_k.
    (Keras's form, x -= lr weight_decay x before the step, would be scaled by 1 - c, and lost
    entirely without momentum, where x_{k+1} = z_{k+1}.) Without momentum the authors' code
    re-derives x0 from the iterate, so the decay accumulates in x0: here x0 <- x0 - lr
    weight_decay x_k, the same numbers. With `decoupled_weight_decay=False`, the paper's and
    the authors' default form: g_k <- g_k + weight_decay x_k (an L2 penalty).
    `exclude_from_weight_decay(...)` is honoured in both forms.

    Args:
        learning_rate: lr, a finite float > 0, a `keras.optimizers.schedules.LearningRateSchedule` or a
            callable (default 0.01).
        momentum: in [0, 1); the averaging weight is c = 1 - momentum (default 0.9).
        epsilon: added to nu^(1/3), >= 0 (default 1e-6; 0 can help with very small gradients).
        weight_decay: the decay rate, >= 0 or None (default None: no decay).
        decoupled_weight_decay: True for the authors' decoupled decay (after the step), False
            for the paper's decay added to the gradient (default True).
        fused_updates: compile each variable's update with XLA into one kernel (default True).
        **kwargs: Keras's other optimizer keywords (clipnorm, ..., name).

    Example:
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer=MADGRAD(1e-2), loss="mse")
        model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0)

    References:
        Defazio and Jelassi (2021), "Adaptivity without Compromise: A Momentumized, Adaptive,
        Dual Averaged Gradient Method for Stochastic Optimization", arXiv:2101.11075.
    """

    def __init__(self, learning_rate=0.01, momentum=0.9, epsilon=1e-6, weight_decay=None, decoupled_weight_decay=True,
                 name="madgrad", **kwargs):  # fmt: skip
        # Both decay forms are applied here (the decoupled one after the step, as the authors' code).
        super().__init__(learning_rate, name=name, weight_decay=None, **kwargs)
        self.momentum = check_unit_interval("momentum", momentum)
        self.epsilon = check_non_negative("epsilon", epsilon)
        self.madgrad_weight_decay = check_non_negative("weight_decay", weight_decay, allow_none=True)
        self.decoupled_weight_decay = check_bool("decoupled_weight_decay", decoupled_weight_decay)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._s, self._nu = self.add_optimizer_variables(var_list, ["s", "nu"])
        self._x0 = []
        for variable in var_list:
            x0 = self.add_variable_from_reference(variable, name="x0")
            # Without a strategy, Keras builds the optimizer while tracing the train step: copy
            # the starting point once, eagerly, not as an op of the step.
            with tf.init_scope():
                x0.assign(variable)
            self._x0.append(x0)

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        s, nu, x0 = self._s[index], self._nu[index], self._x0[index]
        gradient = ops.cast(gradient, dtype)
        decay = self.madgrad_weight_decay if not excluded_from_weight_decay(self, variable) else None
        if decay and not self.decoupled_weight_decay:
            gradient = gradient + scalar(decay, dtype) * variable
        decoupled = bool(decay) and self.decoupled_weight_decay
        learning_rate = scalar(learning_rate, STEP_DTYPE)
        decays_x0 = decoupled and self.momentum == 0.0
        self.update_in_place(
            madgrad_update,
            (variable, s, nu, x0) if decays_x0 else (variable, s, nu),
            variable,
            gradient,
            x0,
            s,
            nu,
            weight=scalar(learning_rate * ops.sqrt(step_number(self.iterations)), dtype),
            averaging=scalar(1.0 - self.momentum, dtype),
            decay=scalar(learning_rate * decay if decoupled else 0.0, dtype),
            epsilon=scalar(self.epsilon, dtype),
            decays_x0=decays_x0,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "weight_decay": self.madgrad_weight_decay,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "decoupled_weight_decay": self.decoupled_weight_decay,
        }
