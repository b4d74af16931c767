"""LARS: momentum SGD with a layer-wise learning rate set by the ratio of weight and gradient norms.

You, Gitman and Ginsburg (2017), "Large Batch Training of Convolutional Networks",
arXiv:1708.03888.
"""

from __future__ import annotations

import keras
from keras import ops

from lepton_keras.optimizers.base import LeptonOptimizer, scalar, squared_norm
from lepton_keras.validation import check_non_negative, check_positive, check_strings, check_unit_interval

DEFAULT_EXCLUDE_FROM_ADAPTATION = ("bias", "beta", "gamma", "batch_norm", "layer_norm")


def lars_trust_ratio(weight_norm, gradient_norm, *, trust_coefficient, momentum_weight_decay, epsilon):
    """The trust ratio eta ||w|| / (||g|| + beta ||w|| + epsilon), 1 where a norm is 0 (scalars, one dtype)."""
    both_positive = ops.logical_and(ops.greater(weight_norm, 0.0), ops.greater(gradient_norm, 0.0))
    denominator = gradient_norm + momentum_weight_decay * weight_norm + epsilon
    # The safe denominator keeps the unused branch finite.
    return ops.where(both_positive, trust_coefficient * weight_norm / ops.where(both_positive, denominator, 1.0), 1.0)


def lars_update(variable, gradient, velocity, *, learning_rate, momentum, trust_ratio, momentum_weight_decay):
    """One LARS step; returns (new_variable, new_velocity) without assigning anything.

    With `trust_ratio` None it is the plain momentum-SGD step (no trust ratio, no weight decay).
    `trust_ratio` and `momentum_weight_decay` are in the dtype the norms are computed in (at
    least float32, so that a half-precision sum of squares cannot overflow); `learning_rate` and
    `momentum` in the variable's.
    """
    dtype = variable.dtype
    if trust_ratio is not None:
        norm_dtype = trust_ratio.dtype
        # Scaled in the wider dtype: the ratio overflows float16 where ||g_t|| is tiny.
        decayed = ops.cast(gradient, norm_dtype) + momentum_weight_decay * ops.cast(variable, norm_dtype)
        update = ops.cast(trust_ratio * decayed, dtype)
    else:
        update = gradient
    velocity = momentum * velocity + learning_rate * update
    return variable - velocity, velocity


@keras.saving.register_keras_serializable(package="lepton_keras")
class LARS(LeptonOptimizer):
    """Momentum SGD whose learning rate, per layer, is scaled by a trust ratio ||w|| / ||g||.

    When to use it: training convolutional networks with very large batches (8K-32K images)
    and the correspondingly large learning rates, where plain momentum SGD diverges in the
    first epochs because, in some layers, lr * ||g|| is larger than ||w||. LARS scales each
    layer's step so that it is a fraction `trust_coefficient` of the layer's weight norm.
    Combine it with a learning-rate warm-up and a polynomial decay, as the paper does.

    For each variable ("layer") w with gradient g_t (Algorithm 1 of the paper), with
    eta = `trust_coefficient`, beta = `momentum_weight_decay` and mu = `momentum`:

        trust_ratio = eta ||w|| / (||g_t|| + beta ||w|| + epsilon)   (1 if ||w|| or ||g_t|| is 0)
        v_t = mu v_{t-1} + lr trust_ratio (g_t + beta w)
        w <- w - v_t

    ||.|| is the L2 norm over the whole variable. Under a distribution strategy Keras sums
    gradients across replicas before the step, so the norms are those of the global gradient,
    as on one device.

    Excluded variables. Biases and normalisation parameters are small and are not adapted in
    common practice (e.g. SimCLR, MLPerf ResNet-50): a variable is excluded when one of the
    strings in `exclude_from_adaptation` is a substring of "<layer name>/<variable name>", the
    last two parts of its `variable.path` (e.g. "dense/bias", "batch_normalization/gamma").
    The names of enclosing models and layers do not count, so a model named "beta_vae" does
    not exclude all its variables; a layer you name "beta_head" does exclude its own. An
    excluded variable takes the plain momentum-SGD step, without trust ratio and without
    `momentum_weight_decay`: v_t = mu v_{t-1} + lr g_t, w <- w - v_t (the step of
    `keras.optimizers.SGD(lr, momentum=mu)`). Pass `exclude_from_adaptation=()` to adapt
    every variable, as the paper does. The rule is decided once, when the optimizer is built.

    Weight decay: `momentum_weight_decay` is the paper's beta, inside the trust ratio and the
    momentum. Keras's own `weight_decay` (decoupled: w -= lr * weight_decay * w before each
    step, on every variable unless `exclude_from_weight_decay` says otherwise) is also
    accepted; use one or the other.

    Keras's Lamb. `keras.optimizers.Lamb` applies its trust ratio to every variable and has
    no option to exclude variables from it. Its weight decay is Keras's decoupled
    `weight_decay`, and the public `exclude_from_weight_decay` excludes variables from it by
    name: `var_names` are regular-expression fragments searched in `variable.name`, the
    variable's own name without its layer ("kernel", "bias", "gamma", "beta"), so
    "batch_norm" matches nothing there. Call it before the optimizer is built:

        lamb = keras.optimizers.Lamb(learning_rate=1e-3, weight_decay=0.01)
        lamb.exclude_from_weight_decay(var_names=["bias", "beta", "gamma"])
        model.compile(optimizer=lamb, loss="mse")

    Args:
        learning_rate: the global lr, a finite float > 0, a `keras.optimizers.schedules.LearningRateSchedule`
            or a callable (default 1.0: the trust ratio, of the order of `trust_coefficient`,
            already sets the step's scale).
        momentum: mu, in [0, 1) (default 0.9).
        trust_coefficient: eta, > 0 (default 0.001, the paper's; 0 would freeze every adapted variable).
        momentum_weight_decay: the paper's weight decay beta, >= 0 (default 0.0).
        epsilon: added to the trust ratio's denominator, >= 0 (default 1e-8).
        exclude_from_adaptation: substrings of "<layer name>/<variable name>" that exclude a
            variable from the trust ratio and `momentum_weight_decay` (default
            ("bias", "beta", "gamma", "batch_norm", "layer_norm"); `()` or None: none).
        fused_updates: compile each variable's update with XLA into one kernel (default True).
        **kwargs: Keras's optimizer keywords (weight_decay, clipnorm, ..., name).

    Example:
        import keras
        import numpy as np
        import lepton_keras

        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer=lepton_keras.optimizers.LARS(1.0, momentum_weight_decay=5e-4), loss="mse")
        model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0)

    References:
        You, Gitman and Ginsburg (2017), "Large Batch Training of Convolutional Networks",
        arXiv:1708.03888.
    """

    def __init__(self, learning_rate=1.0, momentum=0.9, trust_coefficient=0.001, momentum_weight_decay=0.0,
                 epsilon=1e-8, exclude_from_adaptation=DEFAULT_EXCLUDE_FROM_ADAPTATION, name="lars",
                 **kwargs):  # fmt: skip
        super().__init__(learning_rate, name=name, **kwargs)
        self.momentum = check_unit_interval("momentum", momentum)
        self.trust_coefficient = check_positive("trust_coefficient", trust_coefficient)
        self.momentum_weight_decay = check_non_negative("momentum_weight_decay", momentum_weight_decay)
        self.epsilon = check_non_negative("epsilon", epsilon)
        self.exclude_from_adaptation = check_strings("exclude_from_adaptation", exclude_from_adaptation,
                                                     allow_none=True)

    def adapts(self, variable) -> bool:
        """Whether `variable` gets the trust ratio (False: the plain momentum-SGD step)."""
        path = getattr(variable, "path", None) or variable.name
        layer_and_name = "/".join(path.split("/")[-2:])
        return not any(part in layer_and_name for part in self.exclude_from_adaptation)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._velocities = self.add_optimizer_variables(var_list, "velocity")
        self._adapted = [self.adapts(variable) for variable in var_list]

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        norm_dtype = keras.backend.result_type(dtype, "float32")
        index = self._get_variable_index(variable)
        velocity = self._velocities[index]
        gradient = ops.cast(gradient, dtype)
        momentum_weight_decay = scalar(self.momentum_weight_decay, norm_dtype)
        trust_ratio = None
        if self._adapted[index]:
            # The norms are taken outside the fused update (see `squared_norm`).
            trust_ratio = lars_trust_ratio(
                ops.sqrt(squared_norm(variable, norm_dtype)),
                ops.sqrt(squared_norm(gradient, norm_dtype)),
                trust_coefficient=scalar(self.trust_coefficient, norm_dtype),
                momentum_weight_decay=momentum_weight_decay,
                epsilon=scalar(self.epsilon, norm_dtype),
            )
        self.update_in_place(
            lars_update,
            (variable, velocity),
            variable,
            gradient,
            velocity,
            learning_rate=scalar(learning_rate, dtype),
            momentum=scalar(self.momentum, dtype),
            trust_ratio=trust_ratio,
            momentum_weight_decay=momentum_weight_decay,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "momentum": self.momentum,
            "trust_coefficient": self.trust_coefficient,
            "momentum_weight_decay": self.momentum_weight_decay,
            "epsilon": self.epsilon,
            "exclude_from_adaptation": list(self.exclude_from_adaptation),
        }

