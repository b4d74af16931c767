"""Keras's own keras.optimizers.ScheduleFreeAdamW, fixed by keras_compat (item 11) where probes show its two defects.

(a) `fit` builds it inside the traced step, where its build's assignment of the weights to z is
lost: z starts at 0. (b) It recovers x from y and the NEW z. The tests of correct behaviour fail on
stock Keras 3.15.1 and keras-nightly 3.16 (they were run so) and pass once the fixes are in.
The models here are imported by name by the strategy harness.
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from lepton_keras.distribute import keras_compat
from tests.optimizers.reference.schedule_free import schedule_free_adamw
from tests.support.harness import TrainingCase, max_difference, run_case
from tests.support.numerics import apply_steps, error_relative_to_the_displacement, random_problem

FIXES = ["schedule_free_start_of_z", "schedule_free_x_from_the_old_z"]


@pytest.fixture(autouse=True)
def fixed_keras():
    # Other tests undo every fix (unpatch_keras); these need Keras's optimizer as lepton_keras leaves it.
    keras_compat.fix_keras_schedule_free()


def keras_schedule_free_mlp():
    """Dense(16, tanh) -> Dense(2), MSE, keras.optimizers.ScheduleFreeAdamW(0.01)."""
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.ScheduleFreeAdamW(0.01), loss="mse")
    return model


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_starts_z_at_the_initial_weights(jit_compile):
    # c_1 = 1, so after one step y_1 = z_1 = y_0 - lr g / (|g| + epsilon); with z lost, -lr g / (|g| + epsilon).
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.ScheduleFreeAdamW(0.01), loss="mse", jit_compile=jit_compile)
    inputs, targets = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32), np.ones((8, 3), np.float32)
    start = [w.copy() for w in model.get_weights()]
    with tf.GradientTape() as tape:
        loss = keras.losses.MeanSquaredError()(targets, model(inputs))
    gradients = [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]
    model.fit(inputs, targets, batch_size=8, verbose=0, shuffle=False)
    for weight, initial, gradient in zip(model.get_weights(), start, gradients):
        np.testing.assert_allclose(weight, initial - 0.01 * gradient / (np.abs(gradient) + 1e-8), rtol=0, atol=1e-6)


def test_1_device_and_2_replicas_give_the_same_weights():
    # Under MirroredStrategy Keras builds the optimizer eagerly, and z keeps its start.
    case = TrainingCase("tests.distribute.test_keras_schedule_free:keras_schedule_free_mlp",
                        "tests.support.cases:regression_data", steps=6)  # fmt: skip
    assert max_difference(run_case(case), run_case(case, replicas=2)) < 1e-5


def test_20_steps_match_the_authors_update():
    # Keras's averaging weights are c_t = 1/t: the authors' with weight_lr_power = 0 (or a
    # constant learning rate without warm-up). Built eagerly, so only defect (b) can show.
    params, grads = random_problem(20, seed=11, float32_values=True)
    options = {"learning_rate": 2**-6, "beta_1": 0.875, "beta_2": 0.96875, "epsilon": 2**-20}
    ours = apply_steps(keras.optimizers.ScheduleFreeAdamW(**options), params, grads)
    authors = schedule_free_adamw(params, grads, weight_lr_power=0.0, **options)
    assert error_relative_to_the_displacement(ours, authors, params) < 1e-5


def test_the_probes_find_both_defects_in_stock_keras_and_none_once_fixed():
    keras_compat.unpatch_keras()
    assert keras_compat.active_patches() == []
    assert keras_compat.schedule_free_start_is_lost() and keras_compat.schedule_free_reads_the_new_z()
    assert keras_compat.fix_keras_schedule_free() == FIXES
    functions = keras_compat.active_functions()
    assert keras_compat.fix_keras_schedule_free() == FIXES and keras_compat.active_functions() == functions
    assert not keras_compat.schedule_free_start_is_lost() and not keras_compat.schedule_free_reads_the_new_z()


def test_the_first_build_probes_and_fixes_and_unpatch_restores_keras():
    keras_compat.unpatch_keras()
    build = keras_compat._SCHEDULE_FREE_BUILD
    assert keras.optimizers.ScheduleFreeAdamW.build is build.original
    keras_compat.probe_keras_schedule_free_at_first_build()  # as `import lepton_keras` does
    keras.optimizers.ScheduleFreeAdamW(0.01).build([keras.Variable([1.0])])
    assert [fix for fix in keras_compat.active_patches() if fix in FIXES] == FIXES
    keras_compat.unpatch_keras()
    assert keras.optimizers.ScheduleFreeAdamW.build is build.original
    assert keras.optimizers.ScheduleFreeAdamW.update_step is keras_compat._SCHEDULE_FREE_UPDATE.original


def test_a_release_without_the_function_switches_that_fix_off_with_one_warning(monkeypatch):
    class ScheduleFreeOfAnotherRelease:
        def update_step(self, gradient, variable):  # the same name, another signature
            pass

    keras_compat.unpatch_keras()
    missing = keras_compat.PatchTarget("ScheduleFreeAdamW's update step", [ScheduleFreeOfAnotherRelease],
                                       ("self", "gradient", "variable", "learning_rate"))  # fmt: skip
    monkeypatch.setitem(keras_compat._PATCH_TARGETS, "schedule_free_x_from_the_old_z", missing)
    monkeypatch.setattr(keras_compat, "_warned_missing", set())
    with pytest.warns(RuntimeWarning, match="schedule_free_x_from_the_old_z.*is off"):
        assert keras_compat.fix_keras_schedule_free() == ["schedule_free_start_of_z"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        keras_compat.fix_keras_schedule_free()  # warned once
