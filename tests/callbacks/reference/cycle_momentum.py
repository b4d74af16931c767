"""Float64 references of the optimizers CycleMomentum drives, with a learning rate and a momentum (or beta_1)
that change every step, as Keras writes each update.

Each takes the starting weights, a function giving the gradient at the weights, and one learning rate and one
momentum per step; it returns the weights after the last step.
"""

import math

import numpy as np


def sgd(weights, gradient_fn, learning_rates, momentums):
    """SGD with heavy-ball momentum as Keras writes it: v = mu v - lr g; w = w + v (mu = 0: plain SGD)."""
    w = np.asarray(weights, np.float64)
    velocity = np.zeros_like(w)
    for lr, mu in zip(learning_rates, momentums):
        velocity = mu * velocity - lr * gradient_fn(w)
        w = w + velocity
    return w


def adam(weights, gradient_fn, learning_rates, beta_1s, beta_2=0.999, epsilon=1e-7):
    """Kingma and Ba (2014), arXiv:1412.6980, Algorithm 1 with the bias correction folded into the step
    size (Section 2) as Keras does, and beta_1 of step t used in place of the constant (m_t and 1 - beta_1^t)."""
    w = np.asarray(weights, np.float64)
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, (lr, beta_1) in enumerate(zip(learning_rates, beta_1s), start=1):
        g = gradient_fn(w)
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g**2
        alpha = lr * math.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        w = w - alpha * m / (np.sqrt(v) + epsilon)
    return w


def rmsprop(weights, gradient_fn, learning_rates, momentums, rho=0.9, epsilon=1e-7):
    """RMSprop (Tieleman and Hinton 2012, Lecture 6.5) with heavy-ball momentum on its step, as Keras writes it:
    v = rho v + (1 - rho) g^2;  m = mu m + lr g / sqrt(v + epsilon);  w = w - m."""
    w = np.asarray(weights, np.float64)
    v, m = np.zeros_like(w), np.zeros_like(w)
    for lr, mu in zip(learning_rates, momentums):
        g = gradient_fn(w)
        v = rho * v + (1 - rho) * g**2
        m = mu * m + lr * g / np.sqrt(v + epsilon)
        w = w - m
    return w
