"""On-air bytes per payload byte of each run's training messages, from the link relay's
events (roles/link.py records payload `bytes`, `onair_bytes`, `airtime_s` and the message's `msg_kind` per message,
from link/airtime.py). Summary figures stay in payload bytes (pinned by the regression);
claims about what a network interface carried multiply by this factor."""
from __future__ import annotations

import math

import pandas as pd

from ..transport.wire import Kind

_TRAINING = (int(Kind.TRAIN), int(Kind.TRAIN_REPLY))


def onair_factor(record: pd.DataFrame) -> float:
    link = record[record["event"] == "link"] if "event" in record else record.iloc[0:0]
    if link.empty or "onair_bytes" not in link:
        return math.nan
    kind = "msg_kind" if "msg_kind" in link else "kind" if "kind" in link else None  # records before 2026-12-02: kind
    if kind:
        link = link[link[kind].isin(_TRAINING)]
    payload = float(link["bytes"].sum())
    return float(link["onair_bytes"].sum()) / payload if payload > 0 else math.nan


def onair_factors(records: dict[str, pd.DataFrame]) -> dict[str, float]:
    return {name: onair_factor(rec) for name, rec in records.items()}
