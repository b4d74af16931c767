"""Sharpness-aware minimization (SAM) and adaptive SAM (ASAM), as a model wrapper.

Foret, Kleiner, Mobahi and Neyshabur (2021), "Sharpness-Aware Minimization for
Efficiently Improving Generalization", arXiv:2010.01412.
Kwon, Kim, Park and Choi (2021), "ASAM: Adaptive Sharpness-Aware Minimization for
Scale-Invariant Learning of Deep Neural Networks", arXiv:2102.11600.

SAM needs the gradient at a second, perturbed point of the same batch, so it is a
`train_step`, not an optimizer: it wraps the model and drives the compiled optimizer.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from lepton_keras.distribute.gradient_communication import sum_gradients
from lepton_keras.validation import check_bool, check_non_negative, invalid


def sharpness_aware_perturbation(gradients, variables, rho, *, adaptive: bool = False, eta=0.01) -> list:
    """e(w) = rho T_w^2 g / ||T_w g||, with T_w = |w| + eta (ASAM) or the identity (SAM).

    `gradients` and `variables` are lists of tensors of the same shapes; ||.|| is the L2
    norm over all of them together (accumulated in float32). A zero gradient gives e = 0.
    Returns e, one tensor per variable, in each gradient's dtype.
    """
    if adaptive:
        scales = [ops.abs(w) + ops.cast(eta, w.dtype) for w in variables]
        scaled = [t * g for t, g in zip(scales, gradients)]
    else:
        scaled = list(gradients)
    squared_norm = sum(ops.sum(ops.square(ops.cast(s, "float32"))) for s in scaled)
    factor = ops.divide_no_nan(ops.cast(rho, "float32"), ops.sqrt(squared_norm))
    directions = [t * s for t, s in zip(scales, scaled)] if adaptive else scaled
    return [d * ops.cast(factor, d.dtype) for d in directions]


@keras.saving.register_keras_serializable(package="lepton_keras")
class SharpnessAwareModel(keras.Model):
    """Trains a model with sharpness-aware minimization (SAM) or its adaptive form (ASAM).

    When to use it: to trade twice the training compute for flatter minima and better
    generalization, mostly in image classification (ResNets, WideResNets, ViTs) and
    under label noise. Wrap the model, compile the wrapper with any optimizer, and fit
    it; the wrapper predicts, evaluates and saves as the inner model does.

    Each training step, on the global batch B with loss L_B and trainable weights w:

        g    = grad L_B(w)                             (summed across replicas and workers)
        e(w) = rho T_w^2 g / ||T_w g||_2               (one norm over all trainable weights)
        g'   = grad L_B(w + e(w))
        w   <- optimizer update of w with gradient g'

    T_w = I for SAM; T_w = diag(|w|) + eta I, element-wise, for ASAM (`adaptive=True`),
    which makes the neighbourhood scale-invariant. T_w scales every trainable variable
    (the ASAM authors' code leaves biases unscaled). SAM's paper uses rho = 0.05 (up to
    0.1 on CIFAR); ASAM's uses a larger rho (0.5 on CIFAR-10, 1.0 on CIFAR-100) with
    eta = 0.01.

    How the step behaves:
    - The perturbation uses the global gradient, so it is the same on 1 device, N
      replicas or N workers (not the per-replica "m-sharpness" variant). The optimizer
      sums g' across replicas as usual.
    - The second pass is a stateless replay of the first at w + e (`keras.StatelessScope`):
      the weights are never written, so nothing needs restoring and w comes back bit for
      bit; the pass sees the non-trainable state from before the step, so it draws the
      same dropout masks as the first pass (as the paper's JAX code does), and its state
      updates are discarded, so BatchNormalization's moving statistics are updated once
      per step, from the first pass at w (common practice), and random seeds advance once.
    - The loss and metrics reported are those of the first pass, at w, as in the widely
      used PyTorch implementation (the paper's JAX code logs the perturbed pass instead).
    - With rho = 0 a step equals a plain training step with the same optimizer.
    - Loss scaling (`keras.optimizers.LossScaleOptimizer`, mixed precision) works: e does
      not depend on the scale, and a non-finite g makes g' non-finite, so the step is
      skipped as usual.

    Args:
        model: the `keras.Model` to train (built, as a functional or Sequential model is).
        rho: the neighbourhood radius, >= 0 (default 0.05).
        adaptive: use ASAM's scale-invariant neighbourhood (default False).
        eta: ASAM's offset in T_w = |w| + eta, >= 0 (default 0.01); unused by SAM.
        name: the wrapper's name (default None: "sharpness_aware_model").

    Example:
        inner = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
        model = SharpnessAwareModel(inner, rho=0.05)  # ASAM: adaptive=True, rho=0.5
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse", metrics=["mae"])
        model.fit(np.random.rand(64, 8), np.random.rand(64, 1), batch_size=16, epochs=2)
        model.save("sam.keras")  # keras.saving.load_model("sam.keras") returns the wrapper

    References:
        Foret et al. (2021), "Sharpness-Aware Minimization for Efficiently Improving
        Generalization", arXiv:2010.01412.
        Kwon et al. (2021), "ASAM: Adaptive Sharpness-Aware Minimization for
        Scale-Invariant Learning of Deep Neural Networks", arXiv:2102.11600.
    """

    def __init__(self, model, *, rho: float = 0.05, adaptive: bool = False, eta: float = 0.01,
                 name: str | None = None, **kwargs):  # fmt: skip
        if not isinstance(model, keras.Model):
            raise invalid("model", model, "a keras.Model")
        rho = check_non_negative("rho", rho)
        adaptive = check_bool("adaptive", adaptive)
        eta = check_non_negative("eta", eta)
        super().__init__(name=name or "sharpness_aware_model", **kwargs)
        self.model = model
        self.rho = rho
        self.adaptive = adaptive
        self.eta = eta
        if model.built:
            self.built = True

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        variables = self.trainable_variables
        # tf.convert_to_tensor reads the values now (ops.convert_to_tensor would pass the variables
        # through); the second pass replays from the state read before the first pass changes it.
        weights = [tf.convert_to_tensor(v) for v in variables]
        state_before_step = [(v, tf.convert_to_tensor(v)) for v in self.non_trainable_variables]

        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
            scaled_loss = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, variables)
        self._track_loss(loss, x)

        gradients = [ops.zeros_like(w) if g is None else tf.convert_to_tensor(g) for g, w in zip(gradients, weights)]
        # Keras losses are already divided by the replica count: the sum is the global-batch gradient.
        gradients = sum_gradients(gradients)
        perturbation = sharpness_aware_perturbation(gradients, weights, self.rho, adaptive=self.adaptive, eta=self.eta)
        perturbed = [w + e for w, e in zip(weights, perturbation)]

        with tf.GradientTape() as tape:
            tape.watch(perturbed)
            mapping = [*zip(variables, perturbed), *state_before_step]
            with keras.StatelessScope(state_mapping=mapping, collect_losses=True):
                perturbed_pred = self(x, training=True)
                perturbed_loss = self.compute_loss(
                    x=x, y=y, y_pred=perturbed_pred, sample_weight=sample_weight, training=True
                )
            scaled_perturbed_loss = self.optimizer.scale_loss(perturbed_loss)
        self.optimizer.apply(tape.gradient(scaled_perturbed_loss, perturbed), variables)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _track_loss(self, loss, x):
        """Updates the compiled loss tracker as Keras's own train_step does."""
        tracker = next((m for m in self.metrics if m.name == "loss" and isinstance(m, keras.metrics.Mean)), None)
        if tracker is None:
            return
        # Undo Keras's division by the replica count, so the logged loss is the batch mean.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        batch_size = ops.shape(next(t for t in tf.nest.flatten(x) if t is not None))[0]
        tracker.update_state(loss * ops.cast(replicas, loss.dtype), sample_weight=batch_size)

    def get_config(self):
        return {
            **super().get_config(),
            "model": keras.saving.serialize_keras_object(self.model),
            "rho": self.rho,
            "adaptive": self.adaptive,
            "eta": self.eta,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        model = keras.saving.deserialize_keras_object(config.pop("model"), custom_objects=custom_objects)
        return cls(model, **config)
