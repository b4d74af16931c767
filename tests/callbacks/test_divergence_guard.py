"""DivergenceGuard: restorations from any step, strategies, wrappers, giving up, arguments, config, two replicas."""

import keras
import numpy as np
import pytest

from lepton_keras.callbacks import divergence_guard as guard_module
from lepton_keras.callbacks.divergence_guard import DivergenceGuard
from lepton_keras.callbacks.warmup import LearningRateWarmup
from lepton_keras.distribute import get_strategy
from lepton_keras.optimizers.gradient_accumulation import GradientAccumulation
from lepton_keras.optimizers.lookahead import Lookahead
from tests.callbacks import cases
from tests.callbacks.cases import BATCH, Recorder, assert_round_trip, fit, harness_case, linear_model, optimizer_state
from tests.callbacks.reference.warmup import warmup_multipliers
from tests.support.cases import regression_data
from tests.support.harness import max_difference, run_case
from tests.support.numerics import assert_close

BATCHES = 16  # one epoch of BATCH rows each
SNAPSHOT_EVERY = 10  # the first snapshot after the start is taken after step 10 and vouched for by step 11
ADAM_RATE = 0.01
TOLERANCE = 1e-6
TRAINING_TOLERANCE = 1e-5


def state(model) -> list[np.ndarray]:
    return [np.array(w) for w in model.get_weights()] + optimizer_state(model.optimizer)


def strategy_for(replicas):
    return get_strategy("mirrored", cpu_replicas=replicas) if replicas else get_strategy("default")


def adam_mlp(strategy, learning_rate=ADAM_RATE, wrapper=None, weights=None):
    """small_mlp with Adam (optionally wrapped), built in `strategy`'s scope, from `weights` if given."""
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((cases.FEATURES,)), keras.layers.Dense(8, activation="relu"),
                                  keras.layers.Dense(cases.TARGETS)])  # fmt: skip
        optimizer = keras.optimizers.Adam(learning_rate)
        if wrapper == "lookahead":
            optimizer = Lookahead(optimizer, sync_period=3)
        elif wrapper == "accumulation":
            optimizer = GradientAccumulation(optimizer, steps=2)
        model.compile(optimizer=optimizer, loss="mse")
    if weights is not None:
        model.set_weights(weights)
    return model


def nan_data(first_bad: int, last_bad: int | None = None):
    """regression data whose batches first_bad..last_bad (default: first_bad only) have NaN targets: a NaN loss
    and NaN gradients, so one update turns every weight and Adam moment into NaN."""
    x, y = regression_data(BATCHES * BATCH, seed=12)
    last_bad = first_bad if last_bad is None else last_bad
    y[first_bad * BATCH : (last_bad + 1) * BATCH] = np.nan
    return x, y


def rows(first: int, stop: int = BATCHES) -> slice:
    return slice(first * BATCH, stop * BATCH)


def expected_after_skipping(bad: int, strategy, wrapper=None, weights=None):
    """The run that skipped the bad batch: back to the last good snapshot, then the later batches at half the rate.

    The last good snapshot is the start before step SNAPSHOT_EVERY + 1, the state after
    SNAPSHOT_EVERY steps afterwards (the loss of step SNAPSHOT_EVERY + 1 vouches for it).
    """
    x, y = nan_data(bad)
    model = adam_mlp(strategy, wrapper=wrapper, weights=weights)
    if bad > SNAPSHOT_EVERY:
        fit(model, x[rows(0, SNAPSHOT_EVERY)], y[rows(0, SNAPSHOT_EVERY)], [])
    model.optimizer.learning_rate = ADAM_RATE / 2
    fit(model, x[rows(bad + 1)], y[rows(bad + 1)], [])
    return model


@pytest.mark.parametrize(
    "bad, replicas, wrapper",
    [(0, None, None), (1, None, None), (2, None, None), (5, None, None), (13, None, None),
     (1, 2, None), (5, 2, None), (13, 2, None),
     (1, None, "lookahead"), (1, None, "accumulation"), (1, 2, "lookahead")],
)  # fmt: skip
def test_a_nan_recovers_from_any_step_like_the_run_that_skipped_the_batch(bad, replicas, wrapper):
    strategy = strategy_for(replicas)
    x, y = nan_data(bad)
    model = adam_mlp(strategy, wrapper=wrapper)
    start = model.get_weights()
    guard = DivergenceGuard(snapshot_every=SNAPSHOT_EVERY)
    fit(model, x, y, [guard])
    restored_step = SNAPSHOT_EVERY if bad > SNAPSHOT_EVERY else 0
    assert [(event.step, event.restored_step) for event in guard.events] == [(bad + 1, restored_step)]
    expected = expected_after_skipping(bad, strategy, wrapper, weights=start)
    assert_close(state(model), state(expected), TOLERANCE)
    assert all(np.all(np.isfinite(array)) for array in state(model))


@pytest.mark.parametrize("bad, replicas", [(1, None), (12, 2)])  # 4 diverged batches: 3 restorations, then stop
def test_giving_up_leaves_the_last_good_snapshot(bad, replicas):
    strategy = strategy_for(replicas)
    x, y = nan_data(bad, BATCHES - 1)  # every batch from `bad` on diverges
    model = adam_mlp(strategy)
    start = model.get_weights()
    with pytest.raises(RuntimeError, match=r"after 3 restorations"):
        fit(model, x, y, [DivergenceGuard(snapshot_every=SNAPSHOT_EVERY, max_attempts=3)])
    good = adam_mlp(strategy, weights=start)  # the snapshot: the start, or the state after SNAPSHOT_EVERY steps
    if bad > SNAPSHOT_EVERY:
        fit(good, x[rows(0, SNAPSHOT_EVERY)], y[rows(0, SNAPSHOT_EVERY)], [])
    else:
        good.optimizer.build(good.trainable_variables)
    assert all(np.all(np.isfinite(array)) for array in state(model))
    assert_close(state(model), state(good), TOLERANCE)


def test_an_unbuilt_model_is_refused_before_the_first_step():
    x, y = regression_data(2 * BATCH, seed=14)
    model = keras.Sequential([keras.layers.Dense(cases.TARGETS)])  # no Input: Keras builds it in the first step
    model.compile(optimizer="adam", loss="mse")
    with pytest.raises(RuntimeError, match="DivergenceGuard needs a built model"):
        fit(model, x, y, [DivergenceGuard()])


def test_restoring_into_other_variables_is_an_error():
    model = adam_mlp(get_strategy("default"))
    guard = DivergenceGuard()
    guard.set_model(model)
    guard.set_params({"epochs": 1, "steps": 4})
    guard.on_train_begin()
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")  # other optimizer variables
    model.optimizer.build(model.trainable_variables)
    guard.on_epoch_begin(0)
    with pytest.raises(RuntimeError, match="variables changed since the snapshot"):
        guard.on_train_batch_end(0, {"loss": float("nan")})


def numpy_mlp_loss(weights, x, y):
    """The MSE of small_mlp (Dense relu -> Dense) in float64."""
    kernel_1, bias_1, kernel_2, bias_2 = (np.asarray(w, np.float64) for w in weights[:4])
    hidden = np.maximum(x @ kernel_1 + bias_1, 0.0)
    return float(np.mean((hidden @ kernel_2 + bias_2 - y) ** 2))


def test_guard_restores_the_good_snapshot_bitwise_and_halves_the_rate():
    x, y = cases.poisoned_regression(64, seed=0)
    keras.utils.set_random_seed(0)
    model = cases.small_mlp()
    guard, recorder = DivergenceGuard(spike_factor=10.0, window=5, snapshot_every=1), Recorder()
    fit(model, x, y, [guard, recorder], epochs=3, batch_size=16)
    # batch 2 of 4 holds the corrupt row: one restoration per epoch
    assert [event.step for event in guard.events] == [3, 7, 11]
    for attempt, event in enumerate(guard.events):
        restored, snapshot = recorder.states[event.step], recorder.states[event.restored_step]
        assert event.restored_step == event.step - 2  # the last snapshot a later good loss vouched for
        assert_close(restored, snapshot, tolerance=0.0)
        assert event.learning_rate == pytest.approx(0.05 * 0.5 ** (attempt + 1))
        # the loss it saw is the corrupt batch's own loss, from the weights before that batch
        batch_rows = slice(32, 48)
        loss = numpy_mlp_loss(recorder.states[event.step - 1], x[batch_rows], y[batch_rows])
        assert event.loss == pytest.approx(loss, rel=1e-4) and event.loss > 10 * event.median
    assert int(np.array(model.optimizer.iterations)) == 12 - 3 * 2
    assert float(np.array(model.optimizer.learning_rate)) == pytest.approx(0.05 / 8)


def test_guard_checking_every_two_batches_sees_the_spike_at_the_next_check():
    x, y = cases.poisoned_regression(64, seed=0)
    keras.utils.set_random_seed(0)
    model = cases.small_mlp()
    guard, recorder = DivergenceGuard(window=5, snapshot_every=2, check_every=2), Recorder()
    fit(model, x, y, [guard, recorder], batch_size=16)
    # checks at steps 2 and 4; the corrupt batch is step 3: the snapshot of step 2 was never vouched for
    assert [(event.step, event.restored_step) for event in guard.events] == [(4, 0)]
    assert_close(recorder.states[4], recorder.states[0], tolerance=0.0)


def test_guard_composes_with_warmup_on_a_float_rate():
    x, y = cases.poisoned_regression(64, seed=0)
    model = linear_model(0.05)
    guard, recorder = DivergenceGuard(snapshot_every=1), Recorder()
    fit(model, x, y, [LearningRateWarmup(2, initial_factor=0.25), guard, recorder], batch_size=16)
    assert [(event.step, event.restored_step) for event in guard.events] == [(3, 1)]
    # step 4 runs at iteration 1 again, at half the warmed-up rate
    factors = warmup_multipliers(3, 8, 0.25)
    np.testing.assert_allclose(recorder.learning_rates, 0.05 * np.array([*factors, 0.5 * factors[1]]), rtol=1e-6)


def test_guard_recovers_from_nan_and_gives_up_after_max_attempts():
    x, y = regression_data(48, seed=8)  # 6 batches of 8
    x[20] = np.inf  # batch 2 only: restored once, and the epoch's logged loss stays finite
    model = linear_model(0.05)
    guard = DivergenceGuard(snapshot_every=1)
    history = fit(model, x, y, [guard])
    assert len(guard.events) == 1 and not np.isfinite(guard.events[0].loss)
    assert np.isfinite(history.history["loss"][0]) and np.all(np.isfinite(model.get_weights()[0]))

    x[24:] = np.inf  # from batch 3 on, every batch diverges
    model = linear_model(0.05)
    with pytest.raises(RuntimeError, match=r"after 3 restorations of the snapshot from step 1 \(max_attempts=3\)"):
        fit(model, x, y, [DivergenceGuard(snapshot_every=1, max_attempts=3)])


def test_guard_is_a_no_op_on_healthy_training():
    x, y = regression_data(64, seed=9)
    results = []
    for callbacks in ([], [DivergenceGuard(snapshot_every=1, window=3)]):
        keras.utils.set_random_seed(0)
        model = cases.small_mlp(optimizer="adam")
        fit(model, x, y, callbacks, epochs=2)
        results.append(model.get_weights() + [np.array(v) for v in model.optimizer.variables])
    assert callbacks[0].events == []
    assert_close(*results, tolerance=0.0)


def test_guard_reads_batch_losses_from_running_means():
    losses = np.random.default_rng(10).uniform(0.5, 2.0, size=12)
    running = np.cumsum(losses) / np.arange(1, 13)
    for before, now in [(0, 1), (3, 4), (4, 7), (0, 12)]:
        mean_before = running[before - 1] if before else 0.0
        got = guard_module.interval_mean(running[now - 1], now, mean_before, before)
        assert got == pytest.approx(np.mean(losses[before:now]), rel=1e-12)
    assert guard_module.is_diverged(float("nan"), [1.0], None)
    assert guard_module.is_diverged(10.5, [1.0, 1.0, 50.0], 10.0)
    assert not guard_module.is_diverged(9.5, [1.0, 1.0, 50.0], 10.0)
    assert not guard_module.is_diverged(1e9, [], 10.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"spike_factor": 1.0}, "spike_factor must be a finite number > 1 or None, received: 1.0"),
     ({"spike_factor": float("inf")}, "spike_factor must be a finite number > 1 or None, received: inf"),
     ({"spike_factor": "10"}, "spike_factor must be a finite number > 1 or None, received: '10'"),
     ({"lr_factor": 0.0}, r"lr_factor must be a number in \(0, 1\], received: 0.0"),
     ({"lr_factor": float("nan")}, r"lr_factor must be a number in \(0, 1\], received: nan"),
     ({"window": 0}, "window must be an integer >= 1, received: 0"),
     ({"max_attempts": 2.0}, "max_attempts must be an integer >= 1, received: 2.0"),
     ({"check_every": True}, "check_every must be an integer >= 1, received: True"),
     ({"snapshot_every": -3}, "snapshot_every must be an integer >= 1, received: -3")],
)  # fmt: skip
def test_guard_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        DivergenceGuard(**kwargs)


def test_guard_round_trips_through_its_config():
    assert_round_trip(
        DivergenceGuard(spike_factor=None, window=7, lr_factor=0.25, max_attempts=2, check_every=3, snapshot_every=5)
    )


def test_same_weights_with_two_replicas():
    case = harness_case("guard_callbacks", "tests.callbacks.cases:poisoned_regression", schedule=True,
                        optimizer="adam")  # fmt: skip
    single, mirrored = run_case(case), run_case(case, replicas=2)
    assert max_difference(single, mirrored) < TRAINING_TOLERANCE
    # three restorations, each two steps back
    assert single.optimizer_variables[0] == mirrored.optimizer_variables[0] == 12 - 3 * 2
