"""Train the classic CIFAR-10 CNN on one device, N replicas or N workers with the same script.

    python tutorials/cifar10_cnn.py                              # automatic strategy
    python tutorials/cifar10_cnn.py --cpu-replicas 2             # MirroredStrategy on 2 CPU devices
    lepton-keras launch --workers 2 -- python tutorials/cifar10_cnn.py   # 2 local workers
    python tutorials/cifar10_cnn.py --data-dir /tmp/cifar10/train # the image-folder archive

The data comes from tensorflow-datasets when `cifar10` is on disk, from `--data-dir` when
given, else from the small sample shipped in lepton_keras. The chief writes `summary.json`
and `curves.png` to `--output-dir`.

Recipes (`--recipe`) change how the same model is trained, never the model:

    python tutorials/cifar10_cnn.py --recipe fast --epochs 30 --data-dir /tmp/cifar10/train

- `none` (default): the tutorial as it always was: Adam at a constant 1e-3, global batch
  128, plain cross-entropy, no augmentation.
- `fast`: lepton_keras's AdaBelief (decoupled weight decay 0.05) under the 1cycle schedule
  (`lepton_keras.schedules.OneCycle`, peak 4e-3, 25% of the steps rising, with
  `CycleMomentum` moving beta_1 between 0.95 and 0.85), cross-entropy with label smoothing
  0.1, random crops of the 4-pixel padded image and horizontal flips
  (`Cifar10.train_dataset(augment=True)`), global batch 128. The 1cycle schedule spans
  `--epochs` x steps per epoch, so a 3-epoch run is a complete short schedule, not the
  start of a long one. For budgets of about 10 epochs and more (30 epochs: 80.9% final
  validation accuracy, 80% first reached at epoch 26; stock Adam peaks at 70.3%).
- `sprint`: `fast` without augmentation at global batch 64, for budgets of a few epochs,
  where augmentation slows learning more than it helps (3 epochs: 70.2%).
- `large-batch`: `fast` scaled to `--batch-size` by `lepton_keras.distribute.scale_recipe`:
  the peak rate by the square-root rule up to the measured critical batch (2,048),
  one more epoch of rising per doubling of the batch, Keras's LAMB (biases excluded from
  weight decay) from batch 1,024, and no augmentation in runs of fewer than 300 steps
  (`large_batch_recipe`; benchmarks/large_batch.py measures it).

Both were chosen by measurement (benchmarks/recipe.py, benchmarks/results/recipe.md): the
peak rate from the LR range test (`lepton-keras lr-find`), the rest from 3-epoch comparisons
of candidates on the 45,000 training images.

Explicit flags override the recipe's choice: `--optimizer`, `--learning-rate` (the peak rate
under a schedule), `--batch-size`, `--schedule`, `--weight-decay`, `--label-smoothing`,
`--augment` / `--no-augment`, `--ema-decay` (an exponential moving average of the weights,
validated with the average through `AverageWeightsForEvaluation`).

Two optimizers change what a recipe's schedule means:

- A Schedule-Free optimizer (`--optimizer schedule_free_adamw`, `schedule_free_sgd`, or one
  inside a wrapper) trains without a schedule, as its authors do: the recipe's `one_cycle`
  (or `warmup_cosine`) becomes a constant rate after the optimizer's own linear warm-up
  (`warmup_steps`) over the recipe's warm-up fraction of the steps (printed at the start),
  unless `--schedule` is given explicitly (then no momentum cycle: its beta is the weight of
  the average, not a momentum). `ScheduleFreeEvaluation` is added to the callbacks: validation
  and the weights after training are at x, the average. `--ema-decay` is refused with it.
- `--optimizer muon` trains the weight matrices (the kernels) at the author's 0.02 and the
  biases and the output layer with its AdamW at the recipe's rate (`--learning-rate`), both
  under the recipe's schedule; the 1cycle's `CycleMomentum` cycles Muon's `momentum`. The
  matrices' decay is the recipe's weight decay times recipe rate / 0.02 (the same shrinkage
  per step: 0.01 for `fast`, the author's own example value); the AdamW part takes the
  recipe's.

Across replicas or workers, `--bucket-bytes N` sums the gradients in buckets of N bytes, the
last layers' first, so the all-reduce overlaps the backward pass, and `--gradient-compression
float16` (or bfloat16) halves its bytes (`lepton_keras.distribute.GradientCommunication`):

    lepton-keras launch --workers 2 -- python tutorials/cifar10_cnn.py --recipe sprint --epochs 3 \
        --bucket-bytes 1048576 --gradient-compression float16 --data-dir /tmp/cifar10/train

`--sync-every H` lets each replica train on its own shard and averages the replicas every H
steps instead of summing the gradients every step (`lepton_keras.distribute.PeriodicSync`:
local SGD; with `--sync-warmup-steps` post-local SGD, with `--outer-optimizer diloco`
DiLoCo):

    lepton-keras launch --workers 2 -- python tutorials/cifar10_cnn.py --recipe sprint --epochs 3 \
        --sync-every 16 --data-dir /tmp/cifar10/train
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

NUM_CLASSES = 10
SCHEDULES = ("constant", "one_cycle", "warmup_cosine")
DATA_SOURCES = ("auto", "tfds", "folder", "sample")  # lepton_keras.data.SOURCES (a test keeps them equal)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How the model is trained: everything but its layers.

    Attributes:
        optimizer: a `lepton_keras.optimizers.get` name.
        learning_rate: the rate ("constant") or the peak rate (a schedule).
        batch_size: the global batch size.
        schedule: "constant", "one_cycle" (OneCycle + CycleMomentum) or "warmup_cosine"
            (a linear warmup over `warmup_fraction` of the steps, then cosine decay to 0).
        warmup_fraction: the fraction of the steps spent rising (one_cycle's pct_start).
        weight_decay: decoupled weight decay of the optimizer (None: the optimizer's default).
        label_smoothing: of the cross-entropy (0 for none).
        augment: random crops of the 4-pixel padded image and horizontal flips.
        ema_decay: validate with an exponential moving average of the weights of this decay
            (None for none).
    """

    optimizer: str = "adam"
    learning_rate: float = 1e-3
    batch_size: int = 128
    schedule: str = "constant"
    warmup_fraction: float = 0.25
    weight_decay: float | None = None
    label_smoothing: float = 0.0
    augment: bool = False
    ema_decay: float | None = None

    def describe(self) -> str:
        choices = [f"{self.optimizer} lr {self.learning_rate:g}", f"batch {self.batch_size}", self.schedule]
        if self.weight_decay is not None:
            choices.append(f"weight decay {self.weight_decay:g}")
        if self.label_smoothing:
            choices.append(f"label smoothing {self.label_smoothing:g}")
        if self.augment:
            choices.append("crop+flip augmentation")
        if self.ema_decay is not None:
            choices.append(f"EMA {self.ema_decay:g}")
        return ", ".join(choices)


RECIPES = {
    "none": Recipe(),
    "fast": Recipe(
        optimizer="adabelief", learning_rate=4e-3, batch_size=128, schedule="one_cycle", warmup_fraction=0.25,
        weight_decay=0.05, label_smoothing=0.1, augment=True,
    ),
}
RECIPES["sprint"] = dataclasses.replace(RECIPES["fast"], batch_size=64, augment=False)
# Derived for --batch-size by large_batch_recipe (rate, warmup, optimizer), from `fast`.
RECIPES["large-batch"] = RECIPES["fast"]


def parse_args(argv=None) -> argparse.Namespace:
    recipes = "; ".join(f"{name}: {recipe.describe()}" for name, recipe in RECIPES.items() if name != "large-batch")
    recipes += "; large-batch: fast scaled to --batch-size (rate, warmup and optimizer: large_batch_recipe)"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", default="auto", choices=["auto", "default", "mirrored", "multi_worker", "parameter_server"])
    parser.add_argument("--cpu-replicas", type=int, default=None, help="mirror over N logical CPU devices")
    parser.add_argument("--cluster-resolver", default="tf_config", choices=["tf_config", "slurm"],
                        help="where the cluster comes from: TF_CONFIG (the launcher, Ray, a TFJob) or the Slurm "
                             "job step (one srun task per worker)")
    parser.add_argument("--slurm-port-base", type=int, default=8888,
                        help="with --cluster-resolver slurm: the first port of each node's workers")
    parser.add_argument("--slurm-ps", type=int, default=0,
                        help="with --cluster-resolver slurm: this many tasks are parameter servers (task 0 the "
                             "chief, tasks 1 to N the parameter servers, the rest workers; default 0)")
    parser.add_argument("--cpu-threads", type=int, default=None,
                        help="size TensorFlow's thread pools to this many CPUs (default: every core of the machine; "
                             "give a worker's share when several share a machine)")
    parser.add_argument("--backup-dir", default=None,
                        help="back up every epoch to this folder (shared by the workers) and resume from it when "
                             "the job is started again (WorkerBackupAndRestore)")
    parser.add_argument("--bucket-bytes", type=int, default=0,
                        help="sum the gradients across replicas in buckets of this size, last layers first "
                             "(default 0: Keras's single all-reduce; see distribute.GradientCommunication)")
    parser.add_argument("--gradient-compression", default=None, choices=["float16", "bfloat16"],
                        help="sum each bucket in this 16-bit dtype (half the bytes)")
    parser.add_argument("--sync-every", type=int, default=1,
                        help="replicas train on their own shards and average every this many steps (default 1: "
                             "every step's gradient all-reduce; see distribute.PeriodicSync)")
    parser.add_argument("--sync-warmup-steps", type=int, default=0,
                        help="with --sync-every: synchronous steps first (post-local SGD)")
    parser.add_argument("--outer-optimizer", default=None, choices=["diloco"],
                        help="with --sync-every: DiLoCo's outer Nesterov step on the averaged delta "
                             "(default: plain averaging)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--recipe", default="none", choices=sorted(RECIPES),
        help=f"how to train the same model (the flags below override it); {recipes}",
    )  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=None, help="global batch size (all replicas); default 128")
    parser.add_argument(
        "--optimizer",
        default=None,
        help="a name from lepton_keras.optimizers.list_optimizers(): Keras's own (adam), ours (radam) or "
        "wrappers composed with '_' (lookahead_radam); default adam",
    )
    parser.add_argument("--learning-rate", type=float, default=None, help="the (peak) learning rate; default 1e-3")
    parser.add_argument("--schedule", default=None, choices=SCHEDULES, help="learning-rate schedule")
    parser.add_argument("--warmup-fraction", type=float, default=None,
                        help="the fraction of the steps the schedule rises (one_cycle, warmup_cosine)")
    parser.add_argument("--weight-decay", type=float, default=None, help="decoupled weight decay of the optimizer")
    parser.add_argument("--label-smoothing", type=float, default=None)
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help="random crop of the padded image and horizontal flip")  # fmt: skip
    parser.add_argument("--ema-decay", type=float, default=None, help="validate with an EMA of the weights")
    parser.add_argument("--data-source", default="auto", choices=DATA_SOURCES)
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 image folder (one folder per class)")
    parser.add_argument("--train-limit", type=int, default=None, help="train on this many images only")
    parser.add_argument("--output-dir", default="runs/cifar10_cnn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=None, help="Keras verbosity (default: auto)")
    parser.add_argument(
        "--smoke", action="store_true", help="1 epoch of 4 steps on 256 images, 128 to validate (for tests)"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    # --help and bad flags answer before TensorFlow loads (it takes a minute on a loaded machine).
    parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ code: errors only

import lepton_keras  # noqa: E402  (first: it loads TensorFlow without its start-up noise)
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from lepton_keras import distribute  # noqa: E402
from lepton_keras.optimizers.schedule_free import ScheduleFree  # noqa: E402


def build_model() -> keras.Model:
    """The CNN of the docs: two conv/pool blocks, a 512-unit dense layer, softmax over 10 classes."""
    return keras.Sequential(
        [
            keras.Input(shape=(32, 32, 3)),
            keras.layers.Conv2D(32, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D((2, 2)),
            keras.layers.Conv2D(64, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D((2, 2)),
            keras.layers.Flatten(),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dense(NUM_CLASSES, activation="softmax"),
        ]
    )


class Throughput(keras.callbacks.Callback):
    """Training throughput, two ways: steady state, and the wall clock of the whole fit.

    - `steady_state_images_per_second`: the training steps only, each epoch's first step left
      out (tracing, the input pipeline's warm-up, the workers' first collective): what the
      hardware sustains, the number to compare set-ups by.
    - `fit_images_per_second`: every trained image over the wall-clock time of the whole fit,
      first steps, validation and callbacks included: what a user waits for.
    """

    def __init__(self, global_batch_size: int):
        super().__init__()
        self.global_batch_size = global_batch_size
        self.steady_images = 0
        self.steady_seconds = 0.0
        self.trained_images = 0
        self.fit_seconds = float("nan")
        self.epoch_seconds = []  # wall time of each epoch, validation included

    def on_train_begin(self, logs=None):
        self._fit_started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        self.trained_images += self.global_batch_size
        if batch > 0:
            self.steady_images += self.global_batch_size
            self.steady_seconds += now - self._last
        self._last = now

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.perf_counter() - self._epoch_started)

    def on_train_end(self, logs=None):
        self.fit_seconds = time.perf_counter() - self._fit_started

    @property
    def steady_state_images_per_second(self) -> float:
        return self.steady_images / self.steady_seconds if self.steady_seconds else float("nan")

    @property
    def fit_images_per_second(self) -> float:
        return self.trained_images / self.fit_seconds if self.fit_seconds > 0 else float("nan")

    def describe(self) -> str:
        return (
            f"training {self.steady_state_images_per_second:,.0f} images/s in steady state (each epoch's first "
            f"step left out); {self.fit_images_per_second:,.0f} images/s over the whole fit "
            f"({self.fit_seconds:.1f} s wall clock, first steps and validation included)"
        )


# Past this batch the rate stops growing (measured, benchmarks/README.md): at 2,048 the
# square-root rule's 0.016 trained best (against 0.011 in 30 epochs, 0.008 and 0.032 in 5), at
# 8,192 its 0.032 trained worse than 0.016 (0.449 against 0.515 in 30 epochs).
CRITICAL_BATCH_SIZE = 2048
# Crop+flip augmentation pays only in runs with the steps to fit the augmented images: without it
# the 30-epoch runs did worse at batch 2,048 (630 steps) and better at 8,192 (150 steps).
MIN_STEPS_TO_AUGMENT = 300
TRAINING_IMAGES = 45_000  # load_cifar10's training split: 50,000 less the 5,000 validation images


def large_batch_recipe(batch_size: int, epochs: int, training_images: int = TRAINING_IMAGES) -> Recipe:
    """The `fast` recipe (tuned at global batch 128) scaled to `batch_size` for a run of `epochs` epochs.

    `lepton_keras.distribute.scale_recipe` derives the peak rate (the square-root rule for
    AdaBelief, up to `CRITICAL_BATCH_SIZE`), the rising part of the one-cycle schedule
    (one more epoch per doubling of the batch) and the optimizer (Keras's LAMB from batch 1,024,
    biases excluded from weight decay). Runs of fewer than `MIN_STEPS_TO_AUGMENT` steps over
    `training_images` images train without augmentation.
    """
    base = RECIPES["fast"]
    scaled = distribute.scale_recipe(
        learning_rate=base.learning_rate, base_batch_size=base.batch_size, batch_size=batch_size,
        optimizer=base.optimizer, warmup_epochs=base.warmup_fraction * epochs, epochs=epochs,
        critical_batch_size=CRITICAL_BATCH_SIZE,
    )  # fmt: skip
    steps = epochs * (training_images // batch_size)
    return dataclasses.replace(base, optimizer=scaled.optimizer, learning_rate=scaled.learning_rate,
                               batch_size=batch_size, warmup_fraction=scaled.warmup_epochs / epochs,
                               augment=base.augment and steps >= MIN_STEPS_TO_AUGMENT)  # fmt: skip


def resolve_recipe(args: argparse.Namespace) -> Recipe:
    """The named recipe with the explicitly given flags in place of its choices."""
    overrides = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(Recipe)
        if getattr(args, field.name, None) is not None
    }
    if args.recipe == "large-batch":
        recipe = large_batch_recipe(args.batch_size or RECIPES["fast"].batch_size, args.epochs,
                                    args.train_limit or TRAINING_IMAGES)  # fmt: skip
    else:
        recipe = RECIPES[args.recipe]
    return without_schedule_for_schedule_free(dataclasses.replace(recipe, **overrides), args.schedule is not None)


LAYERWISE_OPTIMIZERS = ("lamb", "lars")
# The author's learning rate of Muon's matrices (its default); a recipe's rate is AdamW's, for the rest.
MUON_LEARNING_RATE = 0.02


def innermost_name(optimizer_name: str, registry_names) -> str | None:
    """The one of `registry_names` that `optimizer_name` builds, wrapped or not ("lookahead_muon": "muon")."""
    name = optimizer_name.strip().lower()
    return next((n for n in registry_names if name == n or name.endswith(f"_{n}")), None)


def is_schedule_free(optimizer_name: str) -> bool:
    """Whether `optimizer_name` builds a Schedule-Free optimizer (read from the registry: nothing is built)."""
    names = [name for name, entry in lepton_keras.optimizers.registry.REGISTRY.items()
             if issubclass(entry.cls, ScheduleFree)]  # fmt: skip
    return innermost_name(optimizer_name, names) is not None


def is_muon(optimizer_name: str) -> bool:
    return innermost_name(optimizer_name, ["muon"]) is not None


def without_schedule_for_schedule_free(recipe: Recipe, schedule_given: bool) -> Recipe:
    """`recipe` at a constant rate (the optimizer's warm-up instead) if its optimizer is Schedule-Free and
    the schedule was the recipe's choice, not the user's."""
    if schedule_given or recipe.schedule == "constant" or not is_schedule_free(recipe.optimizer):
        return recipe
    return dataclasses.replace(recipe, schedule="constant")


def schedule_free_warmup_steps(recipe: Recipe, total_steps: int) -> int:
    """The Schedule-Free optimizer's warm-up at a constant rate: the recipe's warm-up fraction of the steps."""
    return int(recipe.warmup_fraction * total_steps) if recipe.schedule == "constant" else 0


def learning_rate_schedule(recipe: Recipe, total_steps: int):
    """The recipe's learning rate: a number, or a schedule over `total_steps` steps."""
    if recipe.schedule == "constant":
        return recipe.learning_rate
    # At least two rising steps, so that very short runs (--smoke) still get a valid schedule.
    rising = max(recipe.warmup_fraction, 2.0 / total_steps)
    if recipe.schedule == "one_cycle":
        return lepton_keras.schedules.OneCycle(recipe.learning_rate, total_steps, pct_start=rising)
    warmup_steps = int(rising * total_steps)
    cosine = keras.optimizers.schedules.CosineDecay(recipe.learning_rate, total_steps - warmup_steps)
    return lepton_keras.schedules.Warmup(cosine, warmup_steps, offset_target=True)


def muon_options(recipe: Recipe, total_steps: int, output_layer: str | None) -> dict:
    """Muon's options: its matrices at `MUON_LEARNING_RATE`, its AdamW part (biases, the output layer) at the
    recipe's rate, both under the recipe's schedule; the matrices' decay keeps the recipe's lr x decay."""
    matrices = dataclasses.replace(recipe, learning_rate=MUON_LEARNING_RATE)
    options = {
        "learning_rate": learning_rate_schedule(matrices, total_steps),
        "adamw_learning_rate": learning_rate_schedule(recipe, total_steps),
    }
    if output_layer is not None:
        options["exclude_layers"] = [f"{output_layer}/"]  # "dense_1/" leaves "dense_11/kernel" to Muon
    if recipe.weight_decay is not None:
        options["weight_decay"] = recipe.weight_decay * recipe.learning_rate / MUON_LEARNING_RATE
        options["adamw_weight_decay"] = recipe.weight_decay
    return options


def build_training(recipe: Recipe, total_steps: int, *, output_layer: str | None = None):
    """(optimizer, loss, callbacks) of the recipe; create them under the strategy's scope.

    `output_layer`: the name of the model's last layer, which Muon leaves to its AdamW.
    """
    schedule_free = is_schedule_free(recipe.optimizer)
    if schedule_free and recipe.ema_decay is not None:
        raise ValueError(f"{recipe.optimizer} already evaluates an average of its iterates; "
                         f"--ema-decay {recipe.ema_decay:g} does not combine with it")  # fmt: skip
    schedule = learning_rate_schedule(recipe, total_steps)
    name, options = recipe.optimizer, {"learning_rate": schedule}
    if recipe.weight_decay is not None:
        options["weight_decay"] = recipe.weight_decay
    if schedule_free:
        options["warmup_steps"] = schedule_free_warmup_steps(recipe, total_steps)
    if is_muon(recipe.optimizer):
        options.update(muon_options(recipe, total_steps, output_layer))
        schedule = options["learning_rate"]  # the momentum cycle is the same in both schedules
    if recipe.ema_decay is not None:
        name, options = f"ema_{name}", {**options, "decay": recipe.ema_decay, "use_warmup": True}
    optimizer = lepton_keras.optimizers.get(name, **options)
    if recipe.optimizer in LAYERWISE_OPTIMIZERS and recipe.weight_decay is not None:
        optimizer.exclude_from_weight_decay(var_names=["bias"])  # as LAMB's and LARS's papers do
    if recipe.label_smoothing:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing)
    else:
        loss = "categorical_crossentropy"
    callbacks = []
    if recipe.schedule == "one_cycle" and not schedule_free:
        callbacks.append(lepton_keras.callbacks.CycleMomentum(schedule))  # Muon's `momentum`, Adam's beta_1
    if schedule_free:
        callbacks.append(lepton_keras.callbacks.ScheduleFreeEvaluation())
    if recipe.ema_decay is not None:
        callbacks.append(lepton_keras.callbacks.AverageWeightsForEvaluation(assign_at_end=True))
    return optimizer, loss, callbacks


def strategy_name(strategy) -> str:
    if isinstance(strategy, tf.distribute.ParameterServerStrategy):
        return "ParameterServerStrategy"
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "MirroredStrategy"
    return "default strategy"


def plot_curves(history: dict, title: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = range(1, len(history["loss"]) + 1)
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 4))
    for axes, key in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        axes.plot(epochs, history[key], marker="o", label="training")
        if f"val_{key}" in history:
            axes.plot(epochs, history[f"val_{key}"], marker="o", label="validation")
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(key)
        axes.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv=None, *, callbacks=()) -> dict:
    """Trains as the flags say; `callbacks` are added to fit's (for example an engine's reporting)."""
    args = parse_args(argv)
    recipe = resolve_recipe(args)
    if args.smoke:
        recipe = dataclasses.replace(recipe, batch_size=min(recipe.batch_size, 64))
        args.epochs, args.train_limit = 1, args.train_limit or 256
    args.optimizer, args.learning_rate, args.batch_size = recipe.optimizer, recipe.learning_rate, recipe.batch_size
    communication = distribute.GradientCommunication(bucket_bytes=args.bucket_bytes,
                                                     compression=args.gradient_compression)
    periodic_sync = distribute.PeriodicSync(every=args.sync_every, warmup_steps=args.sync_warmup_steps,
                                            outer_optimizer=args.outer_optimizer)
    if args.cpu_threads is not None:
        distribute.configure_cpu_threads(args.cpu_threads)
    slurm = args.cluster_resolver == "slurm"
    resolver = distribute.slurm_cluster_resolver(args.slurm_port_base, ps=args.slurm_ps) if slurm else None
    strategy = distribute.get_strategy(args.strategy, cpu_replicas=args.cpu_replicas, cluster_resolver=resolver,
                                       gradient_communication=communication, periodic_sync=periodic_sync)
    replicas = strategy.num_replicas_in_sync
    keras.utils.set_random_seed(args.seed)

    data = lepton_keras.data.load_cifar10(
        args.data_source,
        data_dir=args.data_dir,
        train_limit=args.train_limit,
        validation_limit=128 if args.smoke else None,
        seed=args.seed,
    )
    print(data.describe())
    print(f"strategy: {strategy_name(strategy)} with {replicas} replica(s), global batch {args.batch_size}")
    print(f"recipe {args.recipe}: {recipe.describe()}")
    steps_per_epoch = data.steps_per_epoch(args.batch_size, strategy=strategy)
    total_steps = args.epochs * steps_per_epoch
    if is_schedule_free(recipe.optimizer):
        if recipe.schedule == "constant":
            warmup = schedule_free_warmup_steps(recipe, total_steps)
            rate = f"a constant rate after the optimizer's linear warm-up ({warmup} steps)"
        else:
            rate = f"the explicit {recipe.schedule} schedule"
        print(f"{recipe.optimizer}: {rate}; validation and the weights after training at the average x "
              f"(ScheduleFreeEvaluation)")  # fmt: skip
    if is_muon(recipe.optimizer):
        print(f"{recipe.optimizer}: the kernels at {MUON_LEARNING_RATE:g}, the biases and the output layer by AdamW "
              f"at {recipe.learning_rate:g}, under {recipe.schedule}"
              + ("; CycleMomentum cycles Muon's momentum" if recipe.schedule == "one_cycle" else ""))  # fmt: skip
    # Parameter-server workers read their own copies of the data without end: fit counts the steps.
    asynchronous = isinstance(strategy, tf.distribute.ParameterServerStrategy)
    train = data.train_dataset(args.batch_size, strategy=strategy, seed=args.seed, one_hot=True, augment=recipe.augment,
                               repeat=asynchronous)
    validation = data.validation_dataset(args.batch_size, one_hot=True)

    with strategy.scope():
        model = build_model()
        optimizer, loss, recipe_callbacks = build_training(recipe, total_steps, output_layer=model.layers[-1].name)
        model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    if args.backup_dir:  # first: it backs up the training weights (ScheduleFreeEvaluation's y)
        recipe_callbacks.insert(0, lepton_keras.callbacks.WorkerBackupAndRestore(args.backup_dir))

    meter = Throughput(args.batch_size)
    verbose = args.verbose if args.verbose is not None else ("auto" if sys.stdout.isatty() else 2)
    history = model.fit(
        train, validation_data=validation, epochs=args.epochs, callbacks=[*recipe_callbacks, *callbacks, meter],
        verbose=verbose, shuffle=False, steps_per_epoch=steps_per_epoch if asynchronous else None,
    )  # fmt: skip
    loss, accuracy = history.history["val_loss"][-1], history.history["val_accuracy"][-1]
    print(f"final {data.validation_name} accuracy {accuracy:.4f} (loss {loss:.4f})")
    print(meter.describe())
    summary = {
        "data": data.describe(),
        "source": data.source,
        "strategy": strategy_name(strategy),
        "replicas": replicas,
        "workers": distribute.task_info(strategy).num_workers,
        "epochs": args.epochs,
        "global_batch_size": args.batch_size,
        "optimizer": args.optimizer,
        "learning_rate": args.learning_rate,
        "recipe": args.recipe,
        "sync_every": args.sync_every,
        "sync_warmup_steps": args.sync_warmup_steps,
        "outer_optimizer": args.outer_optimizer,
        "recipe_choices": dataclasses.asdict(recipe),
        f"final_{data.validation_name}_accuracy": float(accuracy),
        f"final_{data.validation_name}_loss": float(loss),
        "steady_state_images_per_second": meter.steady_state_images_per_second,
        "fit_images_per_second": meter.fit_images_per_second,
        "fit_seconds": meter.fit_seconds,
        "epoch_seconds": meter.epoch_seconds,
        "history": {key: [float(v) for v in values] for key, values in history.history.items()},
    }
    if distribute.is_chief(strategy):
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "summary.json"), "w") as file:
            json.dump(summary, file, indent=2)
        title = f"CIFAR-10 CNN, {strategy_name(strategy)}, {replicas} replica(s), global batch {args.batch_size}"
        plot_curves(history.history, title, os.path.join(args.output_dir, "curves.png"))
        print(f"wrote {args.output_dir}/summary.json and curves.png")
    distribute.finish_job(strategy)  # workers leave together, the chief last: no stray errors at exit
    return summary


if __name__ == "__main__":
    main()
