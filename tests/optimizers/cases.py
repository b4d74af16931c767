"""Models and data for the optimizer-wrapper and SAM tests (the harness and worker processes import them by name)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from lepton_keras.optimizers.sam import SharpnessAwareModel
from tests.support.cases import regression_data
from tests.support.harness import TrainingCase
from tests.support.numerics import assert_close

# --- the wrappers: a small MLP on tests.support.cases.regression_data (8 features, 2 targets) ---------------


def dense_model(optimizer="lookahead_sgd", options: dict | None = None, batch_norm: bool = False,
                jit_compile: bool = False):
    """A small tanh MLP (8 -> 16 -> 2) compiled with `lepton_keras.optimizers.get(optimizer, **options)`, MSE.

    `optimizer` is a registry name or an optimizer instance (then without options).
    """
    from lepton_keras.optimizers.registry import get

    layers = [keras.Input((8,)), keras.layers.Dense(16, activation="tanh")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization())
    layers.append(keras.layers.Dense(2, name="head"))
    model = keras.Sequential(layers)
    model.compile(optimizer=get(optimizer, **(options or {})), loss="mse", jit_compile=jit_compile)
    return model


def dense_case(optimizer: str, options: dict, steps: int = 6) -> TrainingCase:
    """The harness case that trains `dense_model(optimizer, options)` on regression_data, global batch 16."""
    return TrainingCase("tests.optimizers.cases:dense_model", "tests.support.cases:regression_data", steps=steps,
                        global_batch_size=16, model_options={"optimizer": optimizer, "options": options})


def fit_dense_model(optimizer, *, batch_size: int, rows: int = 32, seed: int = 0, epochs: int = 1,
                    jit_compile: bool = False):
    """`dense_model(optimizer)` built after seeding with `seed`, fitted unshuffled on `rows` rows: (model, history)."""
    keras.utils.set_random_seed(seed)
    model = dense_model(optimizer, jit_compile=jit_compile)
    x, y = regression_data(rows, seed)
    history = model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    return model, history


def assert_jit_compiled_equals_not_compiled(compiled_optimizer, plain_optimizer) -> None:
    """`fit_dense_model` with jit_compile=True and False (two new optimizers alike): the same weights and state."""
    compiled, _ = fit_dense_model(compiled_optimizer, batch_size=8, rows=48, jit_compile=True)
    plain, _ = fit_dense_model(plain_optimizer, batch_size=8, rows=48, jit_compile=False)
    assert_close(compiled.get_weights(), plain.get_weights(), 1e-6)
    assert_close(compiled.optimizer.variables, plain.optimizer.variables, 1e-6)


def trained_ema_model(strategy=None):
    """`dense_model` under ExponentialMovingAverage(SGD), fitted one epoch on 64 rows: (model, x, y)."""
    with (strategy or tf.distribute.get_strategy()).scope():
        model = dense_model("ema_sgd", {"learning_rate": 0.0625, "decay": 0.5})
    x, y = regression_data(64, 0)
    model.fit(x, y, batch_size=16, shuffle=False, verbose=0)
    return model, x, y


def assert_wrapper_config_round_trips(optimizer) -> None:
    """serialize then deserialize gives the same class, the same config and the inner optimizer's config."""
    config = keras.optimizers.serialize(optimizer)
    restored = keras.optimizers.deserialize(config)
    assert type(restored) is type(optimizer)
    config, restored_config = optimizer.get_config(), restored.get_config()
    inner, restored_inner = config.pop("inner_optimizer"), restored_config.pop("inner_optimizer")
    assert restored_config == config
    assert restored_inner["config"] == inner["config"]


def assert_registry_builds_the_wrapper(name: str, cls) -> None:
    """`get("<wrapper>_<inner>")` is a `cls` around the inner optimizer of that name."""
    from lepton_keras.optimizers.registry import get

    optimizer = get(name)
    assert type(optimizer) is cls
    assert type(optimizer.inner_optimizer).__name__.lower() == name.split("_")[1]


def keras_inner(kind: str) -> keras.optimizers.Optimizer:
    """The inner optimizer of the limit-case tests: Keras's SGD (0.125, momentum 0.5) or Adam (0.0625)."""
    return keras.optimizers.SGD(0.125, momentum=0.5) if kind == "sgd" else keras.optimizers.Adam(0.0625)


# --- SAM: a linear problem whose SAM steps have a closed form (tests/optimizers/reference/sam.py) ------------

LINEAR_FEATURES, LINEAR_OUTPUTS = 4, 3
_start = np.random.default_rng(1234)
LINEAR_KERNEL = _start.normal(size=(LINEAR_FEATURES, LINEAR_OUTPUTS)).astype(np.float32)
LINEAR_BIAS = _start.normal(size=(LINEAR_OUTPUTS,)).astype(np.float32)


def linear_data(count: int, seed: int):
    """`count` rows of a noisy linear map: x ~ N(0, 1)^4, y = x A + c + noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, LINEAR_FEATURES))
    y = (x @ rng.normal(size=(LINEAR_FEATURES, LINEAR_OUTPUTS)) + rng.normal(size=LINEAR_OUTPUTS)
         + 0.1 * rng.normal(size=(count, LINEAR_OUTPUTS)))  # fmt: skip
    return x.astype(np.float32), y.astype(np.float32)


def linear_model() -> keras.Model:
    """Dense(3) on 4 features, starting from LINEAR_KERNEL and LINEAR_BIAS."""
    return keras.Sequential(
        [
            keras.Input((LINEAR_FEATURES,)),
            keras.layers.Dense(
                LINEAR_OUTPUTS,
                kernel_initializer=keras.initializers.Constant(LINEAR_KERNEL),
                bias_initializer=keras.initializers.Constant(LINEAR_BIAS),
            ),
        ]
    )


def sam_linear_sgd(rho=0.5, adaptive=False, eta=0.01, learning_rate=2.0**-4, momentum=0.0, jit_compile=False,
                   loss_scale=False):  # fmt: skip
    """The linear model under SAM or ASAM, compiled with SGD (in a LossScaleOptimizer if asked) and MSE."""
    model = SharpnessAwareModel(linear_model(), rho=rho, adaptive=adaptive, eta=eta)
    optimizer = keras.optimizers.SGD(learning_rate, momentum=momentum)
    if loss_scale:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=2.0**10)
    model.compile(optimizer=optimizer, loss="mse", jit_compile=jit_compile)
    return model


def regularized_model(dropout=True, synchronized=False) -> keras.Model:
    """Dense -> BatchNormalization -> [Dropout] -> Dense, with an L2 kernel penalty: state and randomness.

    Dropout draws per replica and BatchNormalization normalises per replica unless
    synchronized, so only the model without dropout, synchronized, trains the same on N replicas.
    """
    return keras.Sequential(
        [
            keras.Input((LINEAR_FEATURES,)),
            # No bias before BatchNormalization: its gradient is rounding noise, which Adam would amplify.
            keras.layers.Dense(6, use_bias=False, kernel_initializer=keras.initializers.GlorotUniform(seed=1),
                               kernel_regularizer=keras.regularizers.L2(0.01)),  # fmt: skip
            keras.layers.BatchNormalization(synchronized=synchronized),
            *([keras.layers.Dropout(0.25, seed=3)] if dropout else []),
            keras.layers.Dense(LINEAR_OUTPUTS, kernel_initializer=keras.initializers.GlorotUniform(seed=2)),
        ]
    )


def sam_regularized_adam(rho=0.5, adaptive=True, dropout=True, synchronized=False):
    """The regularized model under SAM or ASAM, compiled with Adam and MSE."""
    model = SharpnessAwareModel(regularized_model(dropout, synchronized), rho=rho, adaptive=adaptive)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", metrics=["mae"])
    return model
