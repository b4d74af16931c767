"""The optimizer wrappers' rows of the shared optimizer table (see tests/optimizer_spec.py)."""

from __future__ import annotations

import dataclasses

import keras

from lepton_keras.optimizers.adaptive_gradient_clipping import AdaptiveGradientClipping
from lepton_keras.optimizers.fused_updates import FusedUpdates
from lepton_keras.optimizers.gradient_accumulation import GradientAccumulation
from lepton_keras.optimizers.gradient_centralization import GradientCentralization
from lepton_keras.optimizers.gradient_clipping import GradientClipping
from lepton_keras.optimizers.lookahead import Lookahead
from lepton_keras.optimizers.weight_averaging import ExponentialMovingAverage, StochasticWeightAveraging
from tests.optimizer_spec import OptimizerSpec
from tests.reference import optimizers_wrappers as reference


def _sgd(learning_rate, momentum=0.0, weight_decay=None):
    return keras.optimizers.SGD(learning_rate, momentum=momentum, weight_decay=weight_decay)


def _adam(learning_rate, beta_1, beta_2, weight_decay=None):
    return keras.optimizers.Adam(learning_rate, beta_1=beta_1, beta_2=beta_2, weight_decay=weight_decay)


def lookahead_sgd(*, learning_rate, sync_period, slow_step_size, momentum=0.0, weight_decay=None):
    return Lookahead(_sgd(learning_rate, momentum, weight_decay), sync_period=sync_period,
                     slow_step_size=slow_step_size)


def lookahead_adam(*, learning_rate, sync_period, slow_step_size, beta_1, beta_2, weight_decay=None):
    return Lookahead(_adam(learning_rate, beta_1, beta_2, weight_decay), sync_period=sync_period,
                     slow_step_size=slow_step_size)


def lookahead_clipping_adam(*, learning_rate, sync_period, slow_step_size, global_norm, beta_1, beta_2,
                            weight_decay=None):
    inner = GradientClipping(_adam(learning_rate, beta_1, beta_2, weight_decay), global_norm=global_norm)
    return Lookahead(inner, sync_period=sync_period, slow_step_size=slow_step_size)


def accumulation_sgd(*, learning_rate, steps, momentum=0.0, weight_decay=None):
    return GradientAccumulation(_sgd(learning_rate, momentum, weight_decay), steps=steps)


def accumulation_adam(*, learning_rate, steps, beta_1, beta_2, weight_decay=None):
    return GradientAccumulation(_adam(learning_rate, beta_1, beta_2, weight_decay), steps=steps)


def agc_sgd(*, learning_rate, clipping, epsilon, momentum=0.0, weight_decay=None):
    return AdaptiveGradientClipping(_sgd(learning_rate, momentum, weight_decay), clipping=clipping, epsilon=epsilon)


def centralization_sgd(*, learning_rate, momentum=0.0, weight_decay=None):
    return GradientCentralization(_sgd(learning_rate, momentum, weight_decay))


def swa_sgd(*, learning_rate, start_step, average_period, momentum=0.0, weight_decay=None):
    return StochasticWeightAveraging(_sgd(learning_rate, momentum, weight_decay), start_step=start_step,
                                     average_period=average_period)


def ema_adam(*, learning_rate, decay, beta_1, beta_2, start_step=0, use_warmup=False, weight_decay=None):
    return ExponentialMovingAverage(_adam(learning_rate, beta_1, beta_2, weight_decay), decay=decay,
                                    start_step=start_step, use_warmup=use_warmup)


def fused_adam(*, learning_rate, beta_1, beta_2, weight_decay=None):
    return FusedUpdates(_adam(learning_rate, beta_1, beta_2, weight_decay))


def fused_adam_reference(params, grads, *, learning_rate, beta_1, beta_2, weight_decay=0.0):
    return reference.run(reference.Adam(learning_rate, beta_1, beta_2, weight_decay=weight_decay), params, grads)


_DECAY = {"weight_decay": 0.125}
# Adam's hyperparameters exactly representable in float32 (1 - 0.999 in float32 is 6e-5 off, relatively).
_BETAS = {"beta_1": 0.875, "beta_2": 1 - 2**-8}
SPECS = [
    OptimizerSpec("lookahead_sgd", lookahead_sgd, reference.lookahead_sgd,
                  {"learning_rate": 0.125, "sync_period": 4, "slow_step_size": 0.5, "momentum": 0.5}, _DECAY,
                  {"learning_rate": 2**-9, "sync_period": 5, "slow_step_size": 0.5, "momentum": 0.875}, converge_steps=5000),
    OptimizerSpec("lookahead_adam", lookahead_adam, reference.lookahead_adam,
                  {"learning_rate": 0.0625, "sync_period": 3, "slow_step_size": 0.75, **_BETAS}, _DECAY,
                  {"learning_rate": 0.03125, "sync_period": 5, "slow_step_size": 0.5, **_BETAS}),
    OptimizerSpec("lookahead_clipping_adam", lookahead_clipping_adam, reference.lookahead_clipping_adam,
                  {"learning_rate": 0.0625, "sync_period": 3, "slow_step_size": 0.5, "global_norm": 0.5, **_BETAS},
                  _DECAY,
                  {"learning_rate": 0.03125, "sync_period": 5, "slow_step_size": 0.5, "global_norm": 1.0, **_BETAS}),
    OptimizerSpec("accumulation_sgd", accumulation_sgd, reference.accumulation_sgd,
                  {"learning_rate": 0.125, "steps": 3, "momentum": 0.5}, _DECAY,
                  {"learning_rate": 2**-9, "steps": 2, "momentum": 0.875}, converge_steps=4000),
    OptimizerSpec("accumulation_adam", accumulation_adam, reference.accumulation_adam,
                  {"learning_rate": 0.0625, "steps": 2, **_BETAS}, _DECAY,
                  {"learning_rate": 0.03125, "steps": 2, **_BETAS}, converge_steps=4000),
    OptimizerSpec("agc_sgd", agc_sgd, reference.agc_sgd,
                  {"learning_rate": 0.25, "clipping": 0.0625, "epsilon": 2**-10, "momentum": 0.5}, _DECAY,
                  {"learning_rate": 2**-9, "clipping": 4.0, "epsilon": 2**-10, "momentum": 0.875}, converge_steps=5000),
    OptimizerSpec("centralization_sgd", centralization_sgd, reference.centralization_sgd,
                  {"learning_rate": 0.125, "momentum": 0.5}, _DECAY,
                  {"learning_rate": 2**-9, "momentum": 0.875}),
    OptimizerSpec("swa_sgd", swa_sgd, reference.swa_sgd,
                  {"learning_rate": 0.125, "start_step": 3, "average_period": 2, "momentum": 0.5}, _DECAY,
                  {"learning_rate": 2**-9, "start_step": 10, "average_period": 5, "momentum": 0.875}),
    OptimizerSpec("ema_adam", ema_adam, reference.ema_adam,
                  {"learning_rate": 0.0625, "decay": 0.75, "start_step": 2, "use_warmup": True, **_BETAS}, _DECAY,
                  {"learning_rate": 0.03125, "decay": 0.875, **_BETAS}),
    OptimizerSpec("fused_adam", fused_adam, fused_adam_reference, {"learning_rate": 0.0625, **_BETAS}, _DECAY,
                  {"learning_rate": 0.03125, **_BETAS}),
]

# Options for the tutorial-CNN test where the reference options above (chosen for exact float32
# arithmetic and 15 steps) train the CNN too slowly to show within 4 epochs.
_CNN_OVERRIDES = {
    "lookahead_sgd": {"learning_rate": 0.1},
    "accumulation_sgd": {"learning_rate": 0.2},
    "agc_sgd": {"learning_rate": 0.1},
    "centralization_sgd": {"learning_rate": 0.1},
    "swa_sgd": {"learning_rate": 0.1},
}
SPECS = [dataclasses.replace(spec, cnn_overrides=_CNN_OVERRIDES[spec.name]) if spec.name in _CNN_OVERRIDES else spec
         for spec in SPECS]
