"""Float64 NumPy reference of Muon: Jordan et al. (2024), "Muon: An optimizer for hidden layers in neural networks".

A port of the equations of the author's `muon_update`, `zeropower_via_newtonschulz5` and
`adam_update` (github.com/KellerJordan/Muon, muon.py) to NumPy in float64, in Keras's layout
(a kernel's last axis is its output units, where PyTorch's first is):

    M_t = beta M_{t-1} + (1 - beta) G_t                   (the author's momentum.lerp_(grad, 1 - beta))
    D_t = (1 - beta) G_t + beta M_t   (Nesterov)  or  M_t
    X_0 = D_t / (||D_t||_F + epsilon)     (D_t viewed as a fan_in x fan_out matrix, transposed when taller)
    X_{k+1} = a X_k + (b A_k + c A_k^2) X_k,   A_k = X_k X_k^T,   k < ns_steps
    W_t = W_{t-1} - lr weight_decay W_{t-1} - lr scale X_{ns_steps}

with scale sqrt(max(1, fan_out / fan_in)) ("original": the author's max(1, rows / cols) of a
PyTorch (out, in) weight), 0.2 sqrt(max(fan_in, fan_out)) ("match_rms_adamw", Moonlight's) or
sqrt(fan_out / fan_in) ("spectral_unclamped"). A variable with more than 2 axes is the matrix
(prod(shape[:-1]), shape[-1]) (the transpose of the author's view of a PyTorch convolution kernel
(out, in, h, w) as (out, in h w), for which the orthogonalisation and the scale are the same).
The variables that are not orthogonalised take the author's AdamW step (`adam_update`, bias
corrected, epsilon outside the square root) with their own learning rate and weight decay.
`params` is a list of arrays and `grads[t][i]` the gradient of variable i at step t + 1; returns
the final params.
"""

import numpy as np

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def matrix_shape(shape) -> tuple[int, int]:
    """(fan_in, fan_out): the variable as a matrix, its last axis as the columns."""
    return int(np.prod(shape[:-1])), int(shape[-1])


def newton_schulz(matrix, *, steps=5, coefficients=NS_COEFFICIENTS, epsilon=1e-7):
    """The author's quintic Newton-Schulz iteration, in float64."""
    a, b, c = coefficients
    transposed = matrix.shape[0] > matrix.shape[1]
    x = matrix.T if transposed else matrix
    x = x / (np.linalg.norm(x) + epsilon)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if transposed else x


def shape_scale(shape, adjust_learning_rate="original") -> float:
    fan_in, fan_out = matrix_shape(shape)
    if adjust_learning_rate == "original":
        return float(np.sqrt(max(1.0, fan_out / fan_in)))
    if adjust_learning_rate == "match_rms_adamw":
        return 0.2 * float(np.sqrt(max(fan_in, fan_out)))
    if adjust_learning_rate == "spectral_unclamped":
        return float(np.sqrt(fan_out / fan_in))
    raise ValueError(adjust_learning_rate)


def muon(params, grads, *, learning_rate, momentum=0.95, nesterov=True, ns_steps=5, ns_coefficients=NS_COEFFICIENTS,
         epsilon=1e-7, adjust_learning_rate="original", flatten_kernels=True, weight_decay=0.0,
         adamw_learning_rate=3e-4, adamw_beta_1=0.9, adamw_beta_2=0.95, adamw_epsilon=1e-10,
         adamw_weight_decay=0.0, orthogonalized=None):  # fmt: skip
    """`orthogonalized[i]` False gives variable i the AdamW step (default: every variable with 2 or more
    axes is orthogonalised, with `flatten_kernels` False only the 2-D ones)."""
    params = [np.array(p, dtype=np.float64) for p in params]
    if orthogonalized is None:
        orthogonalized = [p.ndim == 2 or (p.ndim > 2 and flatten_kernels) for p in params]
    m = [np.zeros_like(w) for w in params]
    v = [np.zeros_like(w) for w in params]
    weight_decay, adamw_weight_decay = weight_decay or 0.0, adamw_weight_decay or 0.0
    for t, step_grads in enumerate(grads, start=1):
        for i, g in enumerate(step_grads):
            g = np.asarray(g, np.float64)
            w = params[i]
            if orthogonalized[i]:
                m[i] = momentum * m[i] + (1.0 - momentum) * g
                direction = (1.0 - momentum) * g + momentum * m[i] if nesterov else m[i]
                update = newton_schulz(direction.reshape(matrix_shape(w.shape)), steps=ns_steps,
                                       coefficients=ns_coefficients, epsilon=epsilon).reshape(w.shape)
                scale = shape_scale(w.shape, adjust_learning_rate)
                params[i] = w - learning_rate * weight_decay * w - learning_rate * scale * update
            else:
                m[i] = adamw_beta_1 * m[i] + (1.0 - adamw_beta_1) * g
                v[i] = adamw_beta_2 * v[i] + (1.0 - adamw_beta_2) * g * g
                m_hat = m[i] / (1.0 - adamw_beta_1**t)
                v_hat = v[i] / (1.0 - adamw_beta_2**t)
                params[i] = (w - adamw_learning_rate * adamw_weight_decay * w
                             - adamw_learning_rate * m_hat / (np.sqrt(v_hat) + adamw_epsilon))  # fmt: skip
    return params
