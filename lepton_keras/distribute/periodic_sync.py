"""Periodic parameter synchronisation: local SGD and DiLoCo, replicas that average every H steps.

When to use it: data-parallel training whose step waits on the gradient all-reduce
(workers on slow links, many machines, CPUs sharing a machine; see benchmarks/scaling.py).
Each replica trains on its own shard with its own copy of the weights and optimizer state,
and the replicas meet every `every` steps instead of every step, which divides the
communication by H.

For R replicas, replica r's weights w_r and optimizer state s_r, its per-replica batch B_r
(the mean loss L over its own rows, exactly as one process training alone on that shard),
and the inner optimizer's update U:

    every step (local):     w_r, s_r <- U(w_r, s_r, grad L(w_r; B_r))        no communication
    every H steps (sync):   d = (1 / R) sum_r (a - w_r)                      one all-reduce
                            plain averaging:  a <- a - d   (= the mean of the w_r)
                            outer optimizer:  a <- O(a, d) (d is its gradient; DiLoCo)
                            w_r <- a for every r

with a the weights of the last sync. Plain averaging without compression averages the
weights themselves (no copy a is kept); with `compression` the deltas a - w_r travel in
16 bits and are summed there. DiLoCo's outer optimizer is SGD with Nesterov momentum,
learning rate 0.7 and momentum 0.9 (`outer_optimizer="diloco"`):

    m <- mu m + d;   a <- a - lr (d + mu m)

`warmup_steps` trains synchronously first (the gradient all-reduce of every step, as
today): post-local SGD. The k-th sync comes after step warmup_steps + k H.

What a sync touches, and what it does not:
- the trainable weights, as above; the floating-point non-trainable weights (BatchNorm's
  moving statistics) are averaged in float32 at every sync;
- the optimizer's slots (momentum, second moments) stay each replica's own between syncs,
  as in DiLoCo and Lin et al.'s local SGD; the iteration counter is the same everywhere;
- a full sync, before `evaluate`, `predict`, `save` and `save_weights` and at the end of
  `fit`, averages the weights, the non-trainable weights and the optimizer's slots in
  float32, so that what a user evaluates, saves or holds is one model, and a checkpoint
  restores every replica to the state it had: a resume is exact against a run that saved
  at the same points (with an outer optimizer, whose copy a and momentum are not in Keras's
  checkpoints, it is not). It leaves the outer
  optimizer's copy a and its momentum alone. A full sync is a sync point of its own:
  validating every epoch averages the replicas every epoch.

Costs: between syncs the replicas disagree, and each sync moves the model by the mean of R
trajectories of H steps at the per-replica batch, not by H steps at the global batch; per sync the wire carries 4 bytes per parameter (2 with
compression, plus BatchNorm's statistics), so per step 4 / H bytes per parameter against
the gradient all-reduce's 4.

Example:
    strategy = lepton_keras.distribute.get_strategy(periodic_sync=PeriodicSync(every=16))
    with strategy.scope():
        model = make_model()
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(dataset, epochs=10)   # unchanged; the model it leaves is one model

References: Lin et al., "Don't Use Large Mini-Batches, Use Local SGD", ICLR 2020
(post-local SGD); Douillard et al., "DiLoCo: Distributed Low-Communication Training of
Language Models", arXiv:2311.08105 (2023); Stich, "Local SGD Converges Fast and
Communicates Little", ICLR 2019. PyTorch's `PostLocalSGDOptimizer` and
`PeriodicModelAverager` average the parameters only, as here; DiLoCo keeps the inner
optimizer's state local, as here. Where ours differs: it averages at every `evaluate`,
`predict` and save (theirs leave that to the user), and its compression sums the deltas
in 16 bits instead of quantising them.
"""

from __future__ import annotations

import dataclasses
import weakref

from lepton_keras.validation import check_int, check_strategy, invalid

COMPRESSIONS = ("float16", "bfloat16")
DILOCO_LEARNING_RATE = 0.7
DILOCO_MOMENTUM = 0.9


@dataclasses.dataclass(frozen=True, eq=False)
class PeriodicSync:
    """Replicas that train on their own and average every `every` steps (see the module docstring).

    Args:
        every: steps between two syncs, H (default 1: today's synchronous gradient all-reduce).
        warmup_steps: synchronous steps before the first local one (default 0; post-local SGD).
        outer_optimizer: None (default: plain averaging, local SGD), "diloco" (SGD with
            Nesterov momentum, learning rate 0.7, momentum 0.9), or an unbuilt
            keras.optimizers.Optimizer that steps on the averaged delta as its gradient (each
            model gets a copy made from its config).
        compression: None (default), "float16" or "bfloat16": the averaged deltas travel in
            this dtype (16-bit sums; the weights stay float32).
    """

    every: int = 1
    warmup_steps: int = 0
    outer_optimizer: object = None
    compression: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "every", check_int("every", self.every, minimum=1))
        object.__setattr__(self, "warmup_steps", check_int("warmup_steps", self.warmup_steps, minimum=0))
        if self.compression is not None and (not isinstance(self.compression, str)
                                             or self.compression not in COMPRESSIONS):  # fmt: skip
            raise invalid("compression", self.compression, "None, 'float16' or 'bfloat16'")
        outer = self.outer_optimizer
        if outer is not None and outer != "diloco":
            import keras

            if not isinstance(outer, keras.optimizers.Optimizer) or isinstance(outer, str):
                raise invalid("outer_optimizer", outer, "None, 'diloco' or an unbuilt keras.optimizers.Optimizer")
            if outer.built:
                raise ValueError("outer_optimizer is already built; pass a new optimizer (each model gets a copy)")

    @property
    def is_synchronous(self) -> bool:
        """True for every=1: the gradient all-reduce of every step, today's path."""
        return self.every == 1

    @property
    def keeps_anchor(self) -> bool:
        """Whether a sync needs the weights of the last sync (an outer optimizer, or deltas to compress)."""
        return self.outer_optimizer is not None or self.compression is not None

    def new_outer_optimizer(self):
        """A fresh outer optimizer for one model, or None for plain averaging."""
        import keras

        if self.outer_optimizer is None:
            return None
        if self.outer_optimizer == "diloco":
            return keras.optimizers.SGD(learning_rate=DILOCO_LEARNING_RATE, momentum=DILOCO_MOMENTUM, nesterov=True)
        return self.outer_optimizer.__class__.from_config(self.outer_optimizer.get_config())

    def syncs_between(self, before: int, after: int) -> bool:
        """Whether the replicas sync after the steps that took the count from `before` to `after`.

        The k-th sync (k >= 1) comes after step warmup_steps + k H; a call that runs several
        steps (steps_per_execution) syncs once when it passes one.
        """

        def syncs_passed(steps: int) -> int:
            return max(steps - self.warmup_steps, 0) // self.every

        return syncs_passed(after) > syncs_passed(before)

    def is_local(self, step: int) -> bool:
        """Whether step number `step` + 1 (0-based `step` steps already taken) trains locally."""
        return not self.is_synchronous and step >= self.warmup_steps


_settings: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def set_periodic_sync(strategy, sync: PeriodicSync | None) -> None:
    """Makes every model trained under `strategy` sync its replicas as `sync` says (None: every step).

    Every optimizer in the strategy's scope follows it, Keras's and lepton_keras's, with
    `model.fit`, `evaluate`, `predict` and saving unchanged. `get_strategy(periodic_sync=...)`
    calls this. Set it before the model's first `fit`.

    Raises:
        ValueError: `sync` is not a PeriodicSync or None.
        RuntimeError: this Keras release hides what local steps need (then nothing is set).
    """
    strategy = check_strategy("strategy", strategy, allow_none=False)
    if sync is not None and not isinstance(sync, PeriodicSync):
        raise invalid("sync", sync, "a PeriodicSync or None")
    if sync is None or sync.is_synchronous:
        _settings.pop(strategy, None)
        return
    from lepton_keras.distribute import replica_averaging

    replica_averaging.install()
    _settings[strategy] = sync


def periodic_sync(strategy=None) -> PeriodicSync:
    """The setting of `strategy` (default: the current one); every=1 when none was set."""
    import tensorflow as tf

    strategy = check_strategy("strategy", strategy) or tf.distribute.get_strategy()
    return _settings.get(strategy, PeriodicSync())


# Set while a local train step runs (and so while it is traced): the gradient sum then keeps each
# replica's own gradient, and the logged values are averaged over this worker's replicas only.
# Process-wide, not per thread: MirroredStrategy traces each replica in a thread of its own.
_local_steps = 0


def local_steps_active() -> bool:
    """True inside a local step of a periodically synced model."""
    return _local_steps > 0


class local_steps:
    """Context manager around a call of the local train function."""

    def __enter__(self):
        global _local_steps
        _local_steps += 1

    def __exit__(self, *exc_info):
        global _local_steps
        _local_steps -= 1
