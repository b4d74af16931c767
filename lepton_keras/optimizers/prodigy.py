"""Prodigy: a learning-rate-free Adam that estimates the distance to the solution.

Mishchenko and Defazio (2023), "Prodigy: An Expeditiously Adaptive Parameter-Free Learner",
arXiv:2306.06101.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import ops

from lepton_keras.distribute.keras_compat import excluded_from_weight_decay
from lepton_keras.optimizers.base import STEP_DTYPE, LeptonOptimizer, one_minus_power, scalar, snapshot, step_number
from lepton_keras.validation import check_bool, check_non_negative, check_number, check_positive, check_unit_interval

_HALF_PRECISION = ("float16", "bfloat16")
_SCALAR_DTYPE = STEP_DTYPE  # d, d_max and the running sums: float64, exact for float64 variables


def prodigy_estimate(new_step, learning_rate, d, d_max, d_numerator, d_denominator, *, beta_3, d0, d_coef,
                     growth_rate):  # fmt: skip
    """Finalises the previous step's d estimate; returns (d, d_max, d_numerator, d_denominator).

    Applies only where `new_step` is true (the first variable updated in a step), from the
    sums the previous step left: d_hat = d_coef r / ||s||_1; d = max(d, d_hat) while d is still
    d0; d_max = max(d_max, d_hat); d = min(d_max, d growth_rate). Then it starts this step's
    sums: r <- beta_3 r (only when lr > 0: a step with lr = 0 leaves r alone) and ||s||_1 <- 0.
    All arguments are scalars of one float dtype.
    """
    have_sums = ops.greater(d_denominator, 0.0)
    d_hat = d_coef * d_numerator / ops.where(have_sums, d_denominator, 1.0)
    grown = ops.where(ops.equal(d, d0), ops.maximum(d, d_hat), d)
    estimated_d_max = ops.maximum(d_max, d_hat)
    estimated_d = ops.minimum(estimated_d_max, grown * growth_rate)
    finalise = ops.logical_and(new_step, have_sums)
    d = ops.where(finalise, estimated_d, d)
    d_max = ops.where(finalise, estimated_d_max, d_max)
    d_numerator = ops.where(ops.logical_and(new_step, learning_rate > 0.0), beta_3 * d_numerator, d_numerator)
    d_denominator = ops.where(new_step, 0.0, d_denominator)
    return d, d_max, d_numerator, d_denominator


def prodigy_step_scalars(*, learning_rate, d, beta_1: float, beta_2: float, beta_3: float, epsilon: float,
                         bias_correction, weight_decay: float, safeguard_warmup: bool) -> dict:  # fmt: skip
    """The scalars of one step with this step's d, in the dtype of d (float64).

    Returns the keywords of `prodigy_update` (cast them to the compute dtype) and r_weight,
    the factor (1 - beta_3) d dlr of the step's term of r (for `prodigy_sums`).
    `bias_correction` is sqrt(1 - beta_2^t) / (1 - beta_1^t) or 1.
    """
    dlr = d * learning_rate * bias_correction
    return {
        "dlr": dlr,
        "beta_1": beta_1,
        "m_weight": (1.0 - beta_1) * d,
        "beta_2": beta_2,
        "v_weight": (1.0 - beta_2) * d * d,
        "beta_3": beta_3,
        "s_weight": (1.0 - beta_3) * d * (d if safeguard_warmup else dlr),
        "decay_factor": 1.0 - weight_decay * dlr,
        "d_epsilon": d * epsilon,
        "r_weight": (1.0 - beta_3) * d * dlr,  # the paper's (1 - beta_3) d_k^2 lr_k, times b_k as the authors'
    }


def prodigy_update(variable, gradient, m, v, s, *, active, dlr, beta_1, m_weight, beta_2, v_weight, beta_3, s_weight,
                   decay_factor, d_epsilon):  # fmt: skip
    """The element-wise part of one Prodigy step of one variable; returns (new_variable, new_m, new_v, new_s).

    Every tensor and scalar is in one float dtype (16-bit variables are upcast to float32); the
    scalars come from `prodigy_step_scalars`. Where `active` is false (lr = 0) nothing changes.
    """
    new_m = beta_1 * m + m_weight * gradient
    new_v = beta_2 * v + v_weight * ops.square(gradient)
    new_s = beta_3 * s + s_weight * gradient
    new_variable = variable * decay_factor - dlr * new_m / (ops.sqrt(new_v) + d_epsilon)
    return (ops.where(active, new_variable, variable), ops.where(active, new_m, m), ops.where(active, new_v, v),
            ops.where(active, new_s, s))  # fmt: skip


def prodigy_sums(gradient, x0, variable, new_s, d_numerator, d_denominator, *, active, r_weight):
    """The variable's contributions to the running sums; returns (d_numerator, d_denominator).

    r += (1 - beta_3) d dlr <g, x0 - x> (x before the step) and ||s||_1 += ||new_s||_1 (nothing
    with lr = 0). The tensors are in the compute dtype; the sums and `r_weight` in theirs.
    """
    sums_dtype = d_numerator.dtype
    inner = ops.cast(ops.sum(gradient * (x0 - variable)), sums_dtype)
    norm = ops.cast(ops.sum(ops.abs(new_s)), sums_dtype)
    return (d_numerator + ops.where(active, r_weight * inner, 0.0),
            d_denominator + ops.where(active, norm, 0.0))  # fmt: skip


@keras.saving.register_keras_serializable(package="lepton_keras")
class Prodigy(LeptonOptimizer):
    """Prodigy: Adam whose step size d is estimated on the fly (learning-rate free).

    When to use it: to train without tuning a learning rate. Leave `learning_rate` at 1.0 (a
    multiplier of the estimated step; a schedule such as cosine decay still helps) and let d
    grow from the tiny d0 to about the distance from the start to the solution, which the
    paper shows it does fast (d grows geometrically). Use `safeguard_warmup=True` with a
    learning-rate warm-up, `growth_rate` (e.g. 1.02) to slow the growth of d, and tune
    `d_coef` (0.5 to 2) rather than the learning rate.

    With gradient g_k at step k = 0, 1, ..., the starting point x_0, d_0 = d0 and
    beta_3 = sqrt(beta_2) by default (Algorithm 3 of the paper, with the extras of the
    authors' code: lr, d_coef, growth_rate, bias correction, weight decay):

        dlr_k = d_k lr_k b_k      b_k = sqrt(1 - beta_2^(k+1)) / (1 - beta_1^(k+1)), or 1
        m_{k+1} = beta_1 m_k + (1 - beta_1) d_k g_k
        v_{k+1} = beta_2 v_k + (1 - beta_2) d_k^2 g_k^2
        r_{k+1} = beta_3 r_k + (1 - beta_3) d_k dlr_k <g_k, x_0 - x_k>    (sums over ALL variables)
        s_{k+1} = beta_3 s_k + (1 - beta_3) d_k dlr_k g_k    (d_k in place of dlr_k with safeguard_warmup)
        d_hat = d_coef r_{k+1} / ||s_{k+1}||_1                     (||.||_1 over ALL variables)
        d_max_{k+1} = max(d_max_k, d_hat)                                   (d_max_0 = d0)
        d_{k+1} = min(d_max_{k+1}, d'_k growth_rate),   d'_k = max(d_k, d_hat) if d_k = d0 else d_k
        x_{k+1} = x_k (1 - weight_decay dlr_k) - dlr_k m_{k+1} / (sqrt(v_{k+1}) + d_k epsilon)

    d is a global scalar, so the sums run over every variable. Keras updates one variable at a
    time, so each step's update uses d_k and adds the variable's terms to running sums (the
    slots d_numerator and d_denominator); d_{k+1} is computed from them when the next step
    starts (at its first variable update). The optimizer variable `d` after step k is
    therefore still d_k: the estimate from the last step is pending until the next `apply`.
    The weights are those of the algorithm above. Under tf.distribute every replica applies
    the same global gradients in the same order, so d is the same on every replica.

    r and s carry the paper's factor (1 - beta_3) d_k where the authors' code has d_k / d0: a
    constant factor that cancels in d_hat and keeps the slots small. Other differences from
    the authors' code, all negligible in practice: epsilon is multiplied by d_k, the d of the
    step (the paper's Algorithm 3), where the authors' code, which updates d before the
    parameters, uses the new d_{k+1}; a step with lr = 0 (a schedule reaching 0) changes
    nothing but still counts towards the bias correction; where all gradients so far are 0,
    d stays. d, d_max and the running sums are float64 scalars, and the step's scalars
    (dlr, (1 - beta_1) d, ...) are computed in float64 and rounded once to the variable's
    dtype, so float64 variables get the algorithm's numbers exactly. Weight decay is
    handled here, not by Keras: `weight_decay` REPLACES Keras's form. Decoupled (default, the
    authors' default) is x <- x - weight_decay dlr_k x, which scales with d; with
    `decoupled_weight_decay=False`, weight_decay x is added to the gradient.
    `exclude_from_weight_decay(...)` is honoured. For float16 and bfloat16 variables, the
    slots are float32 (d0^2 g^2 underflows in float16) and the step is computed in float32.

    Args:
        learning_rate: lr, a multiplier of the step d (keep it at 1.0); a finite float > 0, a
            `keras.optimizers.schedules.LearningRateSchedule` or a callable (default 1.0).
            A constant 0 would never move the weights and is refused; a schedule may reach 0.
        beta_1: decay rate of m, in [0, 1) (default 0.9).
        beta_2: decay rate of v, in [0, 1) (default 0.999).
        beta_3: decay rate of r and s, in [0, 1), or None for sqrt(beta_2) (default None).
        epsilon: added to sqrt(v) (times d), >= 0 (default 1e-8).
        d0: the initial estimate of d, > 0 (default 1e-6).
        d_coef: multiplies the estimate d_hat, > 0 (default 1.0).
        growth_rate: largest factor by which d grows in a step, > 1 or inf (default inf).
        safeguard_warmup: leave lr out of s, for learning-rate warm-ups (default False).
        bias_correction: use Adam's bias correction b_k (default False).
        weight_decay: the decay rate, >= 0 or None (default None: no decay).
        decoupled_weight_decay: decoupled decay (True) or decay added to the gradient (False)
            (default True).
        fused_updates: compile each variable's update with XLA into one kernel (default True).
        **kwargs: Keras's other optimizer keywords (clipnorm, ..., name).

    Example:
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer=Prodigy(), loss="mse")
        model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0)

    References:
        Mishchenko and Defazio (2023), "Prodigy: An Expeditiously Adaptive Parameter-Free
        Learner", arXiv:2306.06101.
    """

    def __init__(self, learning_rate=1.0, beta_1=0.9, beta_2=0.999, beta_3=None, epsilon=1e-8, d0=1e-6, d_coef=1.0,
                 growth_rate=math.inf, safeguard_warmup=False, bias_correction=False, weight_decay=None,
                 decoupled_weight_decay=True, name="prodigy", **kwargs):  # fmt: skip
        # Prodigy's own decay (scaled by d) replaces Keras's.
        super().__init__(learning_rate, name=name, weight_decay=None, **kwargs)
        self.beta_1 = check_unit_interval("beta_1", beta_1)
        self.beta_2 = check_unit_interval("beta_2", beta_2)
        self.beta_3 = None if beta_3 is None else check_unit_interval("beta_3", beta_3)
        self.epsilon = check_non_negative("epsilon", epsilon)
        self.d0 = check_positive("d0", d0)
        self.d_coef = check_positive("d_coef", d_coef)
        self.growth_rate = check_number("growth_rate", growth_rate, lambda x: x > 1.0, "a number > 1 (or inf)",
                                        allow_infinite=True)
        self.safeguard_warmup = check_bool("safeguard_warmup", safeguard_warmup)
        self.bias_correction = check_bool("bias_correction", bias_correction)
        self.prodigy_weight_decay = check_non_negative("weight_decay", weight_decay, allow_none=True)
        self.decoupled_weight_decay = check_bool("decoupled_weight_decay", decoupled_weight_decay)

    def _add_state(self, variable, name):
        if keras.backend.standardize_dtype(variable.dtype) not in _HALF_PRECISION:
            return self.add_variable_from_reference(variable, name=name)
        path = getattr(variable, "path", variable.name).replace("/", "_")
        return self.add_variable(shape=variable.shape, dtype="float32", name=f"{path}_{name}")

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._m, self._v, self._s, self._x0 = [], [], [], []
        for variable in var_list:
            self._m.append(self._add_state(variable, "m"))
            self._v.append(self._add_state(variable, "v"))
            self._s.append(self._add_state(variable, "s"))
            x0 = self._add_state(variable, "x0")
            # Without a strategy, Keras builds the optimizer while tracing the train step: copy
            # the starting point once, eagerly, not as an op of the step.
            with tf.init_scope():
                x0.assign(ops.cast(variable, x0.dtype))
            self._x0.append(x0)
        self.d = self.add_variable((), dtype=_SCALAR_DTYPE, name="d")
        self.d_max = self.add_variable((), dtype=_SCALAR_DTYPE, name="d_max")
        with tf.init_scope():  # d0 exactly (keras.initializers.Constant rounds it to float32 first)
            self.d.assign(scalar(self.d0, _SCALAR_DTYPE))
            self.d_max.assign(scalar(self.d0, _SCALAR_DTYPE))
        # r and ||s||_1 of the step in progress, and that step's number (-1: none yet).
        self.d_numerator = self.add_variable((), dtype=_SCALAR_DTYPE, name="d_numerator")
        self.d_denominator = self.add_variable((), dtype=_SCALAR_DTYPE, name="d_denominator")
        self.d_step = self.add_variable((), initializer=keras.initializers.Constant(-1), dtype="int64",
                                        name="d_step")  # fmt: skip

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        m, v, s, x0 = self._m[index], self._v[index], self._s[index], self._x0[index]
        step = ops.cast(self.iterations, "int64")
        lr = scalar(learning_rate, _SCALAR_DTYPE)
        beta_3 = math.sqrt(self.beta_2) if self.beta_3 is None else self.beta_3
        d, d_max, d_numerator, d_denominator = prodigy_estimate(
            ops.not_equal(self.d_step, step),
            lr,
            self.d,
            self.d_max,
            self.d_numerator,
            self.d_denominator,
            beta_3=scalar(beta_3, _SCALAR_DTYPE),
            d0=scalar(self.d0, _SCALAR_DTYPE),
            d_coef=scalar(self.d_coef, _SCALAR_DTYPE),
            growth_rate=scalar(self.growth_rate, _SCALAR_DTYPE),
        )
        bias_correction = 1.0
        if self.bias_correction:
            t = step_number(self.iterations)
            bias_correction = ops.sqrt(one_minus_power(self.beta_2, t)) / one_minus_power(self.beta_1, t)
        decay = self.prodigy_weight_decay if self.prodigy_weight_decay and not excluded_from_weight_decay(self, variable) else 0.0
        scalars = prodigy_step_scalars(
            learning_rate=lr, d=d, beta_1=self.beta_1, beta_2=self.beta_2, beta_3=beta_3, epsilon=self.epsilon,
            bias_correction=bias_correction, weight_decay=decay if self.decoupled_weight_decay else 0.0,
            safeguard_warmup=self.safeguard_warmup,
        )  # fmt: skip
        r_weight = scalars.pop("r_weight")
        active = lr > 0.0
        # 16-bit variables are updated in float32, others in their own dtype.
        compute = keras.backend.result_type(variable.dtype, "float32")
        x = ops.cast(snapshot(variable), compute)  # before the step
        gradient = ops.cast(gradient, compute)
        if not self.decoupled_weight_decay:
            gradient = gradient + scalar(decay, compute) * x
        self.update_in_place(
            prodigy_update,
            (variable, m, v, s),
            x,
            gradient,
            ops.cast(m, compute),
            ops.cast(v, compute),
            ops.cast(s, compute),
            active=active,
            **{name: scalar(value, compute) for name, value in scalars.items()},
        )
        # The sums over the variable are TensorFlow's multithreaded reductions, outside the
        # fused update (XLA's CPU reductions to a scalar run on one thread); x is the variable
        # before the step, s already the new one.
        d_numerator, d_denominator = prodigy_sums(gradient, ops.cast(x0, compute), x, ops.cast(s, compute),
                                                  d_numerator, d_denominator, active=active, r_weight=r_weight)
        self.assign(self.d, d)
        self.assign(self.d_max, d_max)
        self.assign(self.d_numerator, d_numerator)
        self.assign(self.d_denominator, d_denominator)
        self.assign(self.d_step, step)

    def get_config(self):
        return {
            **super().get_config(),
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "beta_3": self.beta_3,
            "epsilon": self.epsilon,
            "d0": self.d0,
            "d_coef": self.d_coef,
            "growth_rate": self.growth_rate,
            "safeguard_warmup": self.safeguard_warmup,
            "bias_correction": self.bias_correction,
            "weight_decay": self.prodigy_weight_decay,
            "decoupled_weight_decay": self.decoupled_weight_decay,
        }
