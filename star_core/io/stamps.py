"""Stamps the lake's writers put on what they write: the current UTC time and content digests."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Iterable


def utc_now() -> dt.datetime:
    """Now, timezone-aware UTC (the ``created_at`` / ``finished_at`` columns)."""
    return dt.datetime.now(dt.timezone.utc)


def digest_of(items: Iterable[str], n: int = 16) -> str:
    """First ``n`` hex digits of the SHA-1 of ``items`` (order matters; NUL-separated, so ('ab',) != ('a', 'b'))."""
    h = hashlib.sha1()
    for item in items:
        h.update(item.encode())
        h.update(b"\0")
    return h.hexdigest()[:n]
