"""Shared runtime helpers for jobs: attaching to Ray, run ids, and progress with rate and ETA."""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass, field

log = logging.getLogger("star")


def ensure_ray(address: str | None = None, num_cpus: int | None = None, object_store_memory: int | None = None) -> None:
    """Attach to Ray once per process.

    ``address`` (or ``RAY_ADDRESS``) names a running cluster (``ray://``, ``host:port`` or
    ``auto``); with neither, a local Ray is started in-process (``address="local"``), so a
    laptop needs nothing running; ``num_cpus`` and ``object_store_memory`` (bytes) size that
    local Ray only. Token auth is off for the embedded local cluster unless
    ``RAY_AUTH_MODE`` says otherwise.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    target = address or os.environ.get("RAY_ADDRESS")
    if target:
        ray.init(address=target, log_to_driver=True)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address="local", num_cpus=num_cpus, object_store_memory=object_store_memory, include_dashboard=False, log_to_driver=True)
    try:
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = sys.stderr.isatty() and not os.environ.get("TQDM_DISABLE")
    except Exception:  # Ray Data not installed in a minimal image
        pass


def new_run_id(prefix: str) -> str:
    """Sortable, unique run id: ``<prefix>-YYYYmmddTHHMMSS-<hex>``."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{prefix}-{stamp}-{uuid.uuid4().hex[:6]}"


@dataclass
class Progress:
    """Periodic progress lines with counts, rate and ETA (every ``every_s`` seconds and at the end).

    Works the same in a terminal, in `ray job logs` and in Prefect's log view (plain lines, no
    carriage returns). ``unit`` names what ``done`` counts; ``extra`` counters (e.g. segments)
    get their own rate.
    """

    total: int
    what: str = "videos"
    every_s: float = 5.0
    logger: logging.Logger = field(default=log)
    done: int = 0
    failed: int = 0
    extra: dict[str, float] = field(default_factory=dict)
    _t0: float = field(default_factory=time.monotonic)
    _last: float = 0.0

    def update(self, done: int = 0, failed: int = 0, **extra: float) -> None:
        self.done += done
        self.failed += failed
        for k, v in extra.items():
            self.extra[k] = self.extra.get(k, 0.0) + v
        now = time.monotonic()
        if now - self._last >= self.every_s or self.done + self.failed >= self.total:
            self._last = now
            self.logger.info(self.line())

    def line(self) -> str:
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        finished = self.done + self.failed
        rate = finished / elapsed
        remaining = max(self.total - finished, 0)
        eta = remaining / rate if rate > 0 else float("nan")
        parts = [f"{self.what}: {self.done} done, {self.failed} failed, {remaining} remaining of {self.total}", f"{rate:.2f} {self.what}/s"]
        parts += [f"{v / elapsed:.1f} {k}/s" for k, v in self.extra.items()]
        parts.append(f"elapsed {elapsed:.0f} s, ETA {eta:.0f} s" if remaining else f"elapsed {elapsed:.0f} s")
        return " | ".join(parts)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._t0
