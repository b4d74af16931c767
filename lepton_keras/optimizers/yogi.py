"""Yogi: Adam with an additive, sign-controlled second moment.

Zaheer, Reddi, Sachan, Kale and Kumar (2018), "Adaptive Methods for Nonconvex Optimization",
Advances in Neural Information Processing Systems 31 (NeurIPS 2018).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from lepton_keras.optimizers.base import LeptonOptimizer, scalar
from lepton_keras.validation import check_non_negative, check_unit_interval


def yogi_update(variable, gradient, m, v, *, learning_rate, beta_1, one_minus_beta_1, one_minus_beta_2, epsilon):
    """One Yogi step; returns (new_variable, new_m, new_v) without assigning anything.

    Every scalar is in the variable's dtype; one_minus_beta_i is 1 - beta_i, computed in double
    precision.
    """
    m = beta_1 * m + one_minus_beta_1 * gradient
    squared = ops.square(gradient)
    v = v - one_minus_beta_2 * ops.sign(v - squared) * squared
    return variable - learning_rate * m / (ops.sqrt(v) + epsilon), m, v


@keras.saving.register_keras_serializable(package="lepton_keras")
class Yogi(LeptonOptimizer):
    """Adam whose second moment moves by at most (1 - beta_2) g^2 per step, up or down.

    When to use it: where Adam's effective learning rate grows too fast once gradients get
    small after large ones (sparse or rare features, noisy nonconvex problems). Adam's v_t
    forgets a large past gradient geometrically; Yogi lowers v_t only additively, so the
    effective learning rate lr / sqrt(v_t) rises in a controlled way.

    With gradient g_t at step t = 1, 2, ... (Algorithm 2 of the paper):

        m_t = beta_1 m_{t-1} + (1 - beta_1) g_t
        v_t = v_{t-1} - (1 - beta_2) sign(v_{t-1} - g_t^2) g_t^2
        w_t = w_{t-1} - lr m_t / (sqrt(v_t) + epsilon)

    with m_0 = 0 and v_0 = `initial_accumulator_value`. As in the paper's Algorithm 2,
    neither moment is bias-corrected (TensorFlow Addons' Yogi multiplies lr by Adam's
    sqrt(1 - beta_2^t) / (1 - beta_1^t): its steps differ from these early in training).
    v_t stays >= 0: when it falls, it falls by (1 - beta_2) g_t^2 from above g_t^2.
    Keras's decoupled `weight_decay` (w -= lr * weight_decay * w before each step) is
    available as for every optimizer.

    Args:
        learning_rate: lr, a finite float > 0, a `keras.optimizers.schedules.LearningRateSchedule` or
            a callable (default 0.01, the paper's).
        beta_1: decay rate of the first moment, in [0, 1) (default 0.9).
        beta_2: rate of the second moment, in [0, 1) (default 0.999).
        epsilon: added to sqrt(v_t), >= 0 (default 1e-3, the paper's; far larger than
            Adam's 1e-8).
        initial_accumulator_value: v_0, >= 0 (default 1e-6).
        fused_updates: compile each variable's update with XLA into one kernel (default True).
        **kwargs: Keras's optimizer keywords (weight_decay, clipnorm, ..., name).

    Example:
        import keras
        import numpy as np
        import lepton_keras

        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer=lepton_keras.optimizers.Yogi(1e-2), loss="mse")
        model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0)

    References:
        Zaheer, Reddi, Sachan, Kale and Kumar (2018), "Adaptive Methods for Nonconvex
        Optimization", Advances in Neural Information Processing Systems 31 (NeurIPS 2018).
    """

    def __init__(self, learning_rate=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-3, initial_accumulator_value=1e-6,
                 name="yogi", **kwargs):  # fmt: skip
        super().__init__(learning_rate, name=name, **kwargs)
        self.beta_1 = check_unit_interval("beta_1", beta_1)
        self.beta_2 = check_unit_interval("beta_2", beta_2)
        self.epsilon = check_non_negative("epsilon", epsilon)
        self.initial_accumulator_value = check_non_negative("initial_accumulator_value", initial_accumulator_value)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums = self.add_optimizer_variables(var_list, "momentum")
        self._velocities = self.add_optimizer_variables(var_list, "velocity")
        # v_0 exactly in the variable's dtype (keras.initializers.Constant rounds it to float32 first),
        # eagerly: without a strategy, Keras builds the optimizer while tracing the train step.
        with tf.init_scope():
            for velocity in self._velocities:
                velocity.assign(tf.fill(velocity.shape, scalar(self.initial_accumulator_value, velocity.dtype)))

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        self.update_in_place(
            yogi_update,
            (variable, m, v),
            variable,
            ops.cast(gradient, dtype),
            m,
            v,
            learning_rate=scalar(learning_rate, dtype),
            beta_1=scalar(self.beta_1, dtype),
            one_minus_beta_1=scalar(1.0 - self.beta_1, dtype),
            one_minus_beta_2=scalar(1.0 - self.beta_2, dtype),
            epsilon=scalar(self.epsilon, dtype),
        )

    def get_config(self):
        return {
            **super().get_config(),
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
            "initial_accumulator_value": self.initial_accumulator_value,
        }
