"""Float64 NumPy reference of SOAP: Vyas et al. (2024), arXiv:2409.11321, Algorithm 3, with the authors' options.

"SOAP: Improving and Stabilizing Shampoo using Adam". The equations are the paper's; the order of
the operations and the options (merge_dims, max_precond_dim, precondition_1d, normalize_grads,
correct_bias, the first step that only gathers statistics, the QR power iteration that refreshes the
eigenbases every `precondition_frequency` steps, weight decay after the step) are those of the
authors' PyTorch code (github.com/nikhilvyas/SOAP, soap.py), ported to NumPy in float64 throughout
(the authors compute the eigenbases in float32 for every parameter dtype). As in the authors' code,
the first moment is kept in the eigenbasis and moved to each new basis (rotated back, then forward).

One rule is lepton_keras's, not the authors': where the statistics cannot have full rank (a sum of
c outer products of a d x n unfolding has rank at most c n), the eigenvectors of the zero eigenvalue
are arbitrary, and the authors keep whatever the eigensolver returns. Here (and in
lepton_keras.optimizers.soap) those columns are a fixed basis: the QR decomposition of the projector P
onto the complement of the other columns, its columns P e_i taken by decreasing norm.

`params` is a list of arrays and `grads[t][i]` the gradient of variable i at step t + 1; returns the
final params.
"""

import numpy as np


def soap(params, grads, *, learning_rate, beta_1=0.95, beta_2=0.95, shampoo_beta=None, epsilon=1e-8,
         weight_decay=0.01, precondition_frequency=10, max_precond_dim=10000, merge_dims=False,
         precondition_1d=False, normalize_grads=False, correct_bias=True):  # fmt: skip
    shampoo_beta = beta_2 if shampoo_beta is None else shampoo_beta
    results = []
    for p, history in zip(params, zip(*grads)):
        shape = np.shape(p)
        work_shape, preconditioned = _layout(shape, max_precond_dim, merge_dims, precondition_1d)
        x = np.array(p, dtype=np.float64)
        exp_avg = np.zeros(work_shape)  # in the current eigenbasis, as in the authors' code
        exp_avg_sq = np.zeros(work_shape)
        statistics = [np.zeros((d, d)) if on else None for d, on in zip(work_shape, preconditioned)]
        bases = None
        step = 0
        for count, g in enumerate(history, start=1):
            g = np.asarray(g, np.float64).reshape(work_shape)
            if bases is not None:
                g_rot = _rotate(g, bases)
                step += 1
                exp_avg = beta_1 * exp_avg + (1 - beta_1) * g_rot
                exp_avg_sq = beta_2 * exp_avg_sq + (1 - beta_2) * g_rot**2
                step_size = learning_rate
                if correct_bias:
                    step_size *= np.sqrt(1 - beta_2**step) / (1 - beta_1**step)
                direction = _rotate_back(exp_avg / (np.sqrt(exp_avg_sq) + epsilon), bases)
                if normalize_grads:
                    direction = direction / (1e-30 + np.sqrt(np.mean(direction**2)))
                x = x - step_size * direction.reshape(shape)
                x = x - learning_rate * weight_decay * x
                exp_avg = _rotate_back(exp_avg, bases)  # to the original space, for the new bases
            for axis, statistic in enumerate(statistics):
                if statistic is not None:
                    unfolded = np.moveaxis(g, axis, 0).reshape(work_shape[axis], -1)
                    statistics[axis] = shampoo_beta * statistic + (1 - shampoo_beta) * unfolded @ unfolded.T
            if bases is None:
                bases = [None if s is None else _first_eigenbasis(s, _rank_bound(work_shape, axis, 1))
                         for axis, s in enumerate(statistics)]  # fmt: skip
            elif step % precondition_frequency == 0:
                bases, exp_avg_sq = _power_iteration(statistics, bases, exp_avg_sq, work_shape, count)
            if step > 0:
                exp_avg = _rotate(exp_avg, bases)
        results.append(x)
    return results


def _layout(shape, max_precond_dim, merge_dims, precondition_1d):
    """(the shape the gradient is viewed in, which of its axes have a preconditioner)."""
    if len(shape) == 0:
        return (), ()
    if len(shape) == 1:
        return tuple(shape), (precondition_1d and shape[0] <= max_precond_dim,)
    if merge_dims:
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
        shape = tuple(merged)
    return tuple(shape), tuple(size <= max_precond_dim for size in shape)


def _mode_product(x, matrix, axis):
    """x with its `axis` replaced by sum_i x[.., i, ..] matrix[i, a]."""
    return np.moveaxis(np.tensordot(x, matrix, axes=([axis], [0])), -1, axis)


def _rotate(x, bases):
    for axis, basis in enumerate(bases):
        if basis is not None:
            x = _mode_product(x, basis, axis)
    return x


def _rotate_back(x, bases):
    for axis, basis in enumerate(bases):
        if basis is not None:
            x = _mode_product(x, basis.T, axis)
    return x


def _rank_bound(work_shape, axis, count):
    """The largest rank of a sum of `count` outer products of the unfolding along `axis`."""
    size = work_shape[axis]
    return min(size, count * int(np.prod(work_shape)) // size)


def _with_fixed_null_space(basis, rank):
    size = basis.shape[0]
    if rank >= size:
        return basis
    kept = basis[:, :rank]
    projector = np.eye(size) - kept @ kept.T
    by_norm = np.argsort(-np.diag(projector), kind="stable")
    fixed, _ = np.linalg.qr(projector[:, by_norm[: size - rank]])
    return np.concatenate([kept, fixed], axis=1)


def _first_eigenbasis(statistic, rank):
    _, vectors = np.linalg.eigh(statistic)
    return _with_fixed_null_space(vectors[:, ::-1], rank)  # eigenvalues in decreasing order


def _power_iteration(statistics, bases, exp_avg_sq, work_shape, count):
    """One power iteration and a QR decomposition per basis, with its columns (and the second moment
    along that axis) first sorted by decreasing estimated eigenvalue q^T L q."""
    new_bases = []
    for axis, (statistic, basis) in enumerate(zip(statistics, bases)):
        if basis is None:
            new_bases.append(None)
            continue
        order = np.argsort(-np.einsum("ia,ij,ja->a", basis, statistic, basis), kind="stable")
        exp_avg_sq = np.take(exp_avg_sq, order, axis=axis)
        q, _ = np.linalg.qr(statistic @ basis[:, order])
        new_bases.append(_with_fixed_null_space(q, _rank_bound(work_shape, axis, count)))
    return new_bases, exp_avg_sq
