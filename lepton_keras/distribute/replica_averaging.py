"""The replicas of a periodically synced model: its local steps, its syncs and its full syncs.

`lepton_keras.distribute.periodic_sync` says what a `PeriodicSync` does; this module does it
for a Keras model. It takes part at keras.Model's public entry points (through
`keras_compat.route_model_entry_points`) only for models whose strategy has a setting:

- `make_train_function`: the train function becomes a Python function that runs, per call,
  Keras's own train function traced in local mode (gradients kept per replica, logged values
  averaged over this worker's replicas only) or, during `warmup_steps`, the synchronous one;
  then reads the optimizer's step counter and syncs when the count passed a multiple of H.
- `fit` syncs fully at its end; `evaluate`, `predict`, `save` and `save_weights` sync fully
  before they run, when a local step has run since the last sync.

A combination that cannot work (gradient accumulation whose cycle does not divide H, a
LossScaleOptimizer, `steps_per_execution` that does not divide H and `warmup_steps`) is a
ValueError naming the argument, raised in `fit` before the first step.
"""

from __future__ import annotations

import functools
import weakref

import keras
import tensorflow as tf

from lepton_keras.distribute import keras_compat
from lepton_keras.distribute.gradient_communication import sum_gradients
from lepton_keras.distribute.periodic_sync import PeriodicSync, local_steps, local_steps_active, periodic_sync
from lepton_keras.validation import invalid


def install() -> None:
    """Routes Keras's gradient sum, its logged-value reduction and keras.Model's entry points here.

    Raises:
        RuntimeError: this Keras release lacks a function that local steps need.
    """
    missing = keras_compat.route_local_steps(sum_gradients, local_steps_active)
    if missing:
        raise RuntimeError(
            f"lepton_keras: Keras {keras.__version__} has no {missing}, which local steps need; "
            "PeriodicSync(every > 1) is unavailable on this release (every=1 still works). Please report it."
        )
    keras_compat.route_model_entry_points(_around_model_call)


_states: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _state_of(model):
    """The model's replica state, or None when its strategy syncs every step (or has one replica)."""
    strategy = model.distribute_strategy
    sync = periodic_sync(strategy)
    if sync.is_synchronous or strategy.num_replicas_in_sync == 1:
        return None
    state = _states.get(model)
    if state is None or state.sync is not sync:
        state = _states[model] = _ReplicaState(model, strategy, sync)
    return state


def _around_model_call(name: str, model, proceed, arguments):
    state = _state_of(model)
    if state is None:
        return proceed()
    if name == "make_train_function":
        return state.make_train_function(proceed)
    if name == "fit":
        state.steps_taken = None  # read again: a callback may restore a checkpoint before the first step
        history = proceed()
        state.full_sync()
        return history
    state.full_sync()  # evaluate, predict, save, save_weights
    return proceed()


def synchronize_replicas(model) -> None:
    """Averages the replicas of `model` now (weights, non-trainable weights, optimizer slots).

    `fit`, `evaluate`, `predict`, `save` and `save_weights` call it themselves; call it after
    `train_on_batch` before reading the weights. Does nothing when the model's strategy syncs
    every step or the replicas agree already. Call it on every worker. (Local steps are the
    steps of Keras's train function; a custom loop around `strategy.run` and
    `optimizer.apply` sums its gradients every step.)
    """
    if not isinstance(model, keras.Model):
        raise invalid("model", model, "a keras.Model")
    state = _state_of(model)
    if state is not None:
        state.full_sync()


class _ReplicaState:
    def __init__(self, model, strategy, sync: PeriodicSync):
        self._model = weakref.ref(model)
        self.strategy = strategy
        self.sync = sync
        self.steps_taken: int | None = None  # the optimizer's step count after the last call
        self.out_of_sync = False  # a local step ran since the last sync
        self.anchors = None  # the weights of the last sync, when the sync needs them
        self.outer_optimizer = None
        self._periodic_sync_function = None
        self._full_sync_function = None

    @property
    def model(self):
        return self._model()

    # --- the train function ------------------------------------------------------------

    def make_train_function(self, proceed):
        model = self.model
        if getattr(model.train_function, "_lepton_keras_local", False):
            return model.train_function
        check_combination(model, self.sync)
        model.train_function = None
        proceed()
        local_function = model.train_function
        synchronous_function = None
        if self.sync.warmup_steps:
            model.train_function = None
            proceed()
            synchronous_function = model.train_function

        # One step per call is counted here; several (steps_per_execution) are read back, since
        # the last call of an epoch may run fewer. Compiling again makes a new train function.
        per_call = _steps_per_call(model)

        def train_function(iterator):
            step = self.step_count()
            if self.sync.is_local(step):
                if self._periodic_sync_function is None:
                    self.prepare_periodic_sync()
                with local_steps():
                    logs = local_function(iterator)
                self.out_of_sync = True
            else:
                logs = synchronous_function(iterator)
            self.steps_taken = after = step + 1 if per_call == 1 else self.read_step_count()
            if self.out_of_sync and self.sync.syncs_between(step, after):
                self.periodic_sync()
            return logs

        train_function._lepton_keras_local = True
        model.train_function = train_function
        return train_function

    def read_step_count(self) -> int:
        return int(keras_compat.optimizer_step_counter(self.model.optimizer).numpy())

    def step_count(self) -> int:
        if self.steps_taken is None:
            self.steps_taken = self.read_step_count()
        return self.steps_taken

    # --- syncs -----------------------------------------------------------------------------

    def synced_variables(self, *, with_optimizer_slots: bool):
        model = self.model
        extra = [v for v in model.non_trainable_variables if _is_floating(v)]
        if with_optimizer_slots:
            extra += [v for v in model.optimizer.variables if _is_floating(v)]
        return list(model.trainable_variables), extra

    def make_anchors(self):
        weights, _ = self.synced_variables(with_optimizer_slots=False)
        with self.strategy.scope():
            self.anchors = [
                keras.Variable(tf.convert_to_tensor(w.value), trainable=False, name=f"periodic_sync_anchor_{i}")
                for i, w in enumerate(weights)
            ]
            self.outer_optimizer = self.sync.new_outer_optimizer()
            if self.outer_optimizer is not None:
                self.outer_optimizer.build(self.anchors)

    def prepare_periodic_sync(self):
        """Before the first local step (the replicas agree): the anchors, and the sync traced, so that
        the first sync runs as fast as the others (tracing runs no collective)."""
        weights, extra = self.synced_variables(with_optimizer_slots=False)
        if self.sync.keeps_anchor:
            self.make_anchors()
            replica_step = functools.partial(
                _sync_through_anchors, weights=weights, anchors=self.anchors, extra=extra,
                compression=self.sync.compression, outer_optimizer=self.outer_optimizer,
            )  # fmt: skip
        else:
            replica_step = functools.partial(_replace_with_means, variables=weights + extra)
        self._periodic_sync_function = tf.function(lambda: self.strategy.run(replica_step))
        self._periodic_sync_function.get_concrete_function()

    def periodic_sync(self):
        self._periodic_sync_function()
        self.out_of_sync = False

    def full_sync(self):
        if not self.out_of_sync:
            return
        if self._full_sync_function is None:
            weights, extra = self.synced_variables(with_optimizer_slots=True)
            replica_step = functools.partial(_replace_with_means, variables=weights + extra)
            self._full_sync_function = tf.function(lambda: self.strategy.run(replica_step))
        self._full_sync_function()
        self.out_of_sync = False


def _is_floating(variable) -> bool:
    return tf.as_dtype(variable.dtype).is_floating


def _local_values(variables):
    """This replica's copies, read on its device (replica context). A read is colocated with the
    variable and has no device of its own, which a multi-worker all-reduce cannot take as its
    destination: the identity is placed on the replica's device."""
    return [tf.identity(v.value) for v in variables]


def _replace_with_means(variables):
    """Replica context: every replica's copy of each variable becomes the mean of all copies (float32 sums)."""
    context = tf.distribute.get_replica_context()
    means = context.all_reduce(tf.distribute.ReduceOp.MEAN, _local_values(variables))
    context.merge_call(functools.partial(_assign_each, variables=variables), args=(means,))


def _sync_through_anchors(weights, anchors, extra, compression, outer_optimizer):
    """Replica context: the mean delta from the anchors, the anchors' step, and every copy set to them."""
    context = tf.distribute.get_replica_context()
    deltas = mean_deltas(context, _local_values(anchors), _local_values(weights), compression)
    means = context.all_reduce(tf.distribute.ReduceOp.MEAN, _local_values(extra)) if extra else []
    context.merge_call(
        functools.partial(_step_anchors, weights=weights, anchors=anchors, extra=extra, outer=outer_optimizer),
        args=(deltas, means),
    )


def mean_deltas(context, anchors, weights, compression):
    """d = (1/R) sum_r (a - w_r), summed in `compression`'s dtype when set (replica context)."""
    deltas = [a - w for a, w in zip(anchors, weights)]
    if compression is None:
        return context.all_reduce(tf.distribute.ReduceOp.MEAN, deltas)
    sums = context.all_reduce(tf.distribute.ReduceOp.SUM, [tf.cast(d, compression) for d in deltas])
    replicas = context.num_replicas_in_sync
    return [tf.cast(s, d.dtype) / tf.cast(replicas, d.dtype) for s, d in zip(sums, deltas)]


def _assign_each(distribution, values, *, variables):
    for variable, value in zip(variables, values):
        distribution.extended.update(variable.value, _assign, args=(value,), group=False)


def _assign(copy, value):
    return copy.assign(value)


def _step_anchors(distribution, deltas, means, *, weights, anchors, extra, outer):
    """Cross-replica context: a <- a - d (plain averaging) or a <- O(a, d); then w_r <- a."""
    if outer is None:
        for anchor, delta in zip(anchors, deltas):
            distribution.extended.update(anchor.value, _subtract, args=(delta,), group=False)
    else:
        learning_rate = outer.learning_rate
        for anchor, delta in zip(anchors, deltas):
            distribution.extended.update(
                anchor.value, functools.partial(_outer_update, outer), args=(delta, learning_rate), group=False
            )
        keras_compat.optimizer_step_counter(outer).assign_add(1)
    for weight, anchor in zip(weights, anchors):
        distribution.extended.update(weight.value, _assign, args=(anchor.value,), group=False)
    _assign_each(distribution, means, variables=extra)


def _subtract(copy, value):
    return copy.assign_sub(value)


def _outer_update(outer, copy, delta, learning_rate):
    outer.update_step(delta, copy, learning_rate)


# --- what cannot work --------------------------------------------------------------------


def check_combination(model, sync: PeriodicSync) -> None:
    """Raises a ValueError naming the argument when `model` cannot train with `sync` (before any step)."""
    optimizer = model.optimizer
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        raise ValueError(
            "PeriodicSync(every > 1) does not support a LossScaleOptimizer (mixed_float16): each replica "
            "would skip and rescale its steps on its own; use bfloat16 or every=1"
        )
    keras_accumulation = getattr(optimizer, "gradient_accumulation_steps", None)
    if keras_accumulation:
        raise ValueError(
            f"the optimizer sets gradient_accumulation_steps={keras_accumulation}; with PeriodicSync use "
            f"lepton_keras.optimizers.GradientAccumulation(inner, steps=...) with steps dividing every={sync.every}"
        )
    for steps in _accumulation_cycles(optimizer):
        for name, value in (("every", sync.every), ("warmup_steps", sync.warmup_steps)):
            if value % steps:
                raise ValueError(
                    f"{name}={value} must be a multiple of the gradient accumulation's steps={steps}: a sync "
                    "in the middle of an accumulation cycle would average weights that half the cycle moved"
                )
    per_call = _steps_per_call(model)
    for name, value in (("every", sync.every), ("warmup_steps", sync.warmup_steps)):
        if value % per_call:
            raise ValueError(
                f"{name}={value} must be a multiple of the model's steps_per_execution={per_call}: the replicas "
                "can only sync between two calls of the train function"
            )


def _steps_per_call(model) -> int:
    """The steps one call of the model's train function runs (Keras's steps_per_execution)."""
    return int(getattr(model, "steps_per_execution", 1) or 1)


def _accumulation_cycles(optimizer):
    """The `steps` of every lepton_keras GradientAccumulation in a wrapper stack."""
    from lepton_keras.optimizers.gradient_accumulation import GradientAccumulation

    while optimizer is not None:
        if isinstance(optimizer, GradientAccumulation):
            yield optimizer.steps
        optimizer = getattr(optimizer, "inner_optimizer", None)
