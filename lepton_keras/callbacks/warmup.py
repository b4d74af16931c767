"""Gradual learning-rate warmup, batch by batch, for large-batch training.

Goyal, Dollar, Girshick, Noordhuis, Wesolowski, Kyrola, Tulloch, Jia and He (2017),
"Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", arXiv:1706.02677, Section 2.2.
"""

from __future__ import annotations

import keras
from keras import ops

from lepton_keras.callbacks.learning_rate import current_learning_rate, ensure_scalable, scale_learning_rate
from lepton_keras.validation import check_int, check_number, check_positive

# f(0) on one replica, where 1 / replicas would be 1 and leave nothing to warm up: a tenth, the
# warmup ratio of He et al. (2016, Section 4.2: 0.01 before 0.1 for ResNet-110 on CIFAR-10).
SINGLE_REPLICA_INITIAL_FACTOR = 0.1


def warmup_factor(step: int, warmup_steps: int, initial_factor: float) -> float:
    """The warmup multiplier of step `step` (0-based): linear from `initial_factor` to 1 over `warmup_steps`."""
    if step >= warmup_steps:
        return 1.0
    return initial_factor + (1.0 - initial_factor) * step / warmup_steps


def default_initial_factor(replicas: int) -> float:
    """f(0) when `initial_factor` is None: 1 / replicas (Goyal et al.), or 0.1 on one replica."""
    return 1.0 / replicas if replicas > 1 else SINGLE_REPLICA_INITIAL_FACTOR


@keras.saving.register_keras_serializable(package="lepton_keras")
class LearningRateWarmup(keras.callbacks.Callback):
    """Ramps the learning rate linearly from `initial_factor * lr` up to `lr` over the first epochs.

    When to use it: when the learning rate was scaled up with the global batch size (the
    linear scaling rule, `lepton_keras.distribute.scale_learning_rate`); a large rate from
    the first step makes early training unstable. Goyal et al. start at the small-batch
    rate lr / N and reach lr after 5 epochs, raising it a little at every step; Horovod's
    `LearningRateWarmupCallback` does the same with N the number of workers.

    Before step s (the optimizer's iteration count, so a resumed run continues the ramp):

        f(s) = initial_factor + (1 - initial_factor) * s / W    for s < W,  W = warmup_epochs * steps_per_epoch
        f(s) = 1                                                 afterwards
        lr_used(s) = f(s) * lr(s)

    where lr(s) is the optimizer's own learning rate: a number, or a schedule (which keeps
    its shape; the callback scales its multiplier, see `MultipliedSchedule`). The callback
    multiplies the learning rate by f(s) / f(s - 1) rather than setting it, so it composes
    with callbacks that scale the rate too (ReduceLROnPlateau, DivergenceGuard). When `fit`
    ends the factor is taken off again, so a later `fit` (resuming at iteration s) starts
    from f(s) with this or a new callback. A checkpoint written during the warmup, though,
    holds the warmed-up rate f(s) * lr (the learning-rate variable, or the multiplier of a
    schedule): a run resumed from it with a new LearningRateWarmup applies f once more.

    Args:
        warmup_epochs: W in epochs, a finite number > 0 (fractions allowed).
        steps_per_epoch: batches per epoch (default None: `fit`'s own count, `params["steps"]`).
        initial_factor: f(0), in (0, 1] (default None: 1 / N with N > 1 the number of
            replicas in sync of the model's strategy, counting every worker, as in Goyal et
            al.; 0.1 on one replica, where 1 / N = 1 would leave nothing to warm up. One
            device says nothing about how far the rate was scaled up, so the default starts
            one order of magnitude below, the ratio of He et al.'s (2016) warmup of
            ResNet-110; pass the small-batch ratio, e.g. 256 / batch_size, to follow Goyal et
            al. exactly, or 1.0 to turn the warmup off).
        verbose: 1 prints a line when the warmup ends (default 0).

    Example:
        from lepton_keras import distribute

        optimizer = keras.optimizers.SGD(distribute.scale_learning_rate(0.1, global_batch=8192), momentum=0.9)
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
        model.fit(dataset, epochs=90, callbacks=[LearningRateWarmup(5)])

    References:
        Goyal et al. (2017), "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour",
        arXiv:1706.02677. He, Zhang, Ren and Sun (2016), "Deep Residual Learning for Image
        Recognition", arXiv:1512.03385.
    """

    def __init__(self, warmup_epochs: float, *, steps_per_epoch: int | None = None,
                 initial_factor: float | None = None, verbose: int = 0):  # fmt: skip
        super().__init__()
        self.warmup_epochs = check_positive("warmup_epochs", warmup_epochs)
        self.steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, minimum=1, allow_none=True)
        self.initial_factor = check_number("initial_factor", initial_factor, lambda x: 0.0 < x <= 1.0,
                                           "a number in (0, 1]", allow_none=True)  # fmt: skip
        self.verbose = check_int("verbose", verbose, minimum=0)
        self._applied_factor = 1.0  # the factor the learning rate carries now

    def on_train_begin(self, logs=None):
        steps_per_epoch = self.steps_per_epoch or (self.params or {}).get("steps")
        if not steps_per_epoch:
            raise ValueError(
                "LearningRateWarmup needs steps_per_epoch: fit does not know the number of batches per epoch "
                f"(params['steps']={(self.params or {}).get('steps')!r}); pass steps_per_epoch=..."
            )
        self._warmup_steps = max(1, round(self.warmup_epochs * steps_per_epoch))
        self._initial_factor = self.initial_factor
        if self._initial_factor is None:
            self._initial_factor = default_initial_factor(self.model.distribute_strategy.num_replicas_in_sync)
        ensure_scalable(self.model.optimizer)
        self._apply(self._step())

    def on_train_batch_begin(self, batch, logs=None):
        step = self._step()
        if self._applied_factor != 1.0 or step < self._warmup_steps:
            self._apply(step)
            if self.verbose and step >= self._warmup_steps:
                learning_rate = current_learning_rate(self.model.optimizer)
                print(f"\nLearningRateWarmup: warmup done at step {step}, learning rate {learning_rate:.6g}")

    def on_train_end(self, logs=None):
        # Take the factor off again: the optimizer keeps its own rate between fits, and the
        # next fit (this callback or a new one) applies f(iterations) afresh.
        self._set_factor(1.0)

    def _step(self) -> int:
        return int(ops.convert_to_numpy(self.model.optimizer.iterations))

    def _apply(self, step: int) -> None:
        self._set_factor(warmup_factor(step, self._warmup_steps, self._initial_factor))

    def _set_factor(self, factor: float) -> None:
        if factor != self._applied_factor:
            scale_learning_rate(self.model.optimizer, factor / self._applied_factor)
            self._applied_factor = factor

    def get_config(self):
        return {
            "warmup_epochs": self.warmup_epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "initial_factor": self.initial_factor,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
