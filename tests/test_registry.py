"""lepton_keras.optimizers.get and list_optimizers: names, composition, overrides, errors."""

import keras
import pytest

import lepton_keras
from lepton_keras.optimizers.registry import REGISTRY, get, list_optimizers


@pytest.mark.parametrize("name", sorted(n for n, e in REGISTRY.items() if e.kind != "wrapper"))
def test_every_optimizer_name_builds_its_class(name):
    optimizer = get(name, learning_rate=0.25)
    assert isinstance(optimizer, keras.optimizers.Optimizer)
    entry = REGISTRY[name]
    if entry.kind != "keras":
        assert type(optimizer) is entry.cls
    assert float(optimizer.learning_rate) == 0.25


@pytest.mark.parametrize("name", sorted(n for n, e in REGISTRY.items() if e.kind == "wrapper"))
def test_every_wrapper_composes_with_adam(name):
    optimizer = get(f"{name}_adam", learning_rate=0.25)
    assert type(optimizer) is REGISTRY[name].cls
    assert isinstance(optimizer.inner_optimizer, keras.optimizers.Adam)
    assert float(optimizer.learning_rate) == 0.25


def test_composition_nests_outermost_first_and_routes_each_option():
    optimizer = get("lookahead_clipping_radam", learning_rate=0.5, sync_period=3, norm=2.0)
    clipping = optimizer.inner_optimizer
    assert type(optimizer).__name__ == "Lookahead" and optimizer.sync_period == 3
    assert type(clipping).__name__ == "GradientClipping" and clipping.norm == 2.0 and clipping.global_norm is None
    assert type(clipping.inner_optimizer).__name__ == "RAdam"
    assert float(optimizer.learning_rate) == 0.5


def test_a_wrapper_without_options_uses_its_registry_defaults():
    assert get("clipping_sgd").global_norm == 1.0
    assert get("accumulation_sgd").steps == 2


def test_config_and_instance_identifiers():
    optimizer = get("clipping_adam", global_norm=3.0)
    assert get(optimizer) is optimizer
    rebuilt = get(keras.optimizers.serialize(optimizer))
    assert type(rebuilt) is type(optimizer) and rebuilt.global_norm == 3.0
    assert rebuilt.get_config() == optimizer.get_config()


@pytest.mark.parametrize(
    "identifier, options, message",
    [
        ("radamm", {}, "unknown optimizer name 'radamm'"),
        ("lookahead", {}, "names a wrapper without an optimizer"),
        ("adam", {"sync_period": 2}, "sync_period"),
        ("lookahead_radam", {"no_such_option": 1}, "no_such_option"),
        (3, {}, "identifier must be"),
    ],
)
def test_bad_identifiers_raise_clear_errors(identifier, options, message):
    with pytest.raises((ValueError, TypeError), match=message):
        get(identifier, **options)


def test_instance_with_overrides_is_an_error():
    with pytest.raises(ValueError, match="instance"):
        get(keras.optimizers.SGD(), learning_rate=0.1)


def test_list_optimizers_filters_by_pattern_and_kind():
    listed = dict(list_optimizers("ada*"))
    assert {"adabelief", "adan", "adam", "adamw"} <= set(listed)
    assert all(name.startswith("ada") for name in listed)
    assert all(0 < len(text) <= 80 for text in listed.values())
    wrappers = [name for name, _ in list_optimizers(kind="wrapper")]
    assert "lookahead" in wrappers and "adam" not in wrappers
    assert len(list_optimizers()) == len(REGISTRY)


def test_the_package_exports_the_registry():
    assert lepton_keras.optimizers.get is get
    assert lepton_keras.optimizers.GradientClipping is REGISTRY["clipping"].cls
