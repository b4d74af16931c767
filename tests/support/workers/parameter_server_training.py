"""Program of every task of a local parameter-server cluster (`lepton-keras launch --ps 1`).

On a worker or parameter server `get_strategy()` serves the chief and never returns. On the
chief it trains plain Keras code as one scenario says and writes `<out>/result.json`:

- counting: 2 workers, `steps` Adam steps; the step counter and the loss metric's count.
- one_worker: 1 worker; for Adam and two of lepton_keras's optimizers (RAdam, element-wise;
  LARS, layer-wise), the weights after `steps` steps and those of the same steps in this
  process without a strategy.
- optimizers: 1 worker; every optimizer and wrapper of `lepton_keras.optimizers.list_optimizers()`
  and SAM, each a few steps, against the same steps in this process without a strategy: the
  largest difference of the weights, or the error it raised.
- user_path: fit's errors, callbacks and their logs, History, evaluate, predict, save.
- sharded: 2 parameter servers; a ParameterServerStrategy that shards variables across them
  (`variable_partitioner`); which stage (create, compile, fit) fails, and how.
- slow: long steps, a marker file at each epoch's start, and a BackupAndRestore in
  `<out>/backup` (the fault tests kill a task meanwhile and relaunch).
"""

import argparse
import contextlib
import json
import os

import numpy as np

import lepton_keras
from lepton_keras.distribute import get_strategy, observed_staleness

FEATURES, BATCH = 8, 16
# The registry's wrapper names, each tried around Adam.
WRAPPERS = {name for name, _ in lepton_keras.optimizers.list_optimizers(kind="wrapper")}


def dataset(tf, rows=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES)).astype("float32")
    y = (x @ rng.normal(size=(FEATURES, 1)) + 0.1).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH, drop_remainder=True)


def model_for(keras, optimizer, width=16):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((FEATURES,)), keras.layers.Dense(width, activation="tanh"), keras.layers.Dense(1),
    ])  # fmt: skip
    model.compile(optimizer=optimizer, loss="mse", metrics=["mae"])
    return model


def counting(args, strategy, keras, tf):
    with strategy.scope():
        model = model_for(keras, "adam")
    model.fit(dataset(tf), epochs=2, steps_per_epoch=args.steps // 2, verbose=0)
    loss_tracker = next(metric for metric in model.metrics if metric.name == "loss")
    return {
        "iterations": int(model.optimizer.iterations.numpy()),
        "loss_count": float(loss_tracker.variables[1].numpy()),
        "staleness": {str(k): v for k, v in observed_staleness(model).items()},
    }


def one_worker(args, strategy, keras, tf):
    optimizers = {
        "adam": lambda: keras.optimizers.Adam(0.01),
        "radam": lambda: lepton_keras.optimizers.RAdam(0.01),
        "lars": lambda: lepton_keras.optimizers.LARS(0.1, momentum=0.9),
    }
    result = {}
    for name, make in optimizers.items():
        with strategy.scope():
            coordinated = model_for(keras, make())
        coordinated.fit(dataset(tf), epochs=1, steps_per_epoch=args.steps, verbose=0)
        alone = model_for(keras, make())  # no strategy: Keras's own fit in this process
        alone.fit(dataset(tf).repeat(), epochs=1, steps_per_epoch=args.steps, verbose=0)
        result[name] = {
            "coordinated": [w.numpy().ravel().tolist() for w in coordinated.weights],
            "alone": [w.numpy().ravel().tolist() for w in alone.weights],
            "iterations": int(coordinated.optimizer.iterations.numpy()),
        }
    return result


def optimizers(args, strategy, keras, tf):
    def make(name):  # a wrapper wraps Adam ("lookahead_adam"); SAM wraps the model
        name = "adam" if name == "sam" else f"{name}_adam" if name in WRAPPERS else name
        return lepton_keras.optimizers.get(name, learning_rate=0.01)

    def trained(name, steps, scope):
        with scope:
            model = model_for(keras, make(name))
            if name == "sam":
                model = lepton_keras.optimizers.SharpnessAwareModel(model)
                model.compile(optimizer=make(name), loss="mse")
        model.fit(dataset(tf).repeat(), epochs=1, steps_per_epoch=steps, verbose=0)
        return [w.numpy() for w in model.weights]

    result = {}
    for name in [name for name, _ in lepton_keras.optimizers.list_optimizers()] + ["sam"]:
        try:
            coordinated = trained(name, args.steps, strategy.scope())
        except Exception as error:  # what the user sees: the test checks that it says why
            result[name] = {"error": f"{type(error).__name__}: {error}"[:600]}
            continue
        alone = trained(name, args.steps, contextlib.nullcontext())
        difference = max(float(np.max(np.abs(a - b) / (np.abs(b) + 1e-6))) for a, b in zip(coordinated, alone))
        result[name] = {"max_difference": difference}
    return result


def user_path(args, strategy, keras, tf):
    with strategy.scope():
        model = model_for(keras, "adam")
    data = dataset(tf)
    errors = {}
    for name, call in {
        "no_steps": lambda: model.fit(data, epochs=1),
        "numpy": lambda: model.fit(np.zeros((4, FEATURES)), np.zeros((4, 1)), steps_per_epoch=2),
        "y": lambda: model.fit(data, np.zeros((4, 1)), steps_per_epoch=2),
        "validation_split": lambda: model.fit(data, steps_per_epoch=2, validation_split=0.5),
        "class_weight": lambda: model.fit(data, steps_per_epoch=2, class_weight={0: 1.0}),
    }.items():
        try:
            call()
            errors[name] = None
        except ValueError as error:
            errors[name] = str(error)

    events = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            events.append(["begin", batch])

        def on_train_batch_end(self, batch, logs=None):
            events.append(["end", batch, sorted(logs)])

        def on_epoch_end(self, epoch, logs=None):
            events.append(["epoch_end", epoch, sorted(logs)])

    history = model.fit(
        lambda context: dataset(tf), epochs=2, steps_per_epoch=6, validation_data=data,
        callbacks=[Record(), keras.callbacks.LearningRateScheduler(lambda epoch: 0.01 / (epoch + 1))], verbose=0,
    )  # fmt: skip
    path = os.path.join(args.out, "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    x = np.concatenate([batch[0].numpy() for batch in data])
    return {
        "errors": errors,
        "events": events,
        "history": history.history,
        "learning_rate": float(model.optimizer.learning_rate.numpy()),
        "evaluate": model.evaluate(data, verbose=0, return_dict=True),
        "predict": model.predict(data, verbose=0).ravel().tolist(),
        "restored_predict": restored.predict(x, verbose=0).ravel().tolist(),
        "restored_weights_equal": all(
            np.array_equal(a.numpy(), b.numpy()) for a, b in zip(model.weights, restored.weights, strict=True)
        ),
        "weights_predict": (np.tanh(x @ model.weights[0].numpy() + model.weights[1].numpy())
                            @ model.weights[2].numpy() + model.weights[3].numpy()).ravel().tolist(),
        "iterations": int(model.optimizer.iterations.numpy()),
    }  # fmt: skip


def sharded(args, strategy, keras, tf):
    partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(min_shard_bytes=64, max_shards=2)
    strategy = tf.distribute.ParameterServerStrategy(strategy.cluster_resolver, variable_partitioner=partitioner)
    result = {}
    for stage in ("create", "fit"):
        try:
            if stage == "create":
                with strategy.scope():
                    model = model_for(keras, "adam", width=64)
                result["sharded"] = [type(w.value).__name__ for w in model.weights]
            else:
                model.fit(dataset(tf), epochs=1, steps_per_epoch=4, verbose=0)
        except Exception as error:
            result.update(failed=stage, error=f"{type(error).__name__}: {error}"[:2000])
            break
    return result


def slow(args, strategy, keras, tf):
    with strategy.scope():
        model = model_for(keras, "sgd", width=512)

    class Marker(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            open(os.path.join(args.out, f"epoch_{epoch}"), "w").close()

    backup = keras.callbacks.BackupAndRestore(os.path.join(args.out, "backup"))
    model.fit(dataset(tf, rows=1024), epochs=args.epochs, steps_per_epoch=args.steps, callbacks=[backup, Marker()],
              verbose=0)  # fmt: skip
    return {"iterations": int(model.optimizer.iterations.numpy())}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["counting", "one_worker", "optimizers", "user_path", "sharded", "slow"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    global FEATURES
    if args.scenario == "slow":
        FEATURES = 512  # wide inputs, so that a step takes long enough to be interrupted

    import keras
    import tensorflow as tf

    strategy = get_strategy()  # serves on a worker or parameter server, never returning
    result = globals()[args.scenario](args, strategy, keras, tf)
    with open(os.path.join(args.out, "result.json"), "w") as file:
        json.dump(result, file)


if __name__ == "__main__":
    main()
