"""Float64 NumPy references of the learning-rate range test, written from the descriptions.

- The sweep: Smith (2017), "Cyclical Learning Rates for Training Neural Networks", arXiv:1506.01186,
  Section 3.3 (the "LR range test"), with fastai's exponential variant.
- Smoothing, divergence stop and suggestions: fastai's `lr_find` (bias-corrected moving average,
  beta = 0.98; stop once the smoothed loss exceeds 4 times its minimum; "steepest", "valley" as the
  longest decreasing stretch of the smoothed loss, "minimum" / 10).
Each is computed another way than lepton_keras does it (log-space interpolation, explicit weighted
sums, an O(n^3) table over (start, end) pairs).
"""

import math

import numpy as np


def sweep(min_lr, max_lr, steps, mode="exponential"):
    """Interpolates in log space (exponential) or in lr (linear), with Python floats."""
    out = []
    for i in range(steps):
        t = i / (steps - 1)
        if mode == "exponential":
            out.append(math.exp((1 - t) * math.log(min_lr) + t * math.log(max_lr)))
        else:
            out.append((1 - t) * min_lr + t * max_lr)
    return np.array(out)


def smoothed(losses, beta=0.98):
    """sum_j (1 - beta) beta^(i - j) loss_j / (1 - beta^(i + 1)): the weighted sum, written out."""
    losses = np.asarray(losses, np.float64)
    out = []
    for i in range(len(losses)):
        weights = (1 - beta) * beta ** (i - np.arange(i + 1, dtype=np.float64))
        out.append(np.sum(weights * losses[: i + 1]) / (1 - beta ** (i + 1)))
    return np.array(out)


def stop_index(smoothed_losses, factor=4.0):
    """The first step whose smoothed loss exceeds factor times the best so far, or is NaN; None if none."""
    best = math.inf
    for i, value in enumerate(smoothed_losses):
        best = min(best, value)
        if math.isnan(value) or value > factor * best:
            return i
    return None


def trimmed(lrs, losses, skip_start=None, skip_end=5):
    """The finite prefix of the curve, less `skip_start` (default a tenth) points first and `skip_end` last."""
    lrs, losses = list(lrs), list(losses)
    count = 0
    while count < len(losses) and math.isfinite(losses[count]):
        count += 1
    skip_start = count // 10 if skip_start is None else skip_start
    keep = range(skip_start, count - skip_end)
    return np.array([lrs[i] for i in keep]), np.array([losses[i] for i in keep])


def steepest(lrs, losses):
    """The lr of the most negative d loss / d log(lr) up to the lowest loss: second-order central
    differences for uneven spacing inside, one-sided differences at the two ends."""
    x, f = np.log(np.asarray(lrs, np.float64)), np.asarray(losses, np.float64)
    n = len(f)
    slope = np.empty(n)
    slope[0] = (f[1] - f[0]) / (x[1] - x[0])
    slope[-1] = (f[-1] - f[-2]) / (x[-1] - x[-2])
    for i in range(1, n - 1):
        left, right = x[i] - x[i - 1], x[i + 1] - x[i]
        slope[i] = (left**2 * f[i + 1] - right**2 * f[i - 1] + (right**2 - left**2) * f[i]) / (
            left * right * (left + right)
        )
    lowest = int(np.argmin(f))
    return float(lrs[min(range(lowest + 1), key=lambda i: slope[i])])


def valley(lrs, losses):
    """The lr halfway along the longest strictly decreasing subsequence (earliest end, then earliest start).

    table[s, e] is the length of the longest strictly decreasing subsequence that starts at s and
    ends at e (0 when there is none).
    """
    f = np.asarray(losses, np.float64)
    n = len(f)
    table = np.zeros((n, n), int)
    for s in range(n):
        table[s, s] = 1
        for e in range(s + 1, n):
            best = 0
            for k in range(s, e):
                if table[s, k] and f[k] > f[e]:
                    best = max(best, table[s, k] + 1)
            table[s, e] = best
    longest = table.max()
    end = min(e for e in range(n) if table[:, e].max() == longest)
    start = min(s for s in range(n) if table[s, end] == longest)
    return float(lrs[start + (end - start) // 2])


def minimum(lrs, losses):
    """A tenth of the lr of the lowest loss."""
    return float(lrs[int(np.argmin(losses))]) / 10

