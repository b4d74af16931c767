"""Initializers: delta-orthogonal kernels for convolutions and data-dependent LSUV.

- `DeltaOrthogonal(gain=1.0, seed=None)`: a `keras.initializers.Initializer` for Conv1D/2D/3D
  kernels, zero except a (semi-)orthogonal matrix at the centre tap (Xiao et al. 2018,
  arXiv:1806.05393).
- `lsuv_initialize(model, batch, ...)`: layer-sequential unit-variance initialization of a built
  model (Mishkin and Matas 2016, arXiv:1511.06422), identical on every replica and worker.

The design documents' other initializers are Keras's own; use them directly (each takes a
`seed`, and the same seed gives the same weights under every strategy):

    Gaussian N(mean, stddev^2)       keras.initializers.RandomNormal(mean=0.0, stddev=0.05, seed=None)
                                     (TruncatedNormal to cut at 2 standard deviations)
    uniform U(minval, maxval)        keras.initializers.RandomUniform(minval=-0.05, maxval=0.05, seed=None)
    Xavier (Glorot), Gaussian        keras.initializers.GlorotNormal(seed=None):
                                     truncated normal, stddev = sqrt(2 / (fan_in + fan_out))
    Xavier (Glorot), uniform         keras.initializers.GlorotUniform(seed=None) (Keras's default):
                                     U(-l, l), l = sqrt(6 / (fan_in + fan_out))
    He (Kaiming), for ReLU           keras.initializers.HeNormal(seed=None), stddev = sqrt(2 / fan_in);
                                     keras.initializers.HeUniform(seed=None), l = sqrt(6 / fan_in)
    orthogonal (Saxe et al.)         keras.initializers.Orthogonal(gain=1.0, seed=None)

For a convolution kernel (k_1, ..., k_d, C_in, C_out), fan_in = k_1 ... k_d C_in and
fan_out = k_1 ... k_d C_out.
"""

import keras

from lepton_keras.distribute.keras_compat import resolve_names
from lepton_keras.initializers.delta_orthogonal import DeltaOrthogonal
from lepton_keras.initializers.lsuv import LSUVLayerReport, kernel_layers, lsuv_initialize, lsuv_scale

# `kernel_initializer="delta_orthogonal"`, as Keras's own initializers go by their snake-case names,
# on every Keras (keras-nightly 3.16 resolves strings only in its own table: keras_compat item 10).
keras.saving.get_custom_objects().setdefault("delta_orthogonal", DeltaOrthogonal)
resolve_names(keras.initializers.get, keras.initializers.GlorotUniform,
              {"delta_orthogonal": DeltaOrthogonal, keras.saving.get_registered_name(DeltaOrthogonal): DeltaOrthogonal})

__all__ = ["DeltaOrthogonal", "LSUVLayerReport", "kernel_layers", "lsuv_initialize", "lsuv_scale"]
