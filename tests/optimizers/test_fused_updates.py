"""Fused (XLA-compiled) updates: the same numbers as unfused ones, really compiled, and FusedUpdates.

1. every row of the optimizer table gives the same weights and optimizer variables within
   1e-6 over 15 steps with `fused_updates` on and off, with no strategy and under
   MirroredStrategy over 2 replicas (every device's copy);
2. the fused path calls an XLA-compiled (`_XlaMustCompile`) function that takes the
   variables as inputs (none captured) and assigns them inside, the unfused one none;
3. FusedUpdates around Keras's Adam (with weight decay), SGD and Lion equals the plain
   Keras optimizer within 1e-6, with no strategy and over 2 replicas;
4. configs round-trip with `fused_updates`, a bad value is refused, the registry builds
   "fused_<name>".
The fused_adam row (FusedUpdates around Adam) is defined here; the table runs it.
"""

import contextlib
import gc

import keras
import numpy as np
import pytest
import tensorflow as tf

from lepton_keras.optimizers import base
from lepton_keras.optimizers.fused_updates import FusedUpdates
from lepton_keras.optimizers.lookahead import Lookahead, lookahead_update
from lepton_keras.optimizers.radam import RAdam, radam_update
from lepton_keras.optimizers.registry import get
from tests.optimizers.reference import wrapper as reference
from tests.support.numerics import assert_close, random_problem
from tests.support.optimizer_spec import OptimizerSpec
from tests.support.optimizer_table import all_specs


def fused_adam(*, learning_rate, beta_1, beta_2, weight_decay=None):
    return FusedUpdates(keras.optimizers.Adam(learning_rate, beta_1=beta_1, beta_2=beta_2, weight_decay=weight_decay))


# Adam's hyperparameters exactly representable in float32 (1 - 0.999 in float32 is 6e-5 off, relatively).
BETAS = {"beta_1": 0.875, "beta_2": 1 - 2**-8}
SPECS = [
    OptimizerSpec(
        name="fused_adam",
        make=fused_adam,
        reference=reference.adam,
        options={"learning_rate": 0.0625, **BETAS},
        decay_options={"weight_decay": 0.125},
        converge_options={"learning_rate": 0.03125, **BETAS},
    ),
]

# Not named SPECS: all_specs() collects the SPECS of every tests/optimizers/test_*.py (this
# module's row above too, which is why it comes first).
TABLE = all_specs()
SHAPES = [(5,), (3, 4)]
STEPS = 15
# One row per family (element-wise, layer-wise, global, each wrapper with per-variable math).
MIRRORED_ROWS = ["radam", "lars", "prodigy", "lookahead_adam", "accumulation_adam", "ema_adam", "swa_sgd"]


def _exactly_halved_problem():
    """float32 weights, and gradients in multiples of 2^-8: halving them for two replicas and summing back is exact."""
    params, grads = random_problem(STEPS, shapes=SHAPES, seed=5)
    grads = [[(np.round(g * 256) / 256).astype(np.float32) for g in step] for step in grads]
    return [p.astype(np.float32) for p in params], grads


PARAMS, GRADS = _exactly_halved_problem()


@pytest.fixture(scope="module")
def mirrored():
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def _set_fused(optimizer, fused: bool):
    """Sets `fused_updates` on the optimizer and every optimizer it wraps."""
    while optimizer is not None:
        if hasattr(optimizer, "fused_updates"):
            optimizer.fused_updates = fused
        optimizer = getattr(optimizer, "inner_optimizer", None)


def _train(make, *, fused=None, strategy=None):
    """Weights (every device's copy) and optimizer variables after STEPS steps of GRADS."""
    with strategy.scope() if strategy else contextlib.nullcontext():
        variables = [keras.Variable(p) for p in PARAMS]
        optimizer = make()
        if fused is not None:
            _set_fused(optimizer, fused)
        optimizer.build(variables)
    if strategy is None:
        for step_grads in GRADS:
            optimizer.apply([tf.constant(g) for g in step_grads], variables)
        copies = [[v.numpy()] for v in variables]
    else:
        @tf.function(autograph=False)
        def step(grads):
            # Each replica holds half of the global gradient; the optimizer sums them.
            strategy.run(lambda *gs: optimizer.apply([g / 2 for g in gs], variables), args=tuple(grads))

        for step_grads in GRADS:
            step([tf.constant(g) for g in step_grads])
        copies = [[np.array(c) for c in v.value.values] for v in variables]
    return copies, [np.array(v) for v in optimizer.variables], optimizer


def _assert_same_training(a, b, tolerance=1e-6):
    """Every device's copy of every weight in runs `a` and `b` equals the first copy in `a`, and so do their states."""
    (copies_a, state_a, _), (copies_b, state_b, _) = a, b
    for x, y in zip(copies_a, copies_b):
        assert_close([*x, *y], [x[0]] * (len(x) + len(y)), tolerance)
    assert_close(state_a, state_b, tolerance)


def _maker(spec):
    options = {**spec.options, **(spec.decay_options or {})}
    return lambda: spec.make(**options)


@pytest.mark.parametrize("spec", TABLE, ids=[spec.name for spec in TABLE])
def test_fused_and_unfused_updates_give_the_same_numbers(spec):
    fused = _train(_maker(spec), fused=True)
    unfused = _train(_maker(spec), fused=False)
    moved = max(float(np.max(np.abs(w[0] - p))) for w, p in zip(fused[0], PARAMS))
    assert moved > 1e-3, "the optimizer did not move the weights: the comparison would prove nothing"
    _assert_same_training(fused, unfused)


def _tracing_counts():
    return {function: compiled.experimental_get_tracing_count() for function, compiled in base._COMPILED.items()}


@pytest.mark.parametrize("spec", TABLE, ids=[spec.name for spec in TABLE])
def test_the_fused_update_is_not_retraced_as_the_step_scalars_change(spec):
    # Step-dependent scalars (bias corrections, warm-ups, d) reach the compiled update as tensors.
    for dtype in ("float32", "float64"):
        variables = [keras.Variable(p.astype(dtype), dtype=dtype) for p in PARAMS]
        optimizer = _maker(spec)()
        optimizer.build(variables)

        def step(index):
            optimizer.apply([tf.constant(g, dtype) for g in GRADS[index]], variables)

        step(0), step(1)
        traced = _tracing_counts()
        for index in range(2, 8):
            step(index)
        assert _tracing_counts() == traced, f"retraced with {dtype} variables"


@pytest.mark.parametrize("name", MIRRORED_ROWS)
def test_fused_updates_under_mirrored_strategy_equal_one_device(name, mirrored):
    spec = next(spec for spec in TABLE if spec.name == name)
    _assert_same_training(_train(_maker(spec), fused=True, strategy=mirrored), _train(_maker(spec), fused=False))


@pytest.fixture
def compiled_functions(monkeypatch):
    """The pure functions update_in_place compiles, in call order."""
    seen = []
    original = base.compiled_update

    def recording(function):
        seen.append(function)
        return original(function)

    monkeypatch.setattr(base, "compiled_update", recording)
    return seen


def test_the_fused_path_runs_an_xla_compiled_function(compiled_functions):
    _train(lambda: Lookahead(RAdam(0.01), sync_period=2), fused=True)
    assert radam_update in compiled_functions and lookahead_update in compiled_functions
    variable, m, v = (tf.Variable(PARAMS[1]) for _ in range(3))
    scalars = {key: tf.constant(0.5) for key in ("learning_rate", "beta_1", "one_minus_beta_1", "beta_2",
                                                 "one_minus_beta_2", "epsilon", "bias_correction_1",
                                                 "bias_correction_2", "rectification")}
    scalars["rectified"] = tf.constant(True)
    reads = [base._Read(index, "float32") for index in range(3)]
    concrete = base.compiled_update(radam_update).get_concrete_function(
        (variable.handle, m.handle, v.handle), ("float32",) * 3, (reads[0], tf.constant(PARAMS[1]), *reads[1:]),
        scalars,
    )
    assert concrete.function_def.attr["_XlaMustCompile"].b
    # In place: the variables are inputs of the kernel, which writes them (nothing is returned),
    # and the trace references none (it outlives the variables it was traced with).
    assert not concrete.captured_inputs and not concrete.graph.variables
    assert [op.type for op in concrete.graph.get_operations()].count("AssignVariableOp") == 3
    assert concrete.structured_outputs is None


def test_a_compiled_update_outlives_the_variables_it_was_traced_with():
    def train_once():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16), keras.layers.Dense(1)])
        model.compile(optimizer=RAdam(0.01), loss="mse")
        model.fit(np.ones((16, 8)), np.ones((16, 1)), epochs=2, verbose=0)
        return model.get_weights()

    first = train_once()
    gc.collect()  # the first model's variables are gone; the cached compiled update remains
    for second, expected in zip(train_once(), first):
        np.testing.assert_array_equal(second, expected)


def test_a_fused_update_refuses_a_result_count_that_differs_from_its_targets():
    variable, slot = tf.Variable(PARAMS[1]), tf.Variable(PARAMS[1])
    for fused in (True, False):
        with pytest.raises(ValueError, match="returned 1 values for 2 targets"):
            base.update_in_place(_half, (variable, slot), variable, fused=fused)


def _half(variable):
    return variable / 2


def test_the_unfused_path_compiles_nothing(compiled_functions):
    _, _, optimizer = _train(lambda: FusedUpdates(Lookahead(RAdam(0.01), sync_period=2)), fused=False)
    assert compiled_functions == []
    assert optimizer.compiled_function_count() == 0


KERAS_OPTIMIZERS = {
    "adam_with_decay": lambda: keras.optimizers.Adam(0.0625, beta_1=0.875, beta_2=1 - 2**-8, weight_decay=0.125),
    "sgd_momentum": lambda: keras.optimizers.SGD(0.125, momentum=0.5, nesterov=True),
    "lion": lambda: keras.optimizers.Lion(2**-7, beta_1=0.875, beta_2=0.96875),
}


@pytest.mark.parametrize("name", list(KERAS_OPTIMIZERS))
@pytest.mark.parametrize("replicas", [None, 2], ids=["no_strategy", "mirrored_2"])
def test_fused_updates_equal_the_plain_keras_optimizer(name, replicas, mirrored):
    make = KERAS_OPTIMIZERS[name]
    strategy = mirrored if replicas else None
    copies, _, fused = _train(lambda: FusedUpdates(make()), strategy=strategy)
    plain_copies, plain_state, _ = _train(make, strategy=strategy)
    # One compiled function per variable and device copy.
    assert fused.compiled_function_count() == len(SHAPES) * (replicas or 1)
    _assert_same_training((copies, [np.array(v) for v in fused.inner_optimizer.variables], None),
                  (plain_copies, plain_state, None))


def test_sparse_gradients_take_the_fused_path():
    def run(make_gradient):
        variable = keras.Variable(np.ones((4, 3), np.float32))
        optimizer = RAdam(0.5, beta_2=0.5)
        for _ in range(3):
            optimizer.apply([make_gradient()], [variable])
        return variable.numpy()

    values = tf.constant([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.25]])
    sparse = run(lambda: tf.IndexedSlices(values, tf.constant([0, 2]), tf.constant([4, 3])))
    dense = run(lambda: tf.scatter_nd([[0], [2]], values, [4, 3]))
    np.testing.assert_allclose(sparse, dense, rtol=0, atol=1e-6)
    assert not np.allclose(sparse, 1.0)


@pytest.mark.parametrize(
    "make",
    [lambda: RAdam(0.01, fused_updates=False), lambda: Lookahead("adam", fused_updates=False),
     lambda: FusedUpdates(keras.optimizers.AdamW(0.01, weight_decay=0.5))],
    ids=["RAdam", "Lookahead", "FusedUpdates"],
)
def test_config_round_trips_with_fused_updates(make):
    optimizer = make()
    config = optimizer.get_config()
    assert "fused_updates" in config
    rebuilt = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(rebuilt) is type(optimizer) and rebuilt.get_config() == config
    assert rebuilt.fused_updates == optimizer.fused_updates


@pytest.mark.parametrize("make", [lambda v: RAdam(fused_updates=v), lambda v: FusedUpdates("sgd", fused_updates=v)],
                         ids=["RAdam", "FusedUpdates"])
def test_fused_updates_must_be_a_bool(make):
    with pytest.raises(ValueError, match="fused_updates must be True or False, received: 1"):
        make(1)


def test_the_registry_builds_fused_optimizers_and_routes_base_keywords():
    fused_adam = get("fused_adam", learning_rate=0.25)
    assert type(fused_adam) is FusedUpdates and isinstance(fused_adam.inner_optimizer, keras.optimizers.Adam)
    radam = get("radam", fused_updates=False, weight_decay=0.5, clipnorm=1.0)
    assert radam.fused_updates is False and radam.weight_decay == 0.5 and radam.clipnorm == 1.0
    assert get("lookahead_radam", fused_updates=False).fused_updates is False
