"""Keras's own optimizers under distribution: every optimizer class Keras exports, trained by `fit` on one
device, on 2 and 4 replicas (MirroredStrategy over logical CPUs) and on 2 local workers, gives the same weights
and optimizer variables for the same global batch.

The classes are read from `keras.optimizers` (tests/support/optimizer_table.py), so an optimizer a new Keras
release adds is checked without a change here. Keras's ScheduleFreeAdamW is checked after lepton_keras's
keras_compat fix of its symbolic build (without it, one device loses the model's initial weights at the first
step and two replicas keep them); tests/distribute/test_keras_schedule_free.py shows the defect itself.
"""

import pytest

import lepton_keras  # noqa: F401  (the keras_compat fixes that `import lepton_keras` installs)
from tests.support.harness import TrainingCase, max_difference, run_case, run_cases_on_workers
from tests.support.optimizer_table import keras_optimizer_classes

KERAS_OPTIMIZERS = keras_optimizer_classes()
TOLERANCE = 1e-5  # float32 sums in another order, relative to max(1, |x|)


def case_for(class_name: str) -> TrainingCase:
    return TrainingCase("tests.support.optimizer_table:keras_optimizer_model", "tests.support.cases:regression_data",
                        steps=6, global_batch_size=16, model_options={"class_name": class_name})  # fmt: skip


def test_the_list_holds_keras_s_optimizers():
    assert {"Adam", "SGD", "AdamW", "Lion", "Lamb", "Adafactor", "Muon", "ScheduleFreeAdamW"} <= set(KERAS_OPTIMIZERS)


@pytest.mark.parametrize("class_name", KERAS_OPTIMIZERS)
def test_same_weights_on_1_2_and_4_replicas(class_name):
    single = run_case(case_for(class_name))
    moved = run_case(TrainingCase(**{**case_for(class_name).__dict__, "steps": 0}))
    assert max_difference(single, moved) > 1e-3, "training did not move the weights: the check would prove nothing"
    for replicas in (2, 4):
        assert max_difference(run_case(case_for(class_name), replicas=replicas), single) < TOLERANCE, replicas


@pytest.mark.multiworker
def test_same_weights_on_two_workers():
    results = run_cases_on_workers([case_for(name) for name in KERAS_OPTIMIZERS])
    differences = {}
    for name, (worker_0, worker_1) in zip(KERAS_OPTIMIZERS, results):
        assert max_difference(worker_0, worker_1) == 0.0, name
        differences[name] = max_difference(run_case(case_for(name)), worker_0)
    assert {name: d for name, d in differences.items() if d >= TOLERANCE} == {}
