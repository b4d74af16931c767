"""AdEMAMix: Adam with a second, slow exponential moving average of the gradients mixed in.

Pagliardini, Ablin and Grangier (2024), "The AdEMAMix Optimizer: Better, Faster, Older",
arXiv:2409.03033.
"""

from __future__ import annotations

import keras
from keras import ops

from lepton_keras.optimizers.base import STEP_DTYPE, LeptonOptimizer, one_minus_power, scalar, step_number
from lepton_keras.validation import check_int, check_non_negative, check_unit_interval


def ademamix_schedules(step, *, alpha, beta_1, beta_3, warmup_steps):
    """The paper's warm-ups of alpha and beta_3 at step t = 1, 2, ... (Section 3); returns (alpha_t, beta_3_t).

    alpha_t = min(t alpha / T, alpha)
    beta_3_t = min(exp(ln(beta_1) ln(beta_3) / ((1 - t/T) ln(beta_3) + (t/T) ln(beta_1))), beta_3)
    The beta_3 warm-up is linear in the half-life of the EMA, from that of beta_1 to that of beta_3.
    With `warmup_steps` None: (alpha, beta_3).
    """
    if warmup_steps is None:
        return alpha, beta_3
    fraction = ops.minimum(step / warmup_steps, 1.0)
    log_start, log_end = ops.log(beta_1), ops.log(beta_3)
    beta_3_t = ops.exp(log_start * log_end / ((1.0 - fraction) * log_end + fraction * log_start))
    return fraction * alpha, ops.minimum(beta_3_t, beta_3)


def ademamix_update(variable, gradient, m1, m2, nu, *, learning_rate, beta_1, one_minus_beta_1, beta_2,
                    one_minus_beta_2, beta_3, one_minus_beta_3, alpha, epsilon, bias_correction_1,
                    bias_correction_2):  # fmt: skip
    """One AdEMAMix step; returns (new_variable, new_m1, new_m2, new_nu) without assigning anything.

    `beta_3` and `alpha` are this step's values (after the warm-ups). Every scalar is in the
    variable's dtype, computed in double precision: one_minus_beta_i is 1 - beta_i and
    bias_correction_i is 1 - beta_i^t.
    """
    m1 = beta_1 * m1 + one_minus_beta_1 * gradient
    m2 = beta_3 * m2 + one_minus_beta_3 * gradient
    nu = beta_2 * nu + one_minus_beta_2 * ops.square(gradient)
    update = (m1 / bias_correction_1 + alpha * m2) / (ops.sqrt(nu / bias_correction_2) + epsilon)
    return variable - learning_rate * update, m1, m2, nu


@keras.saving.register_keras_serializable(package="lepton_keras")
class AdEMAMix(LeptonOptimizer):
    """AdEMAMix: Adam whose step adds alpha times a slow EMA of the gradients (beta_3 near 1).

    When to use it: for long trainings (language models, vision transformers) where Adam's
    single EMA forgets old gradients too fast: a slow EMA with a half-life of thousands of
    steps keeps them useful, and the paper reports reaching Adam's loss with far fewer tokens
    and slower forgetting. For short trainings, or from scratch with a large beta_3, use the
    alpha and beta_3 warm-ups (`alpha_beta3_warmup_steps`, usually the total number of steps).

    With gradient g_t at step t = 1, 2, ... (Algorithm 1 of the paper):

        m1_t = beta_1 m1_{t-1} + (1 - beta_1) g_t        m1_hat_t = m1_t / (1 - beta_1^t)
        m2_t = beta_3 m2_{t-1} + (1 - beta_3) g_t        (slow EMA, no bias correction)
        nu_t = beta_2 nu_{t-1} + (1 - beta_2) g_t^2      nu_hat_t = nu_t / (1 - beta_2^t)
        w_t = w_{t-1} - lr (m1_hat_t + alpha m2_t) / (sqrt(nu_hat_t) + epsilon)

    With `alpha_beta3_warmup_steps` T, alpha and beta_3 follow the paper's schedulers:
    alpha_t = min(t alpha / T, alpha), and beta_3_t grows from beta_1 to beta_3 linearly in
    the half-life ln(0.5) / ln(beta) of the EMA, reaching beta_3 at t = T. With alpha = 0
    AdEMAMix is Adam (epsilon added to sqrt(nu_hat), as in the paper). Keras's decoupled
    `weight_decay` (w -= lr * weight_decay * w before each step) is the paper's lambda term.

    Args:
        learning_rate: lr, a finite float > 0, a `keras.optimizers.schedules.LearningRateSchedule` or a
            callable (default 0.001).
        beta_1: decay rate of the fast EMA m1, in [0, 1) (default 0.9).
        beta_2: decay rate of the second moment nu, in [0, 1) (default 0.999).
        beta_3: decay rate of the slow EMA m2, in [0, 1) (default 0.9999).
        alpha: weight of the slow EMA, >= 0 (default 5.0).
        alpha_beta3_warmup_steps: T of the alpha and beta_3 warm-ups, a positive integer, or
            None for no warm-up (default None). The beta_3 warm-up needs 0 < beta_1.
        epsilon: added to sqrt(nu_hat), >= 0 (default 1e-8).
        fused_updates: compile each variable's update with XLA into one kernel (default True).
        **kwargs: Keras's optimizer keywords (weight_decay, clipnorm, ..., name).

    Example:
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer=AdEMAMix(1e-3, alpha=5.0, alpha_beta3_warmup_steps=1000), loss="mse")
        model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0)

    References:
        Pagliardini, Ablin and Grangier (2024), "The AdEMAMix Optimizer: Better, Faster,
        Older", arXiv:2409.03033.
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, beta_3=0.9999, alpha=5.0,
                 alpha_beta3_warmup_steps=None, epsilon=1e-8, name="ademamix", **kwargs):  # fmt: skip
        super().__init__(learning_rate, name=name, **kwargs)
        warmup = check_int("alpha_beta3_warmup_steps", alpha_beta3_warmup_steps, minimum=1, allow_none=True)
        # The beta_3 warm-up starts from beta_1 in log space, so it needs beta_1 > 0.
        self.beta_1 = check_unit_interval("beta_1", beta_1, open_at_zero=warmup is not None)
        self.beta_2 = check_unit_interval("beta_2", beta_2)
        self.beta_3 = check_unit_interval("beta_3", beta_3, open_at_zero=warmup is not None)
        self.alpha = check_non_negative("alpha", alpha)
        self.alpha_beta3_warmup_steps = warmup
        self.epsilon = check_non_negative("epsilon", epsilon)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._m1, self._m2, self._nu = self.add_optimizer_variables(var_list, ["m1", "m2", "nu"])

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        m1, m2, nu = self._m1[index], self._m2[index], self._nu[index]
        step = step_number(self.iterations)
        # The warm-ups in double precision: 1 - beta_3_t for beta_3 near 1 needs every digit.
        alpha, beta_3 = ademamix_schedules(
            step,
            alpha=scalar(self.alpha, STEP_DTYPE),
            beta_1=scalar(self.beta_1, STEP_DTYPE),
            beta_3=scalar(self.beta_3, STEP_DTYPE),
            warmup_steps=self.alpha_beta3_warmup_steps,
        )
        self.update_in_place(
            ademamix_update,
            (variable, m1, m2, nu),
            variable,
            ops.cast(gradient, dtype),
            m1,
            m2,
            nu,
            learning_rate=scalar(learning_rate, dtype),
            beta_1=scalar(self.beta_1, dtype),
            one_minus_beta_1=scalar(1.0 - self.beta_1, dtype),
            beta_2=scalar(self.beta_2, dtype),
            one_minus_beta_2=scalar(1.0 - self.beta_2, dtype),
            beta_3=scalar(beta_3, dtype),
            one_minus_beta_3=scalar(1.0 - beta_3, dtype),
            alpha=scalar(alpha, dtype),
            epsilon=scalar(self.epsilon, dtype),
            bias_correction_1=scalar(one_minus_power(self.beta_1, step), dtype),
            bias_correction_2=scalar(one_minus_power(self.beta_2, step), dtype),
        )

    def get_config(self):
        return {
            **super().get_config(),
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "beta_3": self.beta_3,
            "alpha": self.alpha,
            "alpha_beta3_warmup_steps": self.alpha_beta3_warmup_steps,
            "epsilon": self.epsilon,
        }
