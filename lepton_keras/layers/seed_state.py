"""Saving the state of a layer's random draws with the model."""

from __future__ import annotations


class SavesSeedState:
    """Mixin for a layer that draws from `self.seed_generator`: its state is saved with the
    model, so a reloaded model goes on with the draws where it stopped (Keras's Dropout
    starts again from its seed)."""

    def save_own_variables(self, store):
        store["seed_generator_state"] = self.seed_generator.state

    def load_own_variables(self, store):
        if "seed_generator_state" in store.keys():
            self.seed_generator.state.assign(store["seed_generator_state"])
