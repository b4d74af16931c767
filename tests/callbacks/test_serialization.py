"""What our callbacks put into a model survives `model.save` and `keras.saving.load_model` in a fresh process.

The callbacks wrap a schedule in a MultipliedSchedule (ReduceLROnPlateau, DivergenceGuard,
LearningRateWarmup, LearningRateFinder), scale its multiplier, and set the momentum or beta_1
(CycleMomentum). Each case trains with them, saves a `.keras` file, then trains one more
step; a fresh Python process, which imports only `keras` and `lepton_keras`, loads every file,
reports the optimizer's config, learning rate and variables, and trains the same step: the
loaded model must continue exactly as the one that was never saved.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from lepton_keras.callbacks.cycle_momentum import CycleMomentum
from lepton_keras.callbacks.divergence_guard import DivergenceGuard
from lepton_keras.callbacks.learning_rate import learning_rate_multiplier, learning_rate_schedule
from lepton_keras.callbacks.lr_finder import find_learning_rate
from lepton_keras.callbacks.reduce_lr_on_plateau import ReduceLROnPlateau
from lepton_keras.callbacks.warmup import LearningRateWarmup
from lepton_keras.optimizers.lookahead import Lookahead
from lepton_keras.optimizers.radam import RAdam
from lepton_keras.schedules.one_cycle import OneCycle
from tests.callbacks.cases import FEATURES, TARGETS
from tests.support.cases import regression_data
from tests.support.harness import REPO_ROOT

BATCH = 8
TOLERANCE = 1e-6

# The fresh process: `import lepton_keras` and, until that import registers every class by itself,
# the public names of its subpackages; nothing else of ours.
LOADER = """
import json, os, sys
import numpy as np
import keras
import lepton_keras

for package in (lepton_keras.schedules, lepton_keras.optimizers, lepton_keras.callbacks):
    for name in package.__all__:
        getattr(package, name)

folder = sys.argv[1]
data = np.load(os.path.join(folder, "next_batch.npz"))
for name in json.loads(sys.argv[2]):
    try:
        model = keras.saving.load_model(os.path.join(folder, name + ".keras"))
    except Exception as error:
        with open(os.path.join(folder, name + ".loaded.json"), "w") as file:
            json.dump({"error": f"{type(error).__name__}: {error}"}, file)
        continue
    optimizer = model.optimizer
    report = {"config": keras.saving.serialize_keras_object(optimizer),
              "learning_rate": float(np.array(optimizer.learning_rate))}
    variables = [np.array(v) for v in optimizer.variables]
    model.fit(data["x"], data["y"], batch_size=len(data["x"]), epochs=1, shuffle=False, verbose=0)
    np.savez(os.path.join(folder, name + ".loaded.npz"), *variables, *model.get_weights())
    with open(os.path.join(folder, name + ".loaded.json"), "w") as file:
        json.dump(report, file)
"""


def cosine():
    return keras.optimizers.schedules.CosineDecay(0.01, decay_steps=100)


def plateau():
    # The loss falls, so in "max" mode every epoch after the first is a plateau: the multiplier halves.
    return ReduceLROnPlateau("loss", mode="max", factor=0.5, patience=0, min_delta=0.0)


def one_cycle():
    return OneCycle(0.05, total_steps=12, pct_start=0.5)


# name -> (optimizer factory, callbacks factory, whether the data holds a NaN batch)
CASES = {
    "adam_cosine_plateau": (lambda: keras.optimizers.Adam(cosine()), lambda: [plateau()], False),
    "radam_cosine_plateau": (lambda: RAdam(cosine()), lambda: [plateau()], False),
    "lookahead_adam_cosine_plateau": (lambda: Lookahead(keras.optimizers.Adam(cosine())), lambda: [plateau()], False),
    "adam_cosine_guard": (lambda: keras.optimizers.Adam(cosine()), lambda: [DivergenceGuard(snapshot_every=1)], True),
    "radam_float_guard": (lambda: RAdam(0.01), lambda: [DivergenceGuard(snapshot_every=1)], True),
    "sgd_cosine_warmup": (lambda: keras.optimizers.SGD(cosine(), momentum=0.9),
                          lambda: [LearningRateWarmup(2, initial_factor=0.25), plateau()], False),
    "sgd_one_cycle_momentum": (lambda: keras.optimizers.SGD(one_cycle(), momentum=0.9),
                               lambda: [CycleMomentum(one_cycle()), plateau()], False),
    "adam_one_cycle_beta_1": (lambda: keras.optimizers.Adam(one_cycle()),
                              lambda: [CycleMomentum(one_cycle())], False),
    "radam_one_cycle_beta_1": (lambda: RAdam(one_cycle()), lambda: [CycleMomentum(one_cycle()), plateau()], False),
    "adam_cosine_finder": (lambda: keras.optimizers.Adam(cosine()), "finder", False),
}


def data(nan_batch: bool):
    x, y = regression_data(4 * BATCH, seed=20)
    if nan_batch:
        y[2 * BATCH : 3 * BATCH] = np.nan  # batch 2 of each epoch: a restoration and a halved rate each time
    return x, y


def train(name):
    make_optimizer, make_callbacks, nan_batch = CASES[name]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(6, activation="tanh"),
                              keras.layers.Dense(TARGETS)])  # fmt: skip
    model.compile(optimizer=make_optimizer(), loss="mse")
    x, y = data(nan_batch)
    if make_callbacks == "finder":
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
        find_learning_rate(model, dataset, min_learning_rate=1e-4, max_learning_rate=1.0, steps=6, verbose=0)
    else:
        model.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0, callbacks=make_callbacks())
    return model


@pytest.fixture(scope="module")
def round_trips(tmp_path_factory):
    """name -> (the unsaved model's report, the loaded model's report), both trained one more step."""
    folder = tmp_path_factory.mktemp("callback_serialization")
    next_x, next_y = regression_data(BATCH, seed=21)
    np.savez(folder / "next_batch.npz", x=next_x, y=next_y)
    unsaved = {}
    for name in CASES:
        model = train(name)
        model.save(folder / f"{name}.keras")
        optimizer = model.optimizer
        report = {"config": json.loads(json.dumps(keras.saving.serialize_keras_object(optimizer))),
                  "learning_rate": float(np.array(optimizer.learning_rate)),
                  "multiplier": learning_rate_multiplier(optimizer),
                  "schedule": type(learning_rate_schedule(optimizer)).__name__}  # fmt: skip
        variables = [np.array(v) for v in optimizer.variables]
        model.fit(next_x, next_y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        unsaved[name] = (report, variables + model.get_weights())
    environment = {**os.environ, "PYTHONPATH": REPO_ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    environment.pop("TF_CONFIG", None)
    result = subprocess.run([sys.executable, "-c", LOADER, str(folder), json.dumps(list(CASES))],
                            capture_output=True, text=True, env=environment, timeout=300, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    loaded = {}
    for name in CASES:
        with open(folder / f"{name}.loaded.json") as file:
            report = json.load(file)
        arrays = []
        if "error" not in report:
            with np.load(folder / f"{name}.loaded.npz") as file:
                arrays = [file[f"arr_{i}"] for i in range(len(file.files))]
        loaded[name] = (report, arrays)
    return {name: (unsaved[name], loaded[name]) for name in CASES}


@pytest.mark.parametrize("name", list(CASES))
def test_the_loaded_optimizer_continues_like_the_unsaved_one(round_trips, name):
    (saved, saved_arrays), (loaded, loaded_arrays) = round_trips[name]
    assert "error" not in loaded, loaded.get("error")
    assert loaded["config"] == saved["config"]  # schedule, multiplier, momentum / beta_1: all as saved
    assert loaded["learning_rate"] == pytest.approx(saved["learning_rate"], rel=1e-7)
    assert len(loaded_arrays) == len(saved_arrays)
    for before, after in zip(saved_arrays, loaded_arrays):  # optimizer variables as saved, weights one step on
        np.testing.assert_allclose(after, before, rtol=TOLERANCE, atol=TOLERANCE)


def test_the_cases_hold_what_the_callbacks_wrote(round_trips):
    """The cases really exercise a scaled MultipliedSchedule and a scheduled momentum."""
    reports = {name: saved for name, ((saved, _), _) in round_trips.items()}
    assert reports["adam_cosine_plateau"]["schedule"] == "MultipliedSchedule"
    assert reports["adam_cosine_plateau"]["multiplier"] == pytest.approx(0.25)
    assert reports["lookahead_adam_cosine_plateau"]["multiplier"] == pytest.approx(0.25)
    assert reports["adam_cosine_guard"]["multiplier"] == pytest.approx(0.125)  # three restorations
    assert reports["sgd_cosine_warmup"]["multiplier"] == pytest.approx(0.25)  # the warmup's factor is off again
    assert reports["adam_cosine_finder"]["multiplier"] == 1.0
    momentum = reports["sgd_one_cycle_momentum"]["config"]["config"]["momentum"]
    assert momentum == pytest.approx(float(one_cycle().momentum(11)), rel=1e-6) and momentum != 0.9
    beta_1 = reports["adam_one_cycle_beta_1"]["config"]["config"]["beta_1"]
    assert beta_1 == pytest.approx(float(one_cycle().momentum(11)), rel=1e-6) and beta_1 != 0.9


@pytest.mark.parametrize("attribute", ["momentum", "beta_1"])
def test_a_checkpoint_written_during_training_holds_the_scheduled_momentum_as_a_number(attribute, tmp_path):
    # ModelCheckpoint before CycleMomentum in the list: it saves while the batch's hooks run.
    schedule = one_cycle()
    optimizer = keras.optimizers.SGD(schedule, momentum=0.9) if attribute == "momentum" else RAdam(schedule)
    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(TARGETS)])
    model.compile(optimizer=optimizer, loss="mse")
    x, y = data(nan_batch=False)
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "batch_{batch}.keras"), save_freq=3)
    fit_callbacks = [checkpoint, CycleMomentum(schedule)]
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=fit_callbacks)
    loaded = keras.saving.load_model(tmp_path / "batch_3.keras")  # after 3 batches: the momentum of step 2
    value = loaded.optimizer.get_config()[attribute]
    assert isinstance(value, float) and value == pytest.approx(float(schedule.momentum(2)), rel=1e-6)
