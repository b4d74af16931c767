"""PeriodicSync: replicas that train on their own shards and average every H steps.

every=1 against today's synchronous path (bitwise); H > 1 against the float64 NumPy reference of
tests/distribute/reference/periodic_sync.py (local SGD, post-local SGD, DiLoCo's outer Nesterov
step, 16-bit deltas) for Keras's SGD and Adam and lepton_keras's Lookahead, on 2 and 4 replicas
and 2 workers; each replica's copy read between and after syncs; the full syncs of evaluate,
predict and saving; and bad input, refused before any step.
"""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

import lepton_keras
from lepton_keras.distribute import PeriodicSync, get_strategy, periodic_sync, set_periodic_sync
from lepton_keras.optimizers import GradientAccumulation, SharpnessAwareModel
from tests.distribute.reference.periodic_sync import periodic_sync_training
from tests.optimizers.reference.lookahead import Lookahead
from tests.optimizers.reference.wrapper import Adam, Sgd
from tests.support.cases import regression_data
from tests.support.harness import TrainingCase, max_difference, run_case, run_case_on_workers
from tests.support.numerics import assert_close

LEARNING_RATE = 0.05
GLOBAL_BATCH = 16
REFERENCE_OPTIMIZERS = {
    "sgd": lambda: Sgd(LEARNING_RATE, momentum=0.9),
    "adam": lambda: Adam(LEARNING_RATE),
    "lookahead_adam": lambda: Lookahead(Adam(LEARNING_RATE), sync_period=2, slow_step_size=0.5),
}


def _case(optimizer="sgd", steps=8, **sync):
    return TrainingCase("tests.distribute.cases:regression_network", "tests.support.cases:regression_data",
                        steps=steps, global_batch_size=GLOBAL_BATCH, model_options={"optimizer": optimizer},
                        periodic_sync=sync or None)  # fmt: skip


def _reference(case, replicas, *, outer_learning_rate=None, outer_momentum=0.0):
    start = run_case(dataclasses.replace(case, steps=0, periodic_sync=None))
    x, y = regression_data(case.steps * GLOBAL_BATCH, case.seed)
    weights, _ = periodic_sync_training(
        start.weights, x, y, make_optimizer=REFERENCE_OPTIMIZERS[case.model_options["optimizer"]],
        replicas=replicas, every=case.periodic_sync["every"], warmup_steps=case.periodic_sync.get("warmup_steps", 0),
        steps=case.steps, global_batch_size=GLOBAL_BATCH, outer_learning_rate=outer_learning_rate,
        outer_momentum=outer_momentum,
    )  # fmt: skip
    return weights


# --- the setting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"every": 0}, "every"),
        ({"every": 2.0}, "every"),
        ({"every": "16"}, "every"),
        ({"every": True}, "every"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"warmup_steps": 1.5}, "warmup_steps"),
        ({"compression": "int8"}, "compression"),
        ({"compression": "float32"}, "compression"),
        ({"outer_optimizer": "adam"}, "outer_optimizer"),
        ({"outer_optimizer": object()}, "outer_optimizer"),
        ({"outer_optimizer": keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)}, "outer_optimizer"),
    ],
)
def test_bad_arguments_are_errors_that_name_them(arguments, named):
    with pytest.raises(ValueError, match=f"^{named} must be"):
        PeriodicSync(**arguments)


def test_a_built_outer_optimizer_is_refused():
    outer = keras.optimizers.SGD()
    outer.build([keras.Variable(np.zeros(2))])
    with pytest.raises(ValueError, match="outer_optimizer is already built"):
        PeriodicSync(every=4, outer_optimizer=outer)


def test_the_setting_is_given_to_a_strategy_and_read_back():
    strategy = get_strategy("mirrored", cpu_replicas=2, periodic_sync=PeriodicSync(every=8, warmup_steps=4))
    assert periodic_sync(strategy) == periodic_sync(strategy) and periodic_sync(strategy).every == 8
    set_periodic_sync(strategy, None)
    assert periodic_sync(strategy).is_synchronous
    with pytest.raises(ValueError, match="^sync must be a PeriodicSync or None"):
        set_periodic_sync(strategy, 16)
    with pytest.raises(ValueError, match="^periodic_sync must be a PeriodicSync or None"):
        get_strategy("mirrored", cpu_replicas=2, periodic_sync={"every": 16})
    with pytest.raises(ValueError, match="^strategy must be a tf.distribute.Strategy"):
        set_periodic_sync(None, PeriodicSync(every=4))


def test_the_names_are_reached_from_import_lepton_keras():
    assert lepton_keras.distribute.PeriodicSync is PeriodicSync
    assert callable(lepton_keras.distribute.synchronize_replicas)


def test_the_schedule_syncs_after_warmup_plus_multiples_of_every():
    sync = PeriodicSync(every=4, warmup_steps=2)
    assert [after for after in range(1, 15) if sync.syncs_between(after - 1, after)] == [6, 10, 14]
    assert sync.syncs_between(4, 7) and not sync.syncs_between(6, 9)  # steps_per_execution 3
    assert [sync.is_local(step) for step in range(4)] == [False, False, True, True]
    assert PeriodicSync(every=1).is_synchronous and not PeriodicSync(every=1).is_local(5)


# --- bad combinations, refused before any step ------------------------------------------------------


def _fit_refused(strategy, make_optimizer, match, **compile_options):
    x, y = regression_data(64, 0)
    with strategy.scope():
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
        model.compile(optimizer=make_optimizer(), loss="mse", **compile_options)
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=match):
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_accumulation_whose_cycle_does_not_divide_every_is_refused_before_any_step():
    strategy = get_strategy("mirrored", cpu_replicas=2, periodic_sync=PeriodicSync(every=4))
    _fit_refused(strategy, lambda: GradientAccumulation(keras.optimizers.SGD(0.1), steps=3),
                 "every=4 must be a multiple of the gradient accumulation's steps=3")  # fmt: skip
    _fit_refused(strategy, lambda: keras.optimizers.SGD(0.1, gradient_accumulation_steps=2),
                 "gradient_accumulation_steps=2; with PeriodicSync use")  # fmt: skip


def test_warmup_inside_an_accumulation_cycle_and_steps_per_execution_are_refused():
    strategy = get_strategy("mirrored", cpu_replicas=2, periodic_sync=PeriodicSync(every=4, warmup_steps=3))
    _fit_refused(strategy, lambda: GradientAccumulation(keras.optimizers.SGD(0.1), steps=2),
                 "warmup_steps=3 must be a multiple of the gradient accumulation's steps=2")  # fmt: skip
    strategy = get_strategy("mirrored", cpu_replicas=2, periodic_sync=PeriodicSync(every=4))
    _fit_refused(strategy, lambda: keras.optimizers.SGD(0.1),
                 "every=4 must be a multiple of the model's steps_per_execution=3", steps_per_execution=3)  # fmt: skip


def test_a_loss_scale_optimizer_is_refused():
    strategy = get_strategy("mirrored", cpu_replicas=2, periodic_sync=PeriodicSync(every=4))
    _fit_refused(strategy, lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1)),
                 "does not support a LossScaleOptimizer")  # fmt: skip


# --- every=1 is today's path -------------------------------------------------------------------


@pytest.mark.parametrize("replicas", [2, 4])
def test_every_1_is_the_synchronous_path_bitwise(replicas):
    synchronous = run_case(_case("adam"), replicas=replicas)
    assert max_difference(run_case(_case("adam", every=1), replicas=replicas), synchronous) == 0.0


# --- H > 1 against the NumPy reference ------------------------------------------------------------


@pytest.mark.parametrize("replicas", [2, 4])
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "lookahead_adam"])
def test_local_sgd_equals_independent_replicas_averaged_every_h_steps(optimizer, replicas):
    case = _case(optimizer, steps=8, every=4)
    trained = run_case(case, replicas=replicas)
    assert_close(trained.weights, _reference(case, replicas), 1e-5)
    # The test can fail: synchronous training ends elsewhere.
    synchronous = run_case(dataclasses.replace(case, periodic_sync=None), replicas=replicas)
    assert max_difference(trained, synchronous) > 1e-3


def test_post_local_sgd_warmup_and_an_end_between_syncs_with_adam():
    # Synchronous for 3 steps, then local; the end (step 10) falls between the syncs after 7 and 11,
    # so fit's full sync averages the weights and Adam's moments there.
    case = _case("adam", steps=10, every=4, warmup_steps=3)
    assert_close(run_case(case, replicas=2).weights, _reference(case, 2), 1e-5)


def test_the_full_sync_at_the_end_averages_the_optimizer_moments():
    case = _case("adam", steps=6, every=4)
    trained = run_case(case, replicas=2)
    start = run_case(dataclasses.replace(case, steps=0, periodic_sync=None))
    x, y = regression_data(case.steps * GLOBAL_BATCH, case.seed)
    _, optimizers = periodic_sync_training(start.weights, x, y, make_optimizer=REFERENCE_OPTIMIZERS["adam"],
                                           replicas=2, every=4, steps=6, global_batch_size=GLOBAL_BATCH)  # fmt: skip
    # Keras's Adam variables: iterations, learning rate, then m and v per weight, interleaved.
    moments = trained.optimizer_variables[2:]
    assert_close(moments[0::2], optimizers[0].m, 1e-5)
    assert_close(moments[1::2], optimizers[0].v, 1e-5)


def test_diloco_outer_nesterov_step_on_the_mean_delta():
    case = _case("sgd", steps=12, every=4, outer_optimizer="diloco")
    expected = _reference(case, 2, outer_learning_rate=0.7, outer_momentum=0.9)
    assert_close(run_case(case, replicas=2).weights, expected, 1e-5)


@pytest.mark.parametrize(("compression", "tolerance"), [("float16", 2e-3), ("bfloat16", 2e-2)])
def test_compressed_deltas_stay_within_the_16_bit_rounding_of_the_reference(compression, tolerance):
    case = _case("sgd", steps=8, every=4, compression=compression)
    trained = run_case(case, replicas=2)
    expected = _reference(case, 2)
    assert_close(trained.weights, expected, tolerance)
    assert max_difference(trained, run_case(dataclasses.replace(case, periodic_sync={"every": 4}), replicas=2)) > 0


# --- each replica's copy ---------------------------------------------------------------------------


def _replica_copies(model):
    return [[np.array(copy) for copy in model.distribute_strategy.experimental_local_results(w.value)]
            for w in model.trainable_variables]  # fmt: skip


def _replicas_agree(model) -> bool:
    return all(all(np.array_equal(copies[0], c) for c in copies[1:]) for copies in _replica_copies(model))


class RecordAgreement(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.agree = []

    def on_train_batch_end(self, batch, logs=None):
        self.agree.append(_replicas_agree(self.model))


def _model(strategy, optimizer="sgd"):
    with strategy.scope():
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(2)])
        model.compile(optimizer={"sgd": keras.optimizers.SGD(0.05), "adam": keras.optimizers.Adam(0.05)}[optimizer],
                      loss="mse")  # fmt: skip
    return model


def test_replicas_diverge_between_syncs_and_agree_right_after_one():
    strategy = get_strategy("mirrored", cpu_replicas=4, periodic_sync=PeriodicSync(every=4, warmup_steps=2))
    model = _model(strategy)
    x, y = regression_data(10 * GLOBAL_BATCH, 1)
    record = RecordAgreement()
    model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[record])
    # Steps 1-2 synchronous (warmup), then local; syncs after steps 6 and 10.
    assert record.agree == [True, True, False, False, False, True, False, False, False, True]
    assert _replicas_agree(model)


class RecordCopies(keras.callbacks.Callback):
    """Each replica's copies, after every step, of the BatchNorm statistics and of Adam's first moments."""

    def __init__(self):
        super().__init__()
        self.statistics, self.moments, self.iterations = [], [], []

    def on_train_batch_end(self, batch, logs=None):
        model, strategy = self.model, self.model.distribute_strategy
        copies = lambda variables: [[np.array(c) for c in strategy.experimental_local_results(v.value)]  # noqa: E731
                                    for v in variables]  # fmt: skip
        self.statistics.append(copies([v for v in model.non_trainable_variables if "moving" in v.path]))
        self.moments.append(copies([v for v in model.optimizer.variables if "momentum" in v.path]))
        self.iterations.append(int(model.optimizer.iterations.numpy()))


def _all_agree(copies) -> bool:
    return all(all(np.array_equal(c[0], other) for other in c[1:]) for c in copies)


def test_a_sync_averages_batchnorm_statistics_and_keeps_the_optimizer_slots_local():
    strategy = get_strategy("mirrored", cpu_replicas=2, periodic_sync=PeriodicSync(every=4))
    with strategy.scope():
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16), keras.layers.BatchNormalization(),
                                  keras.layers.Activation("tanh"), keras.layers.Dense(2)])  # fmt: skip
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    x, y = regression_data(4 * GLOBAL_BATCH, 4)
    record = RecordCopies()
    model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[record])
    # Before the sync each replica keeps its own batches' statistics and moments; the sync after
    # step 4 averages the statistics (as the weights) and leaves the moments local; the iteration
    # counter counts the steps, the same on every replica.
    assert not _all_agree(record.statistics[2]) and not _all_agree(record.moments[2])
    assert _all_agree(record.statistics[3]) and not _all_agree(record.moments[3])
    assert record.iterations == [1, 2, 3, 4]
    assert _replicas_agree(model)


class CallMidEpoch(keras.callbacks.Callback):
    """After the second step (local, replicas apart), calls `entry_point` as a checkpoint callback would."""

    def __init__(self, entry_point, x, y, folder):
        super().__init__()
        self.entry_point, self.x, self.y, self.folder = entry_point, x, y, folder

    def on_train_batch_end(self, batch, logs=None):
        if batch != 1:
            return
        model = self.model
        self.before, self.agreed_before = _replica_copies(model), _replicas_agree(model)
        {
            "evaluate": lambda: model.evaluate(self.x, self.y, verbose=0),
            "predict": lambda: model.predict(self.x, verbose=0),
            "save_weights": lambda: model.save_weights(self.folder / "model.weights.h5"),
            "save": lambda: model.save(self.folder / "model.keras"),
        }[self.entry_point]()
        self.after, self.agreed_after = _replica_copies(model), _replicas_agree(model)
        strategy = model.distribute_strategy
        slots = [strategy.experimental_local_results(v.value) for v in model.optimizer.variables]
        self.slots_agree = all(all(np.array_equal(s[0], other) for other in s[1:]) for s in slots)


class RecordLastCopies(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        self.copies = _replica_copies(self.model)


def _network(sharpness_aware: bool):
    keras.utils.set_random_seed(7)
    network = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(2)])
    model = SharpnessAwareModel(network, rho=0.05) if sharpness_aware else network
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    return model


@pytest.mark.parametrize("sharpness_aware", [False, True], ids=["adam", "sam_adam"])
def test_between_syncs_each_replica_trains_as_one_process_alone_on_its_shard(sharpness_aware):
    steps, shard = 3, GLOBAL_BATCH // 2
    x, y = regression_data(steps * GLOBAL_BATCH, 5)
    strategy = get_strategy("mirrored", cpu_replicas=2, periodic_sync=PeriodicSync(every=1000))
    with strategy.scope():
        model = _network(sharpness_aware)
    record = RecordLastCopies()
    model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[record])
    for replica in range(2):
        rows = np.concatenate([np.arange(t * GLOBAL_BATCH + replica * shard, t * GLOBAL_BATCH + (replica + 1) * shard)
                               for t in range(steps)])  # fmt: skip
        alone = _network(sharpness_aware)
        alone.fit(x[rows], y[rows], batch_size=shard, epochs=1, shuffle=False, verbose=0)
        assert_close([copies[replica] for copies in record.copies], alone.get_weights(), 1e-5)


@pytest.mark.parametrize("entry_point", ["evaluate", "predict", "save_weights", "save"])
def test_evaluate_predict_and_saving_see_one_model(entry_point, tmp_path):
    strategy = get_strategy("mirrored", cpu_replicas=2, periodic_sync=PeriodicSync(every=8))
    model = _model(strategy, "adam")
    x, y = regression_data(3 * GLOBAL_BATCH, 2)
    mid_epoch = CallMidEpoch(entry_point, x, y, tmp_path)
    model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[mid_epoch])
    assert not mid_epoch.agreed_before
    assert mid_epoch.agreed_after and mid_epoch.slots_agree
    assert_close([c[0] for c in mid_epoch.after], [np.mean(c, axis=0) for c in mid_epoch.before], 1e-6)
    if entry_point == "save_weights":
        restored = _model(tf.distribute.get_strategy(), "adam")
        restored.optimizer.build(restored.trainable_variables)
        restored.load_weights(tmp_path / "model.weights.h5")
        assert_close(restored.get_weights(), [c[0] for c in mid_epoch.after], 0.0)


def test_the_logged_loss_of_a_local_step_is_the_mean_of_the_replicas_own_losses():
    strategy = get_strategy("mirrored", cpu_replicas=2, periodic_sync=PeriodicSync(every=4))
    model = _model(strategy)
    x, y = regression_data(GLOBAL_BATCH, 3)
    start = model.get_weights()
    history = model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0)
    prediction = np.tanh(x @ start[0] + start[1]) @ start[2] + start[3]
    assert history.history["loss"][0] == pytest.approx(float(np.mean((prediction - y) ** 2)), rel=1e-5)


# --- 2 workers -----------------------------------------------------------------------------------


@pytest.mark.multiworker
def test_two_workers_every_1_bitwise_and_every_4_against_the_reference():
    synchronous = run_case_on_workers(_case("adam"))
    every_1 = run_case_on_workers(_case("adam", every=1))
    assert max_difference(every_1[0], synchronous[0]) == 0.0 == max_difference(every_1[1], synchronous[1])
    case = _case("adam", steps=10, every=4, warmup_steps=2)
    workers = run_case_on_workers(case)
    # The same model on both (the optimizer's moments stay each worker's own after a periodic sync).
    assert all(np.array_equal(a, b) for a, b in zip(workers[0].weights, workers[1].weights))
    assert max_difference(workers[0], workers[1]) > 0
    assert_close(workers[0].weights, _reference(case, 2), 1e-5)
