"""The README's Python blocks run as written, top to bottom, in one namespace (as a reader
pastes them into one session), from a fresh working directory."""

import os
import re

import pytest

from tests.support.harness import REPO_ROOT


def readme_python_blocks() -> list[tuple[int, str]]:
    """(first line number, code) of every ```python block of README.md."""
    text = open(os.path.join(REPO_ROOT, "README.md")).read()
    return [(text[: match.start()].count("\n") + 2, match.group(1))
            for match in re.finditer(r"^```python\n(.*?)^```$", text, re.S | re.M)]  # fmt: skip


def test_the_readme_has_python_blocks():
    assert len(readme_python_blocks()) >= 8


def test_every_python_block_of_the_readme_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__readme__"}
    for line, code in readme_python_blocks():
        try:
            exec(compile(code, f"README.md, block at line {line}", "exec"), namespace)
        except Exception as error:
            pytest.fail(f"README.md block at line {line} failed: {type(error).__name__}: {error}")
    assert os.path.exists(tmp_path / "run" / "ckpt" / "epoch_2.keras")
    assert os.path.exists(tmp_path / "log.csv")
