"""Float64 NumPy reference of ADOPT: Taniguchi et al. (2024), arXiv:2411.02853, with the clipping of its update.

"ADOPT: Modified Adam Can Converge with Any beta_2 with the Optimal Rate". The first gradient only
sets v_0 = g_0^2; the t-th update (t = 1, 2, ...) clips the normalised gradient to +-t^clip_exponent
(the paper's c_t = t^(1/4); None: no clipping). `params` is a list of arrays and `grads[s][i]` the
gradient of variable i at call s + 1; returns the final params. `weight_decay` is the decoupled decay of
the authors' code (decouple=True): w <- w - learning_rate * weight_decay * w before each update, none on
the first call.
"""

import numpy as np


def adopt(params, grads, *, learning_rate=1e-3, beta_1=0.9, beta_2=0.9999, epsilon=1e-6, clip_exponent=0.25,
          weight_decay=0.0):  # fmt: skip
    w = [np.array(p, dtype=np.float64) for p in params]
    m = [np.zeros_like(p) for p in w]
    v = None
    for t, step_grads in enumerate(grads):
        g = [np.array(gi, dtype=np.float64) for gi in step_grads]
        if v is None:
            v = [gi * gi for gi in g]
            continue
        clip = np.inf if clip_exponent is None else float(t) ** clip_exponent
        for i in range(len(w)):
            normalized = np.clip(g[i] / np.maximum(np.sqrt(v[i]), epsilon), -clip, clip)
            m[i] = beta_1 * m[i] + (1.0 - beta_1) * normalized
            w[i] = w[i] - learning_rate * (weight_decay or 0.0) * w[i] - learning_rate * m[i]
            v[i] = beta_2 * v[i] + (1.0 - beta_2) * g[i] * g[i]
    return w
