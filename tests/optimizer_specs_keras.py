"""Table rows for the wrapper base over Keras's own optimizers: GradientClipping around SGD and Adam."""

import dataclasses

from lepton_keras.optimizers.gradient_clipping import GradientClipping
from tests.optimizer_spec import OptimizerSpec
from tests.reference import optimizers_keras as reference


def _clipped_sgd(learning_rate, momentum=0.0, global_norm=None, value=None, norm=None):
    import keras

    return GradientClipping(keras.optimizers.SGD(learning_rate, momentum=momentum),
                            global_norm=global_norm, value=value, norm=norm)


SPECS = [
    OptimizerSpec(
        name="clipping_sgd",
        make=_clipped_sgd,
        reference=reference.clipped_sgd,
        options={"learning_rate": 0.125, "momentum": 0.875, "global_norm": 1.5, "value": 0.75, "norm": 1.0},
        decay_options=None,
        converge_options={"learning_rate": 0.001, "momentum": 0.875, "global_norm": 10.0},
        converge_steps=4000,
    ),
]

# Options for the tutorial-CNN test where the reference options above (chosen for exact float32
# arithmetic and 15 steps) train the CNN too slowly to show within 4 epochs.
_CNN_OVERRIDES = {
    "clipping_sgd": {"learning_rate": 0.1},
}
SPECS = [dataclasses.replace(spec, cnn_overrides=_CNN_OVERRIDES[spec.name]) if spec.name in _CNN_OVERRIDES else spec
         for spec in SPECS]
