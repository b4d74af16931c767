"""The README's Python blocks run as written, top to bottom, in one namespace (as a reader
pastes them into one session), from a fresh working directory; its tutorial commands take the
tutorial's flags."""

import os
import re
import shlex

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


def readme_tutorial_commands() -> list[list[str]]:
    """The arguments of every tutorials/cifar10_cnn.py command in the README's ```bash blocks."""
    text = open(os.path.join(REPO_ROOT, "README.md")).read()
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```$", text, re.S | re.M):
        for command in block.replace("\\\n", " ").splitlines():
            words = shlex.split(command, comments=True)
            if "tutorials/cifar10_cnn.py" in words:
                commands.append(words[words.index("tutorials/cifar10_cnn.py") + 1:])
    return commands


def test_the_readme_s_tutorial_commands_take_the_tutorial_s_flags():
    from tests.support.cases import tutorial_module

    tutorial = tutorial_module()
    commands = readme_tutorial_commands()
    assert any("large-batch" in command for command in commands)
    for command in commands:
        tutorial.resolve_recipe(tutorial.parse_args(command))  # argparse exits on an unknown flag
