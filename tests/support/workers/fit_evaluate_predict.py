"""Worker program: plain Keras fit, evaluate and predict under the strategy of lepton_keras.

Writes `<out>/worker_<i>.json` with what the test compares: whether Keras needed the
compatibility fixes, and fit/evaluate/predict results against a NumPy computation. Logs at
INFO, as Ray's workers do, so the test sees whatever the probes print.
"""

import argparse
import json
import logging
import os

import numpy as np

from lepton_keras.distribute import get_strategy, keras_compat, task_info

ROWS, FEATURES, BATCH = 70, 4, 16  # 70 rows: the last batch (6 rows) is partial


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    # As Ray's workers: Python's INFO records show. A healthy run prints no traceback.
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("tensorflow").setLevel(logging.INFO)
    # One multi-worker strategy per process: a second one re-initialises the collectives, which
    # can leave the workers waiting for each other.
    strategy = get_strategy()  # "auto": a cluster is configured, so multi-worker; applies the fixes
    keras_compat.unpatch_keras()
    # The probes on stock Keras, then the fixes they call for.
    broken = {
        "symbolic_build": keras_compat.symbolic_build_is_broken(strategy),
        "scalar_mean": keras_compat.scalar_mean_is_broken(strategy),
    }
    first = keras_compat.patch_keras_for_multi_worker(strategy)
    functions = keras_compat.active_functions()
    again = keras_compat.patch_keras_for_multi_worker(strategy)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, FEATURES)).astype(np.float32)
    y = rng.normal(size=(ROWS, 1)).astype(np.float32)
    with strategy.scope():
        model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", metrics=["mae"])
    history = model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH), epochs=2, verbose=0)
    evaluated = model.evaluate(tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH), verbose=0, return_dict=True)
    predicted = model.predict(tf.data.Dataset.from_tensor_slices(x).batch(BATCH), verbose=0)

    kernel, bias = (w.astype(np.float64) for w in model.get_weights())
    expected = x.astype(np.float64) @ kernel + bias
    result = {
        "worker": task_info(strategy).worker_index,
        "strategy": type(strategy).__name__,
        "replicas": strategy.num_replicas_in_sync,
        "broken": broken,
        "patched_first": first,
        "patched_again": again,
        "same_functions_after_second_patch": functions == keras_compat.active_functions(),
        "history": history.history,
        "evaluate": evaluated,
        "expected_loss": float(np.mean((expected - y) ** 2)),
        "expected_mae": float(np.mean(np.abs(expected - y))),
        "predict_rows": int(predicted.shape[0]),
        "predict_error": float(np.max(np.abs(predicted - expected))),
        "weights": [w.tolist() for w in model.get_weights()],
    }
    with open(os.path.join(args.out, f"worker_{result['worker']}.json"), "w") as file:
        json.dump(result, file)


if __name__ == "__main__":
    main()
