"""The evaluation switch of Schedule-Free optimizers: evaluate, predict and save at x, train at y.

A Schedule-Free optimizer trains the model's weights at y, between its two sequences z (the
steps) and x (their running average, the weights to evaluate and ship): x = (y - (1 - beta) z)
/ beta. The authors' PyTorch optimizers switch with `optimizer.eval()` and `optimizer.train()`;
here `ScheduleFreeEvaluation` does it in `fit` and `schedule_free_eval(model)` in a custom loop.
Both work with lepton_keras's ScheduleFreeAdamW and ScheduleFreeSGD, and with Keras's own
`keras.optimizers.ScheduleFreeAdamW`.
"""

from __future__ import annotations

import contextlib
import weakref

import keras
import numpy as np
from keras import ops

from lepton_keras.distribute import keras_compat
from lepton_keras.optimizers.base import scalar
from lepton_keras.optimizers.schedule_free import ScheduleFree, schedule_free_evaluation_point
from lepton_keras.optimizers.weight_averaging import recompute_batch_norm_statistics
from lepton_keras.validation import check_int, invalid

# The models now at x, each with the exact values to put back: (variables, y values, batch-norm
# statistics). Kept per model, not per callback, so that any switch finds a model's y.
_TRAINING_VALUES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def find_schedule_free(optimizer):
    """The Schedule-Free optimizer in `optimizer`, looking through wrappers and LossScaleOptimizer.

    Raises:
        ValueError: neither a lepton_keras Schedule-Free optimizer nor Keras's ScheduleFreeAdamW in it.
    """
    current = optimizer
    while current is not None:
        if isinstance(current, ScheduleFree) or keras_compat.is_keras_schedule_free(current):
            return current
        current = getattr(current, "inner_optimizer", None)
    raise invalid("optimizer", optimizer,
                  "an optimizer holding ScheduleFreeAdamW, ScheduleFreeSGD or keras.optimizers.ScheduleFreeAdamW")


def evaluation_weights(optimizer, variables) -> list:
    """x for each of `variables` (y where the variable has taken no step yet), as tensors."""
    if isinstance(optimizer, ScheduleFree):
        return optimizer.evaluation_weights(variables)
    started = ops.greater(optimizer.iterations, 0)
    points = []
    for variable in variables:
        z = keras_compat.keras_schedule_free_z(optimizer, variable)
        x = schedule_free_evaluation_point(variable.value, z.value,
                                           interpolation=scalar(float(optimizer.beta_1), variable.dtype))
        points.append(ops.where(started, x, variable.value))
    return points


def _trained_variables(model, optimizer) -> list:
    trained = []
    for variable in model.trainable_variables:
        try:
            keras_compat.optimizer_variable_index(optimizer, variable)
        except KeyError:
            continue  # frozen when the optimizer was built: no z
        trained.append(variable)
    return trained


def _batch_norm_statistics(layer) -> list:
    """The moving means and variances of every BatchNormalization in `layer`, however deeply nested."""
    found = []
    for child in getattr(layer, "layers", []):
        if isinstance(child, keras.layers.BatchNormalization):
            found += [child.moving_mean, child.moving_variance]
        found += _batch_norm_statistics(child)
    return found


def move_to_evaluation_weights(model, *, optimizer=None, batch_norm_data=None, batch_norm_steps=None) -> bool:
    """Sets the model's trained weights to x; returns False (and changes nothing) if they already are.

    With `batch_norm_data`, the batch-norm statistics are then recomputed at x
    (`recompute_batch_norm_statistics` over at most `batch_norm_steps` batches).
    """
    if model in _TRAINING_VALUES:
        return False
    optimizer = find_schedule_free(optimizer if optimizer is not None else model.optimizer)
    if not optimizer.built:
        return False  # no step yet: x = y
    variables = _trained_variables(model, optimizer)
    points = evaluation_weights(optimizer, variables)  # all of x before any y is overwritten
    statistics = _batch_norm_statistics(model) if batch_norm_data is not None else []
    _TRAINING_VALUES[model] = (variables + statistics,
                               [np.array(ops.convert_to_numpy(v)) for v in variables + statistics])
    for variable, point in zip(variables, points):
        variable.assign(point)
    if batch_norm_data is not None:
        recompute_batch_norm_statistics(model, batch_norm_data, batch_norm_steps)
    return True


def move_to_training_weights(model) -> bool:
    """Puts back exactly the weights (and batch-norm statistics) the model had before it moved to x;
    returns False if it is not at x."""
    saved = _TRAINING_VALUES.pop(model, None)
    if saved is None:
        return False
    for variable, value in zip(*saved):
        variable.assign(value)
    return True


def _checked_batch_norm_options(batch_norm_data, batch_norm_steps):
    if batch_norm_data is not None and not hasattr(batch_norm_data, "__iter__"):
        raise invalid("batch_norm_data", batch_norm_data, "a tf.data.Dataset or an iterable of batches, or None")
    return check_int("batch_norm_steps", batch_norm_steps, minimum=1, allow_none=True)


@contextlib.contextmanager
def schedule_free_eval(model, *, batch_norm_data=None, batch_norm_steps=None, optimizer=None):
    """Within the `with` block the model holds x; afterwards exactly (bitwise) its training weights y.

    For custom training loops: evaluate, predict or save a model trained by a Schedule-Free
    optimizer at x, its averaged weights. Before the first step x = y. Nested inside another
    switch to x (or `ScheduleFreeEvaluation` between epochs), it leaves the model at x.

    BatchNormalization: its moving statistics were gathered at y. The authors advise
    recomputing them at x: pass `batch_norm_data` (a few training batches) and they are
    recomputed at x inside the block and restored afterwards.

    Args:
        model: a Keras model compiled with a Schedule-Free optimizer (or pass `optimizer`).
        batch_norm_data: a tf.data.Dataset or iterable of training batches to recompute the
            batch-norm statistics at x, or None (default: keep them).
        batch_norm_steps: use at most this many batches, >= 1 or None (default: all).
        optimizer: the Schedule-Free optimizer (default None: the model's, looked for through
            wrappers and LossScaleOptimizer).

    Example:
        with schedule_free_eval(model):
            model.evaluate(x_val, y_val)
            model.save("averaged.keras")
    """
    if not isinstance(model, keras.Model):
        raise invalid("model", model, "a keras.Model")
    batch_norm_steps = _checked_batch_norm_options(batch_norm_data, batch_norm_steps)
    moved = move_to_evaluation_weights(model, optimizer=optimizer, batch_norm_data=batch_norm_data,
                                       batch_norm_steps=batch_norm_steps)  # fmt: skip
    try:
        yield model
    finally:
        if moved:
            move_to_training_weights(model)


@keras.saving.register_keras_serializable(package="lepton_keras")
class ScheduleFreeEvaluation(keras.callbacks.Callback):
    """Evaluates, predicts and saves at x, the Schedule-Free average; trains at y.

    When to use it: in every `fit` with ScheduleFreeAdamW, ScheduleFreeSGD or Keras's
    ScheduleFreeAdamW (the authors' `optimizer.eval()` / `optimizer.train()`). Without it
    validation, checkpoints and the saved model use y, which trails x (with the default
    beta = 0.9, y = 0.1 z + 0.9 x).

    What it does, in `fit`: the weights move to x for validation and at the end of each
    epoch (so a `keras.callbacks.ModelCheckpoint` placed AFTER this callback in the list
    saves x), and back to exactly y when the next epoch begins. After `fit` the model holds
    x: `model.evaluate`, `predict` and `save` then use x. The next `fit` with this callback
    (any instance) resumes from exactly y; a `fit` without it would train from x. In
    `evaluate` and `predict` called with this callback the model holds x during the call
    only. ModelCheckpoint with an integer `save_freq` (mid-epoch saves) sees y. Back-up
    callbacks (keras.callbacks.BackupAndRestore, WorkerBackupAndRestore) go BEFORE this one:
    they then back up y, from which training resumes exactly (a model saved at x resumes
    from x, not y).

    BatchNormalization: pass `batch_norm_data` (a few training batches) to recompute the
    moving statistics at x at each move to x (the authors' advice); the statistics of
    training are restored with y.

    Args:
        batch_norm_data: a tf.data.Dataset or iterable of training batches, or None
            (default: keep the statistics of training).
        batch_norm_steps: use at most this many batches, >= 1 or None (default: all).

    Example:
        model.compile(optimizer=lepton_keras.optimizers.ScheduleFreeAdamW(1e-3, warmup_steps=100), loss="mse")
        model.fit(x, y, validation_data=(x_val, y_val), epochs=10,
                  callbacks=[ScheduleFreeEvaluation(), keras.callbacks.ModelCheckpoint("best.keras")])
    """

    def __init__(self, *, batch_norm_data=None, batch_norm_steps=None):
        super().__init__()
        self.batch_norm_steps = _checked_batch_norm_options(batch_norm_data, batch_norm_steps)
        self.batch_norm_data = batch_norm_data
        self._in_fit = False
        self._moved_for_call = False

    def _to_evaluation(self) -> bool:
        return move_to_evaluation_weights(self.model, batch_norm_data=self.batch_norm_data,
                                          batch_norm_steps=self.batch_norm_steps)  # fmt: skip

    def on_train_begin(self, logs=None):
        find_schedule_free(self.model.optimizer)
        self._in_fit = True
        move_to_training_weights(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        move_to_training_weights(self.model)

    def on_epoch_end(self, epoch, logs=None):
        self._to_evaluation()

    def on_train_end(self, logs=None):
        self._in_fit = False
        self._to_evaluation()

    def _begin_call(self):
        # Inside fit, validation leaves the model at x: on_epoch_end follows.
        moved = self._to_evaluation()
        self._moved_for_call = moved and not self._in_fit

    def _end_call(self):
        if self._moved_for_call:
            self._moved_for_call = False
            move_to_training_weights(self.model)

    def on_test_begin(self, logs=None):
        self._begin_call()

    def on_test_end(self, logs=None):
        self._end_call()

    def on_predict_begin(self, logs=None):
        self._begin_call()

    def on_predict_end(self, logs=None):
        self._end_call()

    def get_config(self):
        # The batch-norm data is not part of the config.
        return {"batch_norm_steps": self.batch_norm_steps}
