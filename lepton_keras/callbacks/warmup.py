"""Gradual learning-rate warmup, batch by batch, for large-batch training.

Goyal, Dollar, Girshick, Noordhuis, Wesolowski, Kyrola, Tulloch, Jia and He (2017),
"Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", arXiv:1706.02677, Section 2.2.
"""

from __future__ import annotations

import keras
from keras import ops

from lepton_keras.callbacks.learning_rate import current_learning_rate, innermost_optimizer, learning_rate_schedule
from lepton_keras.schedules.multiplier import MultipliedSchedule
from lepton_keras.validation import check_int, check_number, check_positive

# f(0) on one replica, where 1 / replicas would be 1 and leave nothing to warm up: a tenth, the
# warmup ratio of He et al. (2016, Section 4.2: 0.01 before 0.1 for ResNet-110 on CIFAR-10).
SINGLE_REPLICA_INITIAL_FACTOR = 0.1


def warmup_factor(step, warmup_steps: int, initial_factor: float):
    """The warmup multiplier of step `step` (0-based, a number or a tensor): linear from `initial_factor`
    to 1 over `warmup_steps`, then exactly 1 (a float32 tensor)."""
    progress = ops.cast(step, "float32") / float(warmup_steps)
    ramp = ops.cast(initial_factor, "float32") + ops.cast(1.0 - initial_factor, "float32") * progress
    return ops.where(progress >= 1.0, ops.ones_like(ramp), ramp)


def default_initial_factor(replicas: int) -> float:
    """f(0) when `initial_factor` is None: 1 / replicas (Goyal et al.), or 0.1 on one replica."""
    return 1.0 / replicas if replicas > 1 else SINGLE_REPLICA_INITIAL_FACTOR


@keras.saving.register_keras_serializable(package="lepton_keras")
class WarmupSchedule(MultipliedSchedule):
    """`multiplier * f(step) * base(step)`: the learning rate LearningRateWarmup installs in the optimizer.

    The warmup factor f is a function of the optimizer's step count alone, so the warmup's
    progress is saved wherever the step count is (a `.keras` file, `save_weights`, a
    BackupAndRestore backup) and a restored optimizer continues the ramp where it was. The
    multiplier is the one other callbacks scale (ReduceLROnPlateau, DivergenceGuard).

    Args:
        base: the optimizer's own learning rate, a LearningRateSchedule or a finite number >= 0.
        warmup_steps: W, the steps of the ramp, an integer >= 1.
        initial_factor: f(0), in (0, 1].
        multiplier: the starting multiplier, a finite number > 0 (default 1.0).
    """

    def __init__(self, base, warmup_steps: int, initial_factor: float, multiplier: float = 1.0):
        super().__init__(base, multiplier)
        self.warmup_steps = check_int("warmup_steps", warmup_steps, minimum=1)
        self.initial_factor = check_number("initial_factor", initial_factor, lambda x: 0.0 < x <= 1.0,
                                           "a number in (0, 1]")  # fmt: skip

    def __call__(self, step):
        return super().__call__(step) * warmup_factor(step, self.warmup_steps, self.initial_factor)

    def get_config(self):
        return {**super().get_config(), "warmup_steps": self.warmup_steps, "initial_factor": self.initial_factor}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        base = keras.saving.deserialize_keras_object(config.pop("base"))
        return cls(base, **config)


@keras.saving.register_keras_serializable(package="lepton_keras")
class LearningRateWarmup(keras.callbacks.Callback):
    """Ramps the learning rate linearly from `initial_factor * lr` up to `lr` over the first epochs.

    When to use it: when the learning rate was scaled up with the global batch size (the
    linear scaling rule, `lepton_keras.distribute.scale_learning_rate`); a large rate from
    the first step makes early training unstable. Goyal et al. start at the small-batch
    rate lr / N and reach lr after 5 epochs, raising it a little at every step; Horovod's
    `LearningRateWarmupCallback` does the same with N the number of workers.

    At step s (the optimizer's iteration count):

        f(s) = initial_factor + (1 - initial_factor) * s / W    for s < W,  W = warmup_epochs * steps_per_epoch
        f(s) = 1                                                 afterwards
        lr_used(s) = f(s) * lr(s)

    where lr(s) is the optimizer's own learning rate: a number, or a schedule (which keeps
    its shape). When `fit` starts (before any callback's `on_train_begin`), the callback
    replaces the optimizer's learning rate by a `WarmupSchedule` of it, which computes f(s)
    inside the training step from the step count and stays in the optimizer. So the
    warmup's progress is saved with the model: a `.keras` file or a backup
    (`keras.callbacks.BackupAndRestore`, `WorkerBackupAndRestore`) written during the
    warmup holds the step count, and a run resumed from it continues the ramp at that step,
    bitwise as if it had not stopped, with or without a new LearningRateWarmup (a new one
    takes over the installed schedule rather than adding a second ramp). Callbacks that
    scale the learning rate (ReduceLROnPlateau, DivergenceGuard) scale the schedule's
    multiplier, after the warmup as during it.

    A float learning rate becomes a schedule, so after this callback the optimizer's
    learning rate is set through its multiplier (`lepton_keras.callbacks.learning_rate`),
    not assigned, and it leaves the optimizer's variables: load weights saved during or
    after the warmup into a model given this callback in `fit` (the restoring callbacks do
    that), or into one loaded from a `.keras` file.

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
        self._warmup_steps = None
        self._announced = False

    def set_params(self, params):
        # fit sets the model, then the params, then traces its step, then calls on_train_begin: installing
        # the schedule here puts it in the step and in the optimizer's variables before any callback restores.
        super().set_params(params)
        steps_per_epoch = self.steps_per_epoch or (params or {}).get("steps")
        if self.model is None or self.model.optimizer is None or not steps_per_epoch:
            return  # on_train_begin says what is missing
        self._warmup_steps = max(1, round(self.warmup_epochs * steps_per_epoch))
        initial_factor = self.initial_factor
        if initial_factor is None:
            initial_factor = default_initial_factor(self.model.distribute_strategy.num_replicas_in_sync)
        self._install(self._warmup_steps, initial_factor)

    def _install(self, warmup_steps: int, initial_factor: float) -> None:
        optimizer = innermost_optimizer(self.model.optimizer)
        schedule = learning_rate_schedule(optimizer)
        if isinstance(schedule, WarmupSchedule):  # a previous fit's, or a loaded model's: take it over
            if (schedule.warmup_steps, schedule.initial_factor) == (warmup_steps, initial_factor):
                return
            schedule.warmup_steps, schedule.initial_factor = warmup_steps, initial_factor
        else:
            base = schedule if schedule is not None else current_learning_rate(optimizer)
            optimizer.learning_rate = WarmupSchedule(base, warmup_steps, initial_factor)
        self.model.train_function = None  # a step traced before keeps the learning rate it was traced with

    def on_train_begin(self, logs=None):
        if self._warmup_steps is None:
            raise ValueError(
                "LearningRateWarmup needs steps_per_epoch: fit does not know the number of batches per epoch "
                f"(params['steps']={(self.params or {}).get('steps')!r}); pass steps_per_epoch=..."
            )
        self._announced = self._step() >= self._warmup_steps  # a resumed fit may start after the warmup

    def on_train_batch_begin(self, batch, logs=None):
        if self.verbose and not self._announced and self._step() >= self._warmup_steps:
            self._announced = True
            learning_rate = current_learning_rate(self.model.optimizer)
            print(f"\nLearningRateWarmup: warmup done at step {self._warmup_steps}, learning rate {learning_rate:.6g}")

    def _step(self) -> int:
        return int(ops.convert_to_numpy(self.model.optimizer.iterations))

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
