"""The tutorial's CNN with Adam gives the same weights on 1 device, 2 and 4 replicas, and 2 workers."""

import functools

import pytest

from tests.support.harness import TrainingCase, max_difference, run_case, run_case_on_workers

TOLERANCE = 1e-5
CASE = TrainingCase("tests.support.cases:tutorial_cnn_adam", "tests.support.cases:cifar10_sample", steps=5,
                    global_batch_size=16)  # fmt: skip


@functools.cache
def reference():
    return run_case(CASE)


def test_training_changes_the_weights():
    # Guards the comparisons below: equal weights must not come from a run that did nothing.
    untrained = run_case(TrainingCase(CASE.model_fn, CASE.data_fn, steps=0))
    assert max_difference(untrained, reference()) > 1e-3


@pytest.mark.parametrize("replicas", [2, 4])
def test_mirrored_strategy_matches_one_device(replicas):
    difference = max_difference(reference(), run_case(CASE, replicas=replicas))
    print(f"MirroredStrategy x{replicas}: largest weight/optimizer-variable difference {difference:.3g}")
    assert difference < TOLERANCE


@pytest.mark.multiworker
def test_two_workers_match_one_device_and_each_other():
    worker_0, worker_1 = run_case_on_workers(CASE, workers=2)
    difference = max_difference(reference(), worker_0)
    print(f"2 workers: largest weight/optimizer-variable difference {difference:.3g}")
    assert difference < TOLERANCE
    assert max_difference(worker_0, worker_1) == 0.0
