"""The one-node SLURM cluster the ``slurm``-marked tests submit to (tests/slurm/cluster.sh).

Started once per session where it can be (root, Debian's slurm and munge packages), stopped after. Elsewhere
the slurm tests skip with the script's reason; with ``CRT_BENCH_REQUIRE_SLURM=1`` (set by ``.ci/run`` where it
installed the packages) a cluster that does not start fails them instead, so CI cannot pass by skipping.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "cluster.sh"


def _unavailable(reason: str) -> None:
    if os.environ.get("CRT_BENCH_REQUIRE_SLURM") == "1":
        pytest.fail(f"CRT_BENCH_REQUIRE_SLURM=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    """The cluster's folder (slurm.conf, logs); SLURM_CONF points at it for the session."""
    folder = tmp_path_factory.mktemp("slurm")
    started = subprocess.run(["bash", str(SCRIPT), "start", str(folder)], capture_output=True, text=True,
                             timeout=120)
    if started.returncode != 0:
        _unavailable(f"no SLURM cluster: {started.stderr.strip().splitlines()[-1] if started.stderr.strip() else started.returncode}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", str(folder / "slurm.conf"))
        try:
            yield folder
        finally:
            subprocess.run(["bash", str(SCRIPT), "stop", str(folder)], capture_output=True, timeout=120)
