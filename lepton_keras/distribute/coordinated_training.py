"""`model.fit`, `evaluate`, `predict` and `save` under a ParameterServerStrategy, unchanged for the user.

Keras 3 cannot run on a `tf.distribute.ParameterServerStrategy` (its data adapter distributes
the dataset in a way the strategy refuses, and its variables' `assign_add` loses concurrent
increments). This module takes part at keras.Model's public entry points (through
`keras_compat.route_model_entry_points`) for models created under such a strategy:

- `fit(x, epochs=..., steps_per_epoch=...)` on the chief. `x` is a `tf.data.Dataset` of
  batches or a function `dataset_fn(input_context) -> tf.data.Dataset`; every worker makes
  its own copy, repeated without end (`ClusterCoordinator.create_per_worker_dataset`), so
  workers differ only where the dataset shuffles without a fixed seed. The chief schedules
  `steps_per_epoch` steps an epoch (`steps_per_execution` per scheduled call), each on
  whichever worker is free, and keeps at most `IN_FLIGHT_PER_WORKER` calls a worker in
  flight. A lost worker's calls run again elsewhere; a ledger on the parameter servers makes
  a call that already applied its steps skip them, and the chief sets the step counter to
  the steps it scheduled at the end of each epoch: every step counts once.
  `steps_per_epoch` is required. A lost parameter server is a RuntimeError that says to
  relaunch (BackupAndRestore then resumes).
- Callbacks run on the chief. `on_train_batch_begin(step)` runs when the step is scheduled
  (a learning rate set there reaches the steps scheduled after it); `on_train_batch_end(step,
  logs)` runs when the step has finished, in order, with that step's logs: the running means
  of the loss and metrics over the steps every worker finished so far (the metrics' totals
  live on the parameter servers, updated atomically). Epoch callbacks run after every step
  of the epoch has finished, with the epoch's logs and validation as in Keras.
- `evaluate` and `predict` run Keras's own loops on the chief, reading the variables from
  the parameter servers; `save` and `save_weights` read them too.

Not supported, each a clear ValueError before any step: numpy or other non-dataset `x`, `y`,
`sample_weight`, `class_weight`, `validation_split`, `batch_size`, a `validation_freq` other than
an integer, and a `steps_per_epoch` that `steps_per_execution` does not divide.
"""

from __future__ import annotations

import collections
import contextlib
import logging

import keras
import tensorflow as tf

from lepton_keras.distribute import keras_compat, parameter_server
from lepton_keras.validation import check_int, invalid

IN_FLIGHT_PER_WORKER = 2  # scheduled calls a worker may have queued: enough to keep it busy


def install() -> None:
    """Routes keras.Model's entry points here and makes counters on parameter servers atomic."""
    keras_compat.make_counters_atomic()
    keras_compat.route_model_entry_points(_around_model_call)


def _around_model_call(name: str, model, proceed, arguments):
    if not parameter_server.is_parameter_server_strategy(model.distribute_strategy):
        return proceed()
    if name == "fit":
        return _fit(model, **arguments)
    if name in ("evaluate", "predict"):
        with keras_compat.on_chief(model):
            return proceed()
    return proceed()  # make_train_function, save, save_weights: Keras's own


_UNSUPPORTED = {  # fit's arguments with no meaning for per-worker datasets: (default, why)
    "y": (None, "give the targets in the dataset's elements, (x, y) or (x, y, sample_weight)"),
    "sample_weight": (None, "give them in the dataset's elements, (x, y, sample_weight)"),
    "class_weight": (None, "weight the examples in the dataset's elements instead"),
    "batch_size": (None, "batch the dataset; each step trains on one batch of one worker"),
    "validation_split": (0.0, "pass validation_data"),
}


def _check_fit_arguments(model, arguments) -> None:
    x = arguments["x"]
    if not (isinstance(x, tf.data.Dataset) or callable(x)):
        raise invalid(
            "x", x, "a tf.data.Dataset of batches or a function (input_context) -> tf.data.Dataset under a "
            "ParameterServerStrategy (each worker makes its own copy of the input)",
        )
    for name, (default, instead) in _UNSUPPORTED.items():
        value = arguments[name]
        if value is not None if default is None else value != default:
            raise ValueError(
                f"fit's {name} is not supported under a ParameterServerStrategy: {instead} (received {name}={value!r})"
            )
    if arguments["steps_per_epoch"] is None:
        raise ValueError(
            "fit needs steps_per_epoch under a ParameterServerStrategy: every worker reads its own copy of "
            "the dataset, repeated, so an epoch is the number of steps you give (for example the training "
            "examples divided by the batch size)"
        )
    check_int("validation_freq", arguments["validation_freq"], minimum=1)
    steps = check_int("steps_per_epoch", arguments["steps_per_epoch"], minimum=1)
    per_call = model.steps_per_execution
    if steps % per_call:
        raise invalid("steps_per_epoch", steps, f"a multiple of the model's steps_per_execution ({per_call})")


def _dataset_of(x) -> tf.data.Dataset:
    """`x` itself, or the dataset its function makes (the input context of a single pipeline)."""
    return x if isinstance(x, tf.data.Dataset) else x(tf.distribute.InputContext())


def _repeated(x):
    """`x` (a dataset or a dataset function) repeated without end, as each worker reads it."""
    if isinstance(x, tf.data.Dataset):
        return x.repeat()
    return lambda: _dataset_of(x).repeat()  # called where each worker's copy is made


def _scheduled_train_steps(model, strategy, calls: int):
    """The function a worker runs per scheduled call: `steps_per_execution` train steps.

    Returns the last step's logs and the call's staleness. A ledger on the parameter server of
    the step counter marks each call once its steps have updated every weight, so that a call
    the coordinator runs again (its worker was lost before the chief got its result) skips the
    steps it already applied and returns the current logs (staleness -1). The staleness is read
    from a version of the weights that each call moves on after its update: the updates of
    other calls between this call's read of the weights and its own.
    """
    per_call = model.steps_per_execution
    counter = keras_compat.optimizer_step_counter(model.optimizer)
    with strategy.scope(), strategy.extended.colocate_vars_with(counter.value):
        applied = tf.Variable(tf.zeros([calls], tf.bool), trainable=False, name="applied_calls")
        version = tf.Variable(tf.constant(0, tf.int64), trainable=False, name="weights_version")

    def first_replica(value):
        return strategy.experimental_local_results(value)[0]

    @tf.function
    def train_steps(iterator, call):
        def run():
            with tf.device(version.device):
                read = tf.identity(version)
            with tf.control_dependencies([read]):  # before the step reads the weights
                for _ in range(per_call):
                    logs = strategy.run(model.train_step, args=(next(iterator),))
            # A read of each weight after the step: ordered after the step's update of it.
            updated = [tf.identity(v.value) for v in model.trainable_variables]
            with tf.device(version.device), tf.control_dependencies(updated):
                written = version.assign_add(per_call, read_value=True)
                with tf.control_dependencies([written]):
                    marked = applied.scatter_nd_update([[call]], [True])
            with tf.control_dependencies([marked]):
                return tf.nest.map_structure(lambda v: tf.identity(first_replica(v)), logs), written - read - per_call

        def skip():
            return model.get_metrics_result(), tf.constant(-1, tf.int64)

        return tf.cond(applied[call], skip, run)

    return train_steps


def _count_steps_once(model, steps: int) -> None:
    """Sets the step counter to the `steps` scheduled so far, once every call has finished.

    Keras increments the counter as soon as a step starts (the increment waits for nothing), so
    a call run again after its worker was lost may have been counted by its first run too; the
    chief, which knows the steps it scheduled, sets the count right at the end of each epoch.
    """
    counter = keras_compat.optimizer_step_counter(model.optimizer)  # (not a quotient under accumulation)
    counted = int(counter.numpy())
    if counted != steps:
        logging.getLogger("lepton_keras").warning(
            "lepton_keras: the step counter read %d after %d steps (a lost worker's step counted twice); set to %d",
            counted, steps, steps,
        )
        counter.assign(steps)


@contextlib.contextmanager
def _parameter_server_failures():
    """Turns the coordinator's error for a lost parameter server into one that says what to do."""
    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.AbortedError) as error:
        # The coordinator runs a lost worker's steps elsewhere; what reaches fit is a lost parameter server.
        raise RuntimeError(
            "a parameter server failed (or cannot be reached), and with it the variables it held: the job cannot "
            "go on. Relaunch it; "
            "keras.callbacks.BackupAndRestore (or lepton_keras.callbacks.WorkerBackupAndRestore) resumes from the "
            f"last epoch it backed up. TensorFlow's error: {type(error).__name__}: {str(error).splitlines()[0]}"
        ) from error


@_parameter_server_failures()
def _fit(model, *, x, epochs, verbose, callbacks, validation_data, initial_epoch, steps_per_epoch,
         validation_steps, validation_batch_size, validation_freq, **unsupported):  # fmt: skip
    arguments = dict(unsupported, x=x, steps_per_epoch=steps_per_epoch, validation_freq=validation_freq)
    arguments.pop("shuffle")  # the dataset shuffles, or not
    _check_fit_arguments(model, arguments)
    strategy = model.distribute_strategy
    coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)  # one per strategy
    with strategy.scope():
        keras_compat.build_for_training(model, next(iter(_dataset_of(x))))
    iterator = iter(coordinator.create_per_worker_dataset(_repeated(x)))
    per_call = model.steps_per_execution
    train_steps = _scheduled_train_steps(model, strategy, calls=epochs * steps_per_epoch // per_call)

    if not isinstance(callbacks, keras.callbacks.CallbackList):
        callbacks = keras.callbacks.CallbackList(
            callbacks, add_history=True, add_progbar=verbose != 0, verbose=verbose, epochs=epochs,
            steps=steps_per_epoch, model=model,
        )  # fmt: skip
    model.stop_training = False
    parameter_server.reset_staleness(model)
    in_flight_limit = IN_FLIGHT_PER_WORKER * parameter_server.number_of_workers(strategy)
    callbacks.on_train_begin()  # (BackupAndRestore restores the step counter here)
    steps_scheduled = int(keras_compat.optimizer_step_counter(model.optimizer).numpy())
    training_logs = None
    for epoch in range(keras_compat.take_fit_start_epoch(model, initial_epoch), epochs):
        model.reset_metrics()
        callbacks.on_epoch_begin(epoch)
        in_flight = collections.deque()

        def finish_oldest():
            last_step, remote = in_flight.popleft()
            try:
                logs, staleness = remote.fetch()
            except (tf.errors.UnavailableError, tf.errors.AbortedError):
                # The call finished, then its worker was lost with the result: the running logs
                # from the parameter servers instead (were they lost, this raises again).
                logs, staleness = model.get_metrics_result(), -1
            if staleness >= 0:  # (-1: a call run again whose steps had been applied, or a lost result)
                parameter_server.record_staleness(model, staleness)
            callbacks.on_train_batch_end(last_step, logs)

        for first_step in range(0, steps_per_epoch, per_call):
            callbacks.on_train_batch_begin(first_step)
            call = tf.constant((epoch * steps_per_epoch + first_step) // per_call)
            in_flight.append((first_step + per_call - 1, coordinator.schedule(train_steps, args=(iterator, call))))
            steps_scheduled += per_call
            while len(in_flight) > in_flight_limit:
                finish_oldest()
            if model.stop_training:
                break
        coordinator.join()
        while in_flight:
            finish_oldest()
        _count_steps_once(model, steps_scheduled)
        epoch_logs = {name: float(value) for name, value in model.get_metrics_result().items()}
        if validation_data is not None and (epoch + 1) % validation_freq == 0:
            val_x, val_y, val_sample_weight = keras.utils.unpack_x_y_sample_weight(validation_data)
            val_logs = model.evaluate(
                x=val_x, y=val_y, sample_weight=val_sample_weight, batch_size=validation_batch_size,
                steps=validation_steps, callbacks=callbacks, return_dict=True,
            )  # fmt: skip
            epoch_logs.update({"val_" + name: value for name, value in val_logs.items()})
        callbacks.on_epoch_end(epoch, epoch_logs)
        training_logs = epoch_logs
        if model.stop_training:
            break
    callbacks.on_train_end(logs=training_logs)
    return model.history
