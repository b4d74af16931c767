"""lepton_keras.distribute.large_batch: the three rules against their closed forms, the defaults per
optimizer family, bad input, and the tutorial's large-batch recipe equal on 1 device, 2 replicas and
2 workers."""

import math

import numpy as np
import pytest

from lepton_keras.distribute.large_batch import (
    ADAPTIVE_OPTIMIZERS,
    batch_ratio,
    grown_warmup_epochs,
    rule_learning_rate,
    scale_recipe,
)
from tests.support.harness import TrainingCase, max_difference, run_case, run_case_on_workers


@pytest.mark.parametrize("rule, factor", [("linear", lambda k: k), ("sqrt", math.sqrt), ("none", lambda k: 1.0)])
def test_the_learning_rate_rules_are_their_closed_forms(rule, factor):
    rng = np.random.default_rng(0)
    for _ in range(20):
        base, batch = (int(v) for v in rng.integers(1, 10_000, size=2))
        rate = float(rng.uniform(1e-5, 1.0))
        assert rule_learning_rate(rate, base, batch, rule) == pytest.approx(rate * factor(batch / base), rel=1e-12)


def test_the_rate_stops_growing_at_the_critical_batch():
    rng = np.random.default_rng(2)
    for _ in range(20):
        base = int(rng.integers(1, 1_000))
        critical, batch = base + int(rng.integers(0, 10_000)), int(rng.integers(1, 20_000))
        expected = min(batch, critical) / base
        assert batch_ratio(base, batch, critical) == pytest.approx(expected, rel=1e-12)
        rate = float(rng.uniform(1e-5, 1.0))
        for rule, factor in (("linear", expected), ("sqrt", math.sqrt(expected)), ("none", 1.0)):
            got = rule_learning_rate(rate, base, batch, rule, critical_batch_size=critical)
            assert got == pytest.approx(rate * factor, rel=1e-12)
    assert batch_ratio(128, 8192, 2048) == 16.0 == batch_ratio(128, 2048, 2048)
    assert batch_ratio(128, 1024, 2048) == 8.0 == batch_ratio(128, 1024)
    assert batch_ratio(128, 64, 2048) == 0.5  # a smaller batch: the rule scales down as before
    with pytest.raises(ValueError, match="critical_batch_size must be at least base_batch_size"):
        batch_ratio(128, 1024, 64)


def test_the_warmup_grows_by_the_given_epochs_per_doubling_up_to_its_cap():
    # 128 -> 8192 is 6 doublings.
    assert grown_warmup_epochs(7.5, 128, 8192, per_doubling=1.0, epochs=30, max_fraction=0.5) == 13.5
    assert grown_warmup_epochs(7.5, 128, 8192, per_doubling=2.0, epochs=30, max_fraction=0.5) == 15.0  # the cap
    assert grown_warmup_epochs(7.5, 128, 2048, per_doubling=0.5, epochs=30, max_fraction=0.5) == 9.5
    assert grown_warmup_epochs(7.5, 128, 128, per_doubling=1.0, epochs=30, max_fraction=0.5) == 7.5
    assert grown_warmup_epochs(7.5, 128, 32, per_doubling=1.0, epochs=30, max_fraction=0.5) == 7.5  # never shrinks
    assert grown_warmup_epochs(7.5, 128, 8192, per_doubling=1.0, epochs=30, max_fraction=0.1) == 7.5
    rng = np.random.default_rng(1)
    for _ in range(20):
        base, batch = (int(v) for v in rng.integers(1, 100_000, size=2))
        warmup, per_doubling = float(rng.uniform(0, 5)), float(rng.uniform(0, 3))
        expected = max(warmup, min(warmup + per_doubling * max(0.0, math.log2(batch / base)), 0.5 * 40))
        got = grown_warmup_epochs(warmup, base, batch, per_doubling=per_doubling, epochs=40, max_fraction=0.5)
        assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "optimizer, batch, rule, rate, layerwise",
    [
        ("adabelief", 2048, "sqrt", 4e-3 * 4, "lamb"),
        ("adabelief", 512, "sqrt", 4e-3 * 2, "adabelief"),
        ("adam", 8192, "sqrt", 4e-3 * 8, "lamb"),
        ("sgd", 2048, "linear", 4e-3 * 16, "lars"),
        ("lars", 512, "linear", 4e-3 * 4, "lars"),
        ("rmsprop", 2048, "none", 4e-3, "rmsprop"),  # no rule known for it: unchanged
    ],
)
def test_scale_recipe_picks_the_rule_and_optimizer_of_the_family(optimizer, batch, rule, rate, layerwise):
    scaled = scale_recipe(learning_rate=4e-3, base_batch_size=128, batch_size=batch, optimizer=optimizer,
                          warmup_epochs=7.5, epochs=30)  # fmt: skip
    assert (scaled.rule, scaled.optimizer, scaled.batch_size) == (rule, layerwise, batch)
    assert scaled.learning_rate == pytest.approx(rate, rel=1e-12)
    assert scaled.warmup_epochs == pytest.approx(7.5 + math.log2(batch / 128), rel=1e-12)


def test_scale_recipe_options():
    base = {"learning_rate": 0.1, "base_batch_size": 256, "batch_size": 4096, "optimizer": "SGD",
            "warmup_epochs": 1.0, "epochs": 90}  # fmt: skip
    assert scale_recipe(**base, rule="sqrt").learning_rate == pytest.approx(0.4)
    assert scale_recipe(**base, layerwise_from_batch=None).optimizer == "sgd"
    assert scale_recipe(**base, layerwise_from_batch=8192).optimizer == "sgd"
    assert scale_recipe(**base, warmup_epochs_per_doubling=0.0).warmup_epochs == 1.0
    assert scale_recipe(**base, max_warmup_fraction=0.02).warmup_epochs == pytest.approx(1.8)
    assert scale_recipe(**base, critical_batch_size=1024).learning_rate == pytest.approx(0.4)
    assert {"adam", "adabelief", "lamb"} <= ADAPTIVE_OPTIMIZERS


@pytest.mark.parametrize(
    "options, message",
    [
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"base_batch_size": 0}, "base_batch_size"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"optimizer": ""}, "optimizer"),
        ({"warmup_epochs": -1.0}, "warmup_epochs"),
        ({"epochs": 0}, "epochs"),
        ({"rule": "cubic"}, "rule"),
        ({"warmup_epochs_per_doubling": -0.5}, "per_doubling"),
        ({"max_warmup_fraction": 1.5}, "max_warmup_fraction"),
        ({"layerwise_from_batch": 0}, "layerwise_from_batch"),
        ({"critical_batch_size": 0}, "critical_batch_size"),
        ({"critical_batch_size": 64}, "critical_batch_size"),
    ],
)
def test_scale_recipe_refuses_bad_input(options, message):
    arguments = {"learning_rate": 4e-3, "base_batch_size": 128, "batch_size": 2048, "optimizer": "adam",
                 "warmup_epochs": 7.5, "epochs": 30, **options}  # fmt: skip
    with pytest.raises(ValueError, match=message):
        scale_recipe(**arguments)


CASE = TrainingCase("tests.distribute.cases:tutorial_cnn_large_batch_recipe", "tests.support.cases:cifar10_sample",
                    steps=3, global_batch_size=32, callbacks_fn="tests.distribute.cases:large_batch_recipe_callbacks")


@pytest.mark.multiworker
def test_the_large_batch_recipe_trains_to_the_same_weights_on_1_device_2_replicas_and_2_workers():
    single, mirrored = run_case(CASE), run_case(CASE, replicas=2)
    worker_0, worker_1 = run_case_on_workers(CASE)
    untrained = run_case(TrainingCase(CASE.model_fn, CASE.data_fn, steps=0, global_batch_size=32))
    assert max_difference(single, untrained) > 1e-4  # it trained (LAMB under its one-cycle schedule)
    assert max_difference(single, mirrored) < 1e-5
    assert max_difference(worker_0, worker_1) == 0.0
    assert max_difference(single, worker_0) < 1e-5
