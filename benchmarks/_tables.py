"""Markdown tables for the benchmarks' results."""

import os


def write_markdown_table(header: list[str], rows: list[list[str]], path: str) -> str:
    """Writes a markdown table of `header` and `rows` (lists of cells) to `path` and returns its text."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as file:
        file.write(text)
    return text
