"""Schedule-Free AdamW and SGD: table rows, warm-up and a changing learning rate, the lazy start of z, x, config.

The rows' shared checks (reference match, replicas, save and resume, convergence, dtypes) run in test_table.py.
The evaluation switch is tested in tests/callbacks/test_schedule_free.py.
"""

import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from lepton_keras.optimizers import get
from lepton_keras.optimizers.lookahead import Lookahead
from lepton_keras.optimizers.schedule_free import ScheduleFreeAdamW, ScheduleFreeSGD
from tests.optimizers.reference import schedule_free as reference
from tests.support.numerics import apply_steps, assert_close, random_problem
from tests.support.optimizer_spec import OptimizerSpec

SPECS = [
    OptimizerSpec(
        name="schedule_free_adamw",
        make=ScheduleFreeAdamW,
        reference=reference.schedule_free_adamw,
        # Float32 numbers, so the float64 reference compares at ~1e-7; the warm-up ends within the 15 steps.
        options={"learning_rate": 2**-5, "beta_1": 0.875, "beta_2": 0.96875, "epsilon": 2**-20, "warmup_steps": 4},
        decay_options={"weight_decay": 0.25},
        # x averages all the iterates (c_t = 1/t): Rosenbrock's early ones take ~4000 steps to fade.
        converge_options={"learning_rate": 0.03},
        converge_steps=4000,
        cnn_overrides={"learning_rate": 0.003},
        float64_options={"learning_rate": 2**-7, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8, "warmup_steps": 5},
    ),
    OptimizerSpec(
        name="schedule_free_sgd",
        make=ScheduleFreeSGD,
        reference=reference.schedule_free_sgd,
        options={"learning_rate": 2**-4, "momentum": 0.875, "warmup_steps": 4, "r": 1.0, "weight_lr_power": 1.0},
        decay_options={"weight_decay": 0.25},
        # Rosenbrock's curvature (~1000 at the minimum) bounds the rate; r = 4 lets x forget the
        # early iterates faster than the uniform average (r = 0).
        converge_options={"learning_rate": 0.004, "r": 4.0},
        converge_steps=8000,
        cnn_overrides={"learning_rate": 0.2},
        float64_options={"learning_rate": 2**-4, "momentum": 0.9, "warmup_steps": 5},
    ),
]

SHAPES = ((5,), (3, 4))


class TableSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A learning rate that rises and falls below its start (a list of float32 numbers, by 0-based step)."""

    def __init__(self, values):
        self.values = [float(np.float32(value)) for value in values]

    def __call__(self, step):
        return tf.gather(tf.constant(self.values, tf.float32), tf.cast(step, tf.int32))

    def get_config(self):
        return {"values": self.values}


@pytest.mark.parametrize("make, compare", [
    (lambda lr: ScheduleFreeAdamW(lr, beta_1=0.9, beta_2=0.99, weight_decay=0.1, warmup_steps=6, r=0.5),
     lambda params, grads, lr, **kw: reference.schedule_free_adamw(params, grads, learning_rate=lr, beta_1=0.9,
                                                                   beta_2=0.99, weight_decay=0.1, warmup_steps=6,
                                                                   r=0.5, **kw)),
    (lambda lr: ScheduleFreeSGD(lr, momentum=0.8, weight_decay=0.1, warmup_steps=6, weight_lr_power=1.0),
     lambda params, grads, lr, **kw: reference.schedule_free_sgd(params, grads, learning_rate=lr, momentum=0.8,
                                                                 weight_decay=0.1, warmup_steps=6,
                                                                 weight_lr_power=1.0, **kw)),
], ids=["adamw", "sgd"])  # fmt: skip
def test_warmup_weight_decay_and_a_changing_learning_rate_match_the_reference_at_y_and_x(make, compare):
    # lr_max keeps the largest learning rate so far: the averaging weights change while the rate
    # rises and stay once it falls. x comes from y and z, the slot, at the end.
    params, grads = random_problem(16, shapes=SHAPES, seed=3, float32_values=True)
    schedule = TableSchedule(0.05 * (1.0 + 0.6 * np.sin(0.4 * np.arange(17))))
    optimizer = make(schedule)
    variables = [keras.Variable(p.astype(np.float32)) for p in params]
    optimizer.build(variables)
    for step_grads in grads:
        optimizer.apply([tf.constant(g, tf.float32) for g in step_grads], variables)
    expected_y, expected_x = compare(params, grads, schedule, return_x=True)
    assert_close([v.numpy() for v in variables], expected_y)
    assert_close([x.numpy() for x in optimizer.evaluation_weights(variables)], expected_x)
    assert max(np.max(np.abs(x - y)) for x, y in zip(expected_x, expected_y)) > 1e-2  # x and y differ


@pytest.mark.parametrize("make", [lambda: ScheduleFreeAdamW(0.01), lambda: ScheduleFreeSGD(0.1)], ids=["adamw", "sgd"])
def test_the_first_step_of_model_fit_starts_z_at_the_initial_weights(make):
    # c_1 = 1, so y_1 = z_1 = y_0 - lr d_1. Keras's fit builds the optimizer symbolically; an
    # assignment of z in build() would be lost there (Keras's own ScheduleFreeAdamW: y_1 = -lr d_1).
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer=make(), loss="mse")
    inputs, targets = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32), np.ones((8, 3), np.float32)
    start = [w.copy() for w in model.get_weights()]
    with tf.GradientTape() as tape:
        loss = keras.losses.MeanSquaredError()(targets, model(inputs))
    gradients = [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]
    model.fit(inputs, targets, batch_size=8, epochs=1, verbose=0, shuffle=False)
    if isinstance(model.optimizer, ScheduleFreeAdamW):
        directions = [g / (np.abs(g) + 1e-8) for g in gradients]  # sqrt(v_1 / (1 - beta_2)) = |g_1|
    else:
        directions = gradients
    lr = float(model.optimizer.learning_rate)
    assert_close(model.get_weights(), [w - lr * d for w, d in zip(start, directions)], tolerance=1e-6)


@pytest.mark.filterwarnings("ignore:Gradients do not exist")
def test_z_starts_at_a_variable_s_first_gradient_as_the_authors_do():
    # A variable without a gradient in the first steps keeps its weights; its z starts at them
    # when its first gradient comes, with the optimizer's averaging weights of that step: the
    # authors' code (per parameter group), and the reference with zero gradients before.
    params, grads = random_problem(6, shapes=SHAPES, seed=5)
    late = [[g if i == 0 or t >= 2 else None for i, g in enumerate(step)] for t, step in enumerate(grads)]
    zeros = [[np.zeros_like(g) if g is None else g for g in step] for step in late]
    options = {"learning_rate": 2**-5, "beta_1": 0.875, "beta_2": 0.96875, "warmup_steps": 3}
    assert_close(apply_steps(ScheduleFreeAdamW(**options), params, late),
                 reference.schedule_free_adamw(params, zeros, **options))  # fmt: skip


def test_float64_variables_match_the_reference_with_everyday_hyperparameters_and_warmup():
    params, grads = random_problem(12, shapes=SHAPES, seed=6, float32_values=True)
    options = {"learning_rate": 2**-6, "beta_1": 0.9, "beta_2": 0.999, "weight_decay": 0.01, "warmup_steps": 4}
    ours = apply_steps(ScheduleFreeAdamW(**options), params, grads, dtype="float64")
    expected = reference.schedule_free_adamw(params, grads, **options)
    for got, want in zip(ours, expected):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-13)


def test_unfused_updates_equal_fused_ones():
    params, grads = random_problem(8, shapes=SHAPES, seed=7)
    options = {"learning_rate": 2**-5, "momentum": 0.875, "warmup_steps": 3, "weight_decay": 0.1}
    assert_close(apply_steps(ScheduleFreeSGD(**options, fused_updates=False), params, grads),
                 apply_steps(ScheduleFreeSGD(**options), params, grads), tolerance=1e-6)  # fmt: skip


def test_registry_names_parse_as_optimizers_and_compose_with_wrappers():
    assert type(get("schedule_free_adamw")) is ScheduleFreeAdamW
    assert type(get("schedule_free_sgd", learning_rate=0.5)) is ScheduleFreeSGD
    composed = get("lookahead_schedule_free_sgd")
    assert type(composed) is Lookahead and type(composed.inner_optimizer) is ScheduleFreeSGD


@pytest.mark.parametrize("make, argument, value", [
    (ScheduleFreeAdamW, "beta_1", 0.0), (ScheduleFreeAdamW, "beta_2", 1.0), (ScheduleFreeAdamW, "epsilon", -1e-8),
    (ScheduleFreeAdamW, "weight_decay", -0.1), (ScheduleFreeAdamW, "warmup_steps", 2.5), (ScheduleFreeSGD, "r", -1.0),
    (ScheduleFreeSGD, "momentum", 1.0), (ScheduleFreeSGD, "weight_lr_power", float("nan")),
])  # fmt: skip
def test_bad_arguments_name_the_argument_and_the_value(make, argument, value):
    with pytest.raises(ValueError) as raised:
        make(**{argument: value})
    assert argument in str(raised.value) and repr(value) in str(raised.value)


@pytest.mark.parametrize("optimizer", [
    ScheduleFreeAdamW(0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-6, weight_decay=0.1, warmup_steps=7, r=1.0,
                      weight_lr_power=1.0),
    ScheduleFreeSGD(0.5, momentum=0.8, weight_decay=0.1, warmup_steps=7, r=1.0, weight_lr_power=1.0),
], ids=["adamw", "sgd"])  # fmt: skip
def test_config_round_trips(optimizer):
    config = optimizer.get_config()
    assert type(optimizer).from_config(config).get_config() == config
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is type(optimizer) and restored.get_config() == config
    defaults = type(optimizer)().get_config()
    changed = [key for key in config if key not in ("name",) and config[key] != defaults[key]]
    assert len(changed) >= 5, changed
    assert restored.weight_decay is None  # Keras's own form of decay stays off


@pytest.mark.parametrize("cls", [ScheduleFreeAdamW, ScheduleFreeSGD])
def test_docstring_example_runs(cls):
    example = cls.__doc__.split("    Example:\n")[1].split("\n\n    References")[0]
    exec(textwrap.dedent(example), {})
