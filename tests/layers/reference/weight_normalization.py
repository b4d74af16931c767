"""Float64 NumPy reference of weight normalization: Salimans and Kingma (2016), "Weight Normalization",
arXiv:1602.07868, Eqs. (2)-(4) and Section 3. Kernels have the output units on the last axis."""

import numpy as np


def weight_norm_kernel(v, g):
    """w = g / ||v|| * v, ||v|| per output unit (over every axis but the last)."""
    v = np.asarray(v, np.float64)
    norm = np.sqrt(np.sum(v**2, axis=tuple(range(v.ndim - 1)), keepdims=True))
    return np.asarray(g, np.float64) * v / norm


def dense(x, kernel, bias=None):
    """x . w + b over the last axis of x."""
    out = np.asarray(x, np.float64) @ np.asarray(kernel, np.float64)
    return out if bias is None else out + np.asarray(bias, np.float64)


def conv2d_valid(x, kernel, bias=None):
    """Stride-1, "valid" 2D cross-correlation of NHWC x with a (kh, kw, c_in, c_out) kernel."""
    x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
    kh, kw = kernel.shape[:2]
    patches = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))  # N, H', W', C, kh, kw
    out = np.einsum("nhwcij,ijcf->nhwf", patches, kernel)
    return out if bias is None else out + np.asarray(bias, np.float64)


def data_init(t, channel_axis=-1):
    """The paper's Section 3: g = 1 / sigma[t], b = -mu[t] / sigma[t] per unit, over every other axis."""
    t = np.moveaxis(np.asarray(t, np.float64), channel_axis, -1).reshape(-1, np.shape(t)[channel_axis])
    mean, std = t.mean(axis=0), t.std(axis=0)
    return 1.0 / std, -mean / std


def weight_norm_gradients(v, g, grad_w):
    """The paper's Eq. (3): dL/dg = dL/dw . v / ||v||, dL/dv = g / ||v|| dL/dw - g dL/dg / ||v||^2 v."""
    v, g, grad_w = (np.asarray(a, np.float64) for a in (v, g, grad_w))
    axes = tuple(range(v.ndim - 1))
    norm = np.sqrt(np.sum(v**2, axis=axes))
    grad_g = np.sum(grad_w * v, axis=axes) / norm
    grad_v = g / norm * grad_w - g * grad_g / norm**2 * v
    return grad_g, grad_v
