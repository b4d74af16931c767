"""Models the harness trains by name for tests/distribute (see tests/support/harness.py)."""

from tests.support.cases import tutorial_module

# The tutorial's large-batch recipe derived for this batch (LAMB, its rate and warmup), trained
# in the harness at its own small global batch: the strategies must agree on any recipe.
LARGE_BATCH = 2048
TOTAL_STEPS = 30


def _large_batch_training():
    tutorial = tutorial_module()
    recipe = tutorial.large_batch_recipe(LARGE_BATCH, epochs=30)
    return tutorial, recipe, tutorial.build_training(recipe, TOTAL_STEPS)


def tutorial_cnn_large_batch_recipe():
    """The tutorial CNN compiled with the large-batch recipe for batch 2048 (its optimizer, schedule, loss)."""
    tutorial, _, (optimizer, loss, _) = _large_batch_training()
    model = tutorial.build_model()
    model.compile(optimizer=optimizer, loss=loss)
    return model


def large_batch_recipe_callbacks():
    """The recipe's callbacks (CycleMomentum of its one-cycle schedule)."""
    return _large_batch_training()[2][2]


def regression_network(optimizer: str = "sgd", learning_rate: float = 0.05):
    """The two-layer tanh network of tests/distribute/reference/periodic_sync.py, compiled with mse.

    `optimizer`: "sgd" (momentum 0.9), "adam", or "lookahead_adam" (lepton_keras's Lookahead, k=2,
    alpha 0.5, around Adam): Keras's path and a lepton_keras wrapper.
    """
    import keras

    from lepton_keras.optimizers import Lookahead

    make = {
        "sgd": lambda: keras.optimizers.SGD(learning_rate, momentum=0.9),
        "adam": lambda: keras.optimizers.Adam(learning_rate),
        "lookahead_adam": lambda: Lookahead(keras.optimizers.Adam(learning_rate), sync_period=2, slow_step_size=0.5),
    }[optimizer]
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(2)])
    model.compile(optimizer=make(), loss="mse")
    return model
