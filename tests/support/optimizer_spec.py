"""One row of the optimizer table that drives the shared optimizer tests (tests/optimizers/test_table.py).

Each optimizer's test file, tests/optimizers/test_<module>.py, lists its rows in a `SPECS` list;
the shared tests run every row through the float64 reference, strategy equivalence, save and
resume, convergence, dtype and mixed-precision checks.
"""

from __future__ import annotations

import dataclasses
from typing import Callable


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """How to build, check and converge one optimizer.

    Attributes:
        name: the registry name (`lepton_keras.optimizers.get(name)`).
        make: `make(**options)` returns a new optimizer (a class or a factory).
        reference: `reference(params, grads, **options)` -> final params (float64 NumPy),
            where `params` is a list of arrays and `grads[t][i]` the gradient of variable i
            at step t; written from the paper's equations.
        options: hyperparameters for the reference match (include learning_rate).
        decay_options: options added to `options` for the with-weight-decay match, or None
            when the optimizer has no weight decay.
        converge_options: options with which the optimizer reaches the minimum of a
            quadratic and of the Rosenbrock function within `converge_steps`.
        converge_steps: steps allowed to reach the minimum.
        cnn_overrides: options replacing some of `options` to train the tutorial CNN on real
            images (default None: {"learning_rate": 1e-3}); see `cnn_options`.
        tolerance: largest allowed difference from the reference (relative to max(1, |x|)).
        float64_options: everyday hyperparameters (decimals such as 0.999 that float32 cannot
            represent) for the match with float64 variables to 1e-7, or None (no such match).
        state_tolerance: largest difference of the weights and optimizer variables together between
            1 device and 2 or 4 replicas (the weights alone must agree to 1e-5); larger only for state
            that float32 determines less well than the weights (SOAP's eigenvectors).
    """

    name: str
    make: Callable
    reference: Callable
    options: dict
    decay_options: dict | None
    converge_options: dict
    converge_steps: int = 2000
    tolerance: float = 1e-6
    cnn_overrides: dict | None = None
    float64_options: dict | None = None
    state_tolerance: float = 1e-5

    @property
    def cnn_options(self) -> dict:
        """`options` with the row's `cnn_overrides` (default: a learning rate of 1e-3) for the tutorial CNN."""
        return {**self.options, **(self.cnn_overrides or {"learning_rate": 1e-3})}
