"""The one-node SLURM cluster of the slurm-marked tests (tests/slurm/cluster.sh), as a session fixture.

Registered for every test module by ``conftest.py`` (one cluster a session, whichever modules use it):
started where it can be (root, Debian's slurm and munge packages) and stopped after; elsewhere the tests
that use it skip with the script's reason, or fail under ``CRT_BENCH_REQUIRE_SLURM=1`` (set by ``.ci/run``).
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "slurm" / "cluster.sh"


def _unavailable(reason: str) -> None:
    if os.environ.get("CRT_BENCH_REQUIRE_SLURM") == "1":
        pytest.fail(f"CRT_BENCH_REQUIRE_SLURM=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    """The cluster's folder (slurm.conf, logs); SLURM_CONF points at it for the session."""
    folder = tmp_path_factory.mktemp("slurm")
    started = subprocess.run(["bash", str(SCRIPT), "start", str(folder)], capture_output=True, text=True, timeout=120)
    if started.returncode != 0:
        said = started.stderr.strip().splitlines()
        _unavailable(f"no SLURM cluster: {said[-1] if said else f'exit status {started.returncode}'}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", str(folder / "slurm.conf"))
        try:
            yield folder
        finally:
            subprocess.run(["bash", str(SCRIPT), "stop", str(folder)], capture_output=True, timeout=120)
