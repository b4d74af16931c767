"""Optimizers Keras 3 lacks, wrappers that are correct under distribution, SAM, and a registry.

    optimizer = lepton_keras.optimizers.get("lookahead_radam", learning_rate=1e-3)
    lepton_keras.optimizers.list_optimizers("ada*")
    model.compile(optimizer="radam", ...)   # every registry name, after `import lepton_keras`

The optimizer and wrapper classes exported here (RAdam, Lookahead, ...) are the registry's:
`lepton_keras.optimizers.registry` is their one list.
"""

from lepton_keras.optimizers import registry as _registry
from lepton_keras.optimizers.base import LeptonOptimizer
from lepton_keras.optimizers.registry import get, list_optimizers, register_keras_names
from lepton_keras.optimizers.sam import SharpnessAwareModel
from lepton_keras.optimizers.weight_averaging import recompute_batch_norm_statistics
from lepton_keras.optimizers.wrapper import OptimizerWrapper

_REGISTERED_CLASSES = {
    entry.cls.__name__: entry.cls for entry in _registry.REGISTRY.values() if entry.kind is not _registry.OptimizerKind.KERAS
}
globals().update(_REGISTERED_CLASSES)

register_keras_names()

__all__ = sorted([
    *_REGISTERED_CLASSES,
    "LeptonOptimizer",
    "OptimizerWrapper",
    "SharpnessAwareModel",
    "get",
    "list_optimizers",
    "recompute_batch_norm_statistics",
])  # fmt: skip
