"""Every public constructor and function of lepton_keras refuses bad arguments the same way.

A table (`ROWS`) lists, for each public class and function, the arguments it needs to be built
(`required`) and, per argument, values it must refuse: NaN, infinities, negatives, 0 where 0 is
meaningless, 'False' for a bool, 2.5 for a count, None where None is not an option, a string for
a number. Each case must raise a ValueError whose message names the argument and contains
"received:" (the format of `lepton_keras.validation`). `test_every_public_callable_has_a_row`
fails when a public class or function is added without a row, so none can skip validation.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import sys
from typing import Callable

import keras
import numpy as np
import pytest
import tensorflow as tf

from lepton_keras import callbacks, data, distribute, initializers, layers, optimizers, schedules, validation
from lepton_keras.distribute import launcher

NAN, INF = float("nan"), float("inf")


# Bad values by kind of argument (None is dropped where the argument takes None).
LEARNING_RATE = [NAN, INF, -INF, -1.0, 0.0, "0.01", True, None]  # a schedule's peak, a finder's bounds
OPTIMIZER_LEARNING_RATE = [NAN, INF, -INF, -1.0, "0.01", True, None]  # 0 allowed: a saved model may hold it
UNIT = [NAN, INF, -0.1, 1.0, 1.5, "0.9", True, None]  # [0, 1)
UNIT_CLOSED = [NAN, INF, -0.1, 1.5, "0.5", True, None]  # [0, 1]
NON_NEGATIVE = [NAN, INF, -INF, -1.0, "0", True, None]  # finite, >= 0
POSITIVE = [*NON_NEGATIVE, 0.0]  # finite, > 0
NUMBER = [NAN, "1", True, None]  # any real number, not NaN
BOOL = ["False", "True", 1, 0, None]
COUNT = [2.5, 0, -1, "2", True, None]  # an integer >= 1
NON_NEGATIVE_COUNT = [2.5, -1, "0", True, None]  # an integer >= 0
SEED = [1.5, "0", True]
CHOICE = ["no_such_choice", 3, None]
STRING = [3, None, ""]
MODEL = [None, "model", 3]
STRATEGY = ["mirrored", 3]
REPLICAS = ["mirrored", 0, True]  # a strategy or a replica count >= 1


def optional(values):
    """The bad values of an argument that takes None."""
    return [value for value in values if value is not None]


@dataclasses.dataclass(frozen=True)
class Row:
    """How to call one public class or function, and the bad values of each of its arguments."""

    call: Callable
    bad: dict
    required: dict = dataclasses.field(default_factory=dict)


@functools.cache
def _model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="tanh"), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    return model


@functools.cache
def _dataset():
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((np.ones((8, 4), np.float32), np.ones((8, 2), np.float32))).batch(4)


A_FILE = os.path.abspath(__file__)  # a directory argument that names a file, or a path under one
NOT_DIRECTORIES = [A_FILE, os.path.join(A_FILE, "below")]


@functools.cache
def _inputs_only():
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(np.ones((8, 4), np.float32)).batch(4)


@functools.cache
def _cifar10():
    return data.load_cifar10("sample", train_limit=64, validation_limit=32)


def _method(name):
    return lambda **kwargs: getattr(_cifar10(), name)(**kwargs)


# The keywords every optimizer inherits from keras.optimizers.Optimizer (test_every_inherited_keras_keyword_has_bad_values).
KERAS_OPTIMIZER_KEYWORDS = {
    "weight_decay": optional(NON_NEGATIVE), "clipnorm": optional(POSITIVE), "clipvalue": optional(POSITIVE),
    "global_clipnorm": optional(POSITIVE), "use_ema": optional(BOOL), "ema_momentum": UNIT_CLOSED,
    "ema_overwrite_frequency": optional(COUNT), "loss_scale_factor": optional(POSITIVE),
    "gradient_accumulation_steps": [1, *optional(COUNT)], "name": [3, ""],
}
# A wrapper takes none of Keras's clipping, decay or EMA options (its inner optimizer or another wrapper does).
WRAPPER_REFUSED = [1.0, 0.5, True, NAN, "1"]


def _optimizer(**bad):
    return {"learning_rate": OPTIMIZER_LEARNING_RATE, "fused_updates": BOOL, **KERAS_OPTIMIZER_KEYWORDS, **bad}


def _wrapper(**bad):
    refused = {option: WRAPPER_REFUSED for option in ("clipnorm", "clipvalue", "global_clipnorm", "weight_decay", "use_ema")}
    return {"inner_optimizer": [None, 3, 2.5], "fused_updates": BOOL, **KERAS_OPTIMIZER_KEYWORDS, **refused, **bad}


_ADAM_LIKE = {"beta_1": UNIT, "beta_2": UNIT, "epsilon": NON_NEGATIVE}
_FINDER = {"min_learning_rate": LEARNING_RATE, "max_learning_rate": LEARNING_RATE, "steps": COUNT, "mode": CHOICE,
           "smoothing": UNIT, "divergence_factor": optional(POSITIVE), "output_dir": [3, *NOT_DIRECTORIES]}  # fmt: skip

ROWS = {
    # optimizers (lepton_keras/optimizers)
    "optimizers.LeptonOptimizer": Row(optimizers.LeptonOptimizer, _optimizer(), {"learning_rate": 0.01}),
    "optimizers.RAdam": Row(optimizers.RAdam, _optimizer(**_ADAM_LIKE)),
    "optimizers.AdaBelief": Row(optimizers.AdaBelief, _optimizer(**_ADAM_LIKE)),
    "optimizers.Yogi": Row(optimizers.Yogi, _optimizer(**_ADAM_LIKE, initial_accumulator_value=NON_NEGATIVE)),
    "optimizers.NovoGrad": Row(optimizers.NovoGrad, _optimizer(**_ADAM_LIKE, momentum_weight_decay=NON_NEGATIVE,
                                                               grad_averaging=BOOL)),
    "optimizers.LARS": Row(optimizers.LARS, _optimizer(momentum=UNIT, trust_coefficient=POSITIVE,
                                                       momentum_weight_decay=NON_NEGATIVE, epsilon=NON_NEGATIVE,
                                                       exclude_from_adaptation=["bias", [""], [3], 3])),
    "optimizers.Adan": Row(optimizers.Adan, _optimizer(**_ADAM_LIKE, beta_3=UNIT,
                                                       weight_decay=optional(NON_NEGATIVE))),
    "optimizers.AdEMAMix": Row(optimizers.AdEMAMix, _optimizer(**_ADAM_LIKE, beta_3=UNIT, alpha=NON_NEGATIVE,
                                                               alpha_beta3_warmup_steps=optional(COUNT))),
    "optimizers.MADGRAD": Row(optimizers.MADGRAD, _optimizer(momentum=UNIT, epsilon=NON_NEGATIVE,
                                                             weight_decay=optional(NON_NEGATIVE),
                                                             decoupled_weight_decay=BOOL)),
    "optimizers.Prodigy": Row(optimizers.Prodigy, _optimizer(
        **_ADAM_LIKE, beta_3=optional(UNIT), d0=POSITIVE, d_coef=POSITIVE, growth_rate=[NAN, 1.0, 0.5, "2", True, None],
        safeguard_warmup=BOOL, bias_correction=BOOL, weight_decay=optional(NON_NEGATIVE),
        decoupled_weight_decay=BOOL)),  # fmt: skip
    "optimizers.SOAP": Row(optimizers.SOAP, _optimizer(
        **_ADAM_LIKE, shampoo_beta=optional(UNIT), weight_decay=optional(NON_NEGATIVE), precondition_frequency=COUNT,
        max_precond_dim=COUNT, merge_dims=BOOL, precondition_1d=BOOL, normalize_grads=BOOL, correct_bias=BOOL)),  # fmt: skip
    "optimizers.ScheduleFreeAdamW": Row(optimizers.ScheduleFreeAdamW, _optimizer(
        beta_1=[0.0, *UNIT], beta_2=UNIT, epsilon=NON_NEGATIVE, weight_decay=optional(NON_NEGATIVE),
        warmup_steps=NON_NEGATIVE_COUNT, r=NON_NEGATIVE, weight_lr_power=NON_NEGATIVE)),  # fmt: skip
    "optimizers.ScheduleFreeSGD": Row(optimizers.ScheduleFreeSGD, _optimizer(
        momentum=[0.0, *UNIT], weight_decay=optional(NON_NEGATIVE), warmup_steps=NON_NEGATIVE_COUNT, r=NON_NEGATIVE,
        weight_lr_power=NON_NEGATIVE)),  # fmt: skip
    "callbacks.ScheduleFreeEvaluation": Row(callbacks.ScheduleFreeEvaluation, {"batch_norm_data": [3, 2.5],
                                                                               "batch_norm_steps": optional(COUNT)}),
    "callbacks.schedule_free_eval": Row(lambda **kwargs: callbacks.schedule_free_eval(**kwargs).__enter__(), {
        "model": MODEL, "batch_norm_data": [3], "batch_norm_steps": optional(COUNT), "optimizer": [3, "adam"]},
        {"model": _model()}),  # fmt: skip
    "optimizers.ADOPT": Row(optimizers.ADOPT, _optimizer(**_ADAM_LIKE, clip_exponent=optional(NON_NEGATIVE),
                                                         weight_decay=optional(NON_NEGATIVE))),
    "optimizers.Cautious": Row(optimizers.Cautious, _wrapper(), {"inner_optimizer": "sgd"}),
    "optimizers.Muon": Row(optimizers.Muon, _optimizer(
        momentum=UNIT, nesterov=BOOL, ns_steps=COUNT, ns_coefficients=[(1.0, 2.0), [1.0, NAN, 2.0], "abc", None],
        epsilon=NON_NEGATIVE, adjust_learning_rate=CHOICE, weight_decay=optional(NON_NEGATIVE), flatten_kernels=BOOL,
        exclude_layers=["head", [""], [3], 3], exclude_embeddings=BOOL, adamw_learning_rate=OPTIMIZER_LEARNING_RATE,
        adamw_beta_1=UNIT, adamw_beta_2=UNIT, adamw_epsilon=NON_NEGATIVE, adamw_weight_decay=optional(NON_NEGATIVE),
        split_orthogonalization=BOOL)),  # fmt: skip
    "optimizers.OptimizerWrapper": Row(optimizers.OptimizerWrapper, _wrapper(), {"inner_optimizer": "sgd"}),
    "optimizers.FusedUpdates": Row(optimizers.FusedUpdates, _wrapper(), {"inner_optimizer": "sgd"}),
    "optimizers.GradientClipping": Row(optimizers.GradientClipping, _wrapper(
        value=optional(POSITIVE), norm=optional(POSITIVE), global_norm=optional(POSITIVE)),
        {"inner_optimizer": "sgd", "global_norm": 1.0}),  # fmt: skip
    "optimizers.AdaptiveGradientClipping": Row(optimizers.AdaptiveGradientClipping, _wrapper(
        clipping=POSITIVE, epsilon=POSITIVE, exclude=["head", [""], [3], None]), {"inner_optimizer": "sgd"}),
    "optimizers.GradientCentralization": Row(optimizers.GradientCentralization, _wrapper(exclude_rank_one=BOOL),
                                             {"inner_optimizer": "sgd"}),
    "optimizers.GradientAccumulation": Row(optimizers.GradientAccumulation, _wrapper(steps=COUNT),
                                           {"inner_optimizer": "sgd"}),
    "optimizers.Lookahead": Row(optimizers.Lookahead, _wrapper(
        sync_period=COUNT, slow_step_size=[NAN, INF, 0.0, -0.5, 1.5, "0.5", True, None]), {"inner_optimizer": "sgd"}),
    "optimizers.StochasticWeightAveraging": Row(optimizers.StochasticWeightAveraging, _wrapper(
        start_step=NON_NEGATIVE_COUNT, average_period=COUNT), {"inner_optimizer": "sgd"}),
    "optimizers.ExponentialMovingAverage": Row(optimizers.ExponentialMovingAverage, _wrapper(
        decay=UNIT, start_step=NON_NEGATIVE_COUNT, use_warmup=BOOL), {"inner_optimizer": "sgd"}),
    "optimizers.SharpnessAwareModel": Row(optimizers.SharpnessAwareModel, {
        "model": [None, "model", keras.layers.Dense(2)], "rho": NON_NEGATIVE, "eta": NON_NEGATIVE, "adaptive": BOOL},
        {"model": _model()}),  # fmt: skip
    "optimizers.get": Row(lambda **kwargs: optimizers.get("adam", **kwargs), {"learning_rate": OPTIMIZER_LEARNING_RATE}),
    "optimizers.get(lepton)": Row(lambda **kwargs: optimizers.get("lookahead_radam", **kwargs),
                                  {"learning_rate": OPTIMIZER_LEARNING_RATE, "sync_period": COUNT}),
    "optimizers.list_optimizers": Row(optimizers.list_optimizers, {"pattern": STRING, "kind": optional(CHOICE)}),
    "optimizers.recompute_batch_norm_statistics": Row(optimizers.recompute_batch_norm_statistics,
                                                      {"steps": optional(COUNT), "model": MODEL,
                                                       "dataset": [None, 3, "x", np.ones((4, 4), np.float32)]},
                                                      {"model": _model(), "dataset": _dataset()}),
    # layers
    "layers.DropBlock2D": Row(layers.DropBlock2D, {"rate": UNIT, "block_size": COUNT, "seed": SEED,
                                                   "data_format": ["NHWC", 3]}),
    "layers.MVRegularization": Row(layers.MVRegularization, {
        "layer": [None, "dense", 3], "lambda_": NON_NEGATIVE, "epsilon": POSITIVE, "per_example": BOOL,
        "include_bias": BOOL}, {"layer": keras.layers.Dense(2)}),  # fmt: skip
    "layers.StochasticDepth": Row(layers.StochasticDepth, {"survival_probability": UNIT_CLOSED, "per_example": BOOL,
                                                           "seed": SEED}),
    "layers.WeightNormalization": Row(layers.WeightNormalization, {
        "layer": [None, "dense", keras.layers.LSTM(2)], "data_init": BOOL}, {"layer": keras.layers.Dense(2)}),
    # initializers
    "initializers.DeltaOrthogonal": Row(initializers.DeltaOrthogonal, {"gain": POSITIVE, "seed": SEED}),
    "initializers.lsuv_initialize": Row(initializers.lsuv_initialize, {
        "model": MODEL, "target_variance": POSITIVE, "tolerance": POSITIVE, "max_iterations": COUNT,
        "orthogonal_start": BOOL, "seed": SEED, "strategy": STRATEGY, "batch": [None, 3, "x", np.zeros((0, 4), np.float32)]},
        {"model": _model(), "batch": np.ones((8, 4), np.float32)}),  # fmt: skip
    "initializers.lsuv_scale": Row(initializers.lsuv_scale, {"variance": POSITIVE, "target_variance": POSITIVE},
                                   {"variance": 1.0}),
    "initializers.kernel_layers": Row(initializers.kernel_layers, {"model": MODEL}),
    # schedules (their owner adds the checks)
    "schedules.CyclicalLearningRate": Row(schedules.CyclicalLearningRate, {
        "initial_learning_rate": NON_NEGATIVE, "maximal_learning_rate": LEARNING_RATE, "step_size": POSITIVE,
        "mode": CHOICE, "gamma": POSITIVE},
        {"initial_learning_rate": 1e-3, "maximal_learning_rate": 1e-2, "step_size": 100}),  # fmt: skip
    "schedules.InverseSquareRootDecay": Row(schedules.InverseSquareRootDecay, {
        "warmup_steps": COUNT, "d_model": optional(COUNT), "scale": POSITIVE,
        "peak_learning_rate": optional(LEARNING_RATE)}),  # fmt: skip
    "schedules.MultipliedSchedule": Row(schedules.MultipliedSchedule, {"base": [None, "0.1", NAN],
                                                                       "multiplier": NUMBER}, {"base": 0.1}),
    "schedules.OneCycle": Row(schedules.OneCycle, {
        "maximal_learning_rate": LEARNING_RATE, "total_steps": COUNT, "pct_start": [NAN, INF, -0.1, 1.5, "0.3", True],
        "div_factor": POSITIVE, "final_div_factor": POSITIVE, "anneal": CHOICE, "base_momentum": UNIT_CLOSED,
        "max_momentum": UNIT_CLOSED}, {"maximal_learning_rate": 0.1, "total_steps": 100}),  # fmt: skip
    "schedules.Warmup": Row(schedules.Warmup, {
        "target": [None, "0.1", NAN], "warmup_steps": NON_NEGATIVE_COUNT, "start_factor": [NAN, INF, -1.0, "0.1", True],
        "kind": CHOICE, "offset_target": BOOL}, {"target": 0.1, "warmup_steps": 10}),  # fmt: skip
    "schedules.WarmupStableDecay": Row(schedules.WarmupStableDecay, {
        "peak_learning_rate": LEARNING_RATE, "warmup_steps": NON_NEGATIVE_COUNT, "stable_steps": NON_NEGATIVE_COUNT,
        "decay_steps": NON_NEGATIVE_COUNT, "final_learning_rate": NON_NEGATIVE, "decay": CHOICE},
        {"peak_learning_rate": 0.1, "warmup_steps": 10, "stable_steps": 10, "decay_steps": 10}),  # fmt: skip
    # callbacks (their owners add the checks)
    "callbacks.AverageWeightsForEvaluation": Row(callbacks.AverageWeightsForEvaluation,
                                                 {"assign_at_end": BOOL, "optimizer": [3, "adam"]}),
    "callbacks.ChiefModelCheckpoint": Row(callbacks.ChiefModelCheckpoint, {"filepath": STRING, "strategy": STRATEGY},
                                          {"filepath": "model.keras"}),
    "callbacks.WorkerBackupAndRestore": Row(callbacks.WorkerBackupAndRestore, {
        "backup_dir": [*STRING, *NOT_DIRECTORIES], "save_freq": [2.5, 0, -1, True, "often"], "delete_checkpoint": BOOL,
        "strategy": STRATEGY}, {"backup_dir": "backup"}),  # fmt: skip
    "callbacks.CycleMomentum": Row(callbacks.CycleMomentum, {"schedule": [None, 3, "cosine"]}),
    "callbacks.DivergenceGuard": Row(callbacks.DivergenceGuard, {
        "spike_factor": [NAN, -1.0, 0.0, "10", True], "window": COUNT, "lr_factor": [NAN, INF, -0.5, 0.0, 1.5, "0.5",
        True, None], "max_attempts": NON_NEGATIVE_COUNT, "check_every": COUNT, "snapshot_every": COUNT}),  # fmt: skip
    "callbacks.LearningRateFinder": Row(callbacks.LearningRateFinder, _FINDER),
    "callbacks.find_learning_rate": Row(callbacks.find_learning_rate, {"model": MODEL, **_FINDER,
                                                                       "dataset": [None, 3, _inputs_only()]},
                                        {"model": _model(), "dataset": _dataset()}),
    "callbacks.LearningRateMonitor": Row(callbacks.LearningRateMonitor, {"log_momentum": BOOL}),
    "callbacks.LearningRateWarmup": Row(callbacks.LearningRateWarmup, {
        "warmup_epochs": [NAN, INF, -1.0, "1", True, None], "steps_per_epoch": optional(COUNT),
        "initial_factor": [NAN, INF, -1.0, "0.1", True], "verbose": [2.5, "1", None]}, {"warmup_epochs": 1}),
    "callbacks.ReduceLROnPlateau": Row(callbacks.ReduceLROnPlateau, {
        "monitor": STRING, "factor": [NAN, INF, -0.1, 0.0, 1.0, 1.5, "0.1", True, None],
        "patience": NON_NEGATIVE_COUNT, "mode": CHOICE, "min_delta": NON_NEGATIVE, "cooldown": NON_NEGATIVE_COUNT,
        "min_lr": NON_NEGATIVE, "verbose": [2.5, "1", None]}),  # fmt: skip
    "callbacks.TimeStopping": Row(callbacks.TimeStopping, {
        "seconds": [NAN, -1.0, 0.0, "60", True, None], "check": CHOICE, "verbose": [2.5, "1", None],
        "clock": [None, 3]}, {"seconds": 60}),  # fmt: skip
    # data (their owner adds the checks)
    "data.load_cifar10": Row(data.load_cifar10, {
        "source": CHOICE, "data_dir": [3], "validation_size": [2.5, -1, "10", True],
        "train_limit": [2.5, 0, -1, "10", True], "validation_limit": [2.5, -1, "10", True],
        "shard": ["everything", 3, (0,), (2, 1), (-1, 2), (0.5, 2)], "seed": [*SEED, None]}),  # fmt: skip
    "data.tfds_prepared": Row(data.tfds_prepared, {"data_dir": [3]}),
    "data.Cifar10.train_dataset": Row(_method("train_dataset"), {
        "global_batch_size": COUNT, "shuffle": BOOL, "seed": [*SEED, None], "one_hot": BOOL,
        "per_worker_pipelines": optional(BOOL), "augment": BOOL, "repeat": BOOL, "strategy": STRATEGY},
        {"global_batch_size": 8}),  # fmt: skip
    "data.Cifar10.validation_dataset": Row(_method("validation_dataset"), {"global_batch_size": COUNT,
                                                                           "one_hot": BOOL}, {"global_batch_size": 8}),
    "data.Cifar10.steps_per_epoch": Row(_method("steps_per_epoch"), {
        "global_batch_size": COUNT, "per_worker_pipelines": optional(BOOL), "strategy": STRATEGY},
        {"global_batch_size": 8}),  # fmt: skip
    # distribute (their owner adds the checks)
    "data.epoch_dataset": Row(data.epoch_dataset, {"make_epoch": [None, 3, "range"], "repeat": BOOL, "counted": BOOL},
        {"make_epoch": lambda epoch: tf.data.Dataset.range(3)}),  # fmt: skip
    "distribute.finish_job": Row(distribute.finish_job, {"strategy": STRATEGY, "timeout_seconds": POSITIVE}),
    "distribute.chief_path": Row(distribute.chief_path, {"path": STRING, "strategy": STRATEGY}, {"path": "logs"}),
    "distribute.worker_path": Row(distribute.worker_path, {"path": STRING, "strategy": STRATEGY}, {"path": "backup"}),
    "distribute.is_chief": Row(distribute.is_chief, {"strategy": STRATEGY}),
    "distribute.task_info": Row(distribute.task_info, {"strategy": STRATEGY}),
    "distribute.global_batch_size": Row(distribute.global_batch_size, {
        "per_replica_batch_size": COUNT, "strategy": REPLICAS}, {"per_replica_batch_size": 8}),
    "distribute.per_replica_batch_size": Row(distribute.per_replica_batch_size, {
        "global_batch": COUNT, "strategy": REPLICAS}, {"global_batch": 8}),
    "distribute.scale_learning_rate": Row(distribute.scale_learning_rate, {
        "base_learning_rate": LEARNING_RATE, "global_batch": COUNT, "base_batch_size": COUNT},
        {"base_learning_rate": 0.1, "global_batch": 512}),  # fmt: skip
    "distribute.get_strategy": Row(distribute.get_strategy, {
        "kind": CHOICE, "cpu_replicas": optional(COUNT), "communication": CHOICE,
        "bytes_per_pack": NON_NEGATIVE_COUNT, "cluster_resolver": [3, "slurm"],
        "gradient_communication": ["float16", 3, {"bucket_bytes": 1}],
        "periodic_sync": [16, "diloco", {"every": 16}]}),  # fmt: skip
    "distribute.GradientCommunication": Row(distribute.GradientCommunication, {
        "bucket_bytes": NON_NEGATIVE_COUNT, "compression": optional(CHOICE),
        "predivide_factor": [NAN, INF, 0.5, 0.0, -1.0, "2", True, None]}),  # fmt: skip
    "distribute.set_gradient_communication": Row(distribute.set_gradient_communication, {
        "strategy": [None, *STRATEGY], "communication": ["float16", 3, {"bucket_bytes": 1}]},
        {"strategy": tf.distribute.get_strategy(), "communication": None}),  # fmt: skip
    "distribute.gradient_communication": Row(distribute.gradient_communication, {"strategy": STRATEGY}),
    "distribute.PeriodicSync": Row(distribute.PeriodicSync, {
        "every": COUNT, "warmup_steps": NON_NEGATIVE_COUNT, "compression": optional(CHOICE),
        "outer_optimizer": ["sgd", 3, keras.optimizers.SGD]}),  # fmt: skip
    "distribute.set_periodic_sync": Row(distribute.set_periodic_sync, {
        "strategy": [None, *STRATEGY], "sync": [16, "diloco", {"every": 16}]},
        {"strategy": tf.distribute.get_strategy(), "sync": None}),  # fmt: skip
    "distribute.periodic_sync": Row(distribute.periodic_sync, {"strategy": STRATEGY}),
    "distribute.synchronize_replicas": Row(distribute.synchronize_replicas, {"model": MODEL}),
    "distribute.observed_staleness": Row(distribute.observed_staleness, {"model": MODEL}),
    "distribute.configure_cpu_devices": Row(distribute.configure_cpu_devices, {"count": COUNT}),
    "distribute.configure_cpu_threads": Row(distribute.configure_cpu_threads, {"cpus": COUNT}),
    "distribute.scale_recipe": Row(distribute.scale_recipe, {
        "learning_rate": LEARNING_RATE, "base_batch_size": COUNT, "batch_size": COUNT, "optimizer": STRING,
        "warmup_epochs": NON_NEGATIVE, "epochs": POSITIVE, "rule": [*CHOICE[:2]],
        "warmup_epochs_per_doubling": NON_NEGATIVE, "max_warmup_fraction": [*POSITIVE, 1.5],
        "layerwise_from_batch": COUNT[:-1], "critical_batch_size": [*COUNT[:-1], 64]},
        {"learning_rate": 4e-3, "base_batch_size": 128, "batch_size": 2048, "optimizer": "adam",
         "warmup_epochs": 7.5, "epochs": 30}),  # fmt: skip
    "distribute.slurm_cluster_resolver": Row(distribute.slurm_cluster_resolver, {
        "port_base": [*COUNT, 65536], "ps": NON_NEGATIVE_COUNT}),
    "distribute.patch_keras_for_multi_worker": Row(distribute.patch_keras_for_multi_worker, {
        "strategy": [None, *STRATEGY]}),
    "distribute.launcher.launch": Row(launcher.launch, {
        "command": [None, "python -c pass", [], [3]], "workers": COUNT, "ps": NON_NEGATIVE_COUNT, "host": STRING,
        "grace_seconds": [NAN, INF, -1.0, "3", True, None], "timeout_seconds": [NAN, -1.0, 0.0, "10", True]},
        {"command": [sys.executable, "-c", "pass"], "workers": 1}),  # fmt: skip
    "distribute.launcher.cluster_tf_configs": Row(launcher.cluster_tf_configs, {
        "workers": COUNT, "host": STRING, "ps": NON_NEGATIVE_COUNT}, {"workers": 2}),
    "distribute.launcher.cluster_tasks": Row(launcher.cluster_tasks, {"workers": COUNT, "ps": NON_NEGATIVE_COUNT},
                                             {"workers": 2}),
    "distribute.launcher.free_ports": Row(launcher.free_ports, {"count": COUNT, "host": STRING}, {"count": 2}),
}

# Public names that take no user hyperparameters: records returned to the user, constants.
EXEMPT = {
    "initializers.LSUVLayerReport": "a record lsuv_initialize returns",
    "distribute.TaskInfo": "a record task_info returns",
    "distribute.ScaledRecipe": "a record scale_recipe returns",
    "data.Cifar10": "a record load_cifar10 returns (its methods have rows)",
    "data.CLASS_NAMES": "a constant",
    "data.SOURCES": "a constant",
}

CASES = [
    pytest.param(name, argument, value, id=f"{name}-{argument}={value!r}")
    for name, row in ROWS.items()
    for argument, values in row.bad.items()
    for value in values
]


def _public_names():
    names = []
    for module in (optimizers, layers, initializers, schedules, callbacks, data, distribute):
        prefix = module.__name__.removeprefix("lepton_keras.")
        exported = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
        names.extend(f"{prefix}.{name}" for name in exported)
    return names


def test_every_public_callable_has_a_row():
    missing = [name for name in _public_names() if name not in ROWS and name not in EXEMPT]
    assert not missing, f"public classes or functions without a row in tests/test_validation.py: {missing}"


def test_every_inherited_keras_keyword_has_bad_values():
    keywords = [name for name, parameter in inspect.signature(keras.optimizers.Optimizer.__init__).parameters.items()
                if parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and name not in ("self", "learning_rate")]
    assert set(keywords) <= set(KERAS_OPTIMIZER_KEYWORDS), set(keywords) - set(KERAS_OPTIMIZER_KEYWORDS)
    for name, row in ROWS.items():
        if isinstance(row.call, type) and issubclass(row.call, keras.optimizers.Optimizer):
            assert set(keywords) <= set(row.bad), f"{name} lists no bad values for {set(keywords) - set(row.bad)}"


def test_every_row_names_real_arguments():
    for name, row in ROWS.items():
        target = row.call
        if name.startswith("data.Cifar10."):
            target = getattr(data.Cifar10, name.rsplit(".", 1)[1])
        try:
            parameters = inspect.signature(target).parameters
        except (TypeError, ValueError):
            continue
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            continue
        unknown = [argument for argument in [*row.bad, *row.required] if argument not in parameters]
        assert not unknown, f"{name} has no arguments {unknown}"


@pytest.mark.parametrize("name, argument, value", CASES)
def test_a_bad_argument_raises_a_value_error_naming_it(name, argument, value):
    row = ROWS[name]
    with pytest.raises(ValueError) as raised:
        row.call(**{**row.required, argument: value})
    message = str(raised.value)
    assert argument in message and "received:" in message, message


def test_the_case_count():
    # At least one bad value for every argument listed; the report quotes len(CASES).
    assert len(CASES) > 500


def test_the_messages_have_one_format():
    with pytest.raises(ValueError, match=r"^beta_1 must be a number in \[0, 1\), received: 1\.0$"):
        validation.check_unit_interval("beta_1", 1.0)
    with pytest.raises(ValueError, match=r"^steps must be an integer >= 1, received: 2\.5$"):
        validation.check_int("steps", 2.5, minimum=1)
    with pytest.raises(ValueError, match=r"^flag must be True or False, received: 'False'$"):
        validation.check_bool("flag", "False")
    with pytest.raises(ValueError, match=r"^learning_rate must be a finite number >= 0, a LearningRateSchedule or a callable, received: nan$"):
        validation.check_learning_rate("learning_rate", NAN)


def test_what_stays_accepted_on_purpose():
    # Zero where it is a meaningful setting: no epsilon, no decay, no momentum, a rho of 0 (SAM off).
    optimizers.RAdam(epsilon=0.0, beta_1=0.0, beta_2=0.0, weight_decay=0.0)
    optimizers.MADGRAD(epsilon=0.0, momentum=0.0, weight_decay=0.0)
    optimizers.Prodigy(growth_rate=INF, epsilon=0.0)  # inf: unbounded growth of d (the default)
    optimizers.SharpnessAwareModel(_model(), rho=0.0, eta=0.0)
    layers.MVRegularization(keras.layers.Dense(2), lambda_=0.0)
    # NumPy scalars are numbers; NumPy bools are bools.
    optimizers.AdaBelief(np.float32(2**-7), beta_1=np.float64(0.9))
    optimizers.NovoGrad(grad_averaging=np.bool_(True))
    layers.DropBlock2D(block_size=np.int64(3), seed=np.int32(1))
    # Schedules and callables as learning rates, and a schedule may reach 0; so may a learning
    # rate that a callback set (Keras's LearningRateScheduler), and a model saved then must load.
    optimizers.RAdam(0.0).from_config(optimizers.RAdam(0.0).get_config())
    optimizers.Yogi(keras.optimizers.schedules.PolynomialDecay(0.01, 100, end_learning_rate=0.0))
    optimizers.Prodigy(lambda: 1.0)


def test_a_saved_learning_rate_and_a_serialized_schedule_come_back():
    schedule = keras.optimizers.schedules.CosineDecay(0.01, 100)
    for optimizer in (optimizers.RAdam(1e-3), optimizers.Prodigy(schedule), optimizers.Lookahead(optimizers.Adan())):
        again = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
        assert again.get_config() == optimizer.get_config()
