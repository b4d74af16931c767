"""Table rows for RAdam, AdaBelief, Yogi, NovoGrad and LARS (the shared tests: tests/test_optimizer_table.py).

Hyperparameters are exactly representable in float32, so the float64 references compare at ~1e-7.
RAdam's 15 reference steps cross its rectification threshold (beta_2 = 0.96875: rho_4 = 3.92,
rho_5 = 4.87). NovoGrad and LARS take steps of a size set by the weights or by a normalised
gradient, not by the gradient's magnitude, so they reach a minimum only with a decaying
learning rate.
"""

import dataclasses

import keras

from lepton_keras.optimizers.adabelief import AdaBelief
from lepton_keras.optimizers.lars import LARS
from lepton_keras.optimizers.novograd import NovoGrad
from lepton_keras.optimizers.radam import RAdam
from lepton_keras.optimizers.yogi import Yogi
from tests.optimizer_spec import OptimizerSpec
from tests.reference import optimizers_adaptive_a as reference

_ADAM_LIKE = {"learning_rate": 2**-7, "beta_1": 0.875, "beta_2": 0.96875, "epsilon": 2**-20}

SPECS = [
    OptimizerSpec(
        name="radam",
        make=RAdam,
        reference=reference.radam,
        options=_ADAM_LIKE,
        decay_options={"weight_decay": 0.25},
        # Its first 4 steps are un-adapted momentum steps: a larger learning rate throws
        # Rosenbrock's iterate far up the walls of the valley before the adaptive steps start.
        converge_options={"learning_rate": 0.005, "beta_2": 0.99},
    ),
    OptimizerSpec(
        name="adabelief",
        make=AdaBelief,
        reference=reference.adabelief,
        options=_ADAM_LIKE,
        decay_options={"weight_decay": 0.25},
        converge_options={"learning_rate": 0.02},
    ),
    OptimizerSpec(
        name="yogi",
        make=Yogi,
        reference=reference.yogi,
        options={"learning_rate": 2**-5, "beta_1": 0.875, "beta_2": 0.96875, "epsilon": 2**-10,
                 "initial_accumulator_value": 2**-20},
        decay_options={"weight_decay": 0.25},
        converge_options={"learning_rate": 0.05},
    ),
    OptimizerSpec(
        name="novograd",
        make=NovoGrad,
        reference=reference.novograd,
        options={"learning_rate": 2**-5, "beta_1": 0.875, "beta_2": 0.75, "epsilon": 2**-20},
        decay_options={"momentum_weight_decay": 0.125},
        converge_options={"learning_rate": keras.optimizers.schedules.CosineDecay(0.05, 2000)},
    ),
    OptimizerSpec(
        name="lars",
        make=LARS,
        reference=reference.lars,
        options={"learning_rate": 0.5, "momentum": 0.875, "trust_coefficient": 0.125, "epsilon": 2**-20},
        decay_options={"momentum_weight_decay": 0.0625},
        converge_options={
            "learning_rate": keras.optimizers.schedules.CosineDecay(0.003, 2000),
            "trust_coefficient": 1.0,
        },
    ),
]

# Options for the tutorial-CNN test where the reference options above (chosen for exact float32
# arithmetic and 15 steps) train the CNN too slowly to show within 4 epochs.
_CNN_OVERRIDES = {
    "radam": {"learning_rate": 0.003},
    "adabelief": {"learning_rate": 0.003},
    "yogi": {"learning_rate": 0.01},
    "novograd": {"learning_rate": 0.03},
    "lars": {"learning_rate": 0.2, "trust_coefficient": 0.01, "momentum": 0.9, "epsilon": 1e-08},
}
# Everyday hyperparameters (decimals that float32 cannot represent) for the match with float64
# variables to 1e-7. The learning rates are float32 numbers: Keras keeps the learning rate in a
# float32 variable whatever the dtype of the weights.
_FLOAT64_OPTIONS = {
    "radam": {"learning_rate": 2**-7, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
    "adabelief": {"learning_rate": 2**-7, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-16},
    "yogi": {"learning_rate": 2**-7, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-3,
             "initial_accumulator_value": 1e-6},
    "novograd": {"learning_rate": 2**-7, "beta_1": 0.95, "beta_2": 0.98, "epsilon": 1e-8},
    "lars": {"learning_rate": 0.25, "momentum": 0.9, "trust_coefficient": 0.1, "epsilon": 1e-8},
}
SPECS = [dataclasses.replace(spec, cnn_overrides=_CNN_OVERRIDES.get(spec.name, spec.cnn_overrides),
                             float64_options=_FLOAT64_OPTIONS.get(spec.name)) for spec in SPECS]
