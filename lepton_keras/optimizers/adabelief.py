"""AdaBelief: Adam with steps scaled by the belief in the observed gradient.

Zhuang, Tang, Ding, Tatikonda, Dvornek, Papademetris and Duncan (2020), "AdaBelief Optimizer:
Adapting Stepsizes by the Belief in Observed Gradients", NeurIPS 2020, arXiv:2010.07468.
"""

from __future__ import annotations

import keras
from keras import ops

from lepton_keras.optimizers.base import LeptonOptimizer, one_minus_power, scalar, step_number
from lepton_keras.validation import check_non_negative, check_unit_interval


def adabelief_update(variable, gradient, m, s, *, learning_rate, beta_1, one_minus_beta_1, beta_2, one_minus_beta_2,
                     epsilon, bias_correction_1, root_bias_correction_2):  # fmt: skip
    """One AdaBelief step; returns (new_variable, new_m, new_s) without assigning anything.

    Every scalar is in the variable's dtype, computed in double precision: one_minus_beta_i is
    1 - beta_i, bias_correction_1 is 1 - beta_1^t and root_bias_correction_2 sqrt(1 - beta_2^t).
    """
    m = beta_1 * m + one_minus_beta_1 * gradient
    s = beta_2 * s + (one_minus_beta_2 * ops.square(gradient - m) + epsilon)
    # lr m_hat / (sqrt(s_hat) + epsilon) with the bias corrections as scalars: in this form XLA
    # reads the new s instead of recomputing it from a copy of the old one (1.4x faster fused).
    step_size = learning_rate / bias_correction_1
    return variable - step_size * m / (ops.sqrt(s) / root_bias_correction_2 + epsilon), m, s


@keras.saving.register_keras_serializable(package="lepton_keras")
class AdaBelief(LeptonOptimizer):
    """Adam that divides by the spread of the gradient around its moving average.

    When to use it: as a drop-in replacement for Adam (or AdamW, with `weight_decay`) that
    aims at Adam's fast convergence and SGD's generalisation. Where the gradient agrees with
    its exponential moving average (the "belief"), s_t is small and the step is large; where
    it deviates, the step is small. It has Adam's memory cost and hyperparameters.

    With gradient g_t at step t = 1, 2, ... (Algorithm 2 of the paper):

        m_t = beta_1 m_{t-1} + (1 - beta_1) g_t
        s_t = beta_2 s_{t-1} + (1 - beta_2) (g_t - m_t)^2 + epsilon
        m_hat_t = m_t / (1 - beta_1^t),   s_hat_t = s_t / (1 - beta_2^t)
        w_t = w_{t-1} - lr m_hat_t / (sqrt(s_hat_t) + epsilon)

    The default epsilon is the authors' 1e-16 (their recommendation: AdaBelief's 1e-16
    plays the part of Adam's 1e-8, since s_t is the smaller quantity). It underflows to 0 in
    float16: train float16 variables with a larger epsilon (e.g. 1e-7). Keras's decoupled
    `weight_decay` (w -= lr * weight_decay * w before each step) is the paper's decoupled
    weight decay.

    Args:
        learning_rate: lr, a finite float > 0, a `keras.optimizers.schedules.LearningRateSchedule` or
            a callable (default 0.001).
        beta_1: decay rate of the first moment, in [0, 1) (default 0.9).
        beta_2: decay rate of the belief s_t, in [0, 1) (default 0.999).
        epsilon: added to s_t and to sqrt(s_hat_t), >= 0 (default 1e-16).
        fused_updates: compile each variable's update with XLA into one kernel (default True).
        **kwargs: Keras's optimizer keywords (weight_decay, clipnorm, ..., name).

    Example:
        import keras
        import numpy as np
        import lepton_keras

        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer=lepton_keras.optimizers.AdaBelief(1e-3), loss="mse")
        model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0)

    References:
        Zhuang et al. (2020), "AdaBelief Optimizer: Adapting Stepsizes by the Belief in
        Observed Gradients", arXiv:2010.07468.
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-16, name="adabelief", **kwargs):
        super().__init__(learning_rate, name=name, **kwargs)
        self.beta_1 = check_unit_interval("beta_1", beta_1)
        self.beta_2 = check_unit_interval("beta_2", beta_2)
        self.epsilon = check_non_negative("epsilon", epsilon)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._beliefs = self.add_optimizer_variables(var_list, ["momentum", "belief"])

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        m, s = self._momentums[index], self._beliefs[index]
        step = step_number(self.iterations)
        self.update_in_place(
            adabelief_update,
            (variable, m, s),
            variable,
            ops.cast(gradient, dtype),
            m,
            s,
            learning_rate=scalar(learning_rate, dtype),
            beta_1=scalar(self.beta_1, dtype),
            one_minus_beta_1=scalar(1.0 - self.beta_1, dtype),
            beta_2=scalar(self.beta_2, dtype),
            one_minus_beta_2=scalar(1.0 - self.beta_2, dtype),
            epsilon=scalar(self.epsilon, dtype),
            bias_correction_1=scalar(one_minus_power(self.beta_1, step), dtype),
            root_bias_correction_2=scalar(ops.sqrt(one_minus_power(self.beta_2, step)), dtype),
        )

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}
