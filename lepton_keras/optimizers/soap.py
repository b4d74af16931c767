"""SOAP: Adam run in the eigenbasis of Shampoo's preconditioner.

Vyas, Morwani, Zhao, Shapira, Brandfonbrener, Janson and Kakade (2024), "SOAP: Improving and
Stabilizing Shampoo using Adam", arXiv:2409.11321.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import keras
from keras import ops

from lepton_keras.distribute.keras_compat import excluded_from_weight_decay
from lepton_keras.optimizers.base import STEP_DTYPE, LeptonOptimizer, one_minus_power, scalar, snapshot
from lepton_keras.validation import check_bool, check_int, check_non_negative, check_unit_interval


class SoapLayout(NamedTuple):
    """How SOAP views one variable: its shape, the shape its gradient is viewed in (after
    `merge_dims`) and, per axis of that view, whether the axis has a preconditioner."""

    shape: tuple
    work_shape: tuple
    preconditioned: tuple


def merged_shape(shape, max_precond_dim: int) -> tuple:
    """The authors' `merge_dims`: neighbouring axes multiplied together, from the first, while the
    product stays <= max_precond_dim."""
    merged, current = [], 1
    for size in shape:
        if current * size <= max_precond_dim:
            current *= size
        elif current > 1:
            merged.append(current)
            current = size
        else:
            merged.append(size)
    if current > 1 or not merged:
        merged.append(current)
    return tuple(merged)


def soap_layout(shape, *, max_precond_dim: int, merge_dims: bool, precondition_1d: bool) -> SoapLayout:
    """The `SoapLayout` of a variable of `shape`, as the authors' code decides it.

    A 1-D variable is preconditioned only with `precondition_1d`; an axis longer than
    `max_precond_dim` never is (it stays in the original basis); a scalar never is.
    """
    shape = tuple(int(size) for size in shape)
    if len(shape) <= 1:
        return SoapLayout(shape, shape, tuple(precondition_1d and size <= max_precond_dim for size in shape))
    work_shape = merged_shape(shape, max_precond_dim) if merge_dims else shape
    return SoapLayout(shape, work_shape, tuple(size <= max_precond_dim for size in work_shape))


def _rotate(x, bases, *, back: bool = False):
    """x with each axis that has a basis Q multiplied by Q^T (into the eigenbasis) or, `back`, by Q.

    Each step contracts axis 0 and appends the result as the last axis, so after one step
    per axis the axes are back in their order.
    """
    for basis in bases:
        if basis is None:
            x = ops.transpose(x, [*range(1, len(x.shape)), 0])
        else:
            x = ops.tensordot(x, basis, axes=([0], [1 if back else 0]))
    return x


def _gram(x, axis: int, size: int):
    """A A^T for the unfolding A (size x rest) of x along `axis`: the authors' G G^T and G^T G."""
    unfolded = ops.reshape(ops.moveaxis(x, axis, 0), (size, -1))
    return ops.matmul(unfolded, ops.transpose(unfolded))


def _rank_bound(work_shape, axis: int, count):
    """The largest rank of a sum of `count` (an int or an int32 tensor) Gram matrices of unfoldings along `axis`."""
    size = work_shape[axis]
    bound = count * (math.prod(work_shape) // size)
    return min(size, bound) if isinstance(count, int) else ops.minimum(size, bound)


def with_fixed_null_space(basis, rank, size: int):
    """`basis` with its columns from `rank` on replaced by a fixed orthonormal basis of the complement
    of the first `rank` columns.

    Those columns are eigenvectors of a zero eigenvalue of a rank-deficient statistic; any
    rotation among them is an eigenbasis, and an eigensolver returns one set by rounding (the
    TensorFlow and XLA kernels differ, and so do two runs whose gradients differ in the last
    bit). The fixed one is the QR decomposition of the projector P onto the complement, its
    columns P e_i taken by decreasing norm (so that a unit vector inside the complement comes
    first), which makes SOAP a continuous function of its inputs.
    """
    column = ops.arange(size, dtype="int32")
    kept = ops.expand_dims(ops.less(column, rank), 0)
    kept_basis = ops.where(kept, basis, ops.zeros_like(basis))
    projector = ops.eye(size, dtype=basis.dtype) - ops.matmul(kept_basis, ops.transpose(kept_basis))
    by_norm = ops.argsort(-ops.diagonal(projector))  # ||P e_i||^2 = P_ii
    fixed, _ = ops.qr(ops.take(projector, by_norm, axis=1))  # its first size - rank columns span the complement
    return ops.where(kept, basis, ops.take(fixed, ops.mod(column - rank, size), axis=1))


def soap_update(variable, gradient, m, v, *matrices, layout, first_step, step_size, decay, beta_1, one_minus_beta_1,
                beta_2, one_minus_beta_2, shampoo_beta, one_minus_shampoo_beta, epsilon, normalize_grads):  # fmt: skip
    """One SOAP step; returns (new_variable, new_m, new_v, *new_statistics) without assigning anything.

    `matrices` are the statistics (L, R, ...) then the bases (Q_L, Q_R, ...) of the preconditioned
    axes of `layout.work_shape`; the bases are those of the previous steps (`first_eigenbases` and
    `refreshed_eigenbases` change them after the step). m (the first moment, in the original basis)
    and v (the second moment, in the eigenbasis) have the variable's shape. Every tensor and scalar
    is in the dtype of m; `first_step` is a boolean scalar: the first step only gathers statistics.
    """
    work_shape = layout.work_shape
    x = ops.cast(variable, m.dtype)
    g = ops.reshape(ops.cast(gradient, m.dtype), work_shape)
    m_work, v_work = ops.reshape(m, work_shape), ops.reshape(v, work_shape)
    statistics, bases = matrices[: len(matrices) // 2], matrices[len(matrices) // 2 :]
    axes = _preconditioned_axes(layout)
    axis_bases = [None] * len(work_shape)
    for axis, basis in zip(axes, bases):
        axis_bases[axis] = basis

    new_m = beta_1 * m_work + one_minus_beta_1 * g
    new_v = beta_2 * v_work + one_minus_beta_2 * ops.square(_rotate(g, axis_bases))
    direction = _rotate(_rotate(new_m, axis_bases) / (ops.sqrt(new_v) + epsilon), axis_bases, back=True)
    if normalize_grads:
        direction = direction / (1e-30 + ops.sqrt(ops.mean(ops.square(direction))))
    new_x = x - step_size * ops.reshape(direction, layout.shape)
    new_x = new_x - decay * new_x
    new_x = ops.where(first_step, x, new_x)
    new_m = ops.reshape(ops.where(first_step, m_work, new_m), layout.shape)
    new_v = ops.reshape(ops.where(first_step, v_work, new_v), layout.shape)
    statistics = [shampoo_beta * statistic + one_minus_shampoo_beta * _gram(g, axis, work_shape[axis])
                  for axis, statistic in zip(axes, statistics)]  # fmt: skip
    return (new_x, new_m, new_v, *statistics)


def _preconditioned_axes(layout: SoapLayout) -> list[int]:
    return [axis for axis, on in enumerate(layout.preconditioned) if on]


def first_eigenbases(statistics, layout: SoapLayout) -> list:
    """The bases after the first step: the eigenvectors of each statistic by decreasing eigenvalue."""
    bases = []
    for axis, statistic in zip(_preconditioned_axes(layout), statistics):
        size = layout.work_shape[axis]
        _, vectors = ops.eigh(statistic)
        basis = ops.flip(vectors, axis=1)
        rank = _rank_bound(layout.work_shape, axis, 1)
        bases.append(basis if rank >= size else with_fixed_null_space(basis, rank, size))
    return bases


def refreshed_eigenbases(statistics, bases, v, layout: SoapLayout, *, count, precondition_frequency: int):
    """The bases after a refresh, and v with its entries reordered with them: (bases, v).

    Per axis, the basis's columns are sorted by their estimated eigenvalue q^T L q, decreasing,
    and v's entries along that axis follow them; then one power iteration L Q and a QR
    decomposition give the new basis. `count` (int32) is the number of gradients the statistics hold.
    """
    work_shape = layout.work_shape
    v = ops.reshape(v, work_shape)
    refreshed = []
    for axis, statistic, basis in zip(_preconditioned_axes(layout), statistics, bases):
        order = ops.argsort(-ops.sum(basis * ops.matmul(statistic, basis), axis=0))
        v = ops.take(v, order, axis=axis)
        basis, _ = ops.qr(ops.matmul(statistic, ops.take(basis, order, axis=1)))
        size = work_shape[axis]
        # Full rank at every refresh unless the axis is longer than f + 1 times the others together.
        if size > (precondition_frequency + 1) * (math.prod(work_shape) // size):
            basis = with_fixed_null_space(basis, _rank_bound(work_shape, axis, count), size)
        refreshed.append(basis)
    return refreshed, ops.reshape(v, layout.shape)


@keras.saving.register_keras_serializable(package="lepton_keras")
class SOAP(LeptonOptimizer):
    """SOAP: Adam in the slowly changing eigenbasis of Shampoo's preconditioner.

    When to use it: training transformers and other networks of large dense (and convolution)
    layers, where Shampoo-like second-order preconditioning pays off. The paper reports about
    40% fewer iterations and 35% less wall-clock time than AdamW on 360M-660M parameter language
    models, and a more stable, simpler method than Shampoo (one hyperparameter more than Adam:
    `precondition_frequency`). It costs, per preconditioned axis of size d, two d x d matrices
    and, every `precondition_frequency` steps, a d x d QR decomposition; axes longer than
    `max_precond_dim` (e.g. vocabularies) keep Adam in the original basis.

    For a 2-D variable W (m x n) with gradient G_t at step t = 1, 2, ... (Algorithm 3 of the
    paper, with the choices of the authors' code), b_s = `shampoo_beta`, f =
    `precondition_frequency` and s = t - 1 the number of updates:

        L_t = b_s L_{t-1} + (1 - b_s) G_t G_t^T          R_t = b_s R_{t-1} + (1 - b_s) G_t^T G_t
        t = 1:   Q_L, Q_R = eigenvectors of L_1, R_1 (by decreasing eigenvalue); no update
        t >= 2, with Q_L, Q_R of the previous step:
            M_t = beta_1 M_{t-1} + (1 - beta_1) G_t                    (original basis)
            V_t = beta_2 V_{t-1} + (1 - beta_2) (Q_L^T G_t Q_R)^2      (eigenbasis, element-wise)
            N_t = Q_L [(Q_L^T M_t Q_R) / (sqrt(V_t) + epsilon)] Q_R^T
            W <- W - lr sqrt(1 - beta_2^s) / (1 - beta_1^s) N_t
            W <- W - lr weight_decay W
            every f updates (s mod f = 0), for Q = Q_L with L = L_t (and alike for R):
                sort Q's columns by decreasing q^T L q (and V_t's rows with them); Q <- QR(L Q)

    A variable of more axes has one statistic and basis per axis (G_t G_t^T becomes the Gram
    matrix of the unfolding along that axis), and Q_L^T G Q_R a product along every axis; a
    Keras convolution kernel (kh, kw, in, out) thus gets four. With `merge_dims`, neighbouring
    axes are first merged while their product stays <= `max_precond_dim`: (3, 3, 64, 128)
    becomes (576, 128), the Dense-like view of the kernel. A 1-D variable (a bias) takes Adam's
    step (from the second step on) unless `precondition_1d`. The first moment M is kept in the
    original basis and rotated at each step, so it follows each new basis exactly; the second
    moment V stays in the eigenbasis, as the paper's. Both moments, the statistics and the bases
    are kept in float32 for float16 and bfloat16 variables (eigendecompositions need it), in
    float64 for float64 variables. A variable whose first gradient comes after the optimizer's
    first step spends that step gathering statistics too (its bias correction counts the
    optimizer's steps, as Keras's Adam's does).

    Precision: in float32, the eigenvectors of close or tiny eigenvalues of a statistic are
    determined only to about 1e-7 lambda_max / gap. Two runs whose gradients differ in the last
    bits (one device and two replicas, an XLA-compiled and a plain train step) take nearly the
    same steps (weights within about 1e-6 after a few steps) with bases that differ by about 1e-4.

    Differences from the authors' code (github.com/nikhilvyas/SOAP): the authors compute the
    eigenbases in float32 for every parameter dtype (here float64 variables get float64 ones);
    `shampoo_beta=None` stands for their -1 (use beta_2); there is no `data_format` (Keras
    kernels are channels-last, (kh, kw, in, out), so `merge_dims` merges kh, kw and in, where
    their (out, in, kh, kw) merges from out); and where a statistic is rank-deficient by
    construction (a sum of c Gram matrices of a d x n unfolding has rank at most c n < d: at the
    first step of any layer with more rows than columns, and at the refreshes of thin layers
    such as a classifier's head), the eigenvectors of its zero eigenvalue are a fixed basis (see
    `with_fixed_null_space`) instead of the eigensolver's arbitrary one, which changes with the
    last bits of the gradients (with the authors' code, 25 steps on a (6, 4) variable move 1%
    apart when the gradients change by 1e-12). The eigendecomposition is `keras.ops.eigh` at the first
    step and, like the authors', one power iteration and `keras.ops.qr` at each refresh. Weight
    decay is SOAP's own, as the authors': after the step, not at the first step (Keras's own
    decay runs before every step and is not used); `exclude_from_weight_decay` is honoured.

    Args:
        learning_rate: lr, a finite float > 0, a `keras.optimizers.schedules.LearningRateSchedule` or
            a callable (default 0.003).
        beta_1: decay rate of the first moment, in [0, 1) (default 0.95).
        beta_2: decay rate of the second moment, in [0, 1) (default 0.95).
        shampoo_beta: decay rate of the statistics L and R, in [0, 1), or None for beta_2
            (default None).
        epsilon: added to sqrt(V_t), >= 0 (default 1e-8).
        weight_decay: decoupled weight decay, >= 0 or None (none) (default 0.01, the authors').
        precondition_frequency: f, the number of updates between refreshes of the bases, an
            integer >= 1 (default 10).
        max_precond_dim: the longest axis that gets a preconditioner, an integer >= 1 (default 10000).
        merge_dims: merge neighbouring axes of variables of 2 or more axes (default False).
        precondition_1d: precondition 1-D variables too (default False).
        normalize_grads: divide N_t by its root mean square (default False).
        correct_bias: Adam's bias correction sqrt(1 - beta_2^s) / (1 - beta_1^s) (default True).
        fused_updates: compile each variable's update with XLA into one kernel (default True).
        **kwargs: Keras's optimizer keywords (clipnorm, ..., name).

    Example:
        import keras
        import numpy as np
        import lepton_keras

        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
        model.compile(optimizer=lepton_keras.optimizers.SOAP(3e-3), loss="mse")
        model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0)

    References:
        Vyas et al. (2024), "SOAP: Improving and Stabilizing Shampoo using Adam", arXiv:2409.11321.
        The authors' code: github.com/nikhilvyas/SOAP.
    """

    def __init__(self, learning_rate=0.003, beta_1=0.95, beta_2=0.95, shampoo_beta=None, epsilon=1e-8,
                 weight_decay=0.01, precondition_frequency=10, max_precond_dim=10000, merge_dims=False,
                 precondition_1d=False, normalize_grads=False, correct_bias=True, name="soap", **kwargs):  # fmt: skip
        # SOAP's decay comes after the step, as the authors'; Keras's would come before it.
        super().__init__(learning_rate, name=name, weight_decay=None, **kwargs)
        self.beta_1 = check_unit_interval("beta_1", beta_1)
        self.beta_2 = check_unit_interval("beta_2", beta_2)
        self.shampoo_beta = None if shampoo_beta is None else check_unit_interval("shampoo_beta", shampoo_beta)
        self.epsilon = check_non_negative("epsilon", epsilon)
        self.soap_weight_decay = check_non_negative("weight_decay", weight_decay, allow_none=True)
        self.precondition_frequency = check_int("precondition_frequency", precondition_frequency, minimum=1)
        self.max_precond_dim = check_int("max_precond_dim", max_precond_dim, minimum=1)
        self.merge_dims = check_bool("merge_dims", merge_dims)
        self.precondition_1d = check_bool("precondition_1d", precondition_1d)
        self.normalize_grads = check_bool("normalize_grads", normalize_grads)
        self.correct_bias = check_bool("correct_bias", correct_bias)

    def layout(self, variable) -> SoapLayout:
        """How this optimizer views `variable` (see `soap_layout`)."""
        return soap_layout(variable.shape, max_precond_dim=self.max_precond_dim, merge_dims=self.merge_dims,
                           precondition_1d=self.precondition_1d)  # fmt: skip

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._layouts, self._m, self._v, self._statistics, self._bases = [], [], [], [], []
        for variable in var_list:
            layout = self.layout(variable)
            dtype = keras.backend.result_type(variable.dtype, "float32")
            path = getattr(variable, "path", variable.name).replace("/", "_")

            def add(shape, name):
                return self.add_variable(shape=shape, dtype=dtype, name=f"{path}_{name}")

            sizes = [layout.work_shape[axis] for axis in _preconditioned_axes(layout)]
            self._layouts.append(layout)
            self._m.append(add(variable.shape, "m"))
            self._v.append(add(variable.shape, "v"))
            self._statistics.append([add((size, size), f"statistic_{k}") for k, size in enumerate(sizes)])
            self._bases.append([add((size, size), f"basis_{k}") for k, size in enumerate(sizes)])

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        layout, m, v = self._layouts[index], self._m[index], self._v[index]
        statistics, bases = self._statistics[index], self._bases[index]
        dtype = m.dtype
        iterations = ops.cast(self.iterations, "int32")
        first_step = ops.equal(iterations, 0)
        if bases:  # a variable whose first gradient comes later starts then (its bases are still 0)
            first_step = ops.logical_or(first_step, ops.all(ops.equal(snapshot(bases[0]), 0.0)))
        updates = ops.cast(ops.maximum(iterations, 1), STEP_DTYPE)  # s; unused at the first step
        step_size = ops.cast(learning_rate, STEP_DTYPE)
        if self.correct_bias:
            bias_corrections = ops.sqrt(one_minus_power(self.beta_2, updates)) / one_minus_power(self.beta_1, updates)
            step_size = step_size * bias_corrections
        weight_decay = 0.0 if excluded_from_weight_decay(self, variable) else self.soap_weight_decay or 0.0
        shampoo_beta = self.beta_2 if self.shampoo_beta is None else self.shampoo_beta
        self.update_in_place(
            soap_update,
            (variable, m, v, *statistics),
            variable,
            gradient,
            m,
            v,
            *statistics,
            *bases,
            layout=layout,
            first_step=first_step,
            step_size=scalar(step_size, dtype),
            decay=scalar(ops.cast(learning_rate, STEP_DTYPE) * weight_decay, dtype),
            beta_1=scalar(self.beta_1, dtype),
            one_minus_beta_1=scalar(1.0 - self.beta_1, dtype),
            beta_2=scalar(self.beta_2, dtype),
            one_minus_beta_2=scalar(1.0 - self.beta_2, dtype),
            shampoo_beta=scalar(shampoo_beta, dtype),
            one_minus_shampoo_beta=scalar(1.0 - shampoo_beta, dtype),
            epsilon=scalar(self.epsilon, dtype),
            normalize_grads=self.normalize_grads,
        )
        if not bases:
            return

        # The eigendecompositions run outside the fused update: XLA's eigensolver (Jacobi, to a
        # tolerance of 1e-6) is less accurate than TensorFlow's kernel.
        def assign_first_bases():
            for basis, new in zip(bases, first_eigenbases([snapshot(s) for s in statistics], layout)):
                self.assign(basis, new)

        def assign_refreshed_bases():
            new_bases, new_v = refreshed_eigenbases(
                [snapshot(s) for s in statistics], [snapshot(b) for b in bases], snapshot(v), layout,
                count=iterations + 1, precondition_frequency=self.precondition_frequency,
            )  # fmt: skip
            for basis, new in zip(bases, new_bases):
                self.assign(basis, new)
            self.assign(v, new_v)

        refresh = ops.logical_and(ops.greater(iterations, 0), ops.equal(iterations % self.precondition_frequency, 0))
        ops.cond(first_step, assign_first_bases, lambda: ops.cond(refresh, assign_refreshed_bases, lambda: None))

    def get_config(self):
        return {
            **super().get_config(),
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "shampoo_beta": self.shampoo_beta,
            "epsilon": self.epsilon,
            "weight_decay": self.soap_weight_decay,
            "precondition_frequency": self.precondition_frequency,
            "max_precond_dim": self.max_precond_dim,
            "merge_dims": self.merge_dims,
            "precondition_1d": self.precondition_1d,
            "normalize_grads": self.normalize_grads,
            "correct_bias": self.correct_bias,
        }
