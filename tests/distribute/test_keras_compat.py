"""The Keras multi-worker fixes: detected by behaviour, applied once, harmless elsewhere."""

import json
import os
import warnings

import keras
import numpy as np
import pytest

from lepton_keras.distribute import get_strategy, keras_compat
from tests.support.harness import TrainingCase, launch_workers, max_difference, run_case

CASE = TrainingCase("tests.support.cases:tutorial_cnn_adam", "tests.support.cases:cifar10_sample", steps=3,
                    global_batch_size=8)  # fmt: skip


def test_probes_find_nothing_broken_where_keras_works():
    # Keras handles a single-worker MirroredStrategy: the "Keras is fixed" path of the probes.
    strategy = get_strategy("mirrored", cpu_replicas=2)
    assert keras_compat.symbolic_build_is_broken(strategy) is False
    assert keras_compat.scalar_mean_is_broken(strategy) is False


def test_single_worker_strategies_are_not_patched():
    keras_compat.unpatch_keras()
    assert keras_compat.patch_keras_for_multi_worker(get_strategy("mirrored", cpu_replicas=2)) == []
    assert keras_compat.active_patches() == []


def test_patched_functions_leave_single_worker_training_unchanged(monkeypatch):
    keras_compat.unpatch_keras()  # `import lepton_keras` installs the ScheduleFreeAdamW build probe (item 11)
    reference = run_case(CASE, replicas=2)
    build, reduce = keras_compat._SYMBOLIC_BUILD, keras_compat._REDUCE_PER_REPLICA
    monkeypatch.setattr(build.owner, build.attribute, keras_compat._symbolic_build_from_local_batch)
    monkeypatch.setattr(reduce.owner, reduce.attribute, keras_compat._reduce_per_replica_across_replicas)
    assert keras_compat.active_patches() == ["symbolic_build_from_local_batch", "mean_across_replicas"]
    assert max_difference(reference, run_case(CASE, replicas=2)) == 0.0


def test_the_patched_functions_are_found_by_signature_in_the_trainer_keras_model_uses():
    build, reduce = keras_compat._SYMBOLIC_BUILD, keras_compat._REDUCE_PER_REPLICA
    assert build.missing is None and reduce.missing is None, (build.missing, reduce.missing)
    assert build.owner in keras.Model.__mro__
    # The trainer's fit calls the very function found: Keras's own until a fix replaces it.
    assert getattr(keras.Model, build.attribute) is build.original
    assert reduce.owner.__name__ == build.owner.__module__


def test_a_function_this_keras_lacks_switches_off_its_fix_only_with_one_warning(monkeypatch):
    class TrainerOfAnotherRelease:
        def _maybe_symbolic_build(self, data_batch=None):  # the same name, another signature
            pass

    target = keras_compat.PatchTarget("a symbolic build", [TrainerOfAnotherRelease], ("self", "iterator", "data_batch"))
    assert target.owner is None and target.current is None and "iterator" in target.missing
    target.restore()  # nothing to restore: no error
    monkeypatch.setattr(keras_compat, "_warned_missing", set())
    with pytest.warns(RuntimeWarning, match="symbolic_build_from_local_batch.*is off"):
        keras_compat._warn_missing("symbolic_build_from_local_batch", target)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        keras_compat._warn_missing("symbolic_build_from_local_batch", target)  # once per fix


@pytest.mark.multiworker
def test_fit_evaluate_and_predict_work_under_two_workers(tmp_path):
    output = launch_workers("tests.support.workers.fit_evaluate_predict", ["--out", str(tmp_path)])
    # The probes' expected failures used to print two tracebacks per worker at INFO.
    assert "Error reported to Coordinator" not in output and "Traceback" not in output, output
    results = [json.load(open(os.path.join(tmp_path, f"worker_{i}.json"))) for i in range(2)]
    for result in results:
        assert result["strategy"] == "CollectiveAllReduceStrategy" and result["replicas"] == 2
        # Stock Keras 3 is broken here (keras-team/keras#20585) exactly when a fix is applied.
        broken = [name for name, is_broken in result["broken"].items() if is_broken]
        fixes = {"symbolic_build": "symbolic_build_from_local_batch", "scalar_mean": "mean_across_replicas"}
        assert result["patched_first"] == [fixes[name] for name in broken]
        assert result["patched_again"] == result["patched_first"]
        assert result["same_functions_after_second_patch"]
        assert len(result["history"]["loss"]) == 2 and np.all(np.isfinite(result["history"]["loss"]))
        assert result["evaluate"]["loss"] == pytest.approx(result["expected_loss"], rel=1e-5)
        assert result["evaluate"]["mae"] == pytest.approx(result["expected_mae"], rel=1e-5)
        assert result["predict_rows"] == 70 and result["predict_error"] < 1e-5
    assert results[0]["weights"] == results[1]["weights"]
    assert results[0]["history"] == results[1]["history"]


def test_entry_point_arounds_nest_and_see_the_call_s_arguments():
    calls = []

    def outer(name, model, proceed, arguments):
        calls.append(("outer", name, arguments["epochs"]))
        return proceed()

    def inner(name, model, proceed, arguments):
        calls.append(("inner", name, arguments["verbose"]))
        return "inner's answer"

    try:
        keras_compat.route_model_entry_points(outer)
        keras_compat.route_model_entry_points(inner)
        keras_compat.route_model_entry_points(outer)  # idempotent
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        assert model.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=3) == "inner's answer"
        assert calls == [("outer", "fit", 3), ("inner", "fit", "auto")]
    finally:
        keras_compat.unpatch_keras()
    assert "fit" not in vars(keras.Model) or keras.Model.fit.__module__.startswith("keras")


def test_atomic_counters_leave_variables_off_parameter_servers_to_keras():
    variable = keras.Variable(1.0)
    original = keras.Variable.assign_add
    try:
        keras_compat.make_counters_atomic()
        keras_compat.make_counters_atomic()  # idempotent
        assert keras_compat.counters_are_atomic()
        variable.assign_add(2.0)
        variable.assign_sub(0.5)
        assert float(variable.numpy()) == 2.5
    finally:
        keras_compat.unpatch_keras()
    assert keras.Variable.assign_add is original and not keras_compat.counters_are_atomic()


def test_on_chief_sets_the_model_s_strategy_aside_for_the_call():
    import tensorflow as tf

    strategy = get_strategy(cpu_replicas=2)
    with strategy.scope():
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with keras_compat.on_chief(model):
        assert model.distribute_strategy is tf.distribute.get_strategy()
    assert model.distribute_strategy is strategy


# --- item 10: names in Keras's string lookups ---------------------------------------------------

_TABLE_ONLY = {"GlorotUniform": keras.initializers.GlorotUniform}


def table_only_get(identifier):
    """A lookup as keras-nightly 3.16's `keras.initializers.get` does it: its own table, never the registry."""
    cls = _TABLE_ONLY.get(identifier)
    if cls is None:
        raise ValueError(f"Could not interpret initializer identifier: {identifier}")
    return cls()


def no_table_get(identifier):
    """A lookup with no table of classes in its module to add names to."""
    raise ValueError(f"Could not interpret identifier: {identifier}")


def test_names_go_into_keras_s_own_table_where_the_registry_is_not_read():
    from lepton_keras.initializers import DeltaOrthogonal

    try:
        assert keras_compat.resolve_names(table_only_get, keras.initializers.GlorotUniform,
                                          {"delta": DeltaOrthogonal, "GlorotUniform": DeltaOrthogonal}) == "table"
        assert type(table_only_get("delta")) is DeltaOrthogonal
        assert type(table_only_get("GlorotUniform")) is keras.initializers.GlorotUniform  # Keras's names stay Keras's
        assert "delta" in keras_compat.added_names() and "lepton_keras_name_probe" not in _TABLE_ONLY
    finally:
        keras_compat.remove_added_names(_TABLE_ONLY)
    assert _TABLE_ONLY == {"GlorotUniform": keras.initializers.GlorotUniform}


def test_names_this_keras_cannot_take_warn_once_and_change_nothing():
    with pytest.warns(RuntimeWarning, match="resolves only its own names.*lepton_keras.optimizers.get"):
        assert keras_compat.resolve_names(no_table_get, keras.initializers.GlorotUniform, {"delta": object}) == "unavailable"
    assert "lepton_keras_name_probe" not in keras.saving.get_custom_objects()


def test_this_keras_resolves_the_names_from_its_registry_or_its_table():
    # Keras 3.15 reads the registry (nothing added); keras-nightly 3.16 does not (the names join its table).
    how = keras_compat.resolve_names(keras.optimizers.get, keras.optimizers.Adam, {})
    assert how in ("registry", "table")
    assert ("radam" in keras_compat.added_names()) == (how == "table")
    assert type(keras.optimizers.get("radam")).__name__ == "RAdam"
