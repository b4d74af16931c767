"""Float64 NumPy reference of SAM and ASAM, written from their papers.

- SAM: Foret et al. (2021), arXiv:2010.01412, Eq. (2) with p = 2 and Algorithm 1:
  e(w) = rho g / ||g||_2, then the base optimizer steps with grad L(w + e(w)).
- ASAM: Kwon et al. (2021), arXiv:2102.11600, Eq. (7) / Algorithm 1 with p = 2:
  e(w) = rho T_w^2 g / ||T_w g||_2, T_w = diag(|w|) + eta I.
"""

import numpy as np


def perturbation(grads, params, *, rho, adaptive=False, eta=0.01):
    """e(w) for a list of arrays; the norm runs over all of them together."""
    grads = [np.asarray(g, np.float64) for g in grads]
    scales = [np.abs(np.asarray(w, np.float64)) + eta if adaptive else np.ones_like(g) for w, g in zip(params, grads)]
    norm = np.sqrt(sum(np.sum((t * g) ** 2) for t, g in zip(scales, grads)))
    if norm == 0.0:
        return [np.zeros_like(g) for g in grads]
    return [rho * t**2 * g / norm for t, g in zip(scales, grads)]


def mse_gradients(x, y, kernel, bias):
    """L = mean over rows and outputs of (x W + b - y)^2; returns dL/dW and dL/db."""
    residual = x @ kernel + bias - y
    scale = 2.0 / residual.size
    return scale * x.T @ residual, scale * residual.sum(axis=0)


def sam_linear_regression(x, y, kernel, bias, *, steps, batch_size, learning_rate, rho, adaptive=False, eta=0.01,
                          momentum=0.0):  # fmt: skip
    """SAM/ASAM with SGD (heavy-ball momentum as Keras: v = m v - lr g', w += v) on batch k = rows [kB, (k+1)B)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    params = [np.asarray(kernel, np.float64), np.asarray(bias, np.float64)]
    velocity = [np.zeros_like(p) for p in params]
    for step in range(steps):
        rows = slice(step * batch_size, (step + 1) * batch_size)
        grads = mse_gradients(x[rows], y[rows], *params)
        e = perturbation(grads, params, rho=rho, adaptive=adaptive, eta=eta)
        sharp_grads = mse_gradients(x[rows], y[rows], *(p + d for p, d in zip(params, e)))
        velocity = [momentum * v - learning_rate * g for v, g in zip(velocity, sharp_grads)]
        params = [p + v for p, v in zip(params, velocity)]
    return params
