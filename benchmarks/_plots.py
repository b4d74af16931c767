"""Saving the benchmarks' figures."""

import os


def save_figure(figure, path: str) -> None:
    """Lays `figure` out, writes it to `path` as an 80-dpi PNG (making its folder) and closes it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
