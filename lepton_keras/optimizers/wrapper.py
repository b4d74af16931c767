"""The base of every optimizer wrapper: one cross-replica sum, then global transforms, then the update.

Keras optimizers sum the gradients across replicas inside `apply`. Their `clipnorm`,
`clipvalue` and `global_clipnorm` clip each replica's gradient before that sum, and their
`gradient_accumulation_steps` and EMA overwrite put the sum inside a conditional, which
crashes under MirroredStrategy (keras-team/keras#20582). A wrapper instead:

1. sums the gradients across replicas and workers once, in replica context (in buckets
   and compressed when the strategy has a `GradientCommunication`);
2. transforms the global gradient (clipping, centralization, ...), so every replica
   computes the same numbers as one device;
3. in cross-replica context, updates each variable on each device with the inner
   optimizer's `update_step` (or the inner wrapper's own update), then its own state
   (slow weights, averages, accumulators).

Wrappers compose in one pass, like optax's `chain`: `Lookahead(GradientClipping(RAdam()))`
sums once, runs every level's `transform_gradients` in replica context from the outside
in, enters cross-replica context once (one `merge_call`), and there runs every level's
`apply_in_cross_replica` from the outside in, each calling the next through `apply_inner`.
A level that hands its inner levels something other than this step's gradients
(GradientAccumulation: the accumulated mean, `passes_step_gradients_inward = False`) has
their transforms run on that, in its cross-replica part, on each device's copies.
"""

from __future__ import annotations

import functools

import keras
import tensorflow as tf
from keras import ops

from lepton_keras.distribute.gradient_communication import sum_gradients
from lepton_keras.distribute.keras_compat import (
    excluded_from_weight_decay,
    optimizer_built_variables,
    optimizer_step_counter,
    optimizer_variable_index,
)
from lepton_keras.optimizers import base
from lepton_keras.validation import check_bool, check_keras_optimizer_options, invalid

_KERAS_OPTIONS_A_WRAPPER_REPLACES = {
    "clipnorm": "GradientClipping(inner, norm=...)",
    "clipvalue": "GradientClipping(inner, value=...)",
    "global_clipnorm": "GradientClipping(inner, global_norm=...)",
    "gradient_accumulation_steps": "GradientAccumulation(inner, steps=...)",
    "use_ema": "ExponentialMovingAverage(inner, decay=...)",
}


def _checked_inner(inner_optimizer):
    from lepton_keras.optimizers.registry import get

    allowed = "a keras.optimizers.Optimizer, a registered name or a config"
    if not isinstance(inner_optimizer, (str, dict, keras.optimizers.Optimizer)):
        raise invalid("inner_optimizer", inner_optimizer, allowed)
    inner = get(inner_optimizer)
    if not isinstance(inner, keras.optimizers.Optimizer):
        raise invalid("inner_optimizer", inner, allowed)
    if isinstance(inner, keras.optimizers.LossScaleOptimizer):
        raise ValueError("put the LossScaleOptimizer outside the wrapper: LossScaleOptimizer(wrapper(inner))")
    if not isinstance(inner, OptimizerWrapper):
        for option, replacement in _KERAS_OPTIONS_A_WRAPPER_REPLACES.items():
            value = getattr(inner, option, None)
            if value:
                raise ValueError(
                    f"the inner optimizer sets {option}={value!r}, which Keras applies before the cross-replica "
                    f"sum; use {replacement} instead"
                )
    if inner.built:
        raise ValueError("inner_optimizer is already built; wrap a new optimizer")
    return inner


class OptimizerWrapper(keras.optimizers.Optimizer):
    """Base class: wraps any Keras optimizer and updates from the globally summed gradient.

    Subclasses override some of:
        transform_gradients(gradients, variables) -> gradients   (replica context, global gradients)
        build(variables)                                          (create own state; call super().build)
        apply_in_cross_replica(distribution, gradients, variables) (default: the inner update)
        update_inner_copy(variable, gradient, learning_rate, decay) (one device's copy, a Keras inner)
        passes_step_gradients_inward                              (False: see the module docstring)
    and use `self.apply_inner(...)`, `self.update_each(...)`, `self.slots_of(...)` and
    `self.update_in_place(...)` (a pure per-variable function, XLA-compiled when `fused_updates`)
    inside it.

    Args:
        inner_optimizer: a Keras optimizer (built-in or lepton_keras), a wrapper, or a name
            or config understood by `lepton_keras.optimizers.get`.
        fused_updates: compile the wrapper's own per-variable update (slow weights,
            averages, accumulators) with XLA into one kernel per variable (default True).
            The inner optimizer's update is fused by its own option (or by `FusedUpdates`).
        name: the optimizer's name.
    """

    # Whether the inner levels update from this step's gradients, as transformed here.
    passes_step_gradients_inward = True

    def __init__(self, inner_optimizer, *, fused_updates: bool = True, name: str | None = None, **kwargs):
        inner = _checked_inner(inner_optimizer)
        for option in ("clipnorm", "clipvalue", "global_clipnorm", "weight_decay", "use_ema"):
            if kwargs.get(option) not in (None, False):
                raise invalid(option, kwargs[option], "None on a wrapper: set it on the inner optimizer, or use a "
                              "wrapper (GradientClipping for clipping, ExponentialMovingAverage for an EMA)")
        fused_updates = check_bool("fused_updates", fused_updates)
        super().__init__(learning_rate=0.0, **check_keras_optimizer_options({"name": name, **kwargs}))
        self.inner_optimizer = inner
        self.fused_updates = fused_updates

    # The learning rate is the innermost optimizer's, so schedules and LR callbacks act on it.
    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        if hasattr(self, "inner_optimizer"):
            self.inner_optimizer.learning_rate = learning_rate
        else:  # the base constructor's placeholder
            keras.optimizers.Optimizer.learning_rate.fset(self, learning_rate)

    @property
    def innermost_optimizer(self):
        """The optimizer at the bottom of the wrappers; its `iterations` counts the weight updates."""
        inner = self.inner_optimizer
        return inner.innermost_optimizer if isinstance(inner, OptimizerWrapper) else inner

    @property
    def variables(self):
        return super().variables + self.inner_optimizer.variables

    def build(self, variables):
        super().build(variables)
        if not self.inner_optimizer.built:
            self.inner_optimizer.build(variables)

    # --- the step ------------------------------------------------------------------------

    # The step is plain Python around explicit tf.distribute calls; AutoGraph has nothing to
    # convert here, and converting it failed in long test sessions ("tf__build() takes from 1
    # to 2 positional arguments") after other classes' methods had been converted.
    @tf.autograph.experimental.do_not_convert
    def apply(self, grads, trainable_variables=None):
        if trainable_variables is None:
            if not self.built:
                raise ValueError("call optimizer.build(variables) or pass the variables on the first apply")
            trainable_variables = optimizer_built_variables(self)
        trainable_variables = list(trainable_variables)
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        pairs = [(g, v) for g, v in zip(grads, trainable_variables) if g is not None]
        if not pairs:
            return
        gradients = [g for g, _ in pairs]
        variables = [v for _, v in pairs]
        if self.loss_scale_factor is not None:
            gradients = [g / self.loss_scale_factor for g in gradients]
        context = tf.distribute.get_replica_context()
        if context is None:
            raise ValueError("apply() must be called in a replica context (inside strategy.run or a train step)")
        gradients = sum_gradients(gradients)  # as the strategy's GradientCommunication says
        with keras.name_scope(self.name, caller=self):
            gradients = self.transform_stack(gradients, variables)
            # The one entry into cross-replica context for the whole stack.
            context.merge_call(functools.partial(self.update_stack, variables=variables), args=(gradients,))

    def transform_stack(self, gradients, variables):
        """This level's `transform_gradients`, then those of the inner levels that update from them."""
        gradients = self.transform_gradients(gradients, variables)
        inner = self.inner_optimizer
        if self.passes_step_gradients_inward and isinstance(inner, OptimizerWrapper):
            return inner.transform_stack(gradients, variables)
        return gradients

    def update_stack(self, distribution, gradients, variables):
        """This level's cross-replica part (and through `apply_inner` the inner levels'), then its count."""
        self.apply_in_cross_replica(distribution, gradients, variables)
        optimizer_step_counter(self).assign_add(1)

    def transform_gradients(self, gradients, variables):
        """Returns the gradients the update uses (replica context; the same on every replica)."""
        return gradients

    def apply_in_cross_replica(self, distribution, gradients, variables):
        """Updates the variables and this wrapper's state; by default the inner optimizer's update."""
        self.apply_inner(distribution, gradients, variables)

    # --- helpers for subclasses ----------------------------------------------------------

    def apply_inner(self, distribution, gradients, variables):
        """One step of the inner optimizer from the global `gradients` (cross-replica context)."""
        inner = self.inner_optimizer
        if isinstance(inner, OptimizerWrapper):
            if not self.passes_step_gradients_inward:
                gradients = _on_each_device(distribution, inner.transform_stack, gradients, variables)
            inner.update_stack(distribution, gradients, variables)
            return
        learning_rate = inner.learning_rate
        for gradient, variable in zip(gradients, variables):
            decay = inner.weight_decay is not None and not excluded_from_weight_decay(inner, variable)
            distribution.extended.update(
                variable.value,
                functools.partial(self.update_inner_copy, decay=decay),
                args=(gradient, learning_rate),
                group=False,
            )
        for variable in variables:
            if variable.constraint is not None:
                variable.assign(variable.constraint(variable))
        inner.iterations.assign_add(1)

    def update_inner_copy(self, variable, gradient, learning_rate, *, decay: bool):
        """A Keras inner optimizer's update of one device's copy of a variable, decoupled decay first."""
        if decay:
            self.decay_inner_copy(variable, learning_rate)
        self.inner_optimizer.update_step(gradient, variable, learning_rate)

    def decay_inner_copy(self, variable, learning_rate):
        """Keras's decoupled weight decay of the inner optimizer on one device's copy: w -= lr * weight_decay * w."""
        rate = ops.cast(learning_rate, variable.dtype) * ops.cast(self.inner_optimizer.weight_decay, variable.dtype)
        variable.assign(variable - variable * rate)

    def slots_of(self, slots, variables):
        """The entries of `slots` (one per variable this optimizer was built with) for `variables`."""
        return [slots[optimizer_variable_index(self, variable)] for variable in variables]

    def tracks(self, variable) -> bool:
        """Whether this optimizer was built with `variable`."""
        try:
            optimizer_variable_index(self, variable)
        except KeyError:
            return False
        return True

    def update_in_place(self, function, targets, *args, **kwargs):
        """Assigns a pure per-variable `function(*args, **kwargs)` to `targets`, in one XLA kernel when
        `fused_updates` (see `lepton_keras.optimizers.base.update_in_place`)."""
        base.update_in_place(function, targets, *args, fused=self.fused_updates, **kwargs)

    def update_each(self, distribution, function, variables, *per_variable_args):
        """Runs `function(variable, *args)` on every device's copy of each variable.

        `per_variable_args` are lists parallel to `variables` (gradients, slots); distributed
        values among them are split per device, and `function` receives the copies of the
        variables among them on the device of `variable`'s copy.
        """
        for index, variable in enumerate(variables):
            args = tuple(arg[index] for arg in per_variable_args)
            args = tuple(a.value if isinstance(a, keras.Variable) else a for a in args)
            distribution.extended.update(variable.value, functools.partial(_on_device_copies, function), args=args,
                                         group=False)

    def get_config(self):
        config = super().get_config()
        for key in ("learning_rate", "weight_decay", "clipnorm", "global_clipnorm", "clipvalue", "use_ema",
                    "ema_momentum", "ema_overwrite_frequency", "gradient_accumulation_steps"):
            config.pop(key, None)
        config["inner_optimizer"] = keras.optimizers.serialize(self.inner_optimizer)
        config["fused_updates"] = self.fused_updates
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = config.pop("inner_optimizer", None)  # None: the constructor names what is missing
        if inner is not None:
            inner = keras.optimizers.deserialize(inner, custom_objects=custom_objects)
        return cls(inner, **config)


def _on_device_copies(function, variable, *args):
    """`function(variable, *args)` with the variables among `args` taken on `variable`'s device."""
    return function(variable, *(base.device_copy(arg, variable.device) for arg in args))


def _on_each_device(distribution, transform, gradients, variables):
    """`transform(gradients, variables)` in cross-replica context, on each device's copies.

    The same operations on the same device as in replica context: under `tf.device`, a
    mirrored variable reads its copy on that device. Returns distributed values.
    """
    if not tf.distribute.has_strategy():
        return transform(gradients, variables)
    devices = distribution.extended.worker_devices
    local_gradients = [distribution.experimental_local_results(g) for g in gradients]
    per_device = []
    for index, device in enumerate(devices):
        with tf.device(device):
            per_device.append(transform([local[index] for local in local_gradients], variables))
    # Replica ids are global; this worker's devices are `devices`, in replica order.
    return distribution.experimental_distribute_values_from_function(
        lambda context: per_device[context.replica_id_in_sync_group % len(devices)]
    )
