"""One random problem, one way to run an optimizer over it, and one tolerance convention.

    params, grads = random_problem(steps=15)                   # float64 NumPy
    ours = apply_steps(RAdam(2**-7), params, grads)            # float32 variables, eager steps
    assert_close(ours, reference.radam(params, grads, learning_rate=2**-7))

The tolerance convention of the whole suite: `tolerance` bounds |ours - expected| element by
element, relative to max(1, |expected|), so it is absolute for values below 1 and relative above.
`relative_error` gives that error, and the harness's `max_difference` compares two training runs
with it.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

SHAPES = ((5,), (3, 4), (2, 3, 2))


def random_problem(steps: int, *, shapes: Sequence[tuple] = SHAPES, seed: int = 0, scale: float = 0.5,
                   mean: float = 0.0, float32_values: bool = False) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """Starting weights (standard normal) and `steps` gradients (normal, `mean` and `scale`) per shape, float64.

    `float32_values` rounds them to float32 numbers, which `apply_steps` hands TensorFlow, so that a
    float64 reference starts from the very numbers ours does (for matches to 1e-7).
    """
    rng = np.random.default_rng(seed)
    params = [rng.normal(size=shape) for shape in shapes]
    grads = [[rng.normal(loc=mean, scale=scale, size=shape) for shape in shapes] for _ in range(steps)]
    if float32_values:
        params = [np.float64(np.float32(p)) for p in params]
        grads = [[np.float64(np.float32(g)) for g in step] for step in grads]
    return params, grads


def apply_steps(optimizer, params, grads, *, dtype: str = "float32", iterations: int | None = None,
                every_step: Callable | None = None):
    """Builds `optimizer` over variables holding `params` and applies grads[t] eagerly, step by step.

    A gradient of None leaves its variable without one that step. `iterations` sets the step
    counter before the first step. Returns the final weights as float64 arrays, and with
    `every_step`, also the list of `every_step(optimizer)` after each step.
    """
    import keras
    import tensorflow as tf

    variables = [keras.Variable(np.asarray(p, np.float32), dtype=dtype, name=f"v{i}") for i, p in enumerate(params)]
    optimizer.build(variables)
    if iterations is not None:
        optimizer.iterations.assign(iterations)
    seen = []
    for step_grads in grads:
        optimizer.apply([None if g is None else tf.cast(tf.constant(g, tf.float32), dtype) for g in step_grads],
                        variables)  # fmt: skip
        if every_step is not None:
            seen.append(every_step(optimizer))
    weights = [np.asarray(v.numpy(), np.float64) for v in variables]
    return (weights, seen) if every_step is not None else weights


def relative_error(actual: Sequence, expected: Sequence) -> float:
    """max over elements of |actual - expected| / max(1, |expected|); the lists must match in length and shape."""
    if len(actual) != len(expected):
        raise ValueError(f"{len(actual)} arrays against {len(expected)}")
    error = 0.0
    for a, e in zip(actual, expected):
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        if a.shape != e.shape:
            raise ValueError(f"shape {a.shape} against {e.shape}")
        if a.size:
            error = max(error, float(np.max(np.abs(a - e) / np.maximum(1.0, np.abs(e)))))
    return error


def error_relative_to_the_displacement(actual: Sequence, expected: Sequence, start: Sequence) -> float:
    """max over variables of max |actual - expected| / max |expected - start|: how far the steps differ,
    relative to how far they went (for float64 matches, where max(1, |x|) would hide the steps)."""
    return max(float(np.max(np.abs(np.asarray(a) - e)) / np.max(np.abs(e - p)))
               for a, e, p in zip(actual, expected, start))  # fmt: skip


def assert_close(actual: Sequence, expected: Sequence, tolerance: float = 1e-6) -> None:
    """Fails unless `relative_error(actual, expected) <= tolerance` (the suite's convention)."""
    error = relative_error(actual, expected)
    assert error <= tolerance, f"error {error:.3g} relative to max(1, |expected|) exceeds {tolerance:.3g}"
