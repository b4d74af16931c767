"""Table rows for Adan, AdEMAMix, MADGRAD and Prodigy (the shared tests: tests/test_optimizer_table.py).

Hyperparameters are exactly representable in float32, so the float64 references compare at
~1e-7. AdEMAMix's row runs its alpha and beta_3 warm-ups (T = 10 < 15 steps). MADGRAD's decay
row uses the paper's form (added to the gradient); Keras's decoupled form is checked in
tests/test_optimizers_adaptive_b.py. Prodigy's row starts from a d0 large enough for the
weights to move (the table asks that the reference moves them by more than 1e-3).
"""

import dataclasses

import keras

from lepton_keras.optimizers.adan import Adan
from lepton_keras.optimizers.ademamix import AdEMAMix
from lepton_keras.optimizers.madgrad import MADGRAD
from lepton_keras.optimizers.prodigy import Prodigy
from tests.optimizer_spec import OptimizerSpec
from tests.reference import optimizers_adaptive_b as reference

SPECS = [
    OptimizerSpec(
        name="adan",
        make=Adan,
        reference=reference.adan,
        options={"learning_rate": 2**-5, "beta_1": 0.875, "beta_2": 0.75, "beta_3": 0.9375, "epsilon": 2**-20},
        decay_options={"weight_decay": 0.25},
        converge_options={"learning_rate": 0.01},
    ),
    OptimizerSpec(
        name="ademamix",
        make=AdEMAMix,
        reference=reference.ademamix,
        options={"learning_rate": 2**-6, "beta_1": 0.875, "beta_2": 0.96875, "beta_3": 0.9921875, "alpha": 4.0,
                 "alpha_beta3_warmup_steps": 10, "epsilon": 2**-20},
        decay_options={"weight_decay": 0.25},
        converge_options={"learning_rate": 2**-7, "alpha": 2.0, "beta_3": 0.99, "alpha_beta3_warmup_steps": 200},
    ),
    OptimizerSpec(
        name="madgrad",
        make=MADGRAD,
        reference=reference.madgrad,
        options={"learning_rate": 2**-5, "momentum": 0.875, "epsilon": 2**-20},
        decay_options={"weight_decay": 0.25, "decoupled_weight_decay": False},
        # Larger rates leave it circling Rosenbrock's valley floor within 2000 steps.
        converge_options={"learning_rate": 0.003},
    ),
    OptimizerSpec(
        name="prodigy",
        make=Prodigy,
        reference=reference.prodigy,
        options={"learning_rate": 1.0, "beta_1": 0.875, "beta_2": 0.96875, "beta_3": 0.984375, "epsilon": 2**-20,
                 "d0": 2**-7},
        decay_options={"weight_decay": 0.25},
        converge_options={"learning_rate": keras.optimizers.schedules.CosineDecay(1.0, 2000)},
    ),
]

# Options for the tutorial-CNN test where the reference options above (chosen for exact float32
# arithmetic and 15 steps) train the CNN too slowly to show within 4 epochs.
_CNN_OVERRIDES = {
    "prodigy": {"learning_rate": 1.0},
}
# Everyday hyperparameters (decimals that float32 cannot represent) for the match with float64
# variables to 1e-7. The learning rates are float32 numbers: Keras keeps the learning rate in a
# float32 variable whatever the dtype of the weights.
_FLOAT64_OPTIONS = {
    "adan": {"learning_rate": 2**-7, "beta_1": 0.98, "beta_2": 0.92, "beta_3": 0.99, "epsilon": 1e-8},
    "ademamix": {"learning_rate": 2**-7, "beta_1": 0.9, "beta_2": 0.999, "beta_3": 0.9999, "alpha": 5.0,
                 "epsilon": 1e-8},
    "madgrad": {"learning_rate": 2**-7, "momentum": 0.9, "epsilon": 1e-6},
    "prodigy": {"learning_rate": 1.0, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8, "d0": 0.01},
}
SPECS = [dataclasses.replace(spec, cnn_overrides=_CNN_OVERRIDES.get(spec.name, spec.cnn_overrides),
                             float64_options=_FLOAT64_OPTIONS.get(spec.name)) for spec in SPECS]
