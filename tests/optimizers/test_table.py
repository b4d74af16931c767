"""The shared tests every optimizer and wrapper in the table passes (rows: the `SPECS` of tests/optimizers/test_*.py).

1. matches its float64 NumPy reference over 15 steps of fixed random gradients on several
   shapes, with and without weight decay;
2. the same weights and optimizer variables with no strategy and MirroredStrategy over 2
   and 4 CPU replicas (and, for the rows of TWO_WORKER_ROWS, 2 local workers);
3. a `.keras` save in mid-training, reload and resume equals an uninterrupted run;
4. reaches the minimum of a quadratic and of the Rosenbrock function, and lowers the loss of
   the tutorial CNN on 256 real CIFAR-10 images;
5. float16 and bfloat16 variables keep their dtype; trains inside LossScaleOptimizer under
   mixed precision; gives the same weights with jit_compile=True.
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from lepton_keras.optimizers.registry import REGISTRY
from tests.support.cases import cifar10_sample, regression_data, tutorial_module
from tests.support.harness import (
    TrainingCase,
    max_difference,
    run_case,
    run_cases_on_workers,
)
from tests.support.numerics import apply_steps, error_relative_to_the_displacement, random_problem, relative_error
from tests.support.optimizer_table import all_specs, regression_model, spec_named

# Not named SPECS: all_specs() collects the SPECS of every tests/optimizers/test_*.py.
TABLE = all_specs()
STEPS = 15


def _by_name(specs):
    return pytest.mark.parametrize("spec", specs, ids=[spec.name for spec in specs])


def _with_and_without_decay(specs):
    """(spec, decay) for every spec without weight decay, and with it where the row has decay options."""
    cases = [(spec, decay) for spec in specs for decay in (False, True) if not decay or spec.decay_options is not None]
    return pytest.mark.parametrize(
        "spec, decay", cases, ids=[f"{spec.name}-{'decay' if decay else 'plain'}" for spec, decay in cases]
    )


def _ours_and_reference(spec, options, seed, dtype):
    """Our optimizer and the row's float64 reference over the same random problem: (ours, reference, start)."""
    params, grads = random_problem(STEPS, seed=seed, float32_values=True)
    ours = apply_steps(spec.make(**options), params, grads, dtype=dtype)
    reference = spec.reference([p.copy() for p in params], grads, **options)
    moved = max(float(np.max(np.abs(r - p))) for r, p in zip(reference, params))
    assert moved > 1e-3, "the reference did not move the parameters: the comparison would prove nothing"
    return ours, reference, params


@_with_and_without_decay(TABLE)
def test_matches_float64_reference(spec, decay):
    options = {**spec.options, **(spec.decay_options if decay else {})}
    ours, reference, _ = _ours_and_reference(spec, options, seed=7, dtype="float32")
    assert relative_error(ours, reference) < spec.tolerance


@_with_and_without_decay([spec for spec in TABLE if spec.float64_options is not None])
def test_float64_variables_match_the_float64_reference_to_1e_7(spec, decay):
    # Everyday hyperparameters (0.9, 0.999, 0.9999: not float32 numbers) must reach float64
    # variables without passing through float32 (1 - 0.999 in float32 is 1.3e-5 off, relatively).
    options = {**spec.float64_options, **(spec.decay_options if decay else {})}
    ours, reference, start = _ours_and_reference(spec, options, seed=8, dtype="float64")
    assert error_relative_to_the_displacement(ours, reference, start) < 1e-7


def test_every_lepton_optimizer_row_has_float64_options():
    missing = [spec.name for spec in TABLE if REGISTRY.get(spec.name) is not None
               and REGISTRY[spec.name].kind not in ("wrapper", "keras") and spec.float64_options is None]
    assert not missing, f"optimizer rows without float64_options: {missing}"


@_by_name(TABLE)
def test_same_weights_on_1_2_and_4_replicas(spec):
    case = TrainingCase("tests.support.optimizer_table:regression_model", "tests.support.cases:regression_data",
                        steps=6, global_batch_size=16, model_options={"spec_name": spec.name})
    single = run_case(case)
    for replicas in (2, 4):
        replicated = run_case(case, replicas=replicas)
        assert relative_error(replicated.weights, single.weights) < 1e-5, replicas
        assert max_difference(replicated, single) < spec.state_tolerance, replicas


@_by_name(TABLE)
def test_save_in_mid_training_and_resume(spec, tmp_path):
    inputs, targets = regression_data(96, seed=3)

    def fresh():
        keras.utils.set_random_seed(11)
        return regression_model(spec.name)

    uninterrupted = fresh()
    uninterrupted.fit(inputs, targets, batch_size=16, shuffle=False, verbose=0)
    interrupted = fresh()
    interrupted.fit(inputs[:48], targets[:48], batch_size=16, shuffle=False, verbose=0)
    path = os.path.join(tmp_path, "mid.keras")
    interrupted.save(path)
    resumed = keras.models.load_model(path)
    assert type(resumed.optimizer) is type(uninterrupted.optimizer)
    resumed.fit(inputs[48:], targets[48:], batch_size=16, shuffle=False, verbose=0)
    for a, b in zip(resumed.get_weights(), uninterrupted.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    for a, b in zip(resumed.optimizer.variables, uninterrupted.optimizer.variables):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=0, atol=1e-6)


def _minimize(spec, loss_fn, start):
    optimizer = spec.make(**spec.converge_options)
    variable = keras.Variable(np.array(start, np.float32))
    optimizer.build([variable])

    @tf.function
    def run():
        for _ in tf.range(spec.converge_steps):
            with tf.GradientTape() as tape:
                loss = loss_fn(variable.value)
            optimizer.apply(tape.gradient(loss, [variable.value]), [variable])

    run()
    return variable.numpy()


QUADRATIC_SCALES = np.array([1.0, 4.0, 0.25], np.float32)
QUADRATIC_MINIMUM = np.array([1.0, -1.0, 2.0], np.float32)


@_by_name(TABLE)
def test_reaches_the_minimum_of_a_quadratic(spec):
    found = _minimize(spec, lambda x: 0.5 * tf.reduce_sum(QUADRATIC_SCALES * (x - QUADRATIC_MINIMUM) ** 2),
                      [3.0, 2.0, -1.0])
    np.testing.assert_allclose(found, QUADRATIC_MINIMUM, atol=1e-2)


@_by_name(TABLE)
def test_reaches_the_minimum_of_rosenbrock(spec):
    found = _minimize(spec, lambda x: (1.0 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2, [-0.5, 0.5])
    np.testing.assert_allclose(found, [1.0, 1.0], atol=5e-2)


@_by_name(TABLE)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_variables_keep_their_dtype(spec, dtype):
    optimizer = spec.make(**spec.options)
    variable = keras.Variable(np.linspace(-1, 1, 12).reshape(3, 4), dtype=dtype)
    optimizer.build([variable])
    for step in range(3):
        optimizer.apply([tf.cast(tf.fill((3, 4), 0.1 * (step + 1)), dtype)], [variable])
    assert variable.dtype == dtype
    values = np.array(variable.numpy(), np.float32)
    assert np.all(np.isfinite(values)) and not np.allclose(values, np.linspace(-1, 1, 12).reshape(3, 4))


@_by_name(TABLE)
def test_trains_inside_loss_scale_optimizer_under_mixed_precision(spec):
    inputs, targets = regression_data(64, seed=5)
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(2)])
        model.compile(optimizer=keras.optimizers.LossScaleOptimizer(spec.make(**spec.options)), loss="mse")
        before = [w.copy() for w in model.get_weights()]
        history = model.fit(inputs, targets, batch_size=16, epochs=2, verbose=0)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert all(np.isfinite(loss) for loss in history.history["loss"])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@_by_name(TABLE)
def test_jit_compiled_step_gives_the_same_weights(spec):
    inputs, targets = regression_data(64, seed=9)
    results = []
    for jit_compile in (False, True):
        keras.utils.set_random_seed(2)
        model = regression_model(spec.name, jit_compile=jit_compile)
        model.fit(inputs, targets, batch_size=16, shuffle=False, verbose=0)
        results.append(model.get_weights())
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_every_registered_lepton_optimizer_has_a_table_row():
    def covered(name):  # a wrapper's row may name a composition, such as "lookahead_adam"
        return any(spec.name == name or spec.name.startswith(f"{name}_") for spec in TABLE)

    missing = [name for name, entry in REGISTRY.items() if entry.kind != "keras" and not covered(name)]
    assert not missing, f"registered optimizers without a row in the optimizer table: {missing}"


# Rows checked on 2 local workers, in one launch: one per kind of update (element-wise, per layer, orthogonalised,
# preconditioned, schedule-free) and a wrapper.
TWO_WORKER_ROWS = ["radam", "lars", "adopt", "cautious_adam", "muon", "soap", "schedule_free_adamw",
                   "schedule_free_sgd"]


@pytest.mark.multiworker
def test_same_weights_on_two_workers():
    cases = [TrainingCase("tests.support.optimizer_table:regression_model", "tests.support.cases:regression_data",
                          steps=6, global_batch_size=16, model_options={"spec_name": name}) for name in TWO_WORKER_ROWS]  # fmt: skip
    for name, case, (worker_0, worker_1) in zip(TWO_WORKER_ROWS, cases, run_cases_on_workers(cases)):
        assert max_difference(worker_0, worker_1) == 0.0, name
        single = run_case(case)
        assert relative_error(worker_0.weights, single.weights) < 1e-5, name
        assert max_difference(worker_0, single) < spec_named(name).state_tolerance, name


@_by_name(TABLE)
def test_lowers_the_loss_of_the_tutorial_cnn_on_real_images(spec):
    images, labels = cifar10_sample(256, seed=4)
    keras.utils.set_random_seed(0)
    model = tutorial_module().build_model()
    model.compile(optimizer=spec.make(**spec.cnn_options), loss="categorical_crossentropy")
    before = model.evaluate(images, labels, batch_size=128, verbose=0)
    model.fit(images, labels, batch_size=32, epochs=4, shuffle=False, verbose=0)
    after = model.evaluate(images, labels, batch_size=128, verbose=0)
    assert after < before - 0.1, f"loss {before:.4f} -> {after:.4f}"  # from about ln(10) = 2.30
