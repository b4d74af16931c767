"""The wrapper base and stacks of wrappers: one entry into cross-replica context per step, compositions the
same on replicas and workers, saved mid-training, under mixed float16 and XLA, configs of a nested stack,
inner optimizers with per-replica options refused."""

import os
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from lepton_keras.distribute import get_strategy
from lepton_keras.optimizers.adaptive_gradient_clipping import AdaptiveGradientClipping
from lepton_keras.optimizers.gradient_accumulation import GradientAccumulation
from lepton_keras.optimizers.gradient_centralization import GradientCentralization
from lepton_keras.optimizers.gradient_clipping import GradientClipping
from lepton_keras.optimizers.lookahead import Lookahead
from lepton_keras.optimizers.registry import get
from lepton_keras.optimizers.weight_averaging import ExponentialMovingAverage
from tests.optimizers.cases import (
    assert_jit_compiled_equals_not_compiled,
    assert_wrapper_config_round_trips,
    dense_case,
    dense_model,
    fit_dense_model,
)
from tests.support.cases import regression_data
from tests.support.harness import max_difference, run_case, run_case_on_workers
from tests.support.numerics import assert_close, random_problem

STRATEGY_TOLERANCE = 1e-5

# --- one pass through a stack ------------------------------------------------------------------

def count_context_switches(monkeypatch, strategy):
    """Counts merge_call entries, call_for_each_replica entries and batched all-reduces (counting only)."""
    counts = {"merge_call": 0, "call_for_each_replica": 0, "batch_reduce_to": 0}

    def counted(name, method):
        def call(*args, **kwargs):
            counts[name] += 1
            return method(*args, **kwargs)
        return call

    monkeypatch.setattr(tf.distribute.ReplicaContext, "merge_call",
                        counted("merge_call", tf.distribute.ReplicaContext.merge_call))
    for name in ("call_for_each_replica", "batch_reduce_to"):
        monkeypatch.setattr(strategy.extended, name, counted(name, getattr(strategy.extended, name)))
    return counts

@pytest.mark.parametrize("make", [
    lambda: Lookahead(GradientClipping(keras.optimizers.Adam(0.0625), global_norm=0.5), sync_period=2),
    lambda: Lookahead(GradientAccumulation(GradientClipping(keras.optimizers.Adam(0.0625), global_norm=0.5)),
                      sync_period=2),
], ids=["lookahead_clipping_adam", "lookahead_accumulation_clipping_adam"])
def test_a_three_level_stack_enters_cross_replica_context_once_per_step(make, monkeypatch):
    strategy = get_strategy("mirrored", cpu_replicas=2)
    params, grads = random_problem(1, seed=13, scale=1.0)
    with strategy.scope():
        variables = [keras.Variable(np.float32(p)) for p in params]
        optimizer = make()
        optimizer.build(variables)

    @tf.function(autograph=False)
    def step(step_grads):
        # Each replica holds half of the global gradient (distinct tensors, as in training).
        strategy.run(lambda *gs: optimizer.apply([g / 2 for g in gs], variables), args=tuple(step_grads))

    counts = count_context_switches(monkeypatch, strategy)
    step([tf.constant(np.float32(g)) for g in grads[0]])  # traced once: the counts are one step's
    all_reduces = counts["batch_reduce_to"]
    assert all_reduces == 1, counts  # the gradients, summed across replicas once
    # Every replica thread calls merge_call for one entry into cross-replica context. On CPU devices
    # the all-reduce itself is one such entry; the update of the whole stack is the one other.
    assert counts["merge_call"] % strategy.num_replicas_in_sync == 0, counts
    assert counts["merge_call"] // strategy.num_replicas_in_sync - all_reduces == 1, counts
    assert counts["call_for_each_replica"] == 1, counts  # strategy.run's own; no level re-enters replica context

# --- compositions on replicas and workers --------------------------------------------------------

@pytest.mark.parametrize("optimizer", ["lookahead_accumulation_clipping_adam", "ema_agc_centralization_sgd"])
def test_compositions_are_the_same_on_1_and_2_replicas(optimizer):
    options = {"learning_rate": 0.0625, "sync_period": 2, "steps": 2, "global_norm": 0.5}
    if optimizer.startswith("ema"):
        options = {"learning_rate": 0.0625, "momentum": 0.5, "decay": 0.5, "clipping": 0.0625}
    # The shared table checks each row on 1, 2 and 4 replicas; here the nesting on 2.
    case = dense_case(optimizer, options, steps=7)
    assert max_difference(run_case(case), run_case(case, replicas=2)) < STRATEGY_TOLERANCE

@pytest.mark.multiworker
def test_lookahead_accumulation_and_clipping_on_two_workers():
    case = dense_case("lookahead_accumulation_clipping_sgd",
                      {"learning_rate": 0.0625, "momentum": 0.5, "sync_period": 2, "steps": 2, "global_norm": 0.5},
                      steps=7)
    single = run_case(case)
    for worker in run_case_on_workers(case):
        assert max_difference(single, worker) < STRATEGY_TOLERANCE

# --- saving, configs and the inner optimizer --------------------------------------------------

@pytest.mark.parametrize("optimizer,options", [
    ("lookahead_accumulation_sgd", {"learning_rate": 0.0625, "momentum": 0.5, "sync_period": 2, "steps": 2}),
    ("swa_agc_adam", {"learning_rate": 0.0625, "start_step": 1, "clipping": 0.0625}),
    ("ema_centralization_clipping_adam", {"learning_rate": 0.0625, "decay": 0.5, "global_norm": 0.5}),
])
def test_saved_mid_training_and_resumed_equals_uninterrupted(optimizer, options):
    x, y = regression_data(6 * 8, 12)
    keras.utils.set_random_seed(0)
    uninterrupted = dense_model(optimizer, options)
    keras.utils.set_random_seed(0)
    first_half = dense_model(optimizer, options)
    uninterrupted.fit(x, y, batch_size=8, shuffle=False, verbose=0)
    first_half.fit(x[:24], y[:24], batch_size=8, shuffle=False, verbose=0)  # 3 steps: mid-window, mid-period
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.keras")
        first_half.save(path)
        resumed = keras.saving.load_model(path)
    assert type(resumed.optimizer) is type(first_half.optimizer)
    resumed.fit(x[24:], y[24:], batch_size=8, shuffle=False, verbose=0)
    assert_close(resumed.get_weights(), uninterrupted.get_weights(), 1e-7)
    assert len(uninterrupted.optimizer.variables) == len(resumed.optimizer.variables)
    assert_close(resumed.optimizer.variables, uninterrupted.optimizer.variables, 1e-7)

@pytest.mark.parametrize("optimizer", [Lookahead(GradientClipping(keras.optimizers.Adam(0.25), global_norm=2.0))],
                         ids=lambda o: type(o).__name__)
def test_config_round_trips(optimizer):
    assert_wrapper_config_round_trips(optimizer)

@pytest.mark.parametrize("option,value", [("clipnorm", 1.0), ("global_clipnorm", 1.0), ("clipvalue", 1.0),
                                          ("gradient_accumulation_steps", 2), ("use_ema", True)])
def test_an_inner_optimizer_with_per_replica_options_is_rejected(option, value):
    with pytest.raises(ValueError, match=f"{option}={value!r}"):
        Lookahead(keras.optimizers.SGD(0.1, **{option: value}))

# --- precision and compilation -------------------------------------------------------------

def test_inside_a_loss_scale_optimizer_under_mixed_float16_the_loss_drops():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        inner = GradientAccumulation(AdaptiveGradientClipping(GradientCentralization(keras.optimizers.Adam(0.03)),
                                                              clipping=0.5), steps=2)
        optimizer = keras.optimizers.LossScaleOptimizer(ExponentialMovingAverage(Lookahead(inner, sync_period=2),
                                                                                 decay=0.5))
        model, history = fit_dense_model(optimizer, batch_size=8, rows=64, epochs=8)
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.layers[0].compute_dtype == "float16"
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0]
    assert all(np.isfinite(keras.ops.convert_to_numpy(v)).all() for v in optimizer.variables)
    # LossScaleOptimizer skips the steps whose scaled gradients overflow float16.
    assert 0 < int(optimizer.inner_optimizer.innermost_optimizer.iterations) <= 8 * 64 // 16

@pytest.mark.parametrize("name,options", [
    ("lookahead_accumulation_clipping_adam", {"learning_rate": 0.0625, "sync_period": 2, "steps": 2,
                                              "global_norm": 0.5}),
    ("ema_agc_centralization_sgd", {"learning_rate": 0.0625, "decay": 0.5, "clipping": 0.0625}),
])
def test_jit_compiled_equals_not_compiled(name, options):
    assert_jit_compiled_equals_not_compiled(get(name, **options), get(name, **options))
