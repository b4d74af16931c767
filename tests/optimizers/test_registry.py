"""The optimizer registry: get and list_optimizers (names, composition, overrides, errors), kinds, options, exports."""

import inspect

import keras
import pytest

import lepton_keras
from lepton_keras import optimizers
from lepton_keras.optimizers.registry import (
    REGISTRY,
    OptimizerKind,
    RegistryEntry,
    get,
    list_optimizers,
)

WRAPPER, KERAS = OptimizerKind.WRAPPER, OptimizerKind.KERAS


@pytest.mark.parametrize("name", sorted(n for n, e in REGISTRY.items() if e.kind is not WRAPPER))
def test_every_optimizer_name_builds_its_class(name):
    optimizer = get(name, learning_rate=0.25)
    assert isinstance(optimizer, keras.optimizers.Optimizer)
    entry = REGISTRY[name]
    if entry.kind is not KERAS:
        assert type(optimizer) is entry.cls
    assert float(optimizer.learning_rate) == 0.25


@pytest.mark.parametrize("name", sorted(n for n, e in REGISTRY.items() if e.kind is WRAPPER))
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


def test_kinds_are_an_enum_of_strings_and_entries_are_checked():
    assert [kind.value for kind in OptimizerKind] == ["elementwise", "layerwise", "global", "keras", "wrapper"]
    assert all(isinstance(entry.kind, OptimizerKind) for entry in REGISTRY.values())
    assert OptimizerKind.WRAPPER == "wrapper" and OptimizerKind("wrapper") is WRAPPER
    assert list_optimizers(kind=WRAPPER) == list_optimizers(kind="wrapper")
    assert RegistryEntry("x", "keras.optimizers:SGD", "text", "keras").kind is KERAS
    with pytest.raises(ValueError, match="kind must be one of 'elementwise', 'global', 'keras', 'layerwise', 'wrapper'"):
        RegistryEntry("x", "keras.optimizers:SGD", "text", "sparse")
    for bad_name in ("Radam", "look_ahead"):
        with pytest.raises(ValueError, match="name must be a lower-case name"):
            RegistryEntry(bad_name, "lepton_keras.optimizers.lookahead:Lookahead", "text", WRAPPER)


def _keyword_parameters(function) -> set[str]:
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in inspect.signature(function).parameters.values() if p.kind in keyword} - {"self"}


def _chain_parameters(cls) -> set[str]:
    return set().union(*(_keyword_parameters(klass.__init__) for klass in cls.__mro__ if "__init__" in vars(klass)))


KERAS_OPTIONS = _chain_parameters(keras.optimizers.Optimizer)  # learning_rate, weight_decay, clipnorm, ...


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_entry_s_options_are_its_constructor_s_parameters(name):
    entry = REGISTRY[name]
    own = _keyword_parameters(entry.cls.__init__) - {"inner_optimizer"}
    assert own <= entry.options <= _chain_parameters(entry.cls)
    assert entry.options is entry.options  # read once
    if entry.kind is WRAPPER:
        # Keras's own options are the inner optimizer's; a wrapper keeps its name and fused_updates.
        assert entry.options & KERAS_OPTIONS == {"name"} and "fused_updates" in entry.options
    else:
        assert KERAS_OPTIONS <= entry.options
    if entry.kind not in (WRAPPER, KERAS):
        assert "fused_updates" in entry.options


def test_options_of_two_entries_by_hand():
    assert REGISTRY["lookahead"].options == {"sync_period", "slow_step_size", "name", "fused_updates"}
    assert REGISTRY["clipping"].options == {"value", "norm", "global_norm", "name", "fused_updates"}
    assert {"learning_rate", "beta_1", "beta_2", "epsilon", "fused_updates", "weight_decay"} <= REGISTRY["radam"].options


def test_the_package_exports_exactly_the_registered_classes_and_a_few_others():
    registered = {entry.cls.__name__: entry.cls for entry in REGISTRY.values() if entry.kind is not KERAS}
    exported = {name: getattr(optimizers, name) for name in optimizers.__all__}
    optimizer_classes = {
        name: value for name, value in exported.items() if isinstance(value, type) and issubclass(value, keras.optimizers.Optimizer)
    }
    assert optimizer_classes == {**registered, "LeptonOptimizer": optimizers.LeptonOptimizer,
                                 "OptimizerWrapper": optimizers.OptimizerWrapper}  # fmt: skip
    others = {"SharpnessAwareModel", "get", "list_optimizers", "recompute_batch_norm_statistics"}
    assert set(exported) - set(optimizer_classes) == others
    assert optimizers.__all__ == sorted(optimizers.__all__) and len(registered) == 23
