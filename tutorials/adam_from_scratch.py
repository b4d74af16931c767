"""Adam in NumPy, done right, checked against keras.optimizers.Adam.

The design documents train a softmax regression with a NumPy Adam whose loop has three
bugs: the step counter starts at 0, so the bias corrections 1 - beta^t divide by zero
on the first step; the moments are updated twice per step (once into m_t and v_t, then
again into m and v); and `w -= delta_w` with `delta_w = -alpha * ...` climbs the loss
instead of descending it. This version follows Algorithm 1 of Kingma and Ba (2015),
"Adam: A Method for Stochastic Optimization" (arXiv:1412.6980), for t = 1, 2, ...:

    m_t = beta_1 m_{t-1} + (1 - beta_1) g_t
    v_t = beta_2 v_{t-1} + (1 - beta_2) g_t^2
    m_hat = m_t / (1 - beta_1^t),   v_hat = v_t / (1 - beta_2^t)
    theta_t = theta_{t-1} - alpha m_hat / (sqrt(v_hat) + epsilon_hat)

Kingma and Ba close Section 2 noting that the step can be computed as
alpha_t = alpha sqrt(1 - beta_2^t) / (1 - beta_1^t) and theta -= alpha_t m_t / (sqrt(v_t) + epsilon);
Keras and TensorFlow do so, which puts epsilon_hat = epsilon / sqrt(1 - beta_2^t) next to
sqrt(v_hat). This tutorial uses that epsilon_hat, so that it can be compared exactly.

It trains the documents' model (softmax regression, one random example per step,
alpha = 0.001, beta_1 = 0.9, beta_2 = 0.999, epsilon = 1e-8) on real CIFAR-10 images,
applies the very same gradients to float64 variables through `keras.optimizers.Adam`,
and reports the largest difference between the two sets of weights (at most 1e-6 when
the hyperparameters are rounded as Keras rounds them; Keras keeps the learning rate in
float32 and raises float32-rounded betas to the power t, which alone moves the weights
by about 1e-6 over 1,000 steps).

    python tutorials/adam_from_scratch.py            # 1,000 steps, as in the documents
    python tutorials/adam_from_scratch.py --smoke    # 50 steps
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

TOLERANCE = 1e-6


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="50 steps (for tests)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    # --help and bad flags answer before TensorFlow loads (it takes a minute on a loaded machine).
    parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ code: errors only

import lepton_keras  # noqa: E402,F401  (first: it loads TensorFlow without its start-up noise)
import keras  # noqa: E402
import numpy as np  # noqa: E402

from lepton_keras.data import load_cifar10  # noqa: E402


@dataclasses.dataclass
class AdamState:
    """The first and second moment estimates and the step count t of one parameter."""

    m: np.ndarray
    v: np.ndarray
    t: int = 0


def adam_step(theta, gradient, state: AdamState, alpha=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
              *, float32_powers=False):  # fmt: skip
    """One Adam step (Kingma and Ba 2015, Algorithm 1); returns the new parameter, updates `state`.

    With `float32_powers`, beta_1^t and beta_2^t are computed from beta rounded to float32,
    as Keras does (it turns the Python floats into float32 tensors before casting them to
    the variable's dtype); everything else stays float64.
    """
    state.t += 1
    state.m = beta_1 * state.m + (1 - beta_1) * gradient
    state.v = beta_2 * state.v + (1 - beta_2) * gradient**2
    power_1, power_2 = (float(np.float32(b)) if float32_powers else b for b in (beta_1, beta_2))
    m_hat = state.m / (1 - power_1**state.t)
    v_hat = state.v / (1 - power_2**state.t)
    epsilon_hat = epsilon / np.sqrt(1 - power_2**state.t)
    return theta - alpha * m_hat / (np.sqrt(v_hat) + epsilon_hat)


def softmax(z):
    z = z - z.max()
    return np.exp(z) / np.exp(z).sum()


def loss_and_gradients(w, b, x, label):
    """Cross-entropy J = -log softmax(x W + b)[label] and its gradients dJ/dW, dJ/db."""
    a = softmax(x @ w + b)
    error = a.copy()
    error[label] -= 1.0  # dJ/dz = a - onehot(label)
    return -np.log(a[label]), np.outer(x, error), error


def features(images: np.ndarray) -> np.ndarray:
    """8 x 8 x 3 average-pooled pixels in [-0.5, 0.5]: 192 inputs, so one Adam step
    (about alpha per weight) moves the logits by a moderate amount."""
    pooled = images.astype(np.float64).reshape(len(images), 8, 4, 8, 4, 3).mean(axis=(2, 4))
    return pooled.reshape(len(images), -1) / 255.0 - 0.5


def mean_loss(w, b, images, labels):
    return float(np.mean([loss_and_gradients(w, b, x, y)[0] for x, y in zip(images, labels)]))


def main(argv=None) -> dict:
    args = parse_args(argv)
    steps = 50 if args.smoke else args.steps

    data = load_cifar10("sample", shard=None)
    labels = data.train_labels
    images = features(data.train_images)
    rng = np.random.default_rng(args.seed)
    w = rng.normal(size=(images.shape[1], 10)) * 0.01
    b = np.zeros(10)

    keras_w, keras_b = keras.Variable(w, dtype="float64"), keras.Variable(b, dtype="float64")
    keras_adam = keras.optimizers.Adam(learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8)
    # A second NumPy Adam that rounds the hyperparameters as Keras does (its learning rate
    # is a float32 variable; beta^t is computed from float32 beta): the same algorithm,
    # so it must agree with Keras to float64 rounding.
    as_keras_w, as_keras_b = w.copy(), b.copy()
    as_keras = {"alpha": float(np.float32(1e-3)), "float32_powers": True}
    states = {name: AdamState(np.zeros_like(p), np.zeros_like(p)) for name, p in [("w", w), ("b", b), ("kw", w), ("kb", b)]}

    start_loss = mean_loss(w, b, images, labels)
    for _ in range(steps):
        index = rng.integers(len(labels))  # one random example per step, as in the documents
        _, grad_w, grad_b = loss_and_gradients(w, b, images[index], labels[index])
        w = adam_step(w, grad_w, states["w"])
        b = adam_step(b, grad_b, states["b"])
        as_keras_w = adam_step(as_keras_w, grad_w, states["kw"], **as_keras)
        as_keras_b = adam_step(as_keras_b, grad_b, states["kb"], **as_keras)
        keras_adam.apply_gradients([(grad_w, keras_w), (grad_b, keras_b)])
    end_loss = mean_loss(w, b, images, labels)

    def largest_difference(numpy_w, numpy_b):
        return max(float(np.max(np.abs(numpy_w - keras_w.numpy()))), float(np.max(np.abs(numpy_b - keras_b.numpy()))))

    difference = largest_difference(as_keras_w, as_keras_b)
    exact_difference = largest_difference(w, b)
    print(f"{steps} Adam steps on {len(labels)} CIFAR-10 images: mean loss {start_loss:.4f} -> {end_loss:.4f}")
    verdict = "OK" if difference < TOLERANCE else "MISMATCH"
    print(f"largest |NumPy Adam - keras.optimizers.Adam| weight difference: {difference:.3g} ({verdict}, tolerance {TOLERANCE})")
    print(
        f"with hyperparameters in exact float64 instead of rounded as Keras rounds them: {exact_difference:.3g} "
        "(Keras's float32 learning rate and beta^t)"
    )
    return {
        "steps": steps, "start_loss": start_loss, "end_loss": end_loss,
        "difference": difference, "exact_difference": exact_difference,
    }  # fmt: skip


if __name__ == "__main__":
    sys.exit(0 if main()["difference"] < TOLERANCE else 1)
