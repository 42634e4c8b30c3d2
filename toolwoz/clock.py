"""Timestamps as the warehouse stores them: naive UTC (DuckDB `TIMESTAMP` columns carry no time zone)."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """The current time in UTC, without tzinfo."""
    return datetime.now(UTC).replace(tzinfo=None)
