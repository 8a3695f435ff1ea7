"""The one markdown-table renderer every report table goes through.

A cell is ``str(value)`` with ``|`` escaped (``\\|``) and line breaks turned into spaces, so a job's error
message or an odd run name cannot break the table; ``None`` is a blank cell (``| |``), ``""`` an empty
value (``|  |``).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_cell(value: object) -> str:
    """``value`` as the text of one cell: ``|`` escaped, line breaks as spaces."""
    text = str(value).replace("|", "\\|")
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


def markdown_row(cells: Sequence[object]) -> str:
    return "|" + "|".join(" " if cell is None else f" {markdown_cell(cell)} " for cell in cells) + "|"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """The table's lines: the header, the ``|---|`` rule, one line per row (no trailing blank line)."""
    return [markdown_row(header), "|" + "---|" * len(header), *(markdown_row(row) for row in rows)]


__all__ = ["markdown_cell", "markdown_row", "markdown_table"]
