"""Train one model K steps on the same global batches under different strategies, and compare.

    case = TrainingCase("tests.support.cases:tutorial_cnn_adam", "tests.support.cases:cifar10_sample", steps=5)
    reference = run_case(case)                       # (a) no strategy
    mirrored = run_case(case, replicas=2)            # (b) MirroredStrategy over 2 logical CPUs
    worker_0, worker_1 = run_case_on_workers(case)   # (c) 2 local worker processes
    assert max_difference(reference, mirrored) < 1e-5

`model_fn` and `data_fn` are "module:function" names, so worker processes can import
them: `model_fn(**model_options)` returns a compiled model (it is called inside the
strategy's scope), `data_fn(count, seed)` returns NumPy inputs and targets with `count`
rows, and the optional `callbacks_fn(**model_options)` returns the callbacks for `fit`;
`gradient_communication` (GradientCommunication's arguments) sets how the strategy sums, and
`periodic_sync` (PeriodicSync's arguments) how often its replicas meet.
Every run starts from the same seed, sees batch k = rows [k B, (k + 1) B) of the same
data in each of `epochs` epochs (Keras splits each global batch between replicas and
workers), and returns the weights and optimizer variables after `steps` steps per epoch.

Run as a module, this file is the worker program of `run_case_on_workers`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import io
import json
import os
import sys
import tempfile

import numpy as np

from tests.support.numerics import relative_error

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass(frozen=True)
class TrainingCase:
    model_fn: str
    data_fn: str
    steps: int = 5
    global_batch_size: int = 16
    seed: int = 0
    model_options: dict = dataclasses.field(default_factory=dict)
    callbacks_fn: str | None = None
    epochs: int = 1
    gradient_communication: dict | None = None  # GradientCommunication(**this) on the strategy
    periodic_sync: dict | None = None  # PeriodicSync(**this) on the strategy


@dataclasses.dataclass
class TrainingResult:
    weights: list[np.ndarray]
    optimizer_variables: list[np.ndarray]
    loss: float

    def arrays(self) -> list[np.ndarray]:
        return [*self.weights, *self.optimizer_variables]


def _resolve(name: str):
    module, function = name.split(":")
    return getattr(importlib.import_module(module), function)


def _train(case: TrainingCase, strategy) -> TrainingResult:
    import keras
    import tensorflow as tf

    if case.gradient_communication is not None and strategy.num_replicas_in_sync > 1:  # not the global default
        from lepton_keras.distribute import GradientCommunication, set_gradient_communication

        set_gradient_communication(strategy, GradientCommunication(**case.gradient_communication))
    if case.periodic_sync is not None and strategy.num_replicas_in_sync > 1:
        from lepton_keras.distribute import PeriodicSync, set_periodic_sync

        set_periodic_sync(strategy, PeriodicSync(**case.periodic_sync))
    x, y = _resolve(case.data_fn)(case.steps * case.global_batch_size, case.seed)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(case.global_batch_size)
    keras.utils.set_random_seed(case.seed)
    with strategy.scope():
        model = _resolve(case.model_fn)(**case.model_options)
    callbacks = _resolve(case.callbacks_fn)(**case.model_options) if case.callbacks_fn else []
    if case.steps:
        history = model.fit(dataset, epochs=case.epochs, shuffle=False, verbose=0, callbacks=callbacks)
        loss = history.history["loss"][-1]
    else:  # the starting point: built, untrained
        with strategy.scope():
            model.optimizer.build(model.trainable_variables)
        loss = float("nan")
    return TrainingResult(
        weights=[np.array(w) for w in model.get_weights()],
        optimizer_variables=[np.array(v) for v in model.optimizer.variables],
        loss=float(loss),
    )


def run_case(case: TrainingCase, replicas: int | None = None) -> TrainingResult:
    """Trains in this process: no strategy (None) or MirroredStrategy over `replicas` CPUs."""
    import tensorflow as tf

    from lepton_keras.distribute import get_strategy

    strategy = tf.distribute.get_strategy() if replicas is None else get_strategy("mirrored", cpu_replicas=replicas)
    return _train(case, strategy)


WORKER_TIMEOUT_SECONDS = 300


def launch_workers(module: str, args: list[str], workers: int = 2) -> str:
    """Runs `python -m module args` as `workers` local workers; returns their prefixed output.

    Raises:
        RuntimeError: a worker failed, or the job hung past 5 minutes (the message holds
            every worker's output).
    """
    from lepton_keras.distribute.launcher import launch

    output = io.StringIO()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO_ROOT, os.environ.get("PYTHONPATH", "")])}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    status = launch(
        [sys.executable, "-m", module, *args], workers, env=env, out=output, timeout_seconds=WORKER_TIMEOUT_SECONDS
    )
    if status != 0:
        raise RuntimeError(f"the workers failed with exit status {status}:\n{output.getvalue()}")
    return output.getvalue()


def run_case_on_workers(case: TrainingCase, workers: int = 2) -> list[TrainingResult]:
    """Trains as `workers` local processes under MultiWorkerMirroredStrategy; one result each."""
    return run_cases_on_workers([case], workers)[0]


def run_cases_on_workers(cases: list[TrainingCase], workers: int = 2) -> list[list[TrainingResult]]:
    """Trains each case in turn in the same `workers` local processes (one launch); results[case][worker]."""
    with tempfile.TemporaryDirectory() as out_dir:
        cases_json = json.dumps([dataclasses.asdict(case) for case in cases])
        launch_workers("tests.support.harness", ["--cases", cases_json, "--out", out_dir], workers)
        return [
            [_load_result(os.path.join(out_dir, f"case_{number}_worker_{index}.npz")) for index in range(workers)]
            for number in range(len(cases))
        ]


def _save_result(result: TrainingResult, path: str) -> None:
    arrays = {f"weight_{i}": w for i, w in enumerate(result.weights)}
    arrays.update({f"optimizer_{i}": v for i, v in enumerate(result.optimizer_variables)})
    np.savez(path, loss=result.loss, **arrays)


def _load_result(path: str) -> TrainingResult:
    with np.load(path) as saved:
        def ordered(prefix):
            return [saved[f"{prefix}_{i}"] for i in range(sum(k.startswith(prefix) for k in saved.files))]

        return TrainingResult(ordered("weight"), ordered("optimizer"), float(saved["loss"]))


def max_difference(a: TrainingResult, b: TrainingResult) -> float:
    """Largest difference over all weights and optimizer variables, relative to max(1, |b|) (tests/support/numerics.py)."""
    return relative_error(a.arrays(), b.arrays())


def _worker_main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    from lepton_keras.distribute import get_strategy, task_info

    strategy = get_strategy("multi_worker")
    for number, case in enumerate(json.loads(args.cases)):
        result = _train(TrainingCase(**case), strategy)
        _save_result(result, os.path.join(args.out, f"case_{number}_worker_{task_info(strategy).worker_index}.npz"))


if __name__ == "__main__":
    _worker_main()
