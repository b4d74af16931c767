"""Worker program: the learning-rate range test under MultiWorkerMirroredStrategy.

Every worker runs the test with output_dir; each writes its own results_<i>.json (the
recorded curve, the suggestions, and whether the model came back bitwise) for the test to
compare. lr_find.csv and lr_find.png must come from the chief alone.
"""

import argparse
import json
import os

import keras
import numpy as np

from lepton_keras.callbacks.lr_finder import find_learning_rate
from lepton_keras.distribute import get_strategy, task_info
from tests.support.cases import regression_data

# The same run in this process and on the workers: 12 steps over 4 global batches of 16.
FINDER_OPTIONS = {"min_learning_rate": 1e-3, "max_learning_rate": 1.0, "steps": 12}
GLOBAL_BATCH_SIZE = 16


def regression_dataset(batch_size=GLOBAL_BATCH_SIZE):
    """tests.support.cases.regression_data: 64 rows of 8 features and 2 targets."""
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(regression_data(64, seed=0)).batch(batch_size)


def regression_model(optimizer=None):
    """A Dense layer for regression_data, compiled with mean squared error (plain SGD unless `optimizer` is given)."""
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    model.compile(optimizer=optimizer or keras.optimizers.SGD(0.01), loss="mse")
    return model


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    strategy = get_strategy()
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = regression_model()
        model.optimizer.build(model.trainable_variables)
    before = [np.array(w) for w in model.get_weights()]
    before += [np.array(keras.ops.convert_to_numpy(v)) for v in model.optimizer.variables]
    finder = find_learning_rate(model, regression_dataset(), output_dir=args.out, verbose=0, **FINDER_OPTIONS)
    after = [np.array(w) for w in model.get_weights()]
    after += [np.array(keras.ops.convert_to_numpy(v)) for v in model.optimizer.variables]
    result = {key: value.tolist() for key, value in finder.results.items()}
    result["suggestions"] = finder.suggestions()
    result["restored"] = len(before) == len(after) and all(np.array_equal(a, b) for a, b in zip(before, after))
    with open(os.path.join(args.out, f"results_{task_info(strategy).worker_index}.json"), "w") as file:
        json.dump(result, file)


if __name__ == "__main__":
    main()
