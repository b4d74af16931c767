"""Float64 NumPy reference of DropBlock, for NHWC maps: Ghiasi, Lin and Le (2018), "DropBlock: A regularization
method for convolutional networks", arXiv:1810.12890, Algorithm 1 and Eq. (1)."""

import numpy as np


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
