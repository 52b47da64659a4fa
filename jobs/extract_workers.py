"""The Ray side of the extract job: the CPU task (decode + flow) and the I3D actor.

Both are plain functions/classes here; ``jobs.extract`` wraps them with ``ray.remote`` options
(CPUs, GPUs, retries) at submit time. Each reads a video exactly once (:func:`open_video`),
turns a :class:`~star_core.video.errors.VideoError` into a ``failed`` status with its reason
(the run goes on), and lets anything else propagate so Ray retries it (worker crash, transient
I/O error) up to ``max_retries`` times.

Fault injection (tests only): ``STAR_EXTRACT_FAULT="<stage>:<video_id>:<marker path>"`` in the
driver's environment (several specs separated by ``,``), with stage ``prepare`` or ``embed``,
makes the first attempt at that video in that stage kill its worker process (``os._exit``);
the marker file records that it happened, so the retry succeeds. The driver reads the variable and passes it along, so it
works on a cluster whose workers were started with another environment.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from star_core.data import VideoFeatures
from star_core.io.inputs import open_video, video_id_from_uri

log = logging.getLogger("star.extract")

FAULT_ENV = "STAR_EXTRACT_FAULT"


def maybe_inject_fault(fault: str | None, stage: str, video_id: str) -> None:
    """Kill this worker process on the first attempt at ``video_id`` in ``stage`` (see module docstring)."""
    for spec in (fault or "").split(","):
        if not spec.strip():
            continue
        want_stage, want_id, marker = spec.strip().split(":", 2)
        if want_stage != stage or want_id != video_id or os.path.exists(marker):
            continue
        with open(marker, "w") as fh:
            fh.write(f"{stage} {video_id} pid {os.getpid()}\n")
        log.warning("fault injection: killing worker %d at %s of %s", os.getpid(), stage, video_id)
        os._exit(1)


def prepare(uri: str, features_cfg: Any, max_in_memory_bytes: int, fault: str | None = None, flow_workers: int = 1) -> tuple[dict, Any]:
    """CPU stage of one video: read once, decode, resample, crop, flow (``tvl1-torch``: decode and resize only;
    the actor computes the flow on its device).

    Args:
        uri: the video (any fsspec URL or local path).
        features_cfg: the ``FeatureConfig``.
        max_in_memory_bytes: remote videos up to this size are fetched whole in one request.
        fault: test-only fault spec (module docstring).
        flow_workers: optical-flow threads (the CPUs the task reserved).

    Returns:
        ``(status, prepared)``: status ``{"ok", "reason", "n_segments", "prepare_s"}`` (small, for
        the driver) and the ``PreparedVideo`` / ``DecodedVideo`` (large, passed by reference to an actor), or
        ``None`` when the video failed.
    """
    from star_core.video import VideoError, prepare_video

    t0 = time.monotonic()
    video_id = video_id_from_uri(uri)
    maybe_inject_fault(fault, "prepare", video_id)
    try:
        with open_video(uri, max_in_memory_bytes) as source:
            prepared = prepare_video(source, features_cfg, source_uri=uri, flow_workers=flow_workers)
    except VideoError as err:
        return {"ok": False, "reason": f"{type(err).__name__}: {err.reason}", "n_segments": None, "prepare_s": time.monotonic() - t0}, None
    except FileNotFoundError as err:  # deleted between listing and processing
        return {"ok": False, "reason": f"MissingVideoError: {err}", "n_segments": None, "prepare_s": time.monotonic() - t0}, None
    return {"ok": True, "reason": None, "n_segments": int(prepared.n_segments), "prepare_s": time.monotonic() - t0}, prepared


class Embedder:
    """Holds one I3D extractor (both streams) for the actor's lifetime; embeds prepared videos."""

    def __init__(self, features_cfg: Any, device: str, env: dict[str, str] | None = None) -> None:
        for key, value in (env or {}).items():  # endpoints for weights on object storage (never credentials)
            os.environ.setdefault(key, value)
        from star_core.video import I3DExtractor

        t0 = time.monotonic()
        self.device = device
        self.extractor = I3DExtractor(features_cfg, device=device)
        log.info("I3D actor ready on %s in %.1f s (pid %d)", device, time.monotonic() - t0, os.getpid())

    def embed(self, prepared: Any, uri: str, fault: str | None = None) -> tuple[VideoFeatures, float]:
        """Two-stream features of one prepared video; returns ``(features, seconds)``."""
        t0 = time.monotonic()
        video_id = video_id_from_uri(uri)
        maybe_inject_fault(fault, "embed", video_id)
        feats = self.extractor.embed(prepared, video_id)
        feats.source_uri = uri
        return feats, time.monotonic() - t0

    def feature_set(self) -> str:
        """The feature set this actor's weights produce (the driver checks it)."""
        return self.extractor.feature_set
