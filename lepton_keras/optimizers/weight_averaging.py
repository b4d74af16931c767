"""Averages of the weights along training: stochastic weight averaging and an exponential moving average.

Izmailov, Podoprikhin, Garipov, Vetrov and Wilson (2018), "Averaging Weights Leads to Wider
Optima and Better Generalization", UAI 2018, arXiv:1803.05407 (SWA).
Polyak and Juditsky (1992), "Acceleration of Stochastic Approximation by Averaging", SIAM J.
Control Optim. 30(4) (averaging the iterates); the moving average with TensorFlow's
`num_updates` warm-up is that of tf.train.ExponentialMovingAverage.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from lepton_keras.optimizers.base import STEP_DTYPE, scalar, snapshot
from lepton_keras.optimizers.wrapper import OptimizerWrapper
from lepton_keras.validation import check_bool, check_int, check_unit_interval, invalid


def swa_update(average, variable, *, count):
    """The equal-weight running average after one more snapshot; `count` snapshots are already in it.

        average <- variable                                      if count = 0
        average <- average + (variable - average) / (count + 1)  otherwise
    """
    count = ops.cast(count, average.dtype)
    return ops.where(ops.equal(count, 0), variable, average + (variable - average) / (count + 1))


def ema_update(average, variable, *, decay, one_minus_decay, first):
    """The exponential moving average after one more step; `first` starts it at `variable`.

        average <- decay average + (1 - decay) variable

    `decay` and `one_minus_decay` = 1 - decay are computed in double precision and rounded once
    to the average's dtype (1 - 0.999 from a float32 0.999 is 1.3e-5 off, relatively).
    """
    decay, one_minus_decay = ops.cast(decay, average.dtype), ops.cast(one_minus_decay, average.dtype)
    return ops.where(first, variable, decay * average + one_minus_decay * variable)


class WeightAveraging(OptimizerWrapper):
    """The base of the averaging wrappers: the inner update, then an average of the weights in slots.

    Subclasses say when a snapshot of the weights enters the average (`takes_average`) and
    how (`average_rule`: a pure function and its tensor arguments, XLA-compiled with the
    wrapper's `fused_updates`). The update count t is the innermost optimizer's iterations, so
    inside a GradientAccumulation the schedule counts updates, not micro-batches.
    """

    def __init__(self, inner_optimizer, *, start_step=0, name=None, **kwargs):
        start_step = check_int("start_step", start_step, minimum=0)
        super().__init__(inner_optimizer, name=name, **kwargs)
        self.start_step = start_step

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._averages = [self.add_variable_from_reference(v, "average") for v in variables]
        self._average_count = self.add_variable((), dtype="int64", name="average_count")

    @property
    def average_count(self) -> int:
        """How many snapshots of the weights the average holds (0 before the first)."""
        return int(ops.convert_to_numpy(self._average_count)) if self.built else 0

    def takes_average(self, update_count):
        """Whether the weights after update `update_count` (1, 2, ...) enter the average (a bool tensor)."""
        raise NotImplementedError

    def average_rule(self, *, update_count, average_count):
        """(function, keyword arguments): `function(average, variable, **arguments)` is the new average
        when a snapshot of `variable` enters it; a module-level pure function, the arguments tensors
        or Python numbers."""
        raise NotImplementedError

    def apply_in_cross_replica(self, distribution, gradients, variables):
        averages = self.slots_of(self._averages, variables)
        counter = self.innermost_optimizer.iterations
        updates_before = snapshot(counter)
        self.apply_inner(distribution, gradients, variables)
        updates = snapshot(counter)
        # An inner GradientAccumulation updates only on some calls: one snapshot per update.
        take = ops.logical_and(ops.greater(updates, updates_before), self.takes_average(updates))
        rule, arguments = self.average_rule(update_count=updates, average_count=snapshot(self._average_count))
        update = functools.partial(_update_average, update_in_place=self.update_in_place, rule=rule, take=take, **arguments)
        self.update_each(distribution, update, variables, averages)
        self._average_count.assign_add(ops.cast(take, "int64"))

    # --- using the average ---------------------------------------------------------------

    def _pairs(self, model_or_variables):
        if not self.built:
            raise ValueError(f"the optimizer {self.name!r} has no average yet: it is not built (train first)")
        if isinstance(model_or_variables, keras.Model):
            # The model's trainable variables this optimizer averages (frozen ones it never saw).
            variables = [v for v in model_or_variables.trainable_variables if self.tracks(v)]
        else:
            variables = list(model_or_variables)
            untracked = [v.path for v in variables if not self.tracks(v)]
            if untracked:
                raise ValueError(f"these variables are not averaged by {self.name!r}; received {untracked}")
        return list(zip(variables, self.slots_of(self._averages, variables)))

    @contextlib.contextmanager
    def swap_average_weights(self, model_or_variables):
        """Within the `with` block the variables hold the average; afterwards exactly their training values.

        Before the first snapshot (average_count = 0) the variables keep their values.

        Args:
            model_or_variables: a Keras model (its trainable variables) or a list of the
                variables this optimizer trains.

        Example:
            with optimizer.swap_average_weights(model):
                model.evaluate(x, y)
                model.save("averaged.keras")
        """
        pairs = self._pairs(model_or_variables)
        if not self.average_count:
            pairs = []
        training_values = [np.array(ops.convert_to_numpy(v)) for v, _ in pairs]
        for variable, average in pairs:
            variable.assign(average)
        try:
            yield
        finally:
            for (variable, _), value in zip(pairs, training_values):
                variable.assign(value)

    def assign_average_weights(self, model_or_variables) -> None:
        """Sets the variables to the average for good (nothing changes before the first snapshot)."""
        pairs = self._pairs(model_or_variables)
        if self.average_count:
            for variable, average in pairs:
                variable.assign(average)

    def get_config(self):
        return {**super().get_config(), "start_step": self.start_step}


def _update_average(variable, average, *, update_in_place, rule, take, **arguments):
    update_in_place(_taken_average, (average,), average, variable, rule=rule, take=take, **arguments)


def _taken_average(average, variable, *, rule, take, **arguments):
    """The average after `rule` where `take`, else unchanged (pure)."""
    return ops.where(take, rule(average, variable, **arguments), average)


@keras.saving.register_keras_serializable(package="lepton_keras")
class StochasticWeightAveraging(WeightAveraging):
    """Keeps the equal-weight average of the weights taken every `average_period` updates from `start_step`.

    When to use it: for the last part of training (typically the last 25%, with a constant
    or cyclical learning rate), to land in a wider optimum that generalizes better at no
    extra training cost. Evaluate and save with the average (`swap_average_weights`,
    `lepton_keras.callbacks.AverageWeightsForEvaluation`), and re-estimate batch-norm
    statistics for it with `recompute_batch_norm_statistics`.

    With w_t the weights after update t = 1, 2, ... and n the number of snapshots so far
    (Algorithm 1 of the paper):

        if t >= start_step and (t - start_step) mod average_period == 0:
            w_SWA <- (n w_SWA + w_t) / (n + 1);   n <- n + 1

    Training itself follows the inner optimizer unchanged.

    Args:
        inner_optimizer: the optimizer to wrap (an instance, name or config).
        start_step: the first update whose weights enter the average, >= 0 (default 0:
            from the first update on).
        average_period: updates between snapshots, >= 1 (default 1; the paper takes one
            per epoch, i.e. the number of steps per epoch).
        fused_updates: compile the averaging with XLA into one kernel per variable (default True).
        name: the optimizer's name (default "stochastic_weight_averaging").

    Example:
        optimizer = StochasticWeightAveraging(keras.optimizers.SGD(0.05), start_step=750, average_period=50)
        model.compile(optimizer=optimizer, loss="mse")
        model.fit(x, y, epochs=20, verbose=0)
        recompute_batch_norm_statistics(model, dataset)  # only after assign_average_weights
        optimizer.assign_average_weights(model)

    References:
        Izmailov, Podoprikhin, Garipov, Vetrov and Wilson (2018), "Averaging Weights Leads to
        Wider Optima and Better Generalization", arXiv:1803.05407.
    """

    def __init__(self, inner_optimizer, *, start_step=0, average_period=1, name="stochastic_weight_averaging",
                 **kwargs):
        average_period = check_int("average_period", average_period, minimum=1)
        super().__init__(inner_optimizer, start_step=start_step, name=name, **kwargs)
        self.average_period = average_period

    def takes_average(self, update_count):
        return ops.logical_and(ops.greater_equal(update_count, self.start_step),
                               ops.equal((update_count - self.start_step) % self.average_period, 0))

    def average_rule(self, *, update_count, average_count):
        return swa_update, {"count": average_count}

    def get_config(self):
        return {**super().get_config(), "average_period": self.average_period}


@keras.saving.register_keras_serializable(package="lepton_keras")
class ExponentialMovingAverage(WeightAveraging):
    """Keeps an exponential moving average of the weights, updated after every update from `start_step`.

    When to use it: to evaluate and ship weights smoothed over the last ~1 / (1 - decay)
    updates (common for image models, GANs and diffusion models). In place of Keras's
    `use_ema`, whose overwrite step puts a cross-replica sum inside a conditional; here
    the average is a saved optimizer slot used through `swap_average_weights`.

    With w_t the weights after update t = 1, 2, ... and t >= start_step:

        decay_t = min(decay, (1 + t) / (10 + t))   if use_warmup (tf.train.ExponentialMovingAverage
                                                    with num_updates = t), else decay
        w_EMA <- w_t                                at the first such update
        w_EMA <- decay_t w_EMA + (1 - decay_t) w_t  afterwards

    Args:
        inner_optimizer: the optimizer to wrap (an instance, name or config).
        decay: in [0, 1) (default 0.999).
        start_step: the first update whose weights enter the average, >= 0 (default 0).
        use_warmup: smaller decays in early updates, so the start weighs less (default False).
        fused_updates: compile the averaging with XLA into one kernel per variable (default True).
        name: the optimizer's name (default "exponential_moving_average").

    Example:
        optimizer = ExponentialMovingAverage(keras.optimizers.Adam(1e-3), decay=0.99)
        model.compile(optimizer=optimizer, loss="mse")
        model.fit(x, y, epochs=5, verbose=0, callbacks=[AverageWeightsForEvaluation()])

    References:
        Polyak and Juditsky (1992), "Acceleration of Stochastic Approximation by Averaging".
        tf.train.ExponentialMovingAverage (the num_updates warm-up).
    """

    def __init__(self, inner_optimizer, *, decay=0.999, start_step=0, use_warmup=False,
                 name="exponential_moving_average", **kwargs):
        decay = check_unit_interval("decay", decay)
        use_warmup = check_bool("use_warmup", use_warmup)
        super().__init__(inner_optimizer, start_step=start_step, name=name, **kwargs)
        self.decay = decay
        self.use_warmup = use_warmup

    def takes_average(self, update_count):
        return ops.greater_equal(update_count, self.start_step)

    def average_rule(self, *, update_count, average_count):
        decay = scalar(self.decay, STEP_DTYPE)
        if self.use_warmup:
            t = ops.cast(update_count, STEP_DTYPE)
            decay = ops.minimum(decay, (1.0 + t) / (10.0 + t))
        return ema_update, {"decay": decay, "one_minus_decay": 1.0 - decay, "first": ops.equal(average_count, 0)}

    def get_config(self):
        return {**super().get_config(), "decay": self.decay, "use_warmup": self.use_warmup}


def recompute_batch_norm_statistics(model, dataset, steps: int | None = None) -> int:
    """Re-estimates every BatchNormalization's moving mean and variance as their plain average over `dataset`.

    When to use it: after setting a model to averaged weights (SWA, EMA), whose
    batch-norm statistics belong to none of the weights it was trained with. Like
    torch.optim.swa_utils.update_bn, it runs the data through the model in training mode
    (dropout too) and sets, for each batch-norm layer,

        moving_mean = (1 / B) sum_b mean_b,   moving_variance = (1 / B) sum_b var_b

    over the B batches, each batch weighing the same; each layer's momentum is restored
    afterwards. Under a strategy the forward pass runs in cross-replica context, so the
    statistics are those of whole batches and every copy receives the same values.

    Args:
        model: a built Keras model.
        dataset: a tf.data.Dataset or an iterable of batches, each `x` or a tuple `(x, y, ...)`.
        steps: use at most this many batches (default None: the whole dataset).

    Returns:
        The number of batches used (0 when the model has no BatchNormalization).

    Example:
        optimizer.assign_average_weights(model)
        recompute_batch_norm_statistics(model, train_dataset)
    """
    if not isinstance(model, keras.Model):
        raise invalid("model", model, "a keras.Model")
    if isinstance(dataset, (np.ndarray, tf.Tensor, str, bytes)) or not isinstance(dataset, Iterable):
        raise invalid("dataset", dataset if not isinstance(dataset, np.ndarray) else f"an array of shape {dataset.shape}",
                      "a tf.data.Dataset or an iterable of batches (an array is one batch: pass [array])")
    steps = check_int("steps", steps, minimum=1, allow_none=True)
    layers = [layer for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    statistics = [(ops.convert_to_numpy(layer.moving_mean).copy(), ops.convert_to_numpy(layer.moving_variance).copy())
                  for layer in layers]
    sums = [[np.zeros(layer.moving_mean.shape), np.zeros(layer.moving_variance.shape)] for layer in layers]
    forward = tf.function(lambda x: model(x, training=True), reduce_retracing=True)
    batches = 0
    try:
        for layer in layers:
            # With momentum 0 each moving statistic becomes exactly the last batch's.
            layer.momentum = 0.0
        for batch in dataset:
            if steps is not None and batches == steps:
                break
            forward(batch[0] if isinstance(batch, (tuple, list)) else batch)
            for layer, (mean_sum, variance_sum) in zip(layers, sums):
                mean_sum += ops.convert_to_numpy(layer.moving_mean)
                variance_sum += ops.convert_to_numpy(layer.moving_variance)
            batches += 1
    except BaseException:
        for layer, (mean, variance) in zip(layers, statistics):  # leave the model as it was
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)
        raise
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    if batches == 0:  # the statistics are untouched
        raise ValueError(f"dataset must hold at least one batch; received an empty dataset {dataset!r}")
    for layer, (mean_sum, variance_sum) in zip(layers, sums):
        layer.moving_mean.assign((mean_sum / batches).astype(layer.moving_mean.dtype))
        layer.moving_variance.assign((variance_sum / batches).astype(layer.moving_variance.dtype))
    return batches


def _all_layers(layer):
    for child in getattr(layer, "layers", []):
        yield child
        yield from _all_layers(child)
