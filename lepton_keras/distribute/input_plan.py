"""One plan of the training input: who reads which examples, in batches of what size, for how many steps.

The data path decides these things once, here, from the global batch B, the layout of the
strategy (W workers, each with L local replicas, R = W * L replicas in all) and the N
training examples of the job:

    per-replica batch   b = B / R              (B must be a multiple of R)
    per-worker batch        B / W = L * b
    worker w's shard        examples w, w + W, w + 2W, ... of the first N - N mod W
                            (N // W each, so that every worker runs the same steps)
    steps per epoch         (N // W) // (B / W)   (incomplete batches are dropped)

TensorFlow-free: a strategy is read only through `num_replicas_in_sync` and
`extended.worker_devices`.
"""

from __future__ import annotations

import dataclasses

from lepton_keras.distribute.batch import check_global_batch
from lepton_keras.validation import check_bool, check_int, check_strategy, invalid


def worker_shard(examples: int, worker_index: int, workers: int) -> slice:
    """Worker `worker_index`'s shard of `examples` examples: equal strided shards, the remainder dropped.

    Example:
        >>> list(range(10))[worker_shard(10, 1, 3)]
        [1, 4, 7]
    """
    return slice(worker_index, examples - examples % workers, workers)


@dataclasses.dataclass(frozen=True)
class InputPlan:
    """The input of one worker: its shard, its batches and the steps of an epoch.

    Attributes:
        global_batch_size: examples per step over all replicas and workers.
        examples: training examples of the whole job, before sharding.
        workers: input pipelines, each reading its own shard: the strategy's workers with
            `per_worker_pipelines`, else 1 (one pipeline of global batches that Keras splits
            between all the replicas).
        worker_index: this worker's pipeline, in [0, workers).
        local_replicas: replicas each pipeline feeds.
        per_worker_pipelines: the pipeline yields per-replica batches, `local_replicas` of
            them a step (for `strategy.distribute_datasets_from_function`); else whole
            per-worker batches.

    Raises:
        ValueError: a bad field, a global batch that is not a multiple of the replicas, or one
            larger than the examples (a shard's per-worker batch larger than the shard),
            which would train nothing.
    """

    global_batch_size: int
    examples: int
    workers: int = 1
    worker_index: int = 0
    local_replicas: int = 1
    per_worker_pipelines: bool = False

    def __post_init__(self):
        check_int("examples", self.examples, minimum=0)
        check_int("workers", self.workers, minimum=1)
        check_int("worker_index", self.worker_index, minimum=0, maximum=self.workers - 1)
        check_int("local_replicas", self.local_replicas, minimum=1)
        check_bool("per_worker_pipelines", self.per_worker_pipelines)
        check_global_batch("global_batch_size", self.global_batch_size, self.replicas)
        if self.per_worker_batch > self.shard_size:  # an empty dataset: a fit would train nothing
            each = f" ({self.shard_size} in each of the {self.workers} workers' shards)" if self.workers > 1 else ""
            allowed = f"at most the {self.shard_size * self.workers} training images{each}"
            raise invalid("global_batch_size", self.global_batch_size, allowed)

    @classmethod
    def from_strategy(
        cls,
        global_batch_size: int,
        strategy=None,
        *,
        examples: int,
        held_shard: tuple[int, int] = (0, 1),
        per_worker_pipelines: bool | None = None,
    ) -> InputPlan:
        """The plan of `strategy` (a `tf.distribute.Strategy` or None: one device).

        Args:
            global_batch_size: examples per step over all replicas; a multiple of the replicas.
            strategy: the strategy you train with (default: none).
            examples: training examples this process holds.
            held_shard: (index, count): the process holds shard `index` of `count` of the job's
                examples (`load_cifar10(shard=...)`), `count` being 1 or the strategy's workers;
                (0, 1) (default) when it holds them all, and each worker takes its own shard.
            per_worker_pipelines: each worker reads its own shard (default: when the strategy
                has several workers); False or None without a strategy.

        The plan's `worker_index` is `held_shard`'s; for a process holding every example, set
        its pipeline with `for_worker(tf.distribute.InputContext.input_pipeline_id)`.
        """
        check_strategy("strategy", strategy)
        replicas = 1 if strategy is None else strategy.num_replicas_in_sync
        check_global_batch("global_batch_size", global_batch_size, replicas)
        # (the default strategy has no worker_devices; one replica is one device anyway)
        local_devices = len(strategy.extended.worker_devices) if replicas > 1 else 1
        if per_worker_pipelines is None:
            per_worker_pipelines = local_devices < replicas
        per_worker_pipelines = check_bool("per_worker_pipelines", per_worker_pipelines)
        if per_worker_pipelines and strategy is None:
            raise invalid("per_worker_pipelines", per_worker_pipelines, "False or None without a strategy")
        workers = replicas // local_devices if per_worker_pipelines else 1
        index, count = held_shard
        if count > 1 and not per_worker_pipelines:
            raise ValueError(
                f"these images are shard {index} of {count}; feed them with "
                "per_worker_pipelines=True (the default under a multi-worker strategy)"
            )
        if count not in (1, workers):
            raise ValueError(
                f"the images were loaded as shard {index} of {count}, but the strategy "
                f'has {workers} input pipeline(s); load them with shard="auto"'
            )
        return cls(global_batch_size, examples * count, workers, index, replicas // workers, per_worker_pipelines)

    def for_worker(self, worker_index: int) -> InputPlan:
        """The same plan seen from worker `worker_index`."""
        return dataclasses.replace(self, worker_index=worker_index)

    @property
    def replicas(self) -> int:
        return self.workers * self.local_replicas

    @property
    def per_replica_batch(self) -> int:
        return self.global_batch_size // self.replicas

    @property
    def per_worker_batch(self) -> int:
        return self.global_batch_size // self.workers

    @property
    def shard_size(self) -> int:
        """Examples in each worker's shard (the same for every worker)."""
        return self.examples // self.workers

    @property
    def shard(self) -> slice:
        """This worker's shard, as a slice of the job's examples (`worker_shard`)."""
        return worker_shard(self.examples, self.worker_index, self.workers)

    @property
    def steps_per_epoch(self) -> int:
        """Steps of one epoch, the same on every worker: the incomplete last batch is dropped."""
        return self.shard_size // self.per_worker_batch

    @property
    def pipeline_batch_size(self) -> int:
        """Examples in each batch the pipeline yields: per-replica with per-worker pipelines, else per-worker."""
        return self.per_replica_batch if self.per_worker_pipelines else self.per_worker_batch

    @property
    def pipeline_batches_per_step(self) -> int:
        """Batches of the pipeline each step takes: one per local replica with per-worker pipelines, else 1."""
        return self.local_replicas if self.per_worker_pipelines else 1
