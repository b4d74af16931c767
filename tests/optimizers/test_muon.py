"""Muon: its table row, the orthogonalisation, which variables it orthogonalises, its options, the split.

The row's shared checks (reference match, replicas, save and resume, convergence, dtypes) run in test_table.py.
"""

import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import lepton_keras
from lepton_keras.distribute import get_strategy
from lepton_keras.distribute.split_work import balanced_assignment, computed_once_and_shared
from lepton_keras.optimizers.muon import Muon, orthogonalize, shape_scale
from tests.optimizers.reference import muon as reference
from tests.support.harness import TrainingCase, max_difference, run_case
from tests.support.numerics import apply_steps, assert_close, random_problem
from tests.support.optimizer_spec import OptimizerSpec

# Float32 numbers, so the float64 reference compares at ~1e-7.
OPTIONS = {"learning_rate": 2**-6, "momentum": 0.875, "adamw_learning_rate": 2**-7, "adamw_beta_1": 0.875,
           "adamw_beta_2": 0.96875, "adamw_epsilon": 2**-20}  # fmt: skip

SPECS = [
    OptimizerSpec(
        name="muon",
        make=Muon,
        reference=reference.muon,
        options=OPTIONS,
        decay_options={"weight_decay": 0.25, "adamw_weight_decay": 0.125},
        # The table's problems are vectors, which take the AdamW step (the matrices' convergence
        # is tested below).
        converge_options={"adamw_learning_rate": 0.01, "adamw_beta_2": 0.999, "adamw_epsilon": 1e-8},
        cnn_overrides={"learning_rate": 0.02, "adamw_learning_rate": 1e-3},
        # The learning rate stays a float32 number: Keras keeps it in a float32 variable.
        float64_options={"learning_rate": 2**-6, "momentum": 0.95, "adamw_learning_rate": 3e-4, "adamw_beta_1": 0.9,
                         "adamw_beta_2": 0.95, "adamw_epsilon": 1e-10},  # fmt: skip
    ),
]

MATRIX_SHAPES = ((5,), (3, 4), (6, 2), (2, 3, 2), (3, 3, 2, 4))


@pytest.mark.parametrize(
    "options",
    [
        {"adjust_learning_rate": "match_rms_adamw"},
        {"adjust_learning_rate": "spectral_unclamped", "nesterov": False},
        {"flatten_kernels": False, "ns_steps": 3, "epsilon": 0.0},
    ],
    ids=["match_rms_adamw", "spectral_unclamped-no_nesterov", "no_flattening"],
)
def test_muon_options_match_the_reference(options):
    params, grads = random_problem(12, shapes=MATRIX_SHAPES, seed=3, float32_values=True)
    ours = apply_steps(Muon(**OPTIONS, **options), params, grads, dtype="float64")
    assert_close(ours, reference.muon(params, grads, **OPTIONS, **options), tolerance=1e-12)


def test_newton_schulz_with_the_cubic_coefficients_converges_to_the_polar_factor():
    # Limit case: a = 1.5, b = -0.5, c = 0 is the classical cubic iteration, whose fixed point
    # is U V^T; the quintic's output has the same singular vectors, singular values near 1.
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(6, 4))
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    polar = orthogonalize(tf.constant(matrix), (6, 4), steps=60, coefficients=(1.5, -0.5, 0.0), epsilon=0.0)
    np.testing.assert_allclose(polar.numpy(), u @ vt, atol=1e-10)
    quintic = orthogonalize(tf.constant(matrix), (6, 4), steps=5, coefficients=reference.NS_COEFFICIENTS,
                            epsilon=1e-7).numpy()  # fmt: skip
    singular_values = np.linalg.svd(quintic, compute_uv=False)
    assert np.all((singular_values > 0.6) & (singular_values < 1.25)), singular_values
    np.testing.assert_allclose(u.T @ quintic @ vt.T, np.diag(np.diag(u.T @ quintic @ vt.T)), atol=1e-10)


def test_a_flattened_convolution_kernel_is_the_transpose_of_the_authors_view():
    # The author views a PyTorch kernel (out, in, h, w) as (out, in h w); ours views Keras's
    # (h, w, in, out) as (h w in, out). Both orthogonalise the same matrix up to a transpose
    # and a permutation of its rows, to which the iteration is equivariant.
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(3, 3, 4, 8))  # Keras's layout
    ours = orthogonalize(tf.constant(kernel), kernel.shape, steps=5, coefficients=reference.NS_COEFFICIENTS,
                         epsilon=1e-7).numpy()  # fmt: skip
    torch_layout = kernel.transpose(3, 2, 0, 1)  # (out, in, h, w)
    authors = reference.newton_schulz(torch_layout.reshape(8, -1)).reshape(torch_layout.shape)
    np.testing.assert_allclose(ours, authors.transpose(2, 3, 1, 0), atol=1e-12)


def test_the_shape_scale_reads_keras_layout():
    # torch.optim.Muon's "original" sqrt(max(1, A / B)) of a PyTorch (out, in) weight: for a Keras
    # Dense(8) kernel on 2 inputs, (2, 8), that is sqrt(8 / 2); a (8, 2) kernel is not scaled.
    assert shape_scale((2, 8), "original") == pytest.approx(2.0)
    assert shape_scale((8, 2), "original") == 1.0
    assert shape_scale((3, 3, 4, 64), "original") == pytest.approx(np.sqrt(64 / 36))
    assert shape_scale((2, 8), "match_rms_adamw") == pytest.approx(0.2 * np.sqrt(8))
    assert shape_scale((8, 2), "spectral_unclamped") == pytest.approx(0.5)


def test_which_variables_are_orthogonalised():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, name="conv2d"),
            keras.layers.BatchNormalization(name="batch_normalization"),
            keras.layers.Reshape((36, 4)),
            keras.layers.Embedding(10, 2, name="embedding"),
            keras.layers.Flatten(),
            keras.layers.Dense(5, name="hidden"),
            keras.layers.Dense(2, name="head"),
        ],
        name="head_model",
    )
    paths = {v.path: v for v in model.trainable_variables}

    def orthogonalised(optimizer):
        return sorted(path for path, v in paths.items() if optimizer.orthogonalizes(v))

    assert orthogonalised(Muon()) == ["head_model/conv2d/kernel", "head_model/head/kernel", "head_model/hidden/kernel"]
    assert orthogonalised(Muon(exclude_layers=["head"], flatten_kernels=False)) == ["head_model/hidden/kernel"]
    assert "head_model/embedding/embeddings" in orthogonalised(Muon(exclude_embeddings=False))
    assert orthogonalised(Muon(exclude_layers=["head_model"])) == orthogonalised(Muon())  # not the model's name


def test_a_convolutional_model_trains_its_kernels_with_muon():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3), keras.layers.Flatten(),
                              keras.layers.Dense(2)])  # fmt: skip
    optimizer = Muon(0.02)
    model.compile(optimizer=optimizer, loss="mse")
    kernel = model.layers[0].kernel
    start = kernel.numpy()
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(8, 6, 6, 2)), rng.normal(size=(8, 2)), batch_size=8, verbose=0)
    step = (kernel.numpy() - start).reshape(18, 3)
    # One step from zero momentum: lr times an orthogonalised matrix, whose singular values are near 1.
    assert np.all(np.abs(np.linalg.svd(step / 0.02, compute_uv=False) - 1.0) < 0.35)
    assert [optimizer.orthogonalizes(v) for v in model.trainable_variables] == [True, False, True, False]


def test_matrices_reach_the_least_squares_solution():
    # Muon's step has a fixed spectral size: it reaches a minimum with a decaying learning rate.
    rng = np.random.default_rng(2)
    inputs = rng.normal(size=(64, 6)).astype(np.float32)
    solution = rng.normal(size=(6, 4)).astype(np.float32)
    targets = inputs @ solution
    variable = keras.Variable(np.zeros((6, 4), np.float32))
    optimizer = Muon(keras.optimizers.schedules.CosineDecay(0.05, 1500))

    @tf.function
    def run():
        for _ in tf.range(1500):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(tf.matmul(inputs, variable.value) - targets))
            optimizer.apply(tape.gradient(loss, [variable.value]), [variable])

    run()
    np.testing.assert_allclose(variable.numpy(), solution, atol=1e-2)


def test_weight_decay_honours_exclude_from_weight_decay():
    params, grads = random_problem(4, shapes=((3, 4), (3, 4), (5,)), seed=5, float32_values=True)
    options = {**OPTIONS, "weight_decay": 0.25, "adamw_weight_decay": 0.125}
    optimizer = Muon(**options)
    optimizer.exclude_from_weight_decay(var_names=["v1"])
    ours = apply_steps(optimizer, params, grads)
    decayed = reference.muon(params, grads, **options)
    undecayed = reference.muon(params, grads, **OPTIONS)
    assert_close(ours, [decayed[0], undecayed[1], decayed[2]])


def test_a_schedule_of_the_adamw_learning_rate_is_used_and_saved():
    schedule = keras.optimizers.schedules.ExponentialDecay(2**-7, decay_steps=1, decay_rate=0.5)
    params, grads = random_problem(3, shapes=((5,),), seed=6, float32_values=True)
    ours = apply_steps(Muon(**{**OPTIONS, "adamw_learning_rate": schedule}), params, grads, dtype="float64")
    # Step t uses lr_a 2^-7 0.5^(t-1): run the reference one step at a time with that rate.
    expected = [params[0]]
    m = v = 0.0
    for t, (g,) in enumerate(grads, start=1):
        m = 0.875 * m + 0.125 * g
        v = 0.96875 * v + 0.03125 * g * g
        rate = 2**-7 * 0.5 ** (t - 1)
        expected = [expected[0] - rate * (m / (1 - 0.875**t)) / (np.sqrt(v / (1 - 0.96875**t)) + 2**-20)]
    assert_close(ours, expected, tolerance=1e-12)
    restored = Muon.from_config(Muon(adamw_learning_rate=schedule).get_config())
    assert isinstance(restored.adamw_learning_rate, keras.optimizers.schedules.ExponentialDecay)


@pytest.mark.parametrize("name", ["lookahead_muon", "clipping_muon"])
def test_composes_with_wrappers_by_name(name):
    optimizer = lepton_keras.optimizers.get(name, learning_rate=0.02)
    params, grads = random_problem(3, shapes=((3, 4), (4,)), seed=4)
    moved = apply_steps(optimizer, params, grads)
    assert all(np.all(np.isfinite(m)) and not np.allclose(m, p) for m, p in zip(moved, params))


def split_model(split_orthogonalization: bool):
    """Three matrices of different sizes and their biases, compiled with Muon (the split's training case)."""
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(24, activation="tanh"),
                              keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(2)])  # fmt: skip
    optimizer = Muon(**OPTIONS, weight_decay=0.0625, split_orthogonalization=split_orthogonalization)
    model.compile(optimizer=optimizer, loss="mse")
    return model


def split_case(split: bool) -> TrainingCase:
    return TrainingCase("tests.optimizers.test_muon:split_model", "tests.support.cases:regression_data", steps=4,
                        global_batch_size=16, model_options={"split_orthogonalization": split})  # fmt: skip


def test_split_orthogonalization_gives_the_unsplit_weights_on_2_and_4_replicas():
    unsplit = run_case(split_case(False), replicas=2)
    assert max_difference(unsplit, run_case(split_case(True), replicas=2)) < 1e-6
    # 4 replicas for 3 matrices: one orthogonalises none. The gradients are summed in another order.
    assert max_difference(unsplit, run_case(split_case(True), replicas=4)) < 1e-5


def test_each_item_is_computed_by_one_replica_and_received_by_all():
    strategy = get_strategy("mirrored", cpu_replicas=4)
    computed_by = []  # (item, replica) each time a replica builds an item's computation

    def item(index, replica):
        def compute():
            computed_by.append((index, replica))
            return tf.fill((2, index + 1), float(index + 1))

        return compute

    @tf.function
    def step():
        def replica_step():
            replica = tf.get_static_value(tf.distribute.get_replica_context().replica_id_in_sync_group)
            functions = [item(index, replica) for index in range(5)]
            return computed_once_and_shared(functions, [tf.TensorSpec((2, i + 1)) for i in range(5)],
                                            [float(i + 1) for i in range(5)])  # fmt: skip

        return strategy.run(replica_step)

    results = step()
    assert sorted(computed_by) == [(i, owner) for i, owner in enumerate(balanced_assignment([1, 2, 3, 4, 5], 4))]
    for index, result in enumerate(results):
        for copy in strategy.experimental_local_results(result):
            np.testing.assert_array_equal(copy.numpy(), np.full((2, index + 1), index + 1.0))


def test_balanced_assignment_gives_the_largest_items_first_to_the_least_loaded_replica():
    # 8 -> replica 0; 3, 3, 2 -> replica 1 (3, 6, 8); 1 -> the tie at 8, replica 0: loads 9 and 8.
    assert balanced_assignment([1.0, 8.0, 3.0, 3.0, 2.0], 2) == [0, 0, 1, 1, 1]
    assert balanced_assignment([5.0, 5.0], 4) == [0, 1]
    assert balanced_assignment([], 3) == []


@pytest.mark.parametrize(
    "argument, value",
    [
        ("momentum", 1.0),
        ("nesterov", "True"),
        ("ns_steps", 0),
        ("ns_coefficients", (3.4, -4.7)),
        ("ns_coefficients", (3.4, float("nan"), 2.0)),
        ("epsilon", -1e-7),
        ("adjust_learning_rate", "moonlight"),
        ("weight_decay", float("inf")),
        ("flatten_kernels", None),
        ("exclude_layers", "head"),
        ("exclude_embeddings", 1),
        ("adamw_learning_rate", "3e-4"),
        ("adamw_beta_1", 1.0),
        ("adamw_beta_2", -0.5),
        ("adamw_epsilon", None),
        ("adamw_weight_decay", -0.1),
        ("split_orthogonalization", "yes"),
    ],
)
def test_bad_arguments_name_the_argument_and_the_value(argument, value):
    with pytest.raises(ValueError) as raised:
        Muon(**{argument: value})
    assert argument in str(raised.value) and repr(value) in str(raised.value)


def test_config_round_trips():
    optimizer = Muon(0.01, momentum=0.9, nesterov=False, ns_steps=4, ns_coefficients=(3.0, -4.0, 2.0), epsilon=1e-8,
                     adjust_learning_rate="match_rms_adamw", weight_decay=0.1, flatten_kernels=False,
                     exclude_layers=["head"], exclude_embeddings=False, adamw_learning_rate=1e-3, adamw_beta_1=0.8,
                     adamw_beta_2=0.99, adamw_epsilon=1e-8, adamw_weight_decay=0.01,
                     split_orthogonalization=True)  # fmt: skip
    config = optimizer.get_config()
    assert Muon.from_config(config).get_config() == config
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is Muon and restored.get_config() == config
    defaults = Muon().get_config()
    changed = [key for key in config if key not in ("name",) and config[key] != defaults[key]]
    assert len(changed) >= 16, changed  # the test really sets the new keys


def test_docstring_example_runs():
    example = Muon.__doc__.split("    Example:\n")[1].split("\n\n    References")[0]
    exec(textwrap.dedent(example), {})
