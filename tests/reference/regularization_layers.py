"""Float64 NumPy references of the regularization layers, written from their papers.

- Stochastic depth: Huang et al. (2016), arXiv:1603.09382, Eq. (2) and Section 3 ("Test-time").
- Weight normalization: Salimans and Kingma (2016), arXiv:1602.07868, Eqs. (2)-(4) and Section 3.
- DropBlock: Ghiasi, Lin and Le (2018), arXiv:1810.12890, Algorithm 1 and Eq. (1).
"""

import numpy as np


def stochastic_depth(shortcut, residual, survival_probability, keep=None):
    """H = shortcut + b * residual while training (keep = b), shortcut + p * residual at test time."""
    shortcut, residual = np.asarray(shortcut, np.float64), np.asarray(residual, np.float64)
    factor = survival_probability if keep is None else np.asarray(keep, np.float64)
    return shortcut + factor * residual


# Weight normalization. Kernels have the output units on the last axis.


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


# DropBlock, for NHWC maps.


def drop_block_gamma(rate, block_size, height, width):
    """Eq. (1), for a height x width map: rate / s^2 * (H W) / ((H - s + 1)(W - s + 1))."""
    return rate / block_size**2 * height * width / ((height - block_size + 1) * (width - block_size + 1))


def block_keep_mask(seeds, block_size):
    """Algorithm 1, step 5: zero the s x s block of rows i..i+s-1, columns j..j+s-1 for every seed (i, j).

    seeds: (N, H - s + 1, W - s + 1, C) of 0/1; returns the (N, H, W, C) keep-mask.
    """
    seeds = np.asarray(seeds)
    n, rows, cols, c = seeds.shape
    mask = np.ones((n, rows + block_size - 1, cols + block_size - 1, c))
    for example, i, j, channel in zip(*np.nonzero(seeds)):
        mask[example, i : i + block_size, j : j + block_size, channel] = 0.0
    return mask


def drop_block(x, keep_mask):
    """Algorithm 1, step 6: x * M * count(M) / count_ones(M)."""
    keep_mask = np.asarray(keep_mask, np.float64)
    return np.asarray(x, np.float64) * keep_mask * keep_mask.size / keep_mask.sum()


def whole_block_cover(dropped, block_size):
    """The union of every s x s window (inside the map) whose pixels are all dropped.

    A dropped mask made of whole s x s blocks equals its cover; any other does not.
    dropped: (N, H, W, C) booleans.
    """
    dropped = np.asarray(dropped, bool)
    windows = np.lib.stride_tricks.sliding_window_view(dropped, (block_size, block_size), axis=(1, 2))
    return block_keep_mask(windows.all(axis=(-2, -1)), block_size) == 0.0


def expected_dropped_fraction(rate, block_size, height, width):
    """E[fraction of a map dropped]: pixel p is kept iff none of the c(p) centres covering it fires."""
    gamma = drop_block_gamma(rate, block_size, height, width)
    # c(p), the number of block positions inside the map that cover p, separates into rows and columns.
    rows = [min(i, height - block_size) - max(0, i - block_size + 1) + 1 for i in range(height)]
    cols = [min(j, width - block_size) - max(0, j - block_size + 1) + 1 for j in range(width)]
    return float(np.mean(1.0 - (1.0 - gamma) ** np.outer(rows, cols)))
