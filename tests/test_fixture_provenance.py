"""The repository is self-contained: shipped fixtures match their recorded provenance, and nothing the
tests, the package or the Makefile use reaches outside the repository folder."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOGS = REPO / "tests" / "data" / "certify_logs"


def recorded_sums() -> dict[str, str]:
    text = (LOGS / "README.md").read_text()
    return {name: digest for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", text, flags=re.M)}


def test_every_shipped_log_matches_the_sha256_in_its_readme() -> None:
    sums = recorded_sums()
    shipped = sorted(p.name for p in LOGS.glob("*.tsv"))
    assert shipped and sorted(sums) == shipped, "every shipped log, and only those, has a recorded sha256"
    for name, digest in sums.items():
        assert hashlib.sha256((LOGS / name).read_bytes()).hexdigest() == digest, f"{name} differs from its source"


def test_every_shipped_log_has_a_provenance_row() -> None:
    text = (LOGS / "README.md").read_text()
    for path in LOGS.glob("*.tsv"):
        row = next((line for line in text.splitlines() if line.startswith(f"| {path.name} |")), None)
        assert row is not None, f"{path.name} has no provenance row"
        assert "@" in row, f"{path.name}: the row names no repository commit"
        rows = int(row.split("|")[4].strip())
        assert rows == path.read_bytes().count(b"\n") - 1, f"{path.name}: recorded row count is stale"


def test_nothing_reads_outside_the_repository() -> None:
    """No path that climbs above the repository (the team's sibling folders do not exist for users)."""
    climbing = re.compile(r"parents\[\d+\]\.parent|\.\./shared|/shared/reference|\"\.\.\"")
    offenders = []
    for path in [*REPO.glob("crt_bench/**/*.py"), *REPO.glob("tests/**/*.py"), *REPO.glob("benchmarks/*.py"),
                 REPO / "Makefile", REPO / ".ci" / "run"]:
        if path == Path(__file__):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if climbing.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
