"""Every name the subpackages export resolves to a registered, serializable object."""

import importlib

import keras
import pytest

import lepton_keras

ABSTRACT_BASES = {"OptimizerWrapper", "WeightAveraging"}


@pytest.mark.parametrize("package", ["callbacks", "optimizers", "schedules"])
def test_every_exported_name_resolves(package):
    module = getattr(lepton_keras, package)
    assert set(module.__all__) <= set(dir(module))
    for name in module.__all__:
        value = getattr(module, name)
        assert value is not None
        if isinstance(value, type) and issubclass(
            value, (keras.optimizers.Optimizer, keras.callbacks.Callback, keras.optimizers.schedules.LearningRateSchedule)
        ):
            registered = keras.saving.get_registered_name(value)
            assert registered.startswith("lepton_keras>") or name in ABSTRACT_BASES, name


def test_unknown_names_raise_attribute_error():
    for package in ("callbacks", "optimizers", "schedules"):
        with pytest.raises(AttributeError, match="NoSuchThing"):
            getattr(importlib.import_module(f"lepton_keras.{package}"), "NoSuchThing")


def test_cycle_momentum_round_trips_its_schedule():
    schedule = lepton_keras.schedules.OneCycle(0.1, total_steps=100)
    callback = lepton_keras.callbacks.CycleMomentum(schedule)
    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(callback))
    assert rebuilt.schedule.get_config() == schedule.get_config()
    assert float(rebuilt.schedule.momentum(10)) == float(schedule.momentum(10))
