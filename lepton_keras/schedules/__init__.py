"""Learning-rate schedules (keras.optimizers.schedules.LearningRateSchedule subclasses).

    schedule = lepton_keras.schedules.Warmup(keras.optimizers.schedules.CosineDecay(1e-3, 10_000), 500)
"""

from lepton_keras.schedules.cyclical import CyclicalLearningRate
from lepton_keras.schedules.inverse_sqrt import InverseSquareRootDecay
from lepton_keras.schedules.multiplier import MultipliedSchedule
from lepton_keras.schedules.one_cycle import OneCycle
from lepton_keras.schedules.warmup import Warmup
from lepton_keras.schedules.warmup_stable_decay import WarmupStableDecay

__all__ = ["CyclicalLearningRate", "InverseSquareRootDecay", "MultipliedSchedule", "OneCycle", "Warmup", "WarmupStableDecay"]
