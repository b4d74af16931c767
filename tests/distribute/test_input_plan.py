"""The input plan: shards, batches and steps, against an independent count; its errors."""

import itertools
import types

import pytest

from lepton_keras.distribute.input_plan import InputPlan, worker_shard


def counted(examples, workers, worker_index, local_replicas, global_batch):
    """What a plan must say, by dealing the examples out one by one and filling batches."""
    shards = [[] for _ in range(workers)]
    for example in range(examples - examples % workers):  # round robin, leftovers dropped
        shards[example % workers].append(example)
    replica_batch = global_batch / (workers * local_replicas)
    worker_batch = replica_batch * local_replicas
    steps, left = 0, len(shards[worker_index])
    while left >= worker_batch:
        steps, left = steps + 1, left - worker_batch
    return shards, replica_batch, worker_batch, steps


COMBINATIONS = [
    (examples, workers, local_replicas, global_batch)
    for examples, workers, local_replicas, global_batch in itertools.product(
        [8, 100, 257, 1800], [1, 2, 3], [1, 2, 4], [8, 24, 32, 48]
    )
    if global_batch % (workers * local_replicas) == 0 and global_batch // workers <= examples // workers
]


@pytest.mark.parametrize("examples, workers, local_replicas, global_batch", COMBINATIONS)
def test_the_plan_matches_an_independent_count(examples, workers, local_replicas, global_batch):
    shards = None
    for worker_index in range(workers):
        plan = InputPlan(global_batch, examples, workers, worker_index, local_replicas, per_worker_pipelines=True)
        shards, replica_batch, worker_batch, steps = counted(examples, workers, worker_index, local_replicas,
                                                             global_batch)  # fmt: skip
        assert plan.replicas == workers * local_replicas
        assert (plan.per_replica_batch, plan.per_worker_batch) == (replica_batch, worker_batch)
        assert list(range(examples))[plan.shard] == shards[worker_index]
        assert plan.shard_size == len(shards[worker_index])
        assert plan.steps_per_epoch == steps
        assert (plan.pipeline_batch_size, plan.pipeline_batches_per_step) == (replica_batch, local_replicas)
    assert len({len(shard) for shard in shards}) == 1  # every worker runs the same steps


def test_one_pipeline_yields_global_batches_that_keras_splits():
    plan = InputPlan(64, 300, local_replicas=2)
    assert (plan.per_replica_batch, plan.per_worker_batch, plan.steps_per_epoch) == (32, 64, 4)
    assert (plan.pipeline_batch_size, plan.pipeline_batches_per_step) == (64, 1)
    assert plan.shard == slice(0, 300, 1)


def test_worker_shards_are_equal_strided_and_drop_the_remainder():
    assert [list(range(10))[worker_shard(10, i, 3)] for i in range(3)] == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    assert list(range(5))[worker_shard(5, 0, 1)] == [0, 1, 2, 3, 4]


def fake_strategy(workers, local_replicas):
    """What the plan reads of a tf.distribute.Strategy, without TensorFlow."""
    return types.SimpleNamespace(
        num_replicas_in_sync=workers * local_replicas,
        extended=types.SimpleNamespace(worker_devices=[f"/cpu:{i}" for i in range(local_replicas)]),
    )


@pytest.fixture
def any_strategy(monkeypatch):
    monkeypatch.setattr("lepton_keras.distribute.input_plan.check_strategy", lambda name, value: value)


@pytest.mark.parametrize(
    "workers, local_replicas, per_worker_pipelines, expected",
    [
        (1, 1, None, (1, 1, False)),
        (1, 2, None, (1, 2, False)),  # one machine: Keras splits the global batches
        (1, 2, True, (1, 2, True)),
        (2, 1, None, (2, 1, True)),  # several workers: each reads its own shard
        (2, 2, None, (2, 2, True)),
        (2, 2, False, (1, 4, False)),
    ],
)
def test_the_strategy_gives_the_layout(any_strategy, workers, local_replicas, per_worker_pipelines, expected):
    plan = InputPlan.from_strategy(64, fake_strategy(workers, local_replicas), examples=400,
                                   per_worker_pipelines=per_worker_pipelines)  # fmt: skip
    assert (plan.workers, plan.local_replicas, plan.per_worker_pipelines) == expected
    assert plan.replicas == workers * local_replicas and plan.examples == 400


def test_a_process_holding_its_shard_plans_for_the_whole_job(any_strategy):
    plan = InputPlan.from_strategy(32, fake_strategy(2, 1), examples=900, held_shard=(1, 2))
    assert (plan.examples, plan.worker_index, plan.shard_size, plan.steps_per_epoch) == (1800, 1, 900, 56)
    assert InputPlan.from_strategy(32, fake_strategy(2, 1), examples=1800).for_worker(1) == plan


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: InputPlan(0, 10), "^global_batch_size must be an integer >= 1, received: 0$"),
        (lambda: InputPlan(8.0, 10), "^global_batch_size must be an integer >= 1, received: 8.0$"),
        (lambda: InputPlan(30, 100, 2, 0, 2),
         r"^global_batch_size must be a multiple of the 4 replica\(s\), received: 30$"),
        (lambda: InputPlan(64, 40), "^global_batch_size must be at most the 40 training images, received: 64$"),
        (lambda: InputPlan(128, 101, 2),
         (r"^global_batch_size must be at most the 100 training images \(50 in each of the 2 workers' shards\), "
          r"received: 128$")),
        (lambda: InputPlan(8, -1), "^examples must be an integer >= 0, received: -1$"),
        (lambda: InputPlan(8, 10, 0), "^workers must be an integer >= 1, received: 0$"),
        (lambda: InputPlan(8, 10, 2, 2), "^worker_index must be an integer >= 0 and <= 1, received: 2$"),
        (lambda: InputPlan(8, 10, local_replicas=0), "^local_replicas must be an integer >= 1, received: 0$"),
        (lambda: InputPlan(8, 10, per_worker_pipelines=1), "^per_worker_pipelines must be True or False, received: 1$"),
        (lambda: InputPlan.from_strategy(8, "mirrored", examples=10),
         "^strategy must be a tf.distribute.Strategy or None, received: 'mirrored'$"),
        (lambda: InputPlan.from_strategy(8, examples=10, per_worker_pipelines=True),
         "^per_worker_pipelines must be False or None without a strategy, received: True$"),
        (lambda: InputPlan.from_strategy(8, examples=10, held_shard=(0, 2)),
         "^these images are shard 0 of 2; feed them with per_worker_pipelines=True"),
    ],
)  # fmt: skip
def test_bad_plans_are_errors_naming_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_a_shard_the_workers_do_not_match_is_an_error(any_strategy):
    with pytest.raises(ValueError, match="^the images were loaded as shard 2 of 3, but the strategy has 2 input"):
        InputPlan.from_strategy(8, fake_strategy(2, 1), examples=10, held_shard=(2, 3))
