"""The one place where lepton_keras touches Keras internals (`keras.src`).

Keras 3's TensorFlow trainer breaks `model.fit`, `evaluate` and `predict` under a
multi-worker `tf.distribute.MultiWorkerMirroredStrategy` (keras-team/keras#20585):

1. `_maybe_symbolic_build` takes the first distributed batch and averages it across
   replicas with `strategy.reduce`, which multi-worker strategies cannot do for a
   nested batch ("Attempt to convert a value (PerReplica...)"). The build only needs
   the batch's structure and shapes, so the fix builds from this worker's first local
   replica's batch.
2. `reduce_per_replica(..., "mean")` reduces every logged value with
   `strategy.reduce("MEAN", v, axis=0)`, which fails on the scalar losses and metrics
   ("Invalid reduction dimension 0 for input with 0 dimensions") and would average over
   the batch axis otherwise. The fix averages across replicas only (`axis=None`), as
   Keras does for a single worker.

Each fix is applied only when a probe shows the bug, by behaviour, on the strategy at
hand; once Keras is fixed the probes pass and nothing is patched. Applying is
idempotent. The probes run no collective operation while the bug is present, and the
same ones on every worker, so they cannot leave the workers out of step.

What the fixes replace is found by structure, never by a name a release can rename
(`PatchTarget`): the symbolic build is the function with parameters (self, iterator,
data_batch) of the first class in `keras.Model`'s MRO that has one (Keras 3.15 calls
that class TensorFlowTrainer, 3.16 Trainer), the reduction the function with parameters
(values, strategy, reduction) of that class's module. A release without one switches
off only that fix, with one RuntimeWarning naming it; the package imports and works.

3. A layer keeps the losses of `add_loss` in one list shared by every thread, and
   MirroredStrategy runs each replica in its own thread. When the forward pass has a
   synchronisation point (a cross-replica all-reduce, as in
   `BatchNormalization(synchronized=True)` or `lepton_keras.layers.MVRegularization`),
   one replica's model call clears or reads the losses another replica added, so the
   loss counts a penalty twice or not at all. `isolate_losses_per_thread(layer)` gives a
   layer a loss list of its own in each thread, when a probe shows the list is shared.

4. Keras sums gradients across replicas inside `apply`, after its own clipping and
   around its gradient accumulation, which is why those are wrong or crash under
   MirroredStrategy. `lepton_keras.optimizers.OptimizerWrapper` therefore sums the
   gradients itself and calls the inner optimizer's public `update_step` per variable;
   the one thing it cannot get from the public API is whether the inner optimizer
   excludes a variable from weight decay (`exclude_from_weight_decay`), which
   `excluded_from_weight_decay` asks. Optimizers with their own form of decay (Adan,
   MADGRAD, Prodigy) ask it too.

5. Two accessors Keras keeps private: the LearningRateSchedule object an optimizer was
   built with (`optimizer_schedule`; the public `learning_rate` property only gives its
   value), which the learning-rate callbacks scale through its multiplier; and the epoch
   `fit` starts from (`start_fit_at_epoch`), which Keras's own BackupAndRestore sets and
   `lepton_keras.callbacks.WorkerBackupAndRestore` sets the same way when it resumes (and
   parameter-server `fit` reads back: `take_fit_start_epoch`).

6. The optimizer bookkeeping `OptimizerWrapper` needs and Keras keeps private:
   `optimizer_built_variables` (the variables an optimizer was built with, which `apply`
   uses when given none), `optimizer_variable_index` (a variable's position among them,
   which finds its slots; KeyError for another variable) and `optimizer_step_counter`
   (the variable behind `iterations`, which a wrapper counts its steps in).
   `set_attribute_untracked` sets an attribute past Keras's automatic tracking, for
   `lepton_keras.callbacks.CycleMomentum`'s stand-in hyperparameter, which must not
   join the optimizer's saved state.

7. Keras's own optimizers sum their gradients across replicas in one private function
   (parameters (self, grads_and_vars), found in `keras.optimizers.Optimizer`'s MRO with
   the public `apply_gradients` skipped). `route_keras_gradient_sum` makes it call
   `gradient_communication.sum_gradients`, so that a strategy's `GradientCommunication`
   (buckets, 16-bit sums) applies to them as to lepton_keras's wrappers. It is installed
   only when a strategy gets a setting, and a strategy without one still sums as Keras does.

8. Periodic synchronisation (`lepton_keras.distribute.periodic_sync`) needs three more
   touches, installed by `set_periodic_sync` only: the gradient sum of item 7 (which keeps each
   replica's own gradient in a local step), the trainer's per-replica reduction of item 2
   (which, in a local step, averages the logged values over this worker's replicas only: the
   per-step collective of Keras's logs would make every worker wait for the slowest one), and
   keras.Model's public `make_train_function`, `fit`, `evaluate`, `predict`, `save` and
   `save_weights`, found by those public names (`route_model_entry_points`), around which
   `replica_averaging` runs local steps and syncs the replicas. Models whose strategy has no
   setting run Keras's own code.

9. Parameter-server training (`lepton_keras.distribute.coordinated_training`) needs four:
   `make_counters_atomic` (Keras's `Variable.assign_add` and `assign_sub` read the variable and
   write the sum back, so concurrent workers lose increments of the step counter and of the
   metrics' totals: 150 of 200 steps counted; on a variable that lives on a parameter server
   they become the variable's own atomic `assign_add`, found by structure as the
   `tf.Variable` the Keras variable holds); `build_for_training` (the trainer's symbolic build
   of item 1, which creates the model's, metrics' and optimizer's variables on the chief, where
   they must exist before a worker traces a step); `on_chief(model)` (Keras's own `evaluate` and
   `predict` loops on the chief, with the model's strategy attribute, found by identity, set
   aside for the call); and keras.Model's entry points of item 8.

10. Names. Keras 3.15 looks a string given to `keras.optimizers.get` or
   `keras.initializers.get` up in its public custom-object registry as well as in its own
   table; keras-nightly 3.16 looks only in its own table, so `compile(optimizer="radam")`
   fails there after `import lepton_keras` registers the name. `resolve_names` probes which
   (a throwaway name registered as a custom object, looked up once: no optimizer or variable
   is built) and, only where Keras's registry is not consulted, adds the names to Keras's
   table, found by structure: the dict of classes, in the module defining the `get`, that
   holds one of Keras's own classes (`keras_name_table`). Where there is no such table, or
   adding to it does not make the probe resolve, the names stay
   `lepton_keras.optimizers.get`'s only, with one RuntimeWarning.

11. Keras's own `keras.optimizers.ScheduleFreeAdamW` (3.15, 3.16) has two defects, each fixed
   where its probe shows it (`fix_keras_schedule_free`, run at the first build of one, in a
   thread of its own: outside the caller's trace and strategy).
   `schedule_free_start_of_z`: its `build` sets z to the weights with an assignment that
   is lost when `fit` builds the optimizer inside the traced step (no strategy), so z starts
   at 0 and one step sets the weights to about -lr sign(g), while a MirroredStrategy build
   (eager) keeps the start; the fix sets z eagerly (`tf.init_scope`).
   `schedule_free_x_from_the_old_z`: its `update_step` recovers x_{t-1} from y and the z of
   step t (`momentum.value` is the live variable, read after z's update), not z_{t-1}; the
   fix takes a copy first. `keras_schedule_free_z` gives lepton_keras's evaluation switch
   (lepton_keras.callbacks.ScheduleFreeEvaluation) the slot z, which Keras keeps private.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import sys
import threading
import warnings

import keras
import tensorflow as tf

from lepton_keras.validation import check_strategy

_lock = threading.Lock()


class PatchTarget:
    """A function of Keras that a fix replaces: found by its signature, never by its name.

    The first of `owners` (classes or modules) that defines a function with exactly these
    `parameters` holds it: `owner`, the `attribute` it has in this release and Keras's
    `original` function. When none does, all three are None, the fix is off and
    `missing` says what was looked for. `private_only` skips public methods (Keras's
    public API is not what a fix replaces).
    """

    def __init__(self, description: str, owners, parameters: tuple[str, ...], *, private_only: bool = False):
        self.description = description
        self.owner, self.attribute, self.original = None, None, None
        kind = "private function" if private_only else "function"
        self.missing = f"{description} (a {kind} with parameters {parameters})"
        for owner in owners:
            for name, value in vars(owner).items():
                if private_only and not name.startswith("_"):
                    continue
                if inspect.isfunction(value) and tuple(inspect.signature(value).parameters) == parameters:
                    self.owner, self.attribute, self.original, self.missing = owner, name, value, None
                    return

    @property
    def current(self):
        return getattr(self.owner, self.attribute) if self.owner is not None else None

    def replace(self, function) -> None:
        setattr(self.owner, self.attribute, function)

    def restore(self) -> None:
        if self.owner is not None:
            setattr(self.owner, self.attribute, self.original)


# The TensorFlow backend's trainer is the class of keras.Model's MRO that defines the symbolic
# build (TensorFlowTrainer in Keras 3.15, Trainer in 3.16); the reduction is in its module.
_SYMBOLIC_BUILD = PatchTarget("the trainer's symbolic build", keras.Model.__mro__, ("self", "iterator", "data_batch"))
_REDUCE_PER_REPLICA = PatchTarget(
    "the trainer module's per-replica reduction",
    [sys.modules[_SYMBOLIC_BUILD.owner.__module__]] if _SYMBOLIC_BUILD.owner else [],
    ("values", "strategy", "reduction"),
)
# The optimizer's cross-replica gradient sum: the private function with parameters (self,
# grads_and_vars) of the first class of keras.optimizers.Optimizer's MRO that has one (the
# TensorFlow backend's optimizer); the public apply_gradients has the same parameters.
_KERAS_GRADIENT_SUM = PatchTarget(
    "the optimizer's cross-replica gradient sum", keras.optimizers.Optimizer.__mro__, ("self", "grads_and_vars"),
    private_only=True,
)
_PATCH_TARGETS = {
    "symbolic_build_from_local_batch": _SYMBOLIC_BUILD,
    "mean_across_replicas": _REDUCE_PER_REPLICA,
    "gradient_communication": _KERAS_GRADIENT_SUM,
}
_warned_missing: set = set()


def _warn_missing(fix: str, target: PatchTarget, what: str = "the multi-worker fix",
                  why: str = "keras-team/keras#20585") -> None:
    if fix not in _warned_missing:
        _warned_missing.add(fix)
        warnings.warn(
            f"lepton_keras: Keras {keras.__version__} has no {target.missing}; {what} "
            f"{fix!r} is off ({why}). Everything else works; please report it.",
            RuntimeWarning,
            stacklevel=3,
        )


def _is_multi_worker(strategy) -> bool:
    extended = getattr(strategy, "extended", None)
    in_multi_worker_mode = getattr(extended, "_in_multi_worker_mode", None)
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and bool(
        in_multi_worker_mode and in_multi_worker_mode()
    )


def _first_local_value(value, strategy):
    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value


def _symbolic_build_from_local_batch(self, iterator=None, data_batch=None):
    """`_maybe_symbolic_build` that builds from this worker's first replica's batch."""
    strategy = self._distribute_strategy
    if iterator is not None and strategy is not None and _is_multi_worker(strategy):
        for _, _, batches in iterator:
            data_batch = tf.nest.map_structure(
                lambda value: _first_local_value(value, strategy), next(batches)
            )
            break
        iterator = None
    return _SYMBOLIC_BUILD.original(self, iterator=iterator, data_batch=data_batch)


# Set by `route_local_steps`: a function telling when a train step is local (periodic sync), whose
# logged values are then averaged over this worker's replicas only, with no collective.
_logs_stay_local = None


def _reduce_per_replica_across_replicas(values, strategy, reduction):
    """`reduce_per_replica` whose multi-worker "mean" averages across replicas only (or, in a local
    step of periodic sync, across this worker's replicas only)."""
    if reduction == "auto" and not isinstance(strategy, tf.distribute.TPUStrategy):
        reduction = "mean"
    if reduction == "mean" and _logs_stay_local is not None and _logs_stay_local():
        return tf.nest.map_structure(lambda value: _mean_of_local_replicas(value, strategy), values)
    if reduction == "mean" and _is_multi_worker(strategy):
        return tf.nest.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), values)
    return _REDUCE_PER_REPLICA.original(values, strategy, reduction)


def _mean_of_local_replicas(value, strategy):
    if not isinstance(value, tf.distribute.DistributedValues):
        return value
    local = strategy.experimental_local_results(value)
    return tf.add_n(local) / tf.cast(len(local), local[0].dtype) if len(local) > 1 else local[0]


class _BuildRecorder:
    """Stands in for a model in the symbolic-build probe: records what it is built from."""

    def __init__(self, strategy):
        self._distribute_strategy = strategy
        self.distribute_strategy = strategy
        self.built_from = None

    def _symbolic_build(self, data_batch=None):
        self.built_from = data_batch


@contextlib.contextmanager
def _expected_failures_unlogged():
    """A probe's failure is its answer, but TensorFlow logs it at INFO with a traceback ("Error
    reported to Coordinator: ... Invalid reduction dimension 0"), which shows wherever INFO does
    (Ray's workers, absl verbosity): the `tensorflow` logger keeps to WARNING meanwhile."""
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def symbolic_build_is_broken(strategy) -> bool:
    """True when Keras cannot build a model from a batch distributed by `strategy`."""
    batch = strategy.experimental_distribute_values_from_function(
        lambda context: (tf.zeros((2, 1)), tf.zeros((2, 1)))
    )
    recorder = _BuildRecorder(strategy)
    try:
        with _expected_failures_unlogged():
            _SYMBOLIC_BUILD.original(recorder, iterator=[(0, 0, iter([batch]))])
    except (ValueError, TypeError):
        return True
    return recorder.built_from is None


def scalar_mean_is_broken(strategy) -> bool:
    """True when Keras cannot average a per-replica scalar (a loss) under `strategy`."""
    scalar = strategy.experimental_distribute_values_from_function(lambda context: tf.constant(1.0))
    try:
        with _expected_failures_unlogged():
            mean = _REDUCE_PER_REPLICA.original(scalar, strategy, "mean")
    except (ValueError, TypeError, tf.errors.InvalidArgumentError):
        return True
    return mean.shape.rank != 0


def patch_keras_for_multi_worker(strategy) -> list[str]:
    """Applies the fixes that `strategy` needs; returns the names of those now active.

    Called by `lepton_keras.distribute.get_strategy` for multi-worker strategies; call it
    yourself when you create a `MultiWorkerMirroredStrategy` directly. Calling it again
    changes nothing. Does nothing for single-worker strategies. A fix whose Keras function
    this release lacks is off, with one RuntimeWarning naming it.
    """
    fixes = (
        ("symbolic_build_from_local_batch", _symbolic_build_from_local_batch, symbolic_build_is_broken),
        ("mean_across_replicas", _reduce_per_replica_across_replicas, scalar_mean_is_broken),
    )
    check_strategy("strategy", strategy, allow_none=False)
    with _lock:
        if _is_multi_worker(strategy):
            for fix, replacement, is_broken in fixes:
                target = _PATCH_TARGETS[fix]
                if target.missing:
                    _warn_missing(fix, target)
                elif target.current is target.original and is_broken(strategy):
                    target.replace(replacement)
        return active_patches()


def route_keras_gradient_sum(sum_gradients) -> bool:
    """Makes Keras's own optimizers sum their gradients with `sum_gradients(gradients)`.

    `sum_gradients` (`lepton_keras.distribute.gradient_communication.sum_gradients`) takes
    the list of gradients (None where a variable has none) in replica context and returns
    their sums, with the strategy's bucketing and compression; where the strategy has no
    setting it is Keras's own single all-reduce. Called by `set_gradient_communication`;
    calling it again changes nothing. Returns False, with one RuntimeWarning, when this
    Keras release has no such function: then only lepton_keras's wrappers (and SAM) follow
    the setting.
    """
    target = _KERAS_GRADIENT_SUM
    with _lock:
        if target.missing:
            _warn_missing("gradient_communication", target, what="routing Keras's optimizers through",
                          why="lepton_keras.optimizers wrappers still follow it")  # fmt: skip
            return False
        if target.current is target.original:

            def _sum_through_lepton(self, grads_and_vars):
                grads_and_vars = list(grads_and_vars)
                if not grads_and_vars or tf.distribute.get_replica_context() is None:
                    return target.original(self, grads_and_vars)
                gradients = sum_gradients([gradient for gradient, _ in grads_and_vars])
                return [(gradient, variable) for gradient, (_, variable) in zip(gradients, grads_and_vars)]

            target.replace(_sum_through_lepton)
        return True


def route_local_steps(sum_gradients, local_steps_active) -> str | None:
    """Prepares Keras for the local steps of periodic synchronisation; returns what is missing, or None.

    Routes Keras's optimizers' gradient sum to `sum_gradients` (which keeps each replica's own
    gradient while `local_steps_active()`), and makes the trainer's per-replica reduction
    average the logged values over this worker's replicas only while `local_steps_active()`:
    the per-step collective of Keras's logs would make every worker wait for the slowest one
    at every step. Idempotent.
    """
    global _logs_stay_local
    if _KERAS_GRADIENT_SUM.missing or _REDUCE_PER_REPLICA.missing:
        return _KERAS_GRADIENT_SUM.missing or _REDUCE_PER_REPLICA.missing
    route_keras_gradient_sum(sum_gradients)
    with _lock:
        _logs_stay_local = local_steps_active
        if _REDUCE_PER_REPLICA.current is _REDUCE_PER_REPLICA.original:
            _REDUCE_PER_REPLICA.replace(_reduce_per_replica_across_replicas)
    return None


# keras.Model's public methods that periodic synchronisation and parameter-server training take
# part in (by their public names).
MODEL_ENTRY_POINTS = ("make_train_function", "fit", "evaluate", "predict", "save", "save_weights")
_routed_entry_points: dict = {}
_arounds: list = []


def route_model_entry_points(around) -> None:
    """Makes keras.Model's `MODEL_ENTRY_POINTS` run as `around(name, model, proceed, arguments)`.

    `arguments` maps every parameter of Keras's method to the caller's value (defaults
    filled in); `proceed()` calls Keras's own method with the caller's arguments (and may be
    called more than once). `around` decides what happens before and after, or runs something
    else (`replica_averaging`, `coordinated_training`). Several arounds nest, the first
    routed outermost. Idempotent; `unpatch_keras` undoes it.
    """
    with _lock:
        if around not in _arounds:
            _arounds.append(around)
        for name in MODEL_ENTRY_POINTS:
            if name in _routed_entry_points:
                continue
            original = getattr(keras.Model, name)
            _routed_entry_points[name] = (name in vars(keras.Model), original)
            setattr(keras.Model, name, _routed_entry_point(name, original))


def _routed_entry_point(name, original):
    signature = inspect.signature(original)

    @functools.wraps(original)
    def routed(self, *args, **kwargs):
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError:  # Keras's own method says what is wrong with the call
            return original(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = dict(list(bound.arguments.items())[1:])

        def call(index):
            if index == len(_arounds):
                return original(self, *args, **kwargs)
            return _arounds[index](name, self, lambda: call(index + 1), arguments)

        return call(0)

    return routed


class _PerThreadList:
    """The part of the list interface Keras uses for `Layer._losses`, private to each thread."""

    def __init__(self):
        self._local = threading.local()

    def _items(self) -> list:
        if not hasattr(self._local, "items"):
            self._local.items = []
        return self._local.items

    def append(self, value):
        self._items().append(value)

    def extend(self, values):
        self._items().extend(values)

    def clear(self):
        self._items().clear()

    def __getitem__(self, index):
        return self._items()[index]

    def __iter__(self):
        return iter(self._items())

    def __len__(self):
        return len(self._items())


def add_loss_is_shared_between_threads(layer=None) -> bool:
    """True when a loss added to `layer` in one thread shows in another thread's `losses`."""
    import keras

    layer = layer if layer is not None else keras.layers.Layer()
    added = threading.Event()

    def add_from_another_thread():
        layer.add_loss(tf.constant(1.0))
        added.set()

    thread = threading.Thread(target=add_from_another_thread)
    thread.start()
    thread.join()
    shared = added.is_set() and len(layer.losses) > 0
    thread = threading.Thread(target=lambda: layer._clear_losses())
    thread.start()
    thread.join()
    return shared


_ADD_LOSS_SHARED = None


def isolate_losses_per_thread(layer) -> bool:
    """Gives `layer` a loss list of its own in each thread, if Keras shares it; returns whether it did.

    Idempotent. The probe runs once per process, on a throwaway layer.
    """
    global _ADD_LOSS_SHARED
    with _lock:
        if _ADD_LOSS_SHARED is None:
            _ADD_LOSS_SHARED = add_loss_is_shared_between_threads()
        if not _ADD_LOSS_SHARED or isinstance(getattr(layer, "_losses", None), _PerThreadList):
            return False
        # Set past Keras's attribute tracking: this is bookkeeping, not layer state.
        object.__setattr__(layer, "_losses", _PerThreadList())
        return True


def active_patches() -> list[str]:
    """Names of the Keras fixes currently applied."""
    return [fix for fix, target in _PATCH_TARGETS.items() if target.owner and target.current is not target.original]


def active_functions() -> tuple:
    """The trainer functions Keras currently uses (to check that patching twice changes nothing)."""
    return tuple(target.current for target in _PATCH_TARGETS.values())


def unpatch_keras() -> None:
    """Restores Keras's own functions (for tests)."""
    global _logs_stay_local
    with _lock:
        for target in _PATCH_TARGETS.values():
            target.restore()
        _restore_methods(keras.Model, _routed_entry_points)
        _arounds.clear()
        _restore_methods(keras.Variable, _KERAS_INCREMENTS)
        _logs_stay_local = None


def _restore_methods(cls, replaced: dict) -> None:
    """Puts back the methods `replaced` maps by name to (defined on `cls` itself, original); empties it."""
    for name, (owned, original) in replaced.items():
        if owned:
            setattr(cls, name, original)
        else:
            delattr(cls, name)
    replaced.clear()


def excluded_from_weight_decay(optimizer, variable) -> bool:
    """Whether `optimizer.exclude_from_weight_decay(...)` named `variable` (by variable or by name)."""
    return not optimizer._use_weight_decay(variable)


def optimizer_schedule(optimizer):
    """The LearningRateSchedule `optimizer` was built with, or None for a variable learning rate."""
    import keras

    learning_rate = getattr(optimizer, "_learning_rate", None)
    if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        return learning_rate
    return None


def start_fit_at_epoch(model, epoch: int) -> None:
    """Makes the running `fit` continue from `epoch` (set in `on_train_begin`, as BackupAndRestore does)."""
    model._initial_epoch = epoch


def take_fit_start_epoch(model, initial_epoch: int) -> int:
    """The epoch a `fit` starts from: a callback's `start_fit_at_epoch`, else `initial_epoch`; clears it."""
    epoch, model._initial_epoch = getattr(model, "_initial_epoch", None), None
    return epoch or initial_epoch


def keras_optimizer_names() -> set[str] | None:
    """The strings Keras's own `keras.optimizers.get` takes ("adam", "sgd", ...), or None if
    this release keeps them where `keras_name_table` cannot see.

    `lepton_keras.optimizers.registry` registers no other optimizer under these names: Keras
    lower-cases the class names of its own optimizers when it deserializes them, and would
    find ours instead. Names `resolve_names` added are not Keras's.
    """
    table = keras_name_table(keras.optimizers.get, keras.optimizers.Adam)
    ours = {name for added_to, name in _added_names if added_to is table}
    return None if table is None else {name.lower() for name in table if name not in ours}


# --- names Keras's string lookups resolve (item 10) ---------------------------------------------

_added_names: list = []  # (table, name) for each name `resolve_names` added to a Keras table


class _NameFound(Exception):
    """Raised by `_NameProbe` when Keras builds it: Keras resolved the probe's name."""


class _NameProbe:
    """What the probe registers: building it in any way Keras does raises `_NameFound`."""

    def __new__(cls, *args, **kwargs):
        raise _NameFound

    @classmethod
    def from_config(cls, config):
        raise _NameFound


_PROBE_NAME = "lepton_keras_name_probe"


def keras_name_table(get_function, keras_class) -> dict | None:
    """Keras's table of its own names for `get_function`: the dict of classes, in the module that
    defines it, holding `keras_class` (`keras.optimizers.Adam` for `keras.optimizers.get`); None
    where there is none."""
    module = sys.modules.get(getattr(get_function, "__module__", ""), None)
    for value in vars(module).values() if module else ():
        if (isinstance(value, dict) and any(item is keras_class for item in value.values())
                and all(isinstance(key, str) and isinstance(item, type) for key, item in value.items())):  # fmt: skip
            return value
    return None


def _resolves(get_function, name: str) -> bool:
    try:
        get_function(name)
    except _NameFound:
        return True
    except ValueError:
        return False
    return False


def resolve_names(get_function, keras_class, names: dict) -> str:
    """Makes `get_function(name)` (Keras's `keras.optimizers.get`, `keras.initializers.get`) build
    `names[name]()` for every name; returns how: "registry" (Keras consults its custom-object
    registry, where the caller registered the names: nothing changed), "table" (added to Keras's
    own table, `keras_name_table(get_function, keras_class)`; names Keras has are kept) or
    "unavailable" (warned). Idempotent; `remove_added_names(table)` undoes it (`unpatch_keras` does not:
    the names are installed once, at import, as the custom objects are).

    Each value must be a class that Keras can build with no arguments and with `from_config`.
    """
    custom_objects = keras.saving.get_custom_objects()
    custom_objects[_PROBE_NAME] = _NameProbe
    try:
        if _resolves(get_function, _PROBE_NAME):
            return "registry"
    finally:
        del custom_objects[_PROBE_NAME]
    table = keras_name_table(get_function, keras_class)
    if table is not None:
        table[_PROBE_NAME] = _NameProbe
        try:
            found = _resolves(get_function, _PROBE_NAME)
        finally:
            del table[_PROBE_NAME]
        if found:
            with _lock:
                for name, cls in names.items():
                    if name not in table:
                        table[name] = cls
                        _added_names.append((table, name))
            return "table"
    warnings.warn(
        f"lepton_keras: this Keras ({keras.__version__}) resolves only its own names in "
        f"{get_function.__module__}.{get_function.__name__}, and lepton_keras found no table to add its names to; "
        "use lepton_keras.optimizers.get(name) (or the class) instead of a string there",
        RuntimeWarning,
        stacklevel=2,
    )
    return "unavailable"


def added_names() -> list[str]:
    """The names `resolve_names` added to Keras's tables."""
    return sorted(name for _, name in _added_names)


def remove_added_names(table: dict) -> None:
    """Takes the names `resolve_names` added out of `table` (for tests)."""
    with _lock:
        for name in [name for added_to, name in _added_names if added_to is table]:
            table.pop(name, None)
        _added_names[:] = [(added_to, name) for added_to, name in _added_names if added_to is not table]


def optimizer_built_variables(optimizer) -> list:
    """The variables `optimizer` was built with (what Keras's `apply` uses when given none)."""
    return optimizer._trainable_variables


def optimizer_variable_index(optimizer, variable) -> int:
    """The position of `variable` among the variables `optimizer` was built with; KeyError for another."""
    return optimizer._get_variable_index(variable)


def optimizer_step_counter(optimizer):
    """The variable behind `optimizer.iterations` (which is a quotient when Keras accumulates gradients)."""
    return optimizer._iterations


def set_attribute_untracked(obj, name: str, value) -> None:
    """Sets `obj.name = value` past Keras's automatic tracking (a variable so set joins no saved state)."""
    object.__setattr__(obj, name, value)


# --- parameter-server training (item 9) -------------------------------------------------------

_KERAS_INCREMENTS: dict = {}  # "assign_add"/"assign_sub" -> (defined on keras.Variable itself, Keras's method)


def _storage(variable):
    """The `tf.Variable` a Keras variable keeps its value in, found by type among its attributes."""
    for value in vars(variable).values():
        if isinstance(value, tf.Variable):
            return value
    return None


def _lives_on_parameter_server(storage) -> bool:
    return storage is not None and "/job:ps/" in (getattr(storage, "device", "") or "")


def _atomic_increment(name, original):
    @functools.wraps(original)
    def increment(self, value):
        storage = _storage(self)
        if not _lives_on_parameter_server(storage):
            return original(self, value)
        return getattr(storage, name)(tf.cast(value, storage.dtype))

    return increment


def make_counters_atomic() -> None:
    """Makes `assign_add`/`assign_sub` of Keras variables on parameter servers atomic (item 9).

    Keras's versions read the value and assign the sum, two operations between which another
    worker's increment is lost. On a variable held on a parameter server they become the
    `tf.Variable`'s own `assign_add`/`assign_sub`, which the server applies under the
    variable's lock; every other variable keeps Keras's code. Idempotent; `unpatch_keras` undoes it.
    """
    with _lock:
        for name in ("assign_add", "assign_sub"):
            if name not in _KERAS_INCREMENTS:
                original = getattr(keras.Variable, name)
                _KERAS_INCREMENTS[name] = (name in vars(keras.Variable), original)
                setattr(keras.Variable, name, _atomic_increment(name, original))


def counters_are_atomic() -> bool:
    """Whether `make_counters_atomic` is in effect (for tests)."""
    return bool(_KERAS_INCREMENTS)


def build_for_training(model, data_batch) -> None:
    """Creates the model's, its compiled metrics' and loss's and its optimizer's variables from one batch.

    Run it under the strategy's scope, so that parameter-server training places them on the
    parameter servers before a worker traces a step (a step cannot create variables).

    Raises:
        RuntimeError: this Keras release has no symbolic build (item 1's `PatchTarget`).
    """
    if _SYMBOLIC_BUILD.original is None:
        raise RuntimeError(
            f"lepton_keras: Keras {keras.__version__} has no {_SYMBOLIC_BUILD.missing}, which "
            "parameter-server training builds the model with before the first step. Please report it."
        )
    _SYMBOLIC_BUILD.original(model, data_batch=data_batch)
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


@contextlib.contextmanager
def on_chief(model):
    """Runs Keras's own loops for `model` on this process, as if the model had no strategy.

    The model's strategy attribute (found by identity with `model.distribute_strategy`) is
    None inside, so `model.distribute_strategy` is the default strategy; the variables stay
    where they are (on the parameter servers) and are read from there.
    """
    strategy = model.distribute_strategy
    names = [name for name, value in vars(model).items() if value is strategy]
    if not names:
        raise RuntimeError(
            f"lepton_keras: Keras {keras.__version__} keeps a model's strategy where this release "
            "of lepton_keras cannot find it, so evaluate and predict cannot run on the chief. Please report it."
        )
    for name in names:
        object.__setattr__(model, name, None)
    try:
        yield
    finally:
        for name in names:
            object.__setattr__(model, name, strategy)


# --- Keras's ScheduleFreeAdamW (item 11) ------------------------------------------------------

# Keras's own Schedule-Free AdamW (Keras >= 3.12); absent, both fixes are off (nothing to fix).
_KERAS_SCHEDULE_FREE = getattr(keras.optimizers, "ScheduleFreeAdamW", None)
_SCHEDULE_FREE_OWNERS = [_KERAS_SCHEDULE_FREE] if _KERAS_SCHEDULE_FREE is not None else []
_SCHEDULE_FREE_BUILD = PatchTarget("ScheduleFreeAdamW's build", _SCHEDULE_FREE_OWNERS, ("self", "var_list"))
_SCHEDULE_FREE_UPDATE = PatchTarget("ScheduleFreeAdamW's update step", _SCHEDULE_FREE_OWNERS,
                                    ("self", "gradient", "variable", "learning_rate"))  # fmt: skip
_PATCH_TARGETS["schedule_free_start_of_z"] = _SCHEDULE_FREE_BUILD
_PATCH_TARGETS["schedule_free_x_from_the_old_z"] = _SCHEDULE_FREE_UPDATE


def is_keras_schedule_free(optimizer) -> bool:
    """Whether `optimizer` is Keras's own `keras.optimizers.ScheduleFreeAdamW`."""
    return _KERAS_SCHEDULE_FREE is not None and isinstance(optimizer, _KERAS_SCHEDULE_FREE)


def keras_schedule_free_z(optimizer, variable):
    """The z of `variable` in Keras's ScheduleFreeAdamW (its slot "momentum"); KeyError for another variable."""
    return optimizer._momentums[optimizer._get_variable_index(variable)]


def schedule_free_start_is_lost() -> bool:
    """True when Keras's ScheduleFreeAdamW, built inside a traced step (as `fit` builds it without a
    strategy), starts z at 0 instead of the weights: one step from w = 1 with g = 1 and lr = 0.5
    gives -0.5 instead of 0.5 (c_1 = 1, so y_1 = z_1)."""
    variable = keras.Variable([1.0])
    optimizer = _KERAS_SCHEDULE_FREE(learning_rate=0.5)

    @tf.function
    def step():
        optimizer.apply([tf.constant([1.0])], [variable])

    step()
    return abs(float(variable.numpy()[0]) - 0.5) > 1e-3


def schedule_free_reads_the_new_z() -> bool:
    """True when Keras's ScheduleFreeAdamW recovers x_{t-1} = (y_{t-1} - (1 - beta_1) z) / beta_1 from the
    z of step t, not t - 1: two steps from w = 1 with g = 1, lr = 0.25, beta_1 = 0.5 and epsilon = 0
    give 0.625 instead of 0.5625 (z_2 = 0.5, x_2 = (x_1 + z_2) / 2 = 0.625, y_2 = (z_2 + x_2) / 2)."""
    variable = keras.Variable([1.0])
    optimizer = _KERAS_SCHEDULE_FREE(learning_rate=0.25, beta_1=0.5, epsilon=0.0)
    optimizer.build([variable])  # eagerly: z starts at the weights
    for _ in range(2):
        optimizer.apply([tf.constant([1.0])], [variable])
    return abs(float(variable.numpy()[0]) - 0.5625) > 1e-3


def _schedule_free_build_keeping_the_start(self, var_list):
    """Keras's ScheduleFreeAdamW.build, then z set to the weights outside any trace (`tf.init_scope`):
    an assignment inside the trace `fit` builds in is not part of the step function Keras keeps."""
    built = self.built
    _SCHEDULE_FREE_BUILD.original(self, var_list)
    if built:
        return
    with tf.init_scope():
        for z, variable in zip(self._momentums, var_list):
            if z is not None:
                z.assign(variable)


def _schedule_free_update_from_the_old_z(self, gradient, variable, learning_rate):
    """Keras's ScheduleFreeAdamW.update_step, with x_{t-1} recovered from y_{t-1} and z_{t-1} (a copy
    taken before z's update; Keras reads the live variable after it). Keras's other choices stay:
    the warm-up, c_t = 1 / t, epsilon outside the root."""
    dtype = variable.dtype
    step = keras.ops.cast(self.iterations + 1, dtype)
    lr = keras.ops.cast(learning_rate, dtype)
    if self.warmup_steps > 0:
        lr = lr * keras.ops.minimum(step / keras.ops.cast(self.warmup_steps, dtype), 1.0)
    gradient = keras.ops.cast(gradient, dtype)
    beta_1, beta_2, epsilon = (keras.ops.cast(value, dtype) for value in (self.beta_1, self.beta_2, self.epsilon))
    index = self._get_variable_index(variable)
    z, v = self._momentums[index], self._velocities[index]
    z_old, y_old = tf.convert_to_tensor(z.value), tf.convert_to_tensor(variable)  # values, not the variables
    self.assign_add(v, (keras.ops.square(gradient) - v) * (1 - beta_2))
    self.assign_sub(z, lr * gradient / (keras.ops.sqrt(v / (1 - keras.ops.power(beta_2, step))) + epsilon))
    weight = 1.0 / step
    x_old = (y_old - (1 - beta_1) * z_old) / beta_1
    x_new = (1 - weight) * x_old + weight * z
    self.assign(variable, (1 - beta_1) * z + beta_1 * x_new)


def _in_a_fresh_thread(function):
    """`function()` run in a new thread: eagerly, outside any trace and strategy scope (both are per thread)."""
    results = []
    thread = threading.Thread(target=lambda: results.append(function()))
    thread.start()
    thread.join()
    if not results:
        raise RuntimeError(f"lepton_keras: the probe {function.__name__} failed; its error is printed above")
    return results[0]


def fix_keras_schedule_free() -> list[str]:
    """Fixes Keras's `keras.optimizers.ScheduleFreeAdamW` where probes show its defects (item 11); returns
    the names of those fixes now active.

    Runs when such an optimizer is first built (`_probe_at_first_build`, installed when
    lepton_keras is imported: probing then would start TensorFlow's runtime before the
    program configures its devices); call it to fix Keras at once. Idempotent; `unpatch_keras`
    undoes it. A release without the optimizer has nothing to fix; one whose optimizer lacks
    the function a fix replaces switches that fix off with one RuntimeWarning.
    """
    fixes = (
        ("schedule_free_start_of_z", _schedule_free_build_keeping_the_start, schedule_free_start_is_lost),
        ("schedule_free_x_from_the_old_z", _schedule_free_update_from_the_old_z, schedule_free_reads_the_new_z),
    )
    if _KERAS_SCHEDULE_FREE is None:
        return []
    with _lock:
        if _SCHEDULE_FREE_BUILD.current is _probe_at_first_build:
            _SCHEDULE_FREE_BUILD.restore()
        for fix, replacement, is_broken in fixes:
            target = _PATCH_TARGETS[fix]
            if target.missing:
                _warn_missing(fix, target, what="the ScheduleFreeAdamW fix",
                              why="keras.optimizers.ScheduleFreeAdamW keeps that defect")  # fmt: skip
            elif target.current is target.original and _in_a_fresh_thread(is_broken):
                target.replace(replacement)
        return [fix for fix, _, _ in fixes if _PATCH_TARGETS[fix].current is not _PATCH_TARGETS[fix].original]


def _probe_at_first_build(self, var_list):
    """Keras's ScheduleFreeAdamW.build until the first call: probes, fixes, then builds with the fixed build."""
    fix_keras_schedule_free()
    return _SCHEDULE_FREE_BUILD.current(self, var_list)


def probe_keras_schedule_free_at_first_build() -> None:
    """Makes the first build of a Keras ScheduleFreeAdamW run `fix_keras_schedule_free` (idempotent)."""
    with _lock:
        if _SCHEDULE_FREE_BUILD.owner is not None and _SCHEDULE_FREE_BUILD.current is _SCHEDULE_FREE_BUILD.original:
            _SCHEDULE_FREE_BUILD.replace(_probe_at_first_build)


probe_keras_schedule_free_at_first_build()
