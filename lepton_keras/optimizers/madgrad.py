"""MADGRAD: a momentumized, adaptive, dual-averaged gradient method.

Defazio and Jelassi (2021), "Adaptivity without Compromise: A Momentumized, Adaptive, Dual
Averaged Gradient Method for Stochastic Optimization", arXiv:2101.11075.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from lepton_keras.distribute.keras_compat import excluded_from_weight_decay
from lepton_keras.optimizers.base import LeptonOptimizer, check_bool, check_non_negative, check_unit_interval


def madgrad_update(variable, gradient, x0, s, nu, *, learning_rate, momentum, epsilon, step):
    """One MADGRAD step; returns (new_variable, new_s, new_nu) without assigning anything.

    `step` is k + 1 for the k-th step counted from 0 (lambda_k = lr sqrt(k + 1)); it may be in
    a wider dtype than the variable. Where nu^(1/3) + epsilon is 0 (epsilon = 0 and no gradient
    yet), s is 0 too and the step leaves z at x0.
    """
    dtype = variable.dtype
    weight = ops.cast(learning_rate * ops.sqrt(step), dtype)
    s = s + weight * gradient
    nu = nu + weight * ops.square(gradient)
    # nu^(1/3) as exp(log(nu) / 3) (0 at nu = 0): XLA's and TensorFlow's general power are several
    # times slower.
    denominator = ops.exp(ops.log(nu) / ops.cast(3.0, dtype)) + epsilon
    safe_denominator = ops.where(denominator > 0, denominator, ops.ones_like(denominator))
    z = x0 - ops.where(denominator > 0, s / safe_denominator, ops.zeros_like(s))
    averaging = ops.cast(1.0, dtype) - ops.cast(momentum, dtype)  # c_{k+1}
    return (ops.cast(1.0, dtype) - averaging) * variable + averaging * z, s, nu


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
    x_{k+1} = z_{k+1}: plain dual averaging. The authors' code adds epsilon to lr; this class
    follows the paper (lambda_k = lr sqrt(k + 1)).

    Weight decay: by default (`decoupled_weight_decay=True`) Keras's decoupled form,
    x -= lr * weight_decay * x before each step. With `decoupled_weight_decay=False`, the
    paper's and the authors' default form: weight_decay * x is added to the gradient (an L2
    penalty), g_k <- g_k + weight_decay x_k; `exclude_from_weight_decay(...)` is honoured in
    both forms.

    Args:
        learning_rate: lr, a float, a `keras.optimizers.schedules.LearningRateSchedule` or a
            callable (default 0.01).
        momentum: in [0, 1); the averaging weight is c = 1 - momentum (default 0.9).
        epsilon: added to nu^(1/3), >= 0 (default 1e-6; 0 can help with very small gradients).
        weight_decay: the decay rate, >= 0 or None (default None: no decay).
        decoupled_weight_decay: True for Keras's decoupled decay, False for the paper's decay
            added to the gradient (default True).
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
        check_bool("decoupled_weight_decay", decoupled_weight_decay)
        weight_decay = check_non_negative("weight_decay", weight_decay, allow_none=True)
        # The coupled (paper) form is applied to the gradient in update_step instead.
        super().__init__(learning_rate, name=name, weight_decay=weight_decay if decoupled_weight_decay else None,
                         **kwargs)
        self.momentum = check_unit_interval("momentum", momentum)
        self.epsilon = check_non_negative("epsilon", epsilon)
        self.decoupled_weight_decay = decoupled_weight_decay
        self.coupled_weight_decay = None if decoupled_weight_decay else weight_decay

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
        s, nu = self._s[index], self._nu[index]
        gradient = ops.cast(gradient, dtype)
        if self.coupled_weight_decay and not excluded_from_weight_decay(self, variable):
            gradient = gradient + ops.cast(self.coupled_weight_decay, dtype) * variable
        self.update_in_place(
            madgrad_update,
            (variable, s, nu),
            variable,
            gradient,
            self._x0[index],
            s,
            nu,
            learning_rate=ops.cast(learning_rate, keras.backend.result_type(dtype, "float32")),
            momentum=self.momentum,
            epsilon=ops.cast(self.epsilon, dtype),
            step=ops.cast(self.iterations + 1, keras.backend.result_type(dtype, "float32")),
        )

    def get_config(self):
        config = super().get_config()
        if not self.decoupled_weight_decay:
            config["weight_decay"] = self.coupled_weight_decay
        return {
            **config,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "decoupled_weight_decay": self.decoupled_weight_decay,
        }
