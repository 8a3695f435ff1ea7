"""Recertification without sampling: a certification's rows at another alpha, from the counts they keep.

A certify row keeps the class ``c_a`` its selection samples chose, ``nA`` of the ``n`` estimation samples and
``n_counted`` (:data:`~crt_bench.store.schema.COUNT_COLUMNS`).  Neither ``c_a`` nor ``nA`` depends on alpha, so
CERTIFY at another alpha is :func:`~crt_bench.certify.stats.certificate` of the same counts: the row a fresh
certification with the same (keyed) noise at that alpha gives.

Exact early abstention (:mod:`crt_bench.certify.early_stop`) stopped an image once ``nA`` could no longer reach
the certifying count ``m(alpha)``; its counts are partial (``n_counted < n``).  A stricter alpha needs a count
``m(alpha') >= m(alpha)``, so the image abstains there too: partial counts decide it.  A looser alpha needs
fewer votes, which the samples never drawn might have given: such an image is *undecided*, named in the
result and left out of its rows, never guessed.

The result is printed (``crt-bench recertify``), not stored: a stored certification is one whose noise was
sampled under its key (``--alpha`` included), and the verdict and report read stored certifications as evidence;
a recomputed one would stand beside them with seconds it never spent.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from crt_bench.certify.stats import certificate
from crt_bench.core.checks import check_alpha
from crt_bench.core.constants import IMPORT_PREFIX
from crt_bench.core.errors import CrtBenchError
from crt_bench.core.states import RunStatus
from crt_bench.store.schema import COUNT_COLUMNS, run_id_of
from crt_bench.store.store import ResultsStore


@dataclass(frozen=True)
class Recertified:
    """``rows``: the decided images' rows at ``alpha`` (``predict``, ``radius``, ``correct``, ``p_a_lower`` and
    ``alpha`` recomputed, every other column as stored); ``undecided``: the images (``idx``) whose partial counts
    cannot decide them at ``alpha``; ``source``: the certification recomputed, certified at ``source_alpha``."""

    source: str
    source_alpha: float
    alpha: float
    rows: pd.DataFrame
    undecided: list[int] = field(default_factory=list)


def recertify_rows(rows: pd.DataFrame, alpha: float, source: str = "") -> Recertified:
    """The certify ``rows`` of one certification recomputed at ``alpha`` (see the module docstring)."""
    alpha = check_alpha(alpha, "--alpha")
    if rows.empty:
        raise CrtBenchError(f"certification {source} has no rows to recertify")
    missing = [c for c in COUNT_COLUMNS if c not in rows or rows[c].isna().any()]
    if missing:
        raise CrtBenchError(f"certification {source} has no stored counts ({', '.join(missing)}): it was written "
                            "before certify rows kept their counts, or is an imported log; certify it again to "
                            "recertify it at another alpha")
    if "procedure" in rows and (rows["procedure"].fillna("certify") != "certify").any():
        raise CrtBenchError(f"certification {source} is transferred (incremental smoothing), not CERTIFY; "
                            "recertify its teacher's certification")
    settings = rows[["n0", "n", "alpha", "sigma"]].drop_duplicates()
    if len(settings) != 1:
        raise CrtBenchError(f"certification {source} mixes settings {settings.to_dict('records')}")
    n, source_alpha, sigma = int(settings["n"].iloc[0]), float(settings["alpha"].iloc[0]), float(settings["sigma"].iloc[0])
    partial = rows["n_counted"].to_numpy() < n
    undecided = partial & (alpha > source_alpha)
    kept = rows[~undecided].copy()
    certificates = [certificate(int(r.c_a), int(r.selection_count), int(r.n_a), int(r.n_counted), n, alpha, sigma)
                    for r in kept.itertuples()]
    kept["predict"] = np.asarray([c.predict for c in certificates], dtype=np.int64)
    kept["radius"] = np.asarray([c.radius for c in certificates], dtype=np.float64)
    kept["correct"] = (kept["predict"] == kept["label"]).astype(np.int64)
    kept["p_a_lower"] = np.asarray([c.p_a_lower for c in certificates], dtype=np.float64)
    kept["alpha"] = np.float64(alpha)
    return Recertified(source, source_alpha, alpha, kept.reset_index(drop=True),
                       sorted(int(i) for i in rows.loc[undecided, "idx"]))


def recertify(store: ResultsStore, cert_id: str, alpha: float) -> Recertified:
    """:func:`recertify_rows` of the finished certification ``cert_id`` in ``store``; one-line errors for an
    unknown, unfinished or transferred certification and for one written before the counts were kept."""
    check_alpha(alpha, "--alpha")
    states = store.certification_states(run_id=run_id_of(cert_id), transfers=True)
    mine = states[states["cert_id"] == cert_id] if "cert_id" in states else states
    if mine.empty and run_id_of(cert_id).startswith(IMPORT_PREFIX):  # an imported log: rows, no states
        return recertify_rows(store.certification_rows(cert_id), alpha, cert_id)
    if mine.empty:
        raise CrtBenchError(f"no certification {cert_id!r} in {store.root} (give a cert id that crt-bench certify "
                            "printed)")
    status = str(mine["status"].iloc[-1])
    if status != RunStatus.FINISHED:
        raise CrtBenchError(f"certification {cert_id} is {status}, not finished; run its crt-bench certify command "
                            "to the end first")
    return recertify_rows(store.certification_rows(cert_id), alpha, cert_id)
