"""SOAP: its table row, its options against the reference, the first step, its limit at Adam, its bases, arguments.

The row's shared checks (reference match, replicas, save and resume, convergence, dtypes) run in test_table.py.
"""

import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from lepton_keras.optimizers.soap import SOAP, merged_shape, soap_layout, soap_update, with_fixed_null_space
from tests.optimizers.reference import soap as reference
from tests.support.numerics import apply_steps, assert_close, random_problem
from tests.support.optimizer_spec import OptimizerSpec

SPECS = [
    OptimizerSpec(
        name="soap",
        make=SOAP,
        reference=reference.soap,
        # Float32 numbers, so the float64 reference compares at ~1e-7; the 15 reference steps
        # refresh the bases three times (every 4 updates). A small learning rate: the float32
        # eigenvectors of the regression model's smallest eigenvalues are determined to ~1e-3
        # (1e-7 lambda_max / gap), so XLA-compiled and plain steps differ by ~1e-3 lr.
        options={"learning_rate": 2**-9, "beta_1": 0.875, "beta_2": 0.96875, "epsilon": 2**-20, "weight_decay": 0.0,
                 "precondition_frequency": 4},
        decay_options={"weight_decay": 0.25},
        # 1-D variables (the table's problems) are preconditioned only with precondition_1d.
        converge_options={"learning_rate": 0.01, "weight_decay": 0.0, "precondition_1d": True},
        cnn_overrides={"learning_rate": 3e-3, "precondition_frequency": 10},
        # The learning rate stays a float32 number: Keras keeps it in a float32 variable.
        float64_options={"learning_rate": 2**-7, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8, "weight_decay": 0.0,
                         "precondition_frequency": 4},
        # Replicas sum the gradients in another order; the statistics then differ by float32 rounding, which
        # moves the eigenvectors of nearly equal small eigenvalues by ~1e-4 (measured 2.0e-4 and 2.8e-4 with 2
        # and 4 replicas) while the weights agree to 1e-6 and 3e-6.
        state_tolerance=1e-3,
    ),
]

OPTIONS = SPECS[0].options
SHAPES = ((6, 4), (5,), (3, 3, 2, 4))


@pytest.mark.parametrize("options", [
    {},
    {"merge_dims": True, "precondition_1d": True},
    {"max_precond_dim": 3, "normalize_grads": True, "precondition_frequency": 2},
    {"shampoo_beta": 0.75, "correct_bias": False, "weight_decay": 0.125},
], ids=["defaults", "merged-1d", "max-dim-normalized", "shampoo-beta-no-bias-correction"])  # fmt: skip
def test_float64_variables_match_the_reference_with_each_option(options):
    # 25 steps: two refreshes at the default frequency. (6, 4) has a 2-D null space at the
    # first step, and merge_dims a 71-D one for the (72,) view of (3, 3, 2, 4): the fixed null
    # space makes the comparison well posed.
    params, grads = random_problem(25, shapes=SHAPES, seed=3, float32_values=True)
    options = {"learning_rate": 2**-7, **options}
    ours = apply_steps(SOAP(**options), params, grads, dtype="float64")
    expected = reference.soap(params, grads, **options)
    for a, e, p in zip(ours, expected, params):
        assert np.max(np.abs(a - e)) < 1e-9 * np.max(np.abs(e - p))


def test_the_first_step_only_gathers_statistics():
    params, grads = random_problem(1, shapes=((6, 4),), seed=4, float32_values=True)
    optimizer = SOAP(2**-7, weight_decay=0.25, fused_updates=False)
    (after,) = apply_steps(optimizer, params, grads, dtype="float64")
    np.testing.assert_array_equal(after, params[0])  # no step and no weight decay
    g = grads[0][0]
    m, v, (left, right), bases = optimizer._m[0], optimizer._v[0], optimizer._statistics[0], optimizer._bases[0]
    assert not np.any(m.numpy()) and not np.any(v.numpy())
    np.testing.assert_allclose(left.numpy(), 0.05 * g @ g.T, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(right.numpy(), 0.05 * g.T @ g, rtol=1e-12, atol=1e-15)
    for statistic, basis in zip((left, right), bases):
        q, s = basis.numpy(), statistic.numpy()
        np.testing.assert_allclose(q.T @ q, np.eye(len(q)), atol=1e-12)
        eigenvalues = np.diag(q.T @ s @ q)
        np.testing.assert_allclose(q.T @ s @ q, np.diag(eigenvalues), atol=1e-12)
        assert np.all(np.diff(eigenvalues) <= 1e-15)  # decreasing


def test_with_identity_bases_and_no_refresh_it_is_adam_from_the_second_step():
    # G_1 makes L_1 = 0.05 diag(9, 4, 1) and R_1 = 0.05 diag(9, 4, 1, 0): the bases are the
    # identity up to the signs of their columns, which the step does not depend on. Without a
    # refresh they stay, and steps 2, 3, ... are Keras's Adam's steps 1, 2, ... (whose epsilon
    # is also added to sqrt(v) before the bias correction).
    first = np.zeros((3, 4))
    first[0, 0], first[1, 1], first[2, 2] = 3.0, 2.0, 1.0
    params, grads = random_problem(8, shapes=((3, 4), (5,)), seed=5, float32_values=True)
    grads[0] = [first, np.zeros(5)]
    options = {"learning_rate": 2**-7, "beta_1": 0.875, "beta_2": 0.96875, "epsilon": 2**-20}
    ours = apply_steps(SOAP(**options, weight_decay=0.0, precondition_frequency=1000), params, grads)
    assert_close(ours, apply_steps(keras.optimizers.Adam(**options), params, grads[1:]), tolerance=1e-6)


def test_the_step_does_not_depend_on_the_signs_of_the_basis_vectors():
    # The first moment is kept in the original basis and rotated into the current one at each
    # step; the second moment is a sum of squares of rotated coordinates. Flipping a basis
    # vector flips its coordinate of G and of M and leaves V, so N = Q (M' / sqrt(V)) Q^T is unchanged.
    rng = np.random.default_rng(6)
    layout = soap_layout((6, 4), max_precond_dim=10000, merge_dims=False, precondition_1d=False)
    x, g, m = (tf.constant(rng.normal(size=(6, 4))) for _ in range(3))
    v = tf.constant(rng.uniform(0.5, 1.0, size=(6, 4)))
    statistics = [tf.constant(np.eye(6)), tf.constant(np.eye(4))]
    bases = [np.linalg.qr(rng.normal(size=(n, n)))[0] for n in (6, 4)]
    flipped = [q * rng.choice([-1.0, 1.0], size=len(q)) for q in bases]
    values = {"step_size": 0.01, "decay": 0.001, "beta_1": 0.9, "one_minus_beta_1": 0.1, "beta_2": 0.99,
              "one_minus_beta_2": 0.01, "shampoo_beta": 0.9, "one_minus_shampoo_beta": 0.1, "epsilon": 1e-8}
    scalars = {name: tf.constant(value, tf.float64) for name, value in values.items()}

    def step(bases):
        return soap_update(x, g, m, v, *statistics, *(tf.constant(q) for q in bases), layout=layout,
                           first_step=tf.constant(False), normalize_grads=False, **scalars)  # fmt: skip

    for a, b in zip(step(bases), step(flipped)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-13, atol=1e-15)


def test_the_null_space_basis_does_not_depend_on_the_solver():
    # Any rotation of the eigenvectors of a zero eigenvalue is an eigenbasis; each gives the same fixed one.
    rng = np.random.default_rng(7)
    g = rng.normal(size=(6, 2))
    basis = np.linalg.eigh(g @ g.T)[1][:, ::-1]
    rotation = np.linalg.qr(rng.normal(size=(4, 4)))[0]
    rotated = np.concatenate([basis[:, :2], basis[:, 2:] @ rotation], axis=1)
    fixed = [with_fixed_null_space(tf.constant(q), 2, 6).numpy() for q in (basis, rotated)]
    np.testing.assert_allclose(np.abs(fixed[0]), np.abs(fixed[1]), atol=1e-12)  # equal up to signs
    np.testing.assert_allclose(fixed[0].T @ fixed[0], np.eye(6), atol=1e-12)
    np.testing.assert_allclose(fixed[0][:, :2], basis[:, :2])


@pytest.mark.filterwarnings("ignore:Gradients do not exist")
def test_a_variable_whose_first_gradient_comes_later_starts_then():
    # Variable 1 gets its first gradient at the optimizer's third step: that step only gathers
    # its statistics, then it takes SOAP's steps. Without bias correction and refresh (which
    # count the optimizer's steps), that is the reference from its first gradient on.
    params, grads = random_problem(6, shapes=((3, 4), (4, 3)), seed=10, float32_values=True)
    late = [[g0, None] for g0, _ in grads[:2]] + grads[2:]
    options = {**OPTIONS, "correct_bias": False, "precondition_frequency": 100}
    optimizer = SOAP(**options)
    ours, moved = apply_steps(optimizer, params, late, every_step=lambda o: o._m[1].numpy().any())
    assert moved == [False, False, False, True, True, True]
    (expected,) = reference.soap([params[1]], [[g] for _, g in grads[2:]], **options)
    assert_close([ours[1]], [expected])


def test_layouts():
    assert merged_shape((3, 3, 64, 128), 10000) == (576, 128)  # a Keras kernel (kh, kw, in, out)
    assert merged_shape((3, 3, 2, 4), 10000) == (72,)
    assert merged_shape((20000, 3), 10000) == (20000, 3)

    def layout(shape, **options):
        options = {"max_precond_dim": 10000, "merge_dims": False, "precondition_1d": False, **options}
        found = soap_layout(shape, **options)
        return found.work_shape, found.preconditioned

    assert layout((5,)) == ((5,), (False,))
    assert layout((5,), precondition_1d=True) == ((5,), (True,))
    assert layout((5,), precondition_1d=True, max_precond_dim=4) == ((5,), (False,))
    assert layout(()) == ((), ())
    assert layout((3, 3, 2, 4), max_precond_dim=3) == ((3, 3, 2, 4), (True, True, True, False))
    assert layout((3, 3, 2, 4), merge_dims=True) == ((72,), (True,))


def test_half_precision_variables_keep_their_state_in_float32():
    optimizer = SOAP(**OPTIONS)
    params, grads = random_problem(3, shapes=((3, 4),), seed=8)
    apply_steps(optimizer, params, grads, dtype="bfloat16")
    state = [optimizer._m[0], optimizer._v[0], *optimizer._statistics[0], *optimizer._bases[0]]
    assert {variable.dtype for variable in state} == {"float32"}


def test_weight_decay_honours_exclude_from_weight_decay():
    params, grads = random_problem(6, shapes=((3, 4), (5,)), seed=9, float32_values=True)
    optimizer = SOAP(**{**OPTIONS, "weight_decay": 0.25})
    optimizer.exclude_from_weight_decay(var_names=["v1"])
    ours = apply_steps(optimizer, params, grads)
    decayed = reference.soap(params, grads, **{**OPTIONS, "weight_decay": 0.25})
    plain = reference.soap(params, grads, **OPTIONS)
    assert_close(ours, [decayed[0], plain[1]])


@pytest.mark.parametrize("argument, value", [("beta_1", 1.0), ("shampoo_beta", -1), ("precondition_frequency", 0),
                                             ("max_precond_dim", 2.5), ("merge_dims", "True")])  # fmt: skip
def test_bad_arguments_name_the_argument_and_the_value(argument, value):
    with pytest.raises(ValueError) as raised:
        SOAP(**{argument: value})
    assert argument in str(raised.value) and repr(value) in str(raised.value)


def test_config_round_trips():
    optimizer = SOAP(0.01, beta_1=0.9, beta_2=0.99, shampoo_beta=0.9, epsilon=1e-6, weight_decay=0.1,
                     precondition_frequency=5, max_precond_dim=512, merge_dims=True, precondition_1d=True,
                     normalize_grads=True, correct_bias=False)  # fmt: skip
    config = optimizer.get_config()
    assert SOAP.from_config(config).get_config() == config
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is SOAP and restored.get_config() == config
    defaults = SOAP().get_config()
    changed = [key for key in config if key not in ("name",) and config[key] != defaults[key]]
    assert len(changed) >= 12, changed  # the test really sets the new keys


def test_docstring_example_runs():
    example = SOAP.__doc__.split("    Example:\n")[1].split("\n\n    References")[0]
    exec(textwrap.dedent(example), {})
