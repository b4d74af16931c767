"""The design documents' worked examples: NumPy Adam done right, and regularization side by side."""

import json

import numpy as np
import pytest

from tests.support.cases import tutorial_module


def adam():
    return tutorial_module("adam_from_scratch")


def test_the_first_adam_step_moves_every_weight_by_the_learning_rate():
    # Kingma and Ba 2015, Section 2.1: at t = 1, m_hat = g and v_hat = g^2, so the step is
    # alpha * g / (|g| + epsilon_hat): alpha times the sign of g (the documents' loop divides by
    # zero here, and its step climbs the gradient).
    gradient = np.array([3.0, -0.5, 1e-2])
    theta = adam().adam_step(np.zeros(3), gradient, adam().AdamState(np.zeros(3), np.zeros(3)), alpha=0.01)
    epsilon_hat = 1e-8 / np.sqrt(1 - 0.999)
    np.testing.assert_allclose(theta, -0.01 * gradient / (np.abs(gradient) + epsilon_hat), rtol=1e-12)
    np.testing.assert_allclose(theta, -0.01 * np.sign(gradient), rtol=1e-4)


def test_the_moments_are_updated_once_per_step():
    state = adam().AdamState(np.zeros(1), np.zeros(1))
    for gradient in (1.0, 2.0):
        adam().adam_step(np.zeros(1), np.array([gradient]), state, beta_1=0.5, beta_2=0.5)
    assert state.t == 2
    np.testing.assert_allclose(state.m, [0.5 * (0.5 * 1.0) + 0.5 * 2.0])  # m_2 = b m_1 + (1 - b) g_2
    np.testing.assert_allclose(state.v, [0.5 * (0.5 * 1.0) + 0.5 * 4.0])


def test_numpy_adam_descends_a_quadratic_to_its_minimum():
    theta, state = np.array([3.0, -2.0]), adam().AdamState(np.zeros(2), np.zeros(2))
    for _ in range(3000):
        theta = adam().adam_step(theta, 2 * (theta - np.array([1.0, 0.5])), state, alpha=0.01)
    np.testing.assert_allclose(theta, [1.0, 0.5], atol=1e-3)


def test_adam_from_scratch_smoke_run_matches_keras(capsys):
    result = adam().main(["--smoke"])
    assert result["difference"] < 1e-6
    assert result["exact_difference"] < 1e-6  # over 50 steps Keras's float32 rounding stays small
    assert result["end_loss"] < result["start_loss"]
    assert "OK" in capsys.readouterr().out


def test_regularization_smoke_run_compares_the_four_variants(tmp_path):
    summary = tutorial_module("regularization").main(["--smoke", "--output-dir", str(tmp_path)])
    assert list(summary["results"]) == ["none", "mv", "l2", "dropout"]
    for result in summary["results"].values():
        assert 0.0 <= result["val_accuracy"] <= 1.0 and np.isfinite(result["val_loss"])
    assert json.loads((tmp_path / "summary.json").read_text())["results"] == summary["results"]
    assert (tmp_path / "regularization.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("variant, kind", [("mv", "MVRegularization"), ("dropout", "Dropout")])
def test_regularization_variants_differ_only_in_their_regularizer(variant, kind):
    module = tutorial_module("regularization")
    plain = module.build_model("none", mv_lambda=0.01, l2=1e-4, dropout=0.5)
    model = module.build_model(variant, mv_lambda=0.01, l2=1e-4, dropout=0.5)
    assert plain.count_params() == model.count_params()
    assert kind in [type(layer).__name__ for layer in model.layers]
    l2_model = module.build_model("l2", mv_lambda=0.01, l2=1e-4, dropout=0.5)
    assert all(layer.kernel_regularizer is not None for layer in l2_model.layers if hasattr(layer, "kernel"))
