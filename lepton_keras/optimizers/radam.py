"""RAdam: Adam with the variance of its adaptive learning rate rectified.

Liu, Jiang, He, Chen, Liu, Gao and Han (2020), "On the Variance of the Adaptive Learning Rate
and Beyond", ICLR 2020, arXiv:1908.03265.
"""

from __future__ import annotations

import keras
from keras import ops

from lepton_keras.optimizers.base import STEP_DTYPE, LeptonOptimizer, one_minus_power, scalar, step_number
from lepton_keras.validation import check_non_negative, check_unit_interval

# rho_t must exceed this for the variance of the adaptive learning rate to be tractable
# (Algorithm 2 of the paper); below it RAdam takes an un-adapted momentum step.
RECTIFICATION_THRESHOLD = 4.0


def radam_rectification(*, beta_2: float, step):
    """(rectified, r_t) at step t: whether rho_t > 4, and the factor r_t (any value where not).

    Computed in `STEP_DTYPE` (float64): rho_t cancels catastrophically in low precision.
    """
    beta_2_power = ops.power(scalar(beta_2, STEP_DTYPE), step)
    rho_infinity = 2.0 / (1.0 - beta_2) - 1.0  # a Python float
    rho = rho_infinity - 2.0 * step * beta_2_power / (1.0 - beta_2_power)
    rectified = ops.greater(rho, RECTIFICATION_THRESHOLD)
    # The denominator is positive whenever rho_t > 4 (then rho_inf > rho_t > 4); 1 elsewhere
    # keeps the unused branch finite.
    denominator = ops.where(rectified, (rho_infinity - 4.0) * (rho_infinity - 2.0) * rho, 1.0)
    return rectified, ops.sqrt(ops.maximum((rho - 4.0) * (rho - 2.0) * rho_infinity / denominator, 0.0))


def radam_update(variable, gradient, m, v, *, learning_rate, beta_1, one_minus_beta_1, beta_2, one_minus_beta_2,
                 epsilon, bias_correction_1, bias_correction_2, rectified, rectification):  # fmt: skip
    """One RAdam step; returns (new_variable, new_m, new_v) without assigning anything.

    Every scalar is in the variable's dtype, computed in double precision: one_minus_beta_i is
    1 - beta_i, bias_correction_i is 1 - beta_i^t, and (rectified, rectification) come from
    `radam_rectification`.
    """
    m = beta_1 * m + one_minus_beta_1 * gradient
    v = beta_2 * v + one_minus_beta_2 * ops.square(gradient)
    m_hat = m / bias_correction_1
    adaptive_step = rectification * m_hat / (ops.sqrt(v / bias_correction_2) + epsilon)
    update = ops.where(rectified, adaptive_step, m_hat)
    return variable - learning_rate * update, m, v


@keras.saving.register_keras_serializable(package="lepton_keras")
class RAdam(LeptonOptimizer):
    """Rectified Adam: Adam whose adaptive step waits until its variance is tractable.

    When to use it: where Adam needs a learning-rate warm-up to avoid bad early steps
    (transformers, large learning rates). RAdam replaces the hand-tuned warm-up by an
    automatic one: in the first steps, while the second moment rests on too few gradients,
    it takes plain momentum steps, then rectifies the adaptive step by a factor r_t that
    grows towards 1.

    With gradient g_t at step t = 1, 2, ... (Algorithm 2 of the paper):

        m_t = beta_1 m_{t-1} + (1 - beta_1) g_t          m_hat_t = m_t / (1 - beta_1^t)
        v_t = beta_2 v_{t-1} + (1 - beta_2) g_t^2        v_hat_t = v_t / (1 - beta_2^t)
        rho_inf = 2 / (1 - beta_2) - 1
        rho_t = rho_inf - 2 t beta_2^t / (1 - beta_2^t)
        if rho_t > 4:
            r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
            w_t = w_{t-1} - lr r_t m_hat_t / (sqrt(v_hat_t) + epsilon)
        else:
            w_t = w_{t-1} - lr m_hat_t

    The threshold is the paper's strict rho_t > 4 (the authors' code and TensorFlow Addons
    use rho_t >= 5, one step later). rho_1 = 1 for every beta_2, so the first steps are
    always momentum steps; with beta_2 = 0.999 the rectified step starts at t = 5 (rho_5 =
    4.99). With beta_2 <= 0.6, rho_inf <= 4 and RAdam never leaves the momentum step.
    The paper's Algorithm 2 has no epsilon; like the authors' code, RAdam adds it to
    sqrt(v_hat_t). Keras's decoupled `weight_decay` (w -= lr * weight_decay * w before each
    step) turns it into the AdamW-style RAdam.

    Args:
        learning_rate: lr, a finite float > 0, a `keras.optimizers.schedules.LearningRateSchedule` or
            a callable (default 0.001).
        beta_1: decay rate of the first moment, in [0, 1) (default 0.9).
        beta_2: decay rate of the second moment, in [0, 1) (default 0.999).
        epsilon: added to sqrt(v_hat_t), >= 0 (default 1e-7, as keras.optimizers.Adam).
        fused_updates: compile each variable's update with XLA into one kernel (default True).
        **kwargs: Keras's optimizer keywords (weight_decay, clipnorm, ..., name).

    Example:
        import keras
        import numpy as np
        import lepton_keras

        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer=lepton_keras.optimizers.RAdam(1e-3), loss="mse")
        model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0)

    References:
        Liu et al. (2020), "On the Variance of the Adaptive Learning Rate and Beyond",
        arXiv:1908.03265.
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name="radam", **kwargs):
        super().__init__(learning_rate, name=name, **kwargs)
        self.beta_1 = check_unit_interval("beta_1", beta_1)
        self.beta_2 = check_unit_interval("beta_2", beta_2)
        self.epsilon = check_non_negative("epsilon", epsilon)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(var_list, ["momentum", "velocity"])

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        step = step_number(self.iterations)
        rectified, rectification = radam_rectification(beta_2=self.beta_2, step=step)
        self.update_in_place(
            radam_update,
            (variable, m, v),
            variable,
            ops.cast(gradient, dtype),
            m,
            v,
            learning_rate=scalar(learning_rate, dtype),
            beta_1=scalar(self.beta_1, dtype),
            one_minus_beta_1=scalar(1.0 - self.beta_1, dtype),
            beta_2=scalar(self.beta_2, dtype),
            one_minus_beta_2=scalar(1.0 - self.beta_2, dtype),
            epsilon=scalar(self.epsilon, dtype),
            bias_correction_1=scalar(one_minus_power(self.beta_1, step), dtype),
            bias_correction_2=scalar(one_minus_power(self.beta_2, step), dtype),
            rectified=rectified,
            rectification=scalar(rectification, dtype),
        )

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}
