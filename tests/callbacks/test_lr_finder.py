"""LearningRateFinder against float64 references of the range test, its exact restore, files and the CLI."""

import csv
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from lepton_keras.callbacks import lr_finder
from lepton_keras.callbacks.learning_rate import current_learning_rate
from lepton_keras.callbacks.lr_finder import LearningRateFinder, find_learning_rate
from tests.callbacks.reference import lr_finder as reference
from tests.callbacks.reference.learning_rate import sgd_linear_regression
from tests.support.cases import regression_data
from tests.support.harness import launch_workers
from tests.support.workers import lr_finder_worker as worker


def snapshot(model):
    """Every weight and optimizer variable, as NumPy copies."""
    return [np.array(w) for w in model.get_weights()] + [
        np.array(keras.ops.convert_to_numpy(v)) for v in model.optimizer.variables
    ]


def assert_bitwise_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


class LearningRateProbe(keras.callbacks.Callback):
    """Reads the learning rate each step will use (runs after the finder has set it)."""

    def __init__(self):
        super().__init__()
        self.used = []

    def on_train_batch_begin(self, batch, logs=None):
        self.used.append(current_learning_rate(self.model.optimizer))


# The pure functions


@pytest.mark.parametrize("mode", ["exponential", "linear"])
@pytest.mark.parametrize("bounds, steps", [((1e-7, 10.0), 100), ((1e-3, 1.0), 2), ((0.5, 0.75), 7)])
def test_the_sweep_is_the_closed_form(mode, bounds, steps):
    lrs = lr_finder.sweep_learning_rates(*bounds, steps, mode)
    np.testing.assert_allclose(lrs, reference.sweep(*bounds, steps, mode), rtol=1e-13)
    assert lrs[0] == bounds[0] and np.isclose(lrs[-1], bounds[1], rtol=1e-15)


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.98])
def test_smoothing_is_the_bias_corrected_moving_average(beta):
    losses = np.random.default_rng(1).uniform(0.5, 3.0, size=40)
    np.testing.assert_allclose(lr_finder.smooth_losses(losses, beta), reference.smoothed(losses, beta), rtol=1e-12)
    # bias correction: a constant loss is its own average from the first step
    np.testing.assert_allclose(lr_finder.smooth_losses(np.full(5, 2.5), beta), 2.5, rtol=1e-14)


def noisy_range_test_curve(seed, steps=80):
    """A typical range-test curve: flat, a descent, a minimum, then a blow-up; with noise."""
    lrs = reference.sweep(1e-6, 10.0, steps)
    t = np.log10(lrs)
    losses = 2.3 - 1.5 / (1 + np.exp(-2.5 * (t + 3))) + 0.08 * np.exp(2.5 * (t + 0.5))
    return lrs, losses + np.random.default_rng(seed).normal(scale=0.05, size=steps)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("method", ["valley", "steepest", "minimum"])
def test_suggestions_match_the_reference(seed, method):
    lrs, losses = noisy_range_test_curve(seed)
    smoothed = reference.smoothed(losses)
    got = lr_finder.suggest_learning_rate(lrs, smoothed, method)
    assert got == getattr(reference, method)(*reference.trimmed(lrs, smoothed))


@pytest.mark.parametrize("seed", range(20))
def test_the_longest_valley_matches_the_exhaustive_table_with_ties(seed):
    losses = np.random.default_rng(seed).integers(0, 4, size=12).astype(float)  # many equal values and ties
    lrs = np.arange(1.0, 13.0)
    assert lr_finder.suggest_learning_rate(lrs, losses, "valley", skip_start=0, skip_end=0) == reference.valley(
        lrs, losses
    )


def test_suggestions_skip_the_ends_and_stop_at_the_first_nan():
    lrs = reference.sweep(1e-4, 1.0, 30)
    losses = np.linspace(3.0, 1.0, 30)
    losses[20] = np.nan
    for method in ("valley", "steepest", "minimum"):
        expected = getattr(reference, method)(*reference.trimmed(lrs, losses))
        assert lr_finder.suggest_learning_rate(lrs, losses, method) == expected
    assert lr_finder.suggest_learning_rate(lrs, losses, "minimum") == lrs[14] / 10  # 20 finite, 5 left out


def test_the_steepest_descent_is_found_on_a_known_curve():
    lrs = reference.sweep(1e-5, 1.0, 51)  # ten points per decade
    losses = 2.0 - np.tanh(2.0 * (np.log10(lrs) + 2.0))  # steepest at lr = 1e-2
    assert lr_finder.suggest_learning_rate(lrs, losses, "steepest", skip_start=0, skip_end=0) == pytest.approx(1e-2)
    # a spike after the minimum whose moving average then falls faster than the real descent
    lrs = np.concatenate([lrs, reference.sweep(1.0, 100.0, 21)[1:]])
    losses = np.concatenate([losses, np.linspace(20.0, 5.0, 20)])
    assert lr_finder.suggest_learning_rate(lrs, losses, "steepest", skip_start=0, skip_end=0) == pytest.approx(1e-2)
    assert reference.steepest(lrs, losses) == pytest.approx(1e-2)


# The callback during fit


def regression_case(steps, min_lr=1e-3, max_lr=0.3, divergence_factor=4.0, optimizer=None, batches=3,
                    pretrain_steps=0):  # fmt: skip
    keras.utils.set_random_seed(0)
    model = worker.regression_model(optimizer or keras.optimizers.SGD(0.01))
    x, y = regression_data(16 * batches, seed=0)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    if pretrain_steps:
        model.fit(dataset, epochs=1, steps_per_epoch=pretrain_steps, verbose=0, shuffle=False)
    w, b = (np.array(v) for v in model.get_weights())
    probe = LearningRateProbe()
    finder = find_learning_rate(
        model, dataset, min_learning_rate=min_lr, max_learning_rate=max_lr, steps=steps,
        divergence_factor=divergence_factor, verbose=0, callbacks=[probe],
    )  # fmt: skip
    return finder, probe, (x, y, w, b), model


def test_each_step_trains_at_the_swept_rate_and_records_its_own_batch_loss():
    # 10 steps over 3 batches: 4 epochs, so the loss is recovered across epoch boundaries
    finder, probe, (x, y, w, b), _ = regression_case(steps=10, divergence_factor=None)
    results = finder.results
    expected_lrs = reference.sweep(1e-3, 0.3, 10)
    np.testing.assert_allclose(results["learning_rates"], expected_lrs, rtol=1e-13)
    np.testing.assert_array_equal(probe.used[:10], expected_lrs.astype(np.float32))
    _, _, expected_losses = sgd_linear_regression(x, y, w, b, expected_lrs, 16)
    np.testing.assert_allclose(results["losses"], expected_losses, rtol=2e-5)
    np.testing.assert_allclose(results["smoothed_losses"], reference.smoothed(results["losses"]), rtol=1e-12)


def test_the_test_stops_once_the_smoothed_loss_diverges():
    finder, _, (x, y, w, b), _ = regression_case(steps=60, min_lr=1e-2, max_lr=100.0)
    results = finder.results
    _, _, full = sgd_linear_regression(x, y, w, b, reference.sweep(1e-2, 100.0, 60), 16)
    with np.errstate(over="ignore", invalid="ignore"):
        stop = reference.stop_index(reference.smoothed(full))
    assert stop is not None and stop < 59
    assert len(results["losses"]) == stop + 1
    assert results["smoothed_losses"][-1] > 4 * np.min(results["smoothed_losses"])


def test_a_nan_loss_stops_the_test():
    x = np.ones((16, 4), np.float32)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, kernel_initializer="ones")])
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    weights = model.get_weights()
    model.set_weights([weights[0] * np.float32(np.nan), weights[1]])
    finder = find_learning_rate(model, tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(16), steps=10,
                                divergence_factor=None, verbose=0)  # fmt: skip
    assert len(finder.results["losses"]) == 1 and np.isnan(finder.results["smoothed_losses"][0])


def adam_then_finder_then_train(learning_rate, pretrain_steps=2):
    """Trains `pretrain_steps`, runs the range test, trains 3 more; and the same without the test."""
    x, y = regression_data(48, seed=0)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    runs = []
    for with_finder in (True, False):
        keras.utils.set_random_seed(0)
        model = worker.regression_model(keras.optimizers.Adam(learning_rate))
        model.fit(dataset, epochs=1, steps_per_epoch=pretrain_steps, verbose=0, shuffle=False)
        before, lr_before = snapshot(model), current_learning_rate(model.optimizer)
        if with_finder:
            find_learning_rate(model, dataset, min_learning_rate=1e-4, max_learning_rate=10.0, steps=20, verbose=0)
            assert current_learning_rate(model.optimizer) == lr_before
            assert_bitwise_equal(snapshot(model), before)
        model.fit(dataset, epochs=1, verbose=0, shuffle=False)
        runs.append(snapshot(model))
    return runs


def test_weights_optimizer_and_float_learning_rate_come_back_bitwise():
    with_finder, without = adam_then_finder_then_train(3e-3)
    assert_bitwise_equal(with_finder, without)


class FailAtStep(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 3:
            raise KeyboardInterrupt


def test_the_model_comes_back_when_fit_is_interrupted():
    keras.utils.set_random_seed(0)
    model = worker.regression_model(keras.optimizers.Adam(1e-3))
    model.optimizer.build(model.trainable_variables)
    before = snapshot(model)
    with pytest.raises(KeyboardInterrupt):
        find_learning_rate(model, worker.regression_dataset(), steps=10, verbose=0, callbacks=[FailAtStep()])
    assert_bitwise_equal(snapshot(model), before)


def test_a_schedule_comes_back_bitwise():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=2, decay_rate=0.5)
    with_finder, without = adam_then_finder_then_train(schedule, pretrain_steps=3)
    assert_bitwise_equal(with_finder, without)


def test_a_schedule_is_swept_through_its_multiplier():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=2, decay_rate=0.5)
    finder, probe, _, model = regression_case(steps=8, optimizer=keras.optimizers.SGD(schedule), divergence_factor=None)
    np.testing.assert_allclose(probe.used[:8], reference.sweep(1e-3, 0.3, 8), rtol=1e-6)
    assert current_learning_rate(model.optimizer) == np.float32(0.01)  # iterations back at 0


def test_a_schedule_traced_before_the_test_is_swept_too():
    # the train function traced by the first fit computes the plain schedule; the finder must retrace it
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=2, decay_rate=0.5)
    finder, _, (x, y, w, b), _ = regression_case(
        steps=8, optimizer=keras.optimizers.SGD(schedule), divergence_factor=None, pretrain_steps=2
    )
    _, _, expected = sgd_linear_regression(x, y, w, b, reference.sweep(1e-3, 0.3, 8), 16)
    np.testing.assert_allclose(finder.results["losses"], expected, rtol=2e-5)


@pytest.mark.parametrize("learning_rate", [0.05, keras.optimizers.schedules.CosineDecay(0.05, 100)])
def test_apply_suggestion_sets_the_learning_rate(learning_rate):
    finder, _, _, model = regression_case(steps=30, max_lr=3.0, optimizer=keras.optimizers.SGD(learning_rate))
    for method in ("valley", "steepest", "minimum"):
        value = finder.apply_suggestion(method)
        assert value == finder.suggestion(method)
        assert current_learning_rate(model.optimizer) == pytest.approx(value, rel=1e-6)


def test_results_and_suggestions_agree_with_the_reference_on_a_real_run():
    finder, _, _, _ = regression_case(steps=40, max_lr=3.0)
    results = finder.results
    trimmed = reference.trimmed(results["learning_rates"], results["smoothed_losses"])
    for method in ("valley", "steepest", "minimum"):
        assert finder.suggestion(method) == getattr(reference, method)(*trimmed)
    assert finder.suggestions() == {m: finder.suggestion(m) for m in ("valley", "steepest", "minimum")}


# Files


def test_csv_and_plot_are_written_at_train_end(tmp_path):
    keras.utils.set_random_seed(0)
    model = worker.regression_model()
    finder = find_learning_rate(model, worker.regression_dataset(), steps=20, min_learning_rate=1e-3,
                                max_learning_rate=1.0, output_dir=tmp_path / "out", verbose=0)  # fmt: skip
    with open(tmp_path / "out" / "lr_find.csv") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["step", "learning_rate", "loss", "smoothed_loss"]
    table = np.array([[float(v) for v in row] for row in rows[1:]])
    results = finder.results
    np.testing.assert_array_equal(table[:, 0], np.arange(len(results["losses"])))
    np.testing.assert_array_equal(table[:, 1], results["learning_rates"])  # repr round-trips floats
    np.testing.assert_array_equal(table[:, 2], results["losses"])
    np.testing.assert_array_equal(table[:, 3], results["smoothed_losses"])
    with open(tmp_path / "out" / "lr_find.png", "rb") as file:
        assert file.read(8) == b"\x89PNG\r\n\x1a\n"


def test_only_the_chief_writes(tmp_path, monkeypatch):
    finder, _, _, _ = regression_case(steps=12)
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    assert not finder.save_csv(tmp_path / "a.csv") and not finder.plot(tmp_path / "a.png")
    assert os.listdir(tmp_path) == []
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    assert finder.save_csv(tmp_path / "a.csv") and finder.plot(tmp_path / "a.png")
    assert sorted(os.listdir(tmp_path)) == ["a.csv", "a.png"]


@pytest.mark.multiworker
def test_two_workers_agree_and_only_the_chief_writes_files(tmp_path):
    launch_workers("tests.support.workers.lr_finder_worker", ["--out", str(tmp_path)])
    assert sorted(os.listdir(tmp_path)) == ["lr_find.csv", "lr_find.png", "results_0.json", "results_1.json"]
    results = []
    for index in range(2):
        with open(tmp_path / f"results_{index}.json") as file:
            results.append(json.load(file))
    assert results[0] == results[1]  # bitwise: every worker sees the all-reduced loss
    assert results[0]["restored"]
    keras.utils.set_random_seed(0)
    single = find_learning_rate(worker.regression_model(), worker.regression_dataset(), verbose=0,
                                **worker.FINDER_OPTIONS)  # fmt: skip
    np.testing.assert_array_equal(results[0]["learning_rates"], single.results["learning_rates"])
    np.testing.assert_allclose(results[0]["losses"], single.results["losses"], rtol=1e-5)
    assert results[0]["suggestions"] == single.suggestions()


# Arguments and configuration


ABOVE_MIN = "max_learning_rate must be a finite number above min_learning_rate=1e-07"


DIRECTORY = "a directory path (an existing directory, or one that can be created) or None"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_learning_rate": 0.0}, "min_learning_rate must be a finite number > 0, received: 0.0"),
        ({"min_learning_rate": "1e-3"}, "min_learning_rate must be a finite number > 0, received: '1e-3'"),
        ({"max_learning_rate": 1e-8}, f"{ABOVE_MIN}, received: 1e-08"),
        ({"max_learning_rate": float("inf")}, f"{ABOVE_MIN}, received: inf"),
        ({"max_learning_rate": float("nan")}, f"{ABOVE_MIN}, received: nan"),
        ({"steps": 1}, "steps must be an integer >= 2, received: 1"),
        ({"steps": 10.0}, "steps must be an integer >= 2, received: 10.0"),
        ({"mode": "cosine"}, "mode must be one of 'exponential', 'linear', received: 'cosine'"),
        ({"smoothing": 1.0}, "smoothing must be a number in [0, 1), received: 1.0"),
        ({"smoothing": float("nan")}, "smoothing must be a number in [0, 1), received: nan"),
        ({"divergence_factor": 1.0}, "divergence_factor must be a finite number > 1 or None, received: 1.0"),
        ({"divergence_factor": float("inf")}, "divergence_factor must be a finite number > 1 or None, received: inf"),
        ({"output_dir": 3}, f"output_dir must be {DIRECTORY}, received: 3"),
        ({"output_dir": __file__}, f"output_dir must be {DIRECTORY}; {os.path.abspath(__file__)!r} is a file, received: {__file__!r}"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError) as error:
        LearningRateFinder(**kwargs)
    assert str(error.value) == message


@pytest.mark.parametrize("model", [None, "model", keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])])
def test_find_learning_rate_needs_a_compiled_model(model):
    dataset = tf.data.Dataset.from_tensor_slices((np.ones((4, 2), "float32"), np.ones((4, 1), "float32"))).batch(2)
    with pytest.raises(ValueError) as error:
        find_learning_rate(model, dataset)
    assert str(error.value) == f"model must be a compiled keras.Model, received: {model!r}"


def test_bad_suggestion_requests_are_named():
    lrs = reference.sweep(1e-4, 1.0, 10)
    message = "^method must be one of 'minimum', 'steepest', 'valley', received: 'fastest'$"
    with pytest.raises(ValueError, match=message):
        lr_finder.suggest_learning_rate(lrs, np.ones(10), "fastest")
    with pytest.raises(ValueError, match="leave 0; a suggestion needs at least 2"):
        lr_finder.suggest_learning_rate(lrs[:5], np.ones(5), "valley")


def test_get_config_round_trips():
    finder = LearningRateFinder(1e-5, 3.0, 50, mode="linear", smoothing=0.9, divergence_factor=None, output_dir="o")
    config = finder.get_config()
    assert LearningRateFinder.from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(finder))
    assert isinstance(restored, LearningRateFinder) and restored.get_config() == config
