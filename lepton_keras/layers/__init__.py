"""Keras layers: the mean-variance regularization wrapper and the regularization layers Keras 3 lacks."""

from lepton_keras.layers.drop_block import DropBlock2D
from lepton_keras.layers.mv_regularization import MVRegularization
from lepton_keras.layers.stochastic_depth import StochasticDepth
from lepton_keras.layers.weight_normalization import WeightNormalization

__all__ = ["DropBlock2D", "MVRegularization", "StochasticDepth", "WeightNormalization"]
