"""SharpnessAwareModel (SAM, ASAM) against a float64 NumPy reference written from the papers."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from lepton_keras.optimizers.sam import (
    SharpnessAwareModel,
    sharpness_aware_perturbation,
)
from tests.optimizers import cases
from tests.optimizers.reference import sam as reference
from tests.support.cases import cifar10_sample, tutorial_module
from tests.support.harness import (
    TrainingCase,
    max_difference,
    run_case,
    run_case_on_workers,
)
from tests.support.numerics import assert_close, random_problem

REFERENCE_TOLERANCE = 1e-6  # float32 training against the float64 reference
STRATEGY_TOLERANCE = 1e-5

STEPS, BATCH = 6, 16


def linear_case(**options):
    return TrainingCase("tests.optimizers.cases:sam_linear_sgd", "tests.optimizers.cases:linear_data",
                        steps=STEPS, global_batch_size=BATCH, seed=5, model_options=options)  # fmt: skip


def reference_result(**options):
    x, y = cases.linear_data(STEPS * BATCH, 5)
    return reference.sam_linear_regression(
        x, y, cases.LINEAR_KERNEL, cases.LINEAR_BIAS, steps=STEPS, batch_size=BATCH,
        learning_rate=options.pop("learning_rate", 2.0**-4), **options,
    )  # fmt: skip


# The pure function


@pytest.mark.parametrize("adaptive", [False, True])
def test_perturbation_matches_the_reference(adaptive):
    params, (grads,) = random_problem(1, shapes=[(3, 4), (4,), (2, 2, 3)], scale=1.0)
    params, grads = [p.astype(np.float32) for p in params], [g.astype(np.float32) for g in grads]
    out = sharpness_aware_perturbation([tf.constant(g) for g in grads], [tf.constant(p) for p in params], 0.25,
                                       adaptive=adaptive, eta=0.125)  # fmt: skip
    expected = reference.perturbation(grads, params, rho=0.25, adaptive=adaptive, eta=0.125)
    assert_close([o.numpy() for o in out], expected, REFERENCE_TOLERANCE)
    # ||T^-1 e|| = rho: the perturbation lies on the (adaptive) sphere of radius rho.
    scales = [np.abs(p) + 0.125 if adaptive else 1.0 for p in params]
    np.testing.assert_allclose(np.sqrt(sum(np.sum((o.numpy() / t) ** 2) for o, t in zip(out, scales))), 0.25,
                               rtol=1e-6)  # fmt: skip


def test_zero_gradient_gives_zero_perturbation():
    out = sharpness_aware_perturbation([tf.zeros((2, 3))], [tf.ones((2, 3))], 0.05, adaptive=True)
    np.testing.assert_array_equal(out[0].numpy(), np.zeros((2, 3)))


# Training against the reference


@pytest.mark.parametrize(
    "options",
    [
        dict(rho=0.5),
        dict(rho=0.5, adaptive=True, eta=0.01),
        dict(rho=2.0, adaptive=True, eta=0.25, momentum=0.875),
    ],
    ids=["sam", "asam", "asam_momentum"],
)
def test_training_matches_the_reference(options):
    result = run_case(linear_case(**options))
    assert_close(result.weights, reference_result(**options), REFERENCE_TOLERANCE)
    plain = reference_result(**{**options, "rho": 0.0})
    assert max(np.max(np.abs(w - p)) for w, p in zip(result.weights, plain)) > 1e-3, "the perturbation had no effect"


def test_loss_scale_optimizer_gives_the_same_result():
    options = dict(rho=0.5, adaptive=True)
    result = run_case(linear_case(loss_scale=True, **options))
    assert_close(result.weights, reference_result(**options), REFERENCE_TOLERANCE)


def test_jit_compile_gives_the_same_result():
    options = dict(rho=0.5, adaptive=True)
    assert cases.sam_linear_sgd(jit_compile=True).jit_compile, "XLA was turned off"
    compiled = run_case(linear_case(jit_compile=True, **options))
    assert max_difference(compiled, run_case(linear_case(**options))) < REFERENCE_TOLERANCE
    assert_close(compiled.weights, reference_result(**options), REFERENCE_TOLERANCE)


# Strategies


@pytest.mark.parametrize("adaptive", [False, True], ids=["sam", "asam"])
def test_same_result_on_1_2_and_4_replicas(adaptive):
    case = linear_case(rho=0.5, adaptive=adaptive, momentum=0.5)
    one = run_case(case)
    for replicas in (2, 4):
        assert max_difference(one, run_case(case, replicas=replicas)) < STRATEGY_TOLERANCE


def test_same_result_on_replicas_with_synchronized_batch_norm_and_regularizer():
    case = TrainingCase(
        "tests.optimizers.cases:sam_regularized_adam", "tests.optimizers.cases:linear_data", steps=4,
        global_batch_size=BATCH, seed=3, model_options=dict(dropout=False, synchronized=True),
    )  # fmt: skip
    assert max_difference(run_case(case), run_case(case, replicas=2)) < STRATEGY_TOLERANCE


@pytest.mark.multiworker
def test_same_result_on_2_workers():
    case = linear_case(rho=0.5, adaptive=True, momentum=0.5)
    one = run_case(case)
    for worker in run_case_on_workers(case):
        assert max_difference(one, worker) < STRATEGY_TOLERANCE


# Limit case and state


def plain_regularized_adam():
    model = cases.regularized_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", metrics=["mae"])
    return model


def fit(model_fn, steps=4):
    x, y = cases.linear_data(steps * BATCH, 7)
    keras.utils.set_random_seed(0)
    model = model_fn()
    history = model.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0)
    return model, history.history


def test_rho_zero_equals_plain_training_with_batch_norm_and_dropout():
    sam, sam_history = fit(lambda: cases.sam_regularized_adam(rho=0.0))
    plain, plain_history = fit(plain_regularized_adam)
    for a, b in zip(sam.get_weights(), plain.get_weights()):  # includes BN statistics and the dropout seed
        np.testing.assert_array_equal(a, b)
    for a, b in zip(sam.optimizer.variables, plain.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert sam_history == plain_history


def test_batch_norm_statistics_come_from_the_first_pass_only():
    x, y = cases.linear_data(BATCH, 7)
    keras.utils.set_random_seed(0)
    model = cases.sam_regularized_adam(rho=1.0)
    dense, batch_norm = model.model.layers[0], model.model.layers[1]
    hidden = x.astype(np.float64) @ dense.kernel.numpy()  # the BN input at the unperturbed weights
    model.fit(x, y, batch_size=BATCH, verbose=0)
    momentum = batch_norm.momentum
    np.testing.assert_allclose(batch_norm.moving_mean.numpy(), (1 - momentum) * hidden.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(batch_norm.moving_variance.numpy(), momentum + (1 - momentum) * hidden.var(axis=0),
                               rtol=1e-5)  # fmt: skip


def test_logged_loss_is_the_first_pass_loss():
    x, y = cases.linear_data(BATCH, 2)
    model = cases.sam_linear_sgd(rho=0.5)
    history = model.fit(x, y, batch_size=BATCH, verbose=0).history
    residual = x.astype(np.float64) @ cases.LINEAR_KERNEL + cases.LINEAR_BIAS - y
    np.testing.assert_allclose(history["loss"][0], np.mean(residual**2), rtol=1e-6)


# Serialization


def test_save_and_reload_predicts_the_same_and_resumes(tmp_path):
    x, y = cases.linear_data(4 * BATCH, 9)
    keras.utils.set_random_seed(0)
    model = cases.sam_regularized_adam(dropout=False)  # Keras does not save Dropout's seed state
    model.fit(x[: 2 * BATCH], y[: 2 * BATCH], batch_size=BATCH, shuffle=False, verbose=0)
    path = str(tmp_path / "sam.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, SharpnessAwareModel)
    assert (restored.rho, restored.adaptive, restored.eta) == (model.rho, model.adaptive, model.eta)
    np.testing.assert_array_equal(restored.predict(x, verbose=0), model.predict(x, verbose=0))
    for reloaded in (model, restored):
        reloaded.fit(x[2 * BATCH :], y[2 * BATCH :], batch_size=BATCH, shuffle=False, verbose=0)
    assert_close(restored.get_weights(), model.get_weights(), 1e-6)


def test_get_config_round_trips():
    model = SharpnessAwareModel(cases.linear_model(), rho=0.25, adaptive=True, eta=0.5, name="asam")
    config = model.get_config()
    assert (config["rho"], config["adaptive"], config["eta"], config["name"]) == (0.25, True, 0.5, "asam")
    clone = SharpnessAwareModel.from_config(config)
    assert clone.get_config() == config
    assert keras.saving.get_registered_object("lepton_keras>SharpnessAwareModel") is SharpnessAwareModel


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(rho=-0.1), "rho must be a finite number >= 0, received: -0.1"),
        (dict(rho="0.05"), "rho must be a finite number >= 0, received: '0.05'"),
        (dict(rho=float("inf")), "rho must be a finite number >= 0, received: inf"),
        (dict(eta=-1.0), "eta must be a finite number >= 0, received: -1.0"),
        (dict(eta=float("nan")), "eta must be a finite number >= 0, received: nan"),
        (dict(adaptive=1), "adaptive must be True or False, received: 1"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SharpnessAwareModel(cases.linear_model(), **kwargs)


@pytest.mark.parametrize("model", ["dense", keras.layers.Dense(3)], ids=["string", "layer"])
def test_a_non_model_raises(model):
    with pytest.raises(ValueError, match="model must be a keras.Model, received: "):
        SharpnessAwareModel(model)


# The tutorial CNN on real images


def test_tutorial_cnn_with_sam_lowers_the_loss():
    images, labels = cifar10_sample(256, 0)
    keras.utils.set_random_seed(0)
    model = SharpnessAwareModel(tutorial_module().build_model(), rho=0.05)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    before = model.evaluate(images, labels, verbose=0, return_dict=True)["loss"]
    model.fit(images, labels, batch_size=32, epochs=4, verbose=0)
    after = model.evaluate(images, labels, verbose=0, return_dict=True)["loss"]
    assert after < 0.9 * before, (before, after)
