"""The learning-rate schedules and CycleMomentum against float64 references written from their papers."""

import functools
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from lepton_keras.callbacks.cycle_momentum import CycleMomentum
from lepton_keras.schedules.cyclical import CyclicalLearningRate
from lepton_keras.schedules.inverse_sqrt import InverseSquareRootDecay
from lepton_keras.schedules.multiplier import MultipliedSchedule
from lepton_keras.schedules.one_cycle import OneCycle
from lepton_keras.schedules.warmup import Warmup
from lepton_keras.schedules.warmup_stable_decay import WarmupStableDecay
from tests.harness import TrainingCase, max_difference, run_case
from tests.reference import schedules as reference

RTOL = 1e-6  # computed in float64, rounded to float32
FLOAT32_TARGET_ATOL = 1e-7  # times the peak: Keras' CosineDecay, wrapped by Warmup, computes in float32
TRAINING_TOLERANCE = 1e-5  # a few steps, as tests/test_equivalence.py

cosine = functools.partial(keras.optimizers.schedules.CosineDecay, 0.1, 12)
cosine_reference = functools.partial(reference.cosine_decay, 0.1, 12)

# name -> (schedule factory, float64 reference of one step, steps checked: boundaries and beyond included)
SCHEDULES = {
    "warmup_linear_constant": (
        lambda: Warmup(0.3, 5),
        lambda t: reference.warmup(lambda _: 0.3, 5, t),
        range(0, 12),
    ),
    "warmup_linear_cosine": (
        lambda: Warmup(cosine(), 4, start_factor=0.2),
        lambda t: reference.warmup(cosine_reference, 4, t, start_factor=0.2),
        range(0, 16),
    ),
    "warmup_linear_cosine_offset": (
        lambda: Warmup(cosine(), 4, start_factor=0.2, offset_target=True),
        lambda t: reference.warmup(cosine_reference, 4, t, start_factor=0.2, offset_target=True),
        range(0, 20),
    ),
    "warmup_exponential": (
        lambda: Warmup(0.3, 6, start_factor=0.01, kind="exponential"),
        lambda t: reference.warmup(lambda _: 0.3, 6, t, start_factor=0.01, kind="exponential"),
        range(0, 10),
    ),
    "warmup_exponential_default_start_cosine": (
        lambda: Warmup(cosine(), 3, kind="exponential"),
        lambda t: reference.warmup(cosine_reference, 3, t, start_factor=0.01, kind="exponential"),
        range(0, 15),
    ),
    "warmup_none_cosine": (lambda: Warmup(cosine(), 0), cosine_reference, range(0, 14)),
    **{
        f"cyclical_{mode}_{step_size}": (
            functools.partial(CyclicalLearningRate, 0.01, 0.1, step_size, mode=mode, gamma=gamma),
            functools.partial(reference.cyclical, 0.01, 0.1, step_size, mode=mode, gamma=gamma),
            range(0, int(6 * step_size) + 2),  # three cycles and a bit
        )
        for mode, gamma in (("triangular", 1.0), ("triangular2", 1.0), ("exp_range", 0.97))
        for step_size in (4, 2.5)
    },
    "cyclical_falling": (
        lambda: CyclicalLearningRate(0.1, 0.02, 3),
        functools.partial(reference.cyclical, 0.1, 0.02, 3),
        range(0, 20),
    ),
    **{
        f"one_cycle_{anneal}_{pct_start}": (
            functools.partial(OneCycle, 0.4, 20, pct_start=pct_start, anneal=anneal),
            lambda t, pct_start=pct_start, anneal=anneal: reference.one_cycle(
                0.4, 20, t, pct_start=pct_start, anneal=anneal
            )[0],
            range(0, 25),
        )
        for anneal in ("cos", "linear")
        for pct_start in (0.3, 0.25)
    },
    "one_cycle_factors": (
        lambda: OneCycle(1.0, 13, pct_start=0.4, div_factor=10.0, final_div_factor=100.0),
        lambda t: reference.one_cycle(1.0, 13, t, pct_start=0.4, div_factor=10.0, final_div_factor=100.0)[0],
        range(0, 16),
    ),
    **{
        f"wsd_{decay}": (
            functools.partial(WarmupStableDecay, 0.2, 4, 5, 6, final_learning_rate=0.01, decay=decay),
            functools.partial(reference.warmup_stable_decay, 0.2, 4, 5, 6, final=0.01, decay=decay),
            range(0, 19),
        )
        for decay in ("linear", "cosine", "sqrt")
    },
    "wsd_no_warmup_no_decay": (
        lambda: WarmupStableDecay(0.2, 0, 3, 0, final_learning_rate=0.05),
        lambda t: reference.warmup_stable_decay(0.2, 0, 3, 0, t, final=0.05),
        range(0, 6),
    ),
    "inverse_sqrt_transformer": (
        lambda: InverseSquareRootDecay(4000, d_model=512),
        lambda t: reference.transformer(512, 4000, t),
        [*range(0, 5), 999, 3998, 3999, 4000, 4001, 10_000, 100_000, 1_000_000],
    ),
    "inverse_sqrt_scaled": (
        lambda: InverseSquareRootDecay(8, d_model=64, scale=2.0),
        lambda t: reference.transformer(64, 8, t, scale=2.0),
        range(0, 30),
    ),
    "inverse_sqrt_peak": (
        lambda: InverseSquareRootDecay(8, peak_learning_rate=1e-3),
        lambda t: reference.inverse_sqrt_peak(1e-3, 8, t),
        range(0, 30),
    ),
}


def traced_values(schedule, steps, dtype="int64"):
    """The schedule at each step, computed in an XLA-compiled tf.function from a step tensor."""
    function = tf.function(lambda step: schedule(step), jit_compile=True, autograph=False)
    values = [function(tf.constant(step, dtype)) for step in steps]
    assert all(value.dtype == tf.float32 for value in values)
    return np.array([float(value) for value in values])


def assert_matches_reference(actual, expected, atol_fraction=1e-9):
    expected = np.asarray(expected, np.float64)
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=atol_fraction * np.max(np.abs(expected)))


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedule_matches_the_reference_in_an_xla_function(name):
    make, expected, steps = SCHEDULES[name]
    schedule = make()
    expected_values = [expected(step) for step in steps]
    atol_fraction = FLOAT32_TARGET_ATOL if "cosine" in name and name.startswith("warmup") else 1e-9
    assert_matches_reference(traced_values(schedule, steps), expected_values, atol_fraction)
    assert_matches_reference(traced_values(schedule, steps, "float32"), expected_values, atol_fraction)
    eager = np.array([float(schedule(step)) for step in steps])  # a Python int, as a user may call it
    assert_matches_reference(eager, expected_values, atol_fraction)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedule_round_trips_through_serialize(name):
    make, _, steps = SCHEDULES[name]
    schedule = make()
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert type(restored) is type(schedule)
    assert restored.get_config() == schedule.get_config()
    assert type(schedule).from_config(schedule.get_config()).get_config() == schedule.get_config()
    np.testing.assert_array_equal(traced_values(restored, steps), traced_values(schedule, steps))


# The landmarks of each paper, by value: these fail if the reference and the code share a mistake in a phase end.


def test_landmarks():
    cyclical = CyclicalLearningRate(0.01, 0.1, 5)
    assert [float(cyclical(t)) for t in (0, 5, 10, 15, 20)] == pytest.approx([0.01, 0.1, 0.01, 0.1, 0.01])
    halving = CyclicalLearningRate(0.0, 0.8, 5, mode="triangular2")
    assert [float(halving(t)) for t in (5, 15, 25)] == pytest.approx([0.8, 0.4, 0.2])

    one_cycle = OneCycle(0.5, 100, pct_start=0.3)
    assert float(one_cycle(0)) == pytest.approx(0.02)
    assert float(one_cycle(29)) == pytest.approx(0.5)  # the peak at pct_start * total - 1
    for t in (99, 100, 1000):
        assert float(one_cycle(t)) == pytest.approx(0.02 / 1e4)
        assert float(one_cycle.momentum(t)) == pytest.approx(0.95)
    assert float(one_cycle.momentum(0)) == pytest.approx(0.95)
    assert float(one_cycle.momentum(29)) == pytest.approx(0.85)

    warmup = Warmup(0.4, 10, start_factor=0.25)
    assert [float(warmup(t)) for t in (0, 5, 10, 11)] == pytest.approx([0.1, 0.25, 0.4, 0.4])

    wsd = WarmupStableDecay(1.0, 10, 20, 10, decay="sqrt")
    assert [float(wsd(t)) for t in (0, 5, 10, 29, 30, 35, 40, 50)] == pytest.approx(
        [0.0, 0.5, 1.0, 1.0, 1.0, 1 - np.sqrt(0.5), 0.0, 0.0], abs=1e-7
    )

    transformer = InverseSquareRootDecay(4000, d_model=512)
    assert float(transformer(3999)) == pytest.approx(512**-0.5 * 4000**-0.5)  # the peak at step_num = warmup
    assert float(transformer(15_999)) == pytest.approx(512**-0.5 * 16_000**-0.5)
    peak = InverseSquareRootDecay(100, peak_learning_rate=0.3)
    assert float(peak(99)) == pytest.approx(0.3)
    assert float(peak(399)) == pytest.approx(0.15)


@pytest.mark.parametrize(
    "anneal, pct_start", [("cos", 0.3), ("linear", 0.25)]
)
def test_one_cycle_momentum_is_the_inverse_cycle(anneal, pct_start):
    schedule = OneCycle(0.4, 20, pct_start=pct_start, anneal=anneal, base_momentum=0.8, max_momentum=0.9)
    steps = range(0, 25)
    expected = [reference.one_cycle(0.4, 20, t, pct_start=pct_start, anneal=anneal, base_momentum=0.8,
                                    max_momentum=0.9)[1] for t in steps]  # fmt: skip
    function = tf.function(lambda step: schedule.momentum(step), jit_compile=True, autograph=False)
    actual = np.array([float(function(tf.constant(t, tf.int64))) for t in steps])
    assert_matches_reference(actual, expected)


# Bad arguments.

TARGET = "a LearningRateSchedule or a finite number >= 0"
BAD_ARGUMENTS = [
    (lambda: Warmup("fast", 5), f"target must be {TARGET}, received: 'fast'"),
    (lambda: Warmup(-0.1, 5), f"target must be {TARGET}, received: -0.1"),
    (lambda: Warmup(float("inf"), 5), f"target must be {TARGET}, received: inf"),
    (lambda: Warmup(0.1, -1), "warmup_steps must be an integer >= 0, received: -1"),
    (lambda: Warmup(0.1, 2.5), "warmup_steps must be an integer >= 0, received: 2.5"),
    (lambda: Warmup(0.1, 5, kind="cosine"), "kind must be one of 'linear', 'exponential', received: 'cosine'"),
    (lambda: Warmup(0.1, 5, start_factor=-0.5),
     "start_factor must be a finite number >= 0 for kind='linear', received: -0.5"),
    (lambda: Warmup(0.1, 5, start_factor=0.0, kind="exponential"),
     "start_factor must be a finite number > 0 for kind='exponential', received: 0.0"),
    (lambda: Warmup(0.1, 5, start_factor=float("nan")),
     "start_factor must be a finite number >= 0 for kind='linear', received: nan"),
    (lambda: Warmup(0.1, 5, offset_target="False"), "offset_target must be True or False, received: 'False'"),
    (lambda: CyclicalLearningRate(-0.1, 0.1, 4), "initial_learning_rate must be a finite number >= 0, received: -0.1"),
    (lambda: CyclicalLearningRate(0.1, float("nan"), 4),
     "maximal_learning_rate must be a finite number > 0, received: nan"),
    (lambda: CyclicalLearningRate(0.01, 0.0, 4), "maximal_learning_rate must be a finite number > 0, received: 0.0"),
    (lambda: CyclicalLearningRate(0.01, 0.1, 0), "step_size must be a finite number > 0, received: 0"),
    (lambda: CyclicalLearningRate(0.01, 0.1, float("inf")), "step_size must be a finite number > 0, received: inf"),
    (lambda: CyclicalLearningRate(0.01, 0.1, 4, mode="sine"),
     "mode must be one of 'triangular', 'triangular2', 'exp_range', received: 'sine'"),
    (lambda: CyclicalLearningRate(0.01, 0.1, 4, mode="exp_range", gamma=1.5),
     r"gamma must be a number in \(0, 1\], received: 1.5"),
    (lambda: OneCycle(0.0, 100), "maximal_learning_rate must be a finite number > 0, received: 0.0"),
    (lambda: OneCycle(0.1, 1), "total_steps must be an integer >= 2, received: 1"),
    (lambda: OneCycle(0.1, 100, pct_start=1.0),
     r"pct_start must be a number in \(0, 1\) with pct_start \* total_steps > 1 \(total_steps=100\), received: 1.0"),
    (lambda: OneCycle(0.1, 10, pct_start=0.1),
     r"pct_start must be a number in \(0, 1\) with pct_start \* total_steps > 1 \(total_steps=10\), received: 0.1"),
    (lambda: OneCycle(0.1, 100, div_factor=0), "div_factor must be a finite number > 0, received: 0"),
    (lambda: OneCycle(0.1, 100, final_div_factor=-1.0), "final_div_factor must be a finite number > 0, received: -1.0"),
    (lambda: OneCycle(0.1, 100, anneal="exp"), "anneal must be one of 'cos', 'linear', received: 'exp'"),
    (lambda: OneCycle(0.1, 100, base_momentum=1.2), r"base_momentum must be a number in \[0, 1\), received: 1.2"),
    (lambda: OneCycle(0.1, 100, max_momentum=-0.1), r"max_momentum must be a number in \[0, 1\), received: -0.1"),
    (lambda: WarmupStableDecay(0.0, 1, 1, 1), "peak_learning_rate must be a finite number > 0, received: 0.0"),
    (lambda: WarmupStableDecay(0.1, -1, 1, 1), "warmup_steps must be an integer >= 0, received: -1"),
    (lambda: WarmupStableDecay(0.1, 1, 1.5, 1), "stable_steps must be an integer >= 0, received: 1.5"),
    (lambda: WarmupStableDecay(0.1, 1, 1, True), "decay_steps must be an integer >= 0, received: True"),
    (lambda: WarmupStableDecay(0.1, 1, 1, 1, final_learning_rate=0.2),
     r"final_learning_rate must be a number in \[0, peak_learning_rate=0.1\], received: 0.2"),
    (lambda: WarmupStableDecay(0.1, 1, 1, 1, decay="exp"),
     "decay must be one of 'linear', 'cosine', 'sqrt', received: 'exp'"),
    (lambda: InverseSquareRootDecay(0, d_model=512), "warmup_steps must be an integer >= 1, received: 0"),
    (lambda: InverseSquareRootDecay(4000),
     r"d_model, peak_learning_rate must be exactly one given, received: \(None, None\)"),
    (lambda: InverseSquareRootDecay(4000, d_model=512, peak_learning_rate=1e-3),
     r"d_model, peak_learning_rate must be exactly one given, received: \(512, 0.001\)"),
    (lambda: InverseSquareRootDecay(4000, d_model=0), "d_model must be an integer >= 1 or None, received: 0"),
    (lambda: InverseSquareRootDecay(4000, d_model=512, scale=-1.0),
     "scale must be a finite number > 0, received: -1.0"),
    (lambda: InverseSquareRootDecay(4000, peak_learning_rate=-1e-3),
     "peak_learning_rate must be a finite number > 0 or None, received: -0.001"),
    (lambda: InverseSquareRootDecay(4000, peak_learning_rate=1e-3, scale=2.0),
     r"scale must be 1.0 with peak_learning_rate \(it applies to the d_model form only\), received: 2.0"),
    (lambda: MultipliedSchedule("fast"), f"base must be {TARGET}, received: 'fast'"),
    (lambda: MultipliedSchedule(0.1, multiplier=0.0), "multiplier must be a finite number > 0, received: 0.0"),
    (lambda: MultipliedSchedule(0.1, multiplier=float("nan")), "multiplier must be a finite number > 0, received: nan"),
    (lambda: MultipliedSchedule(0.1, multiplier=float("inf")), "multiplier must be a finite number > 0, received: inf"),
    (lambda: MultipliedSchedule(float("nan")), f"base must be {TARGET}, received: nan"),
    (lambda: CycleMomentum(CyclicalLearningRate(0.01, 0.1, 4)), "schedule must be .*momentum.*, received: "),
]


@pytest.mark.parametrize("index", range(len(BAD_ARGUMENTS)))
def test_bad_arguments_raise_a_value_error_naming_them(index):
    make, message = BAD_ARGUMENTS[index]
    with pytest.raises(ValueError, match=f"^{message}"):
        make()


# Training: the optimizer uses the schedule, the multiplier and the scheduled momentum.

FEATURES = 3
ROWS = 8


def linear_problem(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(ROWS, FEATURES)).astype(np.float32)
    y = rng.normal(size=(ROWS, 1)).astype(np.float32)
    kernel = (0.1 * rng.normal(size=(FEATURES, 1))).astype(np.float32)
    return x, y, kernel


def linear_model(optimizer, kernel):
    """y = x w, trained on the mean squared error, whose gradient is 2 / N x^T (x w - y)."""
    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(1, use_bias=False)])
    model.compile(optimizer=optimizer, loss="mse")
    model.layers[0].kernel.assign(kernel)
    return model


def mse_gradient(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return lambda w: 2.0 / len(x) * x.T @ (x @ w - y)


def fit_full_batch(model, x, y, steps, callbacks=()):
    model.fit(x, y, batch_size=len(x), epochs=steps, shuffle=False, verbose=0, callbacks=list(callbacks))
    return model.layers[0].kernel.numpy()


@pytest.mark.parametrize("name", ["warmup_linear_cosine", "cyclical_triangular2_2.5", "one_cycle_cos_0.3",
                                  "wsd_sqrt", "inverse_sqrt_scaled"])  # fmt: skip
def test_training_follows_the_multiplied_schedule(name):
    make, expected, _ = SCHEDULES[name]
    x, y, kernel = linear_problem()
    schedule = MultipliedSchedule(make(), multiplier=2.0)
    steps, change_at = 8, 3

    def halve(epoch, logs=None):
        if epoch == change_at:
            schedule.multiplier.assign(0.5)

    model = linear_model(keras.optimizers.SGD(schedule), kernel)
    trained = fit_full_batch(model, x, y, steps, [keras.callbacks.LambdaCallback(on_epoch_begin=halve)])
    multipliers = [2.0 if t < change_at else 0.5 for t in range(steps)]
    rates = [m * expected(t) for t, m in enumerate(multipliers)]
    np.testing.assert_allclose(trained, reference.sgd(kernel, mse_gradient(x, y), rates, [0.0] * steps), rtol=1e-5)
    unscaled = reference.sgd(kernel, mse_gradient(x, y), [expected(t) for t in range(steps)], [0.0] * steps)
    assert np.max(np.abs(trained - unscaled)) > 1e-4  # the multiplier made a difference
    assert MultipliedSchedule.from_config(schedule.get_config()).get_config()["multiplier"] == 0.5


def test_multiplied_schedule_scales_the_base_and_round_trips():
    base = CyclicalLearningRate(0.01, 0.1, 4)
    schedule = MultipliedSchedule(base, multiplier=3.0)
    steps = range(12)
    np.testing.assert_allclose(traced_values(schedule, steps), 3.0 * traced_values(base, steps), rtol=1e-6)
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert isinstance(restored.base, CyclicalLearningRate) and float(restored.multiplier.numpy()) == 3.0
    assert float(MultipliedSchedule(0.2, 0.5)(7)) == pytest.approx(0.1)


@pytest.mark.parametrize("name", ["warmup_linear_cosine", "cyclical_exp_range_4", "one_cycle_linear_0.25",
                                  "wsd_cosine", "inverse_sqrt_peak"])  # fmt: skip
def test_keras_save_and_load_keep_the_schedule(name, tmp_path):
    make, expected, _ = SCHEDULES[name]
    x, y, kernel = linear_problem()
    model = linear_model(keras.optimizers.SGD(make(), momentum=0.5), kernel)
    fit_full_batch(model, x, y, 3)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    saved_schedule = loaded.optimizer.get_config()["learning_rate"]
    assert saved_schedule == model.optimizer.get_config()["learning_rate"]
    assert keras.optimizers.schedules.deserialize(saved_schedule).get_config() == make().get_config()
    assert int(loaded.optimizer.iterations.numpy()) == 3
    assert float(loaded.optimizer.learning_rate) == pytest.approx(expected(3), rel=RTOL)
    fit_full_batch(loaded, x, y, 2)  # resumes where it stopped
    fit_full_batch(model, x, y, 2)
    np.testing.assert_allclose(loaded.layers[0].kernel.numpy(), model.layers[0].kernel.numpy(), rtol=1e-6)


# CycleMomentum


@pytest.mark.parametrize("wrapped", [False, True])
def test_cycle_momentum_drives_sgd_momentum(wrapped):
    x, y, kernel = linear_problem(seed=1)
    total = 10
    schedule = OneCycle(0.2, total, pct_start=0.4, base_momentum=0.5, max_momentum=0.9)
    optimizer = keras.optimizers.SGD(schedule, momentum=0.9)
    if wrapped:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model = linear_model(optimizer, kernel)
    inner = optimizer.inner_optimizer if wrapped else optimizer
    fit_full_batch(model, x, y, 2)  # traced with the float momentum 0.9
    fit_full_batch(model, x, y, 5, [CycleMomentum(schedule)])  # must retrace
    trained = fit_full_batch(model, x, y, 5, [CycleMomentum(schedule)])  # retraces with a new variable

    steps = 12  # beyond total_steps: lr_min and max_momentum
    pairs = [reference.one_cycle(0.2, total, t, pct_start=0.4, base_momentum=0.5, max_momentum=0.9)
             for t in range(steps)]  # fmt: skip
    rates, momentums = zip(*pairs)
    momentums = [0.9, 0.9, *momentums[2:]]
    np.testing.assert_allclose(trained, reference.sgd(kernel, mse_gradient(x, y), rates, momentums), rtol=1e-5)
    fixed = reference.sgd(kernel, mse_gradient(x, y), rates, [0.9] * steps)
    assert np.max(np.abs(trained - fixed)) > 1e-3  # the scheduled momentum made a difference
    assert type(inner.momentum) is float and inner.momentum == pytest.approx(momentums[-1])
    control = keras.optimizers.SGD(schedule, momentum=0.9)
    if wrapped:
        control = keras.optimizers.LossScaleOptimizer(control)
    fit_full_batch(linear_model(control, kernel), x, y, 1)
    assert len(optimizer.variables) == len(control.variables)  # the momentum variable is not optimizer state
    assert keras.optimizers.SGD.from_config(inner.get_config()).momentum == inner.momentum


def test_cycle_momentum_drives_adam_beta_1_and_builds_momentum_into_sgd(tmp_path):
    x, y, kernel = linear_problem(seed=2)
    schedule = OneCycle(0.05, 6, pct_start=0.5, base_momentum=0.6, max_momentum=0.95)
    optimizer = keras.optimizers.Adam(schedule)
    model = linear_model(optimizer, kernel)
    path = os.path.join(tmp_path, "checkpoint.keras")
    checkpoint = keras.callbacks.ModelCheckpoint(path, save_freq=1)  # saved in the middle of fit
    trained = fit_full_batch(model, x, y, 6, [CycleMomentum(schedule), checkpoint])
    rates, beta_1s = zip(*[reference.one_cycle(0.05, 6, t, pct_start=0.5, base_momentum=0.6, max_momentum=0.95)
                           for t in range(6)])  # fmt: skip
    expected = reference.adam(kernel, mse_gradient(x, y), rates, beta_1s)
    np.testing.assert_allclose(trained, expected, rtol=1e-5, atol=2e-6)  # float32 Adam, steps of about 0.05
    fixed = reference.adam(kernel, mse_gradient(x, y), rates, [0.95] * 6)
    assert np.max(np.abs(expected - fixed)) > 1e-3  # the scheduled beta_1 made a difference
    assert type(optimizer.beta_1) is float
    saved = keras.saving.load_model(path).optimizer
    assert type(saved.beta_1) is float and saved.beta_1 == pytest.approx(beta_1s[-1])
    assert keras.optimizers.Adam.from_config(optimizer.get_config()).beta_1 == optimizer.beta_1

    # An SGD created without momentum, not yet built, gets its velocity from the callback.
    plain = linear_model(keras.optimizers.SGD(schedule), kernel)
    trained = fit_full_batch(plain, x, y, 6, [CycleMomentum(schedule)])
    np.testing.assert_allclose(trained, reference.sgd(kernel, mse_gradient(x, y), rates, beta_1s), rtol=1e-5)


def test_cycle_momentum_drives_rmsprop_momentum():
    x, y, kernel = linear_problem(seed=3)
    schedule = OneCycle(0.01, 6, pct_start=0.5, base_momentum=0.3, max_momentum=0.9)
    model = linear_model(keras.optimizers.RMSprop(schedule), kernel)  # momentum=0: built by the callback
    trained = fit_full_batch(model, x, y, 6, [CycleMomentum(schedule)])
    rates, momentums = zip(*[reference.one_cycle(0.01, 6, t, pct_start=0.5, base_momentum=0.3, max_momentum=0.9)
                             for t in range(6)])  # fmt: skip
    expected = reference.rmsprop(kernel, mse_gradient(x, y), rates, momentums)
    np.testing.assert_allclose(trained, expected, rtol=1e-5, atol=1e-6)
    fixed = reference.rmsprop(kernel, mse_gradient(x, y), rates, [0.9] * 6)
    assert np.max(np.abs(expected - fixed)) > 1e-3


def test_cycle_momentum_refuses_optimizers_it_cannot_drive():
    x, y, kernel = linear_problem()
    schedule = OneCycle(0.1, 10)
    model = linear_model(keras.optimizers.Adagrad(0.1), kernel)
    with pytest.raises(ValueError, match="`momentum` .* or `beta_1` .* received Adagrad"):
        fit_full_batch(model, x, y, 1, [CycleMomentum(schedule)])
    built = keras.optimizers.SGD(0.1)
    model = linear_model(built, kernel)
    built.build(model.trainable_variables)
    with pytest.raises(ValueError, match="momentum=0"):
        fit_full_batch(model, x, y, 1, [CycleMomentum(schedule)])


# The same weights with no strategy and with MirroredStrategy over 2 replicas.


@pytest.mark.parametrize(
    "model_fn, callbacks_fn",
    [("tests.cases_schedules:dense_sgd_cyclical", None),
     ("tests.cases_schedules:dense_sgd_one_cycle", "tests.cases_schedules:one_cycle_momentum")],
)  # fmt: skip
def test_same_weights_with_and_without_mirrored_strategy(model_fn, callbacks_fn):
    case = TrainingCase(model_fn, "tests.cases_schedules:regression_data", steps=6, global_batch_size=8,
                        callbacks_fn=callbacks_fn)  # fmt: skip
    single, mirrored = run_case(case), run_case(case, replicas=2)
    untrained = run_case(TrainingCase(model_fn, "tests.cases_schedules:regression_data", steps=0))
    assert max_difference(single, untrained) > 1e-3  # it trained
    assert max_difference(single, mirrored) < TRAINING_TOLERANCE
