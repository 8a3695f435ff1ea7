"""The one markdown-table renderer: escaping, blank cells, and a report table that goes through it."""
from __future__ import annotations

import json
from pathlib import Path

from crt_bench.report.markdown import markdown_table
from crt_bench.report.missing import missing_section
from crt_bench.store.grid_status import GRID_STATUS_FILE


def test_pipes_and_line_breaks_in_cells_cannot_break_the_table() -> None:
    lines = markdown_table(["name", "why"], [["a|b", "line one\nline two\r\nthree"], [3, ""], [None, 0.5]])
    assert lines == ["| name | why |", "|---|---|", "| a\\|b | line one line two three |", "| 3 |  |", "| | 0.5 |"]
    # every row has as many unescaped separators as the header
    for line in lines:
        assert line.replace("\\|", "").count("|") == 3


def test_missing_section_escapes_a_job_error_with_a_pipe(tmp_path: Path) -> None:
    status = [{"key": "gaussian-tiny_cnn", "state": "failed", "run_id": "", "error": "ValueError: a | b\nmore",
               "log": "logs/x.out", "time": "2026-01-01T00:00:00+00:00"},
              {"key": "crt-tiny_cnn", "state": "finished", "run_id": "r", "error": "", "log": "", "time": ""}]
    (tmp_path / GRID_STATUS_FILE).write_text(json.dumps(status))
    lines = missing_section(tmp_path)
    assert "| `gaussian-tiny_cnn` | failed | ValueError: a \\| b more | `logs/x.out` |" in lines
    assert not any("crt-tiny_cnn" in line for line in lines)
