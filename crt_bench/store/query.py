"""The one "latest row per key" query every reader of the results uses.

The store's tables are append-only: a run's state, a certification's state, an epoch or an image
written again after a resume are new rows, and the row that counts is the newest one per key.  Which
row is newest is decided here, once: the last in ``order`` (a stable sort, so ties keep the order the
rows came in; the store returns rows in write order), or the last as given when ``order`` is None.
"""
from __future__ import annotations

from collections.abc import Sequence

import pandas as pd


def newest(frame: pd.DataFrame, by: str | Sequence[str], *, order: str | Sequence[str] | None = None,
           dropna: bool = False) -> pd.DataFrame:
    """The last row of ``frame`` per value of ``by`` (after a stable sort by ``order``), in that order.

    ``dropna``: rows whose ``by`` value is missing are dropped (otherwise they form a group of their own).
    """
    if frame.empty:
        return frame
    keys = [by] if isinstance(by, str) else list(by)
    if order is not None:
        frame = frame.sort_values([order] if isinstance(order, str) else list(order), kind="stable")
    return frame.groupby(keys, sort=False, dropna=dropna).tail(1)
