"""The learning-rate range test: train a few hundred steps with a rising learning rate, read off a good one.

Smith (2017), "Cyclical Learning Rates for Training Neural Networks", arXiv:1506.01186, Section 3.3;
the smoothing, the divergence stop and the suggestions follow fastai's `lr_find`.
"""

from __future__ import annotations

import csv
import math
import os

import keras
import numpy as np
import tensorflow as tf

from lepton_keras.callbacks.divergence_guard import Snapshot
from lepton_keras.callbacks.learning_rate import ensure_scalable, learning_rate_schedule, set_learning_rate
from lepton_keras.distribute.cluster import is_chief
from lepton_keras.validation import (
    check_choice,
    check_directory,
    check_int,
    check_number,
    check_positive,
    check_unit_interval,
    invalid,
)

MODES = ("exponential", "linear")
# "minimum" first, the default: on the tutorial CNN (4,000 real CIFAR-10 images, Adam, one
# epoch, 3 seeds) it was the only one whose suggestion beat 10x above and 10x below it
# (validation accuracy 0.208 / 0.325 / 0.263); "valley" came out about 10x too low and
# "steepest" about 10x too high (benchmarks/lr_finder_check.py).
METHODS = ("minimum", "steepest", "valley")
CSV_NAME = "lr_find.csv"
PLOT_NAME = "lr_find.png"


def sweep_learning_rates(min_learning_rate: float, max_learning_rate: float, steps: int,
                         mode: str = "exponential") -> np.ndarray:  # fmt: skip
    """The learning rate of each step, from `min_learning_rate` (step 0) to `max_learning_rate` (last step).

        exponential: lr_i = min * (max / min) ** (i / (steps - 1))
        linear:      lr_i = min + (max - min) * i / (steps - 1)
    """
    position = np.arange(steps, dtype=np.float64) / (steps - 1)
    if mode == "exponential":
        return min_learning_rate * (max_learning_rate / min_learning_rate) ** position
    return min_learning_rate + (max_learning_rate - min_learning_rate) * position


def smooth_losses(losses, smoothing: float = 0.98) -> np.ndarray:
    """Exponential moving average with bias correction (as Adam's moments).

        a_i = beta * a_{i-1} + (1 - beta) * loss_i,  a_{-1} = 0
        smoothed_i = a_i / (1 - beta ** (i + 1))
    """
    average, smoothed = 0.0, []
    for step, loss in enumerate(np.asarray(losses, np.float64)):
        average = smoothing * average + (1.0 - smoothing) * loss
        smoothed.append(average / (1.0 - smoothing ** (step + 1)))
    return np.array(smoothed, np.float64)


def longest_valley(losses) -> tuple[int, int]:
    """(start, end) of the longest strictly decreasing subsequence of `losses`.

    Ties go to the earliest end, then to the earliest start for that end. Dynamic
    programming: `length[i]` is the longest decreasing subsequence ending at i, and
    `first[i]` the earliest index such a subsequence can start from.
    """
    losses = np.asarray(losses, np.float64)
    length, first = np.ones(len(losses), int), np.arange(len(losses))
    for i in range(1, len(losses)):
        for j in range(i):
            if losses[j] > losses[i]:
                if length[j] + 1 > length[i]:
                    length[i], first[i] = length[j] + 1, first[j]
                elif length[j] + 1 == length[i]:
                    first[i] = min(first[i], first[j])
    end = int(np.argmax(length))  # argmax returns the first maximum: the earliest end
    return int(first[end]), end


def suggest_learning_rate(learning_rates, smoothed_losses, method: str = "minimum", *,
                          skip_start: int | None = None, skip_end: int = 5) -> float:  # fmt: skip
    """A learning rate read from the range test's curve.

    The curve is cut at the first non-finite loss; then the first `skip_start` points
    (default: a tenth of them, the flat start) and the last `skip_end` (default 5, the
    divergence) are left out, as fastai does.

        "minimum":  the learning rate of the lowest smoothed loss, divided by 10 (the
                    default; Smith's and fastai v1's rule)
        "steepest": the point of the most negative d(smoothed loss) / d(log lr) (central
                    differences; one-sided at the ends) at or before the lowest smoothed loss
        "valley":   the point halfway along the longest valley, the longest strictly
                    decreasing subsequence of the smoothed loss (fastai v2's default)

    Raises:
        ValueError: an unknown method, or fewer than 2 points left.
    """
    check_choice("method", method, METHODS)
    learning_rates = np.asarray(learning_rates, np.float64)
    losses = np.asarray(smoothed_losses, np.float64)
    finite = np.isfinite(losses)
    count = len(losses) if finite.all() else int(np.argmin(finite))
    skip_start = count // 10 if skip_start is None else skip_start
    learning_rates, losses = learning_rates[skip_start : count - skip_end], losses[skip_start : count - skip_end]
    if len(losses) < 2:
        raise ValueError(
            f"{count} finite point(s) less skip_start={skip_start} and skip_end={skip_end} leave {len(losses)}; "
            "a suggestion needs at least 2: run more steps"
        )
    if method == "minimum":
        return float(learning_rates[np.argmin(losses)] / 10.0)
    if method == "steepest":
        # only the descent: after a spike, the decaying moving average can fall faster still
        slopes = np.gradient(losses, np.log(learning_rates))[: np.argmin(losses) + 1]
        return float(learning_rates[np.argmin(slopes)])
    start, end = longest_valley(losses)
    return float(learning_rates[start + (end - start) // 2])


@keras.saving.register_keras_serializable(package="lepton_keras")
class LearningRateFinder(keras.callbacks.Callback):
    """Runs the learning-rate range test during `fit`, then puts the model back as it was.

    When to use it: before training a new model, optimizer or batch size, to pick the
    learning rate from data rather than by trial: a few hundred steps instead of several
    full runs. `find_learning_rate(model, dataset)` runs it for you; then
    `finder.apply_suggestion()` and train.

    Before step i of the sweep (n = `steps`) the optimizer's learning rate is set to

        exponential: lr_i = min * (max / min) ** (i / (n - 1))
        linear:      lr_i = min + (max - min) * i / (n - 1)

    and after it the loss of that batch is recorded. Keras logs the running mean of the
    epoch's loss, m_k after the epoch's k-th step (k from 0); with equal batches the loss of
    step k is (k + 1) m_k - k m_{k-1}. Feed batches of one size (drop the remainder), or the
    recovered loss of a smaller last batch is off. The smoothed loss is an exponential moving
    average with bias correction,

        a_i = beta a_{i-1} + (1 - beta) loss_i,   smoothed_i = a_i / (1 - beta^(i + 1)),

    and the test stops early once smoothed_i > divergence_factor * min_{j <= i} smoothed_j,
    or smoothed_i is NaN. When training ends, the weights, every optimizer variable (the
    moments, `iterations`, a variable learning rate) and a schedule's multiplier are put
    back bitwise, so the model trains next as if the test had not run.

    The learning rate is set through `lepton_keras.callbacks.learning_rate`, so a float
    learning rate, a LearningRateSchedule (wrapped in a MultipliedSchedule when training
    begins; with the multiplier restored it gives the same learning rates) and wrapped
    optimizers all work. Under any strategy every worker records the same (all-reduced)
    losses and so gets the same suggestions; files are written by the chief only.

    Args:
        min_learning_rate: the first learning rate (default 1e-7), > 0.
        max_learning_rate: the last learning rate (default 10.0), > min_learning_rate.
        steps: the number of steps of the sweep (default 100), at least 2. Each step is one
            call of the train function, so `steps_per_execution` batches.
        mode: "exponential" (default) or "linear".
        smoothing: beta of the moving average, in [0, 1) (default 0.98, as fastai).
        divergence_factor: stop once the smoothed loss exceeds this times its minimum
            (default 4.0, > 1); None never stops early. Meant for positive losses.
        output_dir: if given, the chief writes `lr_find.csv` and `lr_find.png` there when
            training ends (default None).

    Example:
        finder = LearningRateFinder(1e-6, 1.0, steps=100)
        model.fit(dataset, epochs=1, callbacks=[finder])
        print(finder.suggestions())   # {"minimum": ..., "steepest": ..., "valley": ...}
        finder.apply_suggestion()
        model.fit(dataset, epochs=10)

    References:
        Smith (2017), "Cyclical Learning Rates for Training Neural Networks", arXiv:1506.01186.
        Howard and Gugger (2020), "Fastai: A Layered API for Deep Learning", arXiv:2002.04688.
    """

    def __init__(self, min_learning_rate: float = 1e-7, max_learning_rate: float = 10.0, steps: int = 100, *,
                 mode: str = "exponential", smoothing: float = 0.98, divergence_factor: float | None = 4.0,
                 output_dir: str | os.PathLike | None = None):  # fmt: skip
        super().__init__()
        self.min_learning_rate = check_positive("min_learning_rate", min_learning_rate)
        self.max_learning_rate = check_number("max_learning_rate", max_learning_rate,
                                              lambda x: x > self.min_learning_rate,
                                              f"a finite number above min_learning_rate={min_learning_rate!r}")
        self.steps = check_int("steps", steps, minimum=2)
        self.mode = check_choice("mode", mode, MODES)
        self.smoothing = check_unit_interval("smoothing", smoothing)
        self.divergence_factor = check_number("divergence_factor", divergence_factor, lambda x: x > 1.0,
                                              "a finite number > 1", allow_none=True)
        self.output_dir = check_directory("output_dir", output_dir, allow_none=True)
        self._sweep = sweep_learning_rates(self.min_learning_rate, self.max_learning_rate, self.steps, self.mode)
        self._reset()

    def _reset(self):
        self._learning_rates, self._losses, self._smoothed = [], [], []
        self._average, self._best = 0.0, math.inf
        self._epoch_steps, self._previous_mean = 0, 0.0
        self._saved = None

    # Training hooks

    def on_train_begin(self, logs=None):
        model, optimizer = self.model, self.model.optimizer
        if not model.built:
            raise RuntimeError("LearningRateFinder needs a built model (give it an Input, or call it on a batch)")
        self._reset()
        with model.distribute_strategy.scope():
            wrapped = learning_rate_schedule(optimizer) is not None
            ensure_scalable(optimizer)
            if not optimizer.built:
                optimizer.build(model.trainable_variables)
        if wrapped:
            # A train function traced before the wrap would ignore the multiplier.
            model.make_train_function(force=True)
        schedule = learning_rate_schedule(optimizer)
        self._saved = {
            "variables": Snapshot.take(0, [*model.weights, *optimizer.variables]),
            "multiplier": None if schedule is None else np.array(keras.ops.convert_to_numpy(schedule.multiplier)),
        }

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_steps, self._previous_mean = 0, 0.0

    def on_train_batch_begin(self, batch, logs=None):
        step = len(self._losses)
        if step < self.steps:
            set_learning_rate(self.model.optimizer, self._sweep[step])

    def on_train_batch_end(self, batch, logs=None):
        step = len(self._losses)
        if step >= self.steps:
            self.model.stop_training = True
            return
        mean = float(np.asarray(logs["loss"]))
        k = self._epoch_steps
        loss = (k + 1) * mean - k * self._previous_mean
        self._epoch_steps, self._previous_mean = k + 1, mean
        self._average = self.smoothing * self._average + (1.0 - self.smoothing) * loss
        smoothed = self._average / (1.0 - self.smoothing ** (step + 1))
        self._learning_rates.append(self._sweep[step])
        self._losses.append(loss)
        self._smoothed.append(smoothed)
        self._best = min(self._best, smoothed)
        diverged = self.divergence_factor is not None and smoothed > self.divergence_factor * self._best
        if step + 1 >= self.steps or diverged or math.isnan(smoothed):
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self._saved is not None:
            self._restore(self._saved)
            self._saved = None
        if self.output_dir is not None and self._losses:
            self.save_csv(os.path.join(self.output_dir, CSV_NAME))
            self.plot(os.path.join(self.output_dir, PLOT_NAME))

    def _restore(self, saved):
        model, optimizer = self.model, self.model.optimizer
        saved["variables"].restore([*model.weights, *optimizer.variables])
        if saved["multiplier"] is not None:
            learning_rate_schedule(optimizer).multiplier.assign(saved["multiplier"])

    # Results

    @property
    def results(self) -> dict[str, np.ndarray]:
        """float64 arrays "learning_rates", "losses" and "smoothed_losses", one entry per step run."""
        return {
            "learning_rates": np.array(self._learning_rates, np.float64),
            "losses": np.array(self._losses, np.float64),
            "smoothed_losses": np.array(self._smoothed, np.float64),
        }

    def suggestion(self, method: str = "minimum", *, skip_start: int | None = None, skip_end: int = 5) -> float:
        """The suggested learning rate: "minimum" (default), "steepest" or "valley" (see `suggest_learning_rate`)."""
        results = self.results
        return suggest_learning_rate(
            results["learning_rates"], results["smoothed_losses"], method, skip_start=skip_start, skip_end=skip_end
        )

    def suggestions(self) -> dict[str, float]:
        """Every method's suggestion that the recorded curve allows, by name."""
        found = {}
        for method in METHODS:
            try:
                found[method] = self.suggestion(method)
            except ValueError:
                pass
        return found

    def apply_suggestion(self, method: str = "minimum", optimizer=None) -> float:
        """Sets the learning rate of `optimizer` (default: the model's) to the suggestion; returns it."""
        value = self.suggestion(method)
        set_learning_rate(optimizer if optimizer is not None else self.model.optimizer, value)
        return value

    # Files, written by the chief only

    def _is_chief(self) -> bool:
        model = getattr(self, "model", None)
        return is_chief(model.distribute_strategy if model is not None else None)

    def save_csv(self, path: str | os.PathLike) -> bool:
        """Writes step, learning_rate, loss, smoothed_loss per row on the chief; returns whether it wrote."""
        if not self._is_chief():
            return False
        path = os.fspath(path)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        results = self.results
        with open(path, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["step", "learning_rate", "loss", "smoothed_loss"])
            for step, row in enumerate(zip(*results.values())):
                writer.writerow([step, *(repr(float(value)) for value in row)])
        return True

    def plot(self, path: str | os.PathLike) -> bool:
        """Draws the loss against the learning rate (log axis), suggestions marked, on the chief; returns whether it wrote."""
        if not self._is_chief():
            return False
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        path = os.fspath(path)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        results = self.results
        figure = Figure(figsize=(7, 4.5))
        FigureCanvasAgg(figure)  # draws with Agg without touching pyplot's global backend
        axes = figure.add_subplot()
        lrs, smoothed = results["learning_rates"], results["smoothed_losses"]
        axes.plot(lrs, results["losses"], color="0.7", linewidth=0.8, label="loss")
        axes.plot(lrs, smoothed, color="C0", label=f"smoothed (beta={self.smoothing:g})")
        for (method, value), color in zip(self.suggestions().items(), ("C3", "C2", "C1")):
            axes.plot(value, np.interp(np.log(value), np.log(lrs), smoothed), "o", color=color,
                      label=f"{method}: {value:.2e}")  # fmt: skip
        finite = smoothed[np.isfinite(smoothed)]
        if finite.size:
            raw = results["losses"][np.isfinite(results["losses"])]
            low, high = min(finite.min(), raw.min()), finite.max()
            if self.divergence_factor is not None:
                high = min(high, self.divergence_factor * low)
            margin = 0.05 * (high - low) or 0.05 * abs(low) or 0.05
            axes.set_ylim(low - margin, high + margin)
        axes.set_xscale("log" if self.mode == "exponential" else "linear")
        axes.set_xlabel("learning rate")
        axes.set_ylabel("training loss")
        axes.set_title("Learning-rate range test")
        axes.legend()
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        return True

    def get_config(self):
        return {
            "min_learning_rate": self.min_learning_rate,
            "max_learning_rate": self.max_learning_rate,
            "steps": self.steps,
            "mode": self.mode,
            "smoothing": self.smoothing,
            "divergence_factor": self.divergence_factor,
            "output_dir": self.output_dir,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _check_labelled_dataset(dataset) -> None:
    """A batched tf.data.Dataset or distributed dataset of (inputs, labels[, sample weights]): the range test needs a loss."""
    if not isinstance(dataset, (tf.data.Dataset, tf.distribute.DistributedDataset)):
        raise invalid("dataset", dataset, "a batched tf.data.Dataset or a distributed dataset")
    spec = dataset.element_spec
    if not isinstance(spec, (tuple, list)) or len(spec) not in (2, 3):
        raise invalid("dataset", f"a dataset of elements {spec}",
                      "a dataset of (inputs, labels) or (inputs, labels, sample_weights): the range test needs a loss")


def find_learning_rate(model: keras.Model, dataset, *, min_learning_rate: float = 1e-7,
                       max_learning_rate: float = 10.0, steps: int = 100, mode: str = "exponential",
                       smoothing: float = 0.98, divergence_factor: float | None = 4.0,
                       output_dir: str | os.PathLike | None = None, verbose="auto",
                       callbacks=()) -> LearningRateFinder:  # fmt: skip
    """Runs the range test: `model.fit` on `dataset` for `steps` steps with a LearningRateFinder.

    `model` must be compiled (under the strategy's scope when there is one) and `dataset` a
    batched `tf.data.Dataset` or a distributed dataset; it is read for as many epochs as the
    sweep needs. The model and its optimizer come back unchanged; the learning rate is yours to
    apply (`finder.apply_suggestion()`). Arguments are those of LearningRateFinder, plus the
    `verbose` and extra `callbacks` of `fit`.

    Example:
        finder = find_learning_rate(model, train_dataset, steps=200)
        print(finder.suggestions())
        finder.apply_suggestion()     # "minimum"
    """
    if not isinstance(model, keras.Model) or not model.compiled:
        raise invalid("model", model, "a compiled keras.Model")
    _check_labelled_dataset(dataset)
    finder = LearningRateFinder(
        min_learning_rate, max_learning_rate, steps, mode=mode, smoothing=smoothing,
        divergence_factor=divergence_factor, output_dir=output_dir,
    )  # fmt: skip
    fit_options = {"epochs": steps}  # at least one step per epoch; the finder stops after `steps`
    cardinality = _cardinality(dataset)
    if cardinality == math.inf:
        fit_options = {"epochs": 1, "steps_per_epoch": steps}
    elif cardinality is not None:
        fit_options = {"epochs": math.ceil(steps / cardinality)}
    try:
        model.fit(dataset, shuffle=False, verbose=verbose, callbacks=[finder, *callbacks], **fit_options)
    finally:
        if finder._saved is not None:  # fit raised (Ctrl-C, an error) before on_train_end
            finder._restore(finder._saved)
    return finder


def _cardinality(dataset) -> float | None:
    """Batches per epoch of a tf.data.Dataset (math.inf if infinite); None when unknown."""
    import tensorflow as tf

    if not isinstance(dataset, tf.data.Dataset):
        return None
    count = int(dataset.cardinality())
    if count == tf.data.INFINITE_CARDINALITY:
        return math.inf
    if count == tf.data.UNKNOWN_CARDINALITY or count < 1:
        return None
    return count

