"""What a detection run leaves behind: detections files, its manifest, its MLflow run and timelines.

    detections/model=<name>-v<ver>/date=<date>/part-<run>-<shard>.parquet   (one file per shard with detections)
    manifests/detect/<run>.parquet                                          (done | failed | skipped, with reason)
    MLflow run (experiment ``star-detect``): model, selection, counts, partition URIs, a few timeline PNGs

The MLflow run id is the ``run_id`` column of every detection written and names the files and
the manifest, so any row can be traced back to the exact model version and run.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import pyarrow as pa

from jobs.detect.inputs import DetectInputs
from jobs.detect.planning import JOB, DetectPlan, selection_text
from star_core.config import StarConfig
from star_core.data import Detection
from star_core.io import detections as detio
from star_core.io import manifests, schemas
from star_core.io.lake import Lake

log = logging.getLogger("star.detect")


@dataclass
class DetectRunResult:
    """Summary of one detection run (also logged to its MLflow run)."""

    run_id: str  # MLflow run id: the detections' run_id column, file names, manifest name
    model_name: str
    model_version: str
    model_uri: str  # the pinned registry URI the actors loaded
    feature_set: str
    date: str
    processed: int = 0  # videos detected (done)
    failed: int = 0  # videos whose features or detection failed (see the manifest)
    skipped: int = 0  # videos in the selection already done for this model version, or without features
    detections_written: int = 0
    segments_processed: int = 0
    files: list[str] = field(default_factory=list)  # detections files written (URIs)
    partitions: list[str] = field(default_factory=list)  # partition directories written (URIs)
    manifest_uri: str = ""
    elapsed_s: float = 0.0
    model_s: float = 0.0  # summed model time over all actors
    failures: list[tuple[str, str]] = field(default_factory=list)  # (video_id, reason)
    shard_count: int = 0  # shards flushed (files are written only for shards with detections)
    startup_s: float = 0.0  # seconds from the job's start to the first detected batch (planning, actors, model load)
    first_batch_videos: int = 0  # videos in that first batch (for steady-state rates)

    @property
    def videos_per_s(self) -> float:
        return (self.processed + self.failed) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def segments_per_s(self) -> float:
        return self.segments_processed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"videos_per_s": self.videos_per_s, "segments_per_s": self.segments_per_s}

    def summary(self) -> str:
        lines = [
            f"detection run {self.run_id}: model {self.model_name} v{self.model_version} on feature set {self.feature_set}",
            f"  videos: {self.processed} processed, {self.failed} failed, {self.skipped} skipped",
            f"  detections written: {self.detections_written} in {len(self.files)} file(s)",
            f"  throughput: {self.videos_per_s:.2f} videos/s, {self.segments_per_s:.0f} segments/s ({self.elapsed_s:.1f} s)",
        ]
        lines += [f"  partition: {p}" for p in self.partitions]
        lines += [f"  failed: {vid}: {reason}" for vid, reason in self.failures[:20]]
        if len(self.failures) > 20:
            lines.append(f"  ... {len(self.failures) - 20} more failures in {self.manifest_uri}")
        lines.append(f"  manifest: {self.manifest_uri}")
        return "\n".join(lines)

    def metrics(self) -> dict[str, float]:
        """The run's counts and rates as MLflow metrics."""
        return {
            "videos_processed": self.processed,
            "videos_failed": self.failed,
            "videos_skipped": self.skipped,
            "detections_written": self.detections_written,
            "segments_processed": self.segments_processed,
            "videos_per_s": self.videos_per_s,
            "segments_per_s": self.segments_per_s,
            "elapsed_s": self.elapsed_s,
            "model_s": self.model_s,
            "startup_s": self.startup_s,
            "files_written": len(self.files),
        }


class DetectRecorder:
    """Records one detection run: opens its MLflow run, writes shards and the manifest, closes the run.

    Args:
        lake: the lake written to.
        cfg: the settings (``detect``: model URI, experiment, timelines to log; ``resources``).
        inputs: the run's selection and caller's run id.
        tracking_uri: MLflow tracking URI.
        model: the pinned model (``jobs.tracking.ModelRef``: name, version, alias, uri).
        feature_set: the feature set read.
        date: the partition date YYYY-MM-DD.
        plan: what the run processes and skips.
        extract_failures: video id -> why its extraction failed (``videos`` input only).
        t_start: ``time.monotonic()`` at the job's start (elapsed and startup times count from it).
    """

    def __init__(
        self,
        lake: Lake,
        cfg: StarConfig,
        inputs: DetectInputs,
        tracking_uri: str,
        model: Any,
        feature_set: str,
        date: str,
        plan: DetectPlan,
        extract_failures: dict[str, str],
        t_start: float,
    ) -> None:
        from jobs import tracking

        self.lake, self.cfg, self.tracking_uri, self.model, self.date, self.t_start = lake, cfg, tracking_uri, model, date, t_start
        params = {
            "model_name": model.name,
            "model_version": model.version,
            "model_alias": model.alias or "",
            "model_uri": cfg.detect.model_uri,
            "model_uri_pinned": model.uri,
            "feature_set": feature_set,
            "selection": selection_text(inputs),
            "date": date,
            "batch_size": cfg.detect.batch_size,
            "num_actors": cfg.resources.actors,
            "use_gpu": bool(cfg.resources.gpu),
            "videos_selected": len(plan.selected),
        }
        self.run_id = tracking.start_detect_run(
            tracking_uri,
            cfg.detect.experiment,
            run_name=inputs.run_id,
            params=params,
            lake=lake,
            tags={"star.job_run_id": inputs.run_id or ""},
        )
        self.result = DetectRunResult(
            run_id=self.run_id, model_name=model.name, model_version=model.version, model_uri=model.uri, feature_set=feature_set, date=date
        )
        self.manifest_parts: list[pa.Table] = []
        self.timelines: dict[str, tuple[list[Detection], float | None]] = {}
        self._record_unprocessed(plan, extract_failures)

    def _record_unprocessed(self, plan: DetectPlan, extract_failures: dict[str, str]) -> None:
        """Count the skipped videos; a video without features is ``failed`` if its extraction failed, else ``skipped``."""
        result = self.result
        unextracted = [vid for vid in plan.missing if vid in extract_failures]
        result.skipped = plan.n_done + plan.n_stale_failures + len(plan.missing) - len(unextracted)
        result.failed = len(unextracted)
        result.failures = [(vid, f"extraction failed: {extract_failures[vid]}") for vid in unextracted]
        if plan.missing:
            no_features = f"no features in feature set {self.result.feature_set!r}"
            rows = [
                manifests.manifest_row(JOB, self.run_id, vid, "failed", reason=f"extraction failed: {extract_failures[vid]}")
                if vid in extract_failures
                else manifests.manifest_row(JOB, self.run_id, vid, "skipped", reason=no_features)
                for vid in plan.missing
            ]
            self.manifest_parts.append(_manifest(rows))

    def first_batch(self, n_videos: int) -> None:
        """The pipeline's first results arrived (``n_videos`` of them): the startup time ends."""
        self.result.startup_s = time.monotonic() - self.t_start
        self.result.first_batch_videos = n_videos
        log.info("first results after %.1f s (actors started, model loaded)", self.result.startup_s)

    def record_shard(self, shard: pa.Table) -> None:
        """Write one shard's detections file and add its videos to the manifest and the counts.

        The file is written only when the shard holds detections (a rerun that finds nothing new, or
        only failures, leaves no trace in the partitions). Manifest ``output``: the file for videos
        with detections, else the partition directory (``.../model=<name>-v<ver>/date=<date>/``),
        so failed and empty videos are attributed to the model version too.
        """
        lake, model, result, run_id = self.lake, self.model, self.result, self.run_id
        partition_path = lake.detections_dir(model.name, model.version, self.date)
        path = detio.shard_path(lake, model.name, model.version, self.date, run_id, result.shard_count)
        result.shard_count += 1
        partition_uri, file_uri = lake.uri_of(partition_path) + "/", lake.uri_of(path)
        rows = shard.to_pylist()
        dets = [
            Detection(r["video_id"], lab, s, e, sc)
            for r in rows
            if r["status"] == "done"
            for lab, s, e, sc in zip(r["labels"], r["t_start_s"], r["t_end_s"], r["score"])
        ]
        if dets:
            table = detio.detections_to_table(
                dets,
                model_name=model.name,
                model_version=model.version,
                model_uri=model.uri,
                run_id=run_id,
                feature_set=result.feature_set,
                detected_at=dt.datetime.now(dt.timezone.utc),
            )
            detio.write_detections(lake, path, table)
            result.files.append(file_uri)
            result.detections_written += table.num_rows
            if partition_uri.rstrip("/") not in result.partitions:
                result.partitions.append(partition_uri.rstrip("/"))
        manifest = []
        for r in rows:
            done = r["status"] == "done"
            output = file_uri if done and r["labels"] else partition_uri
            manifest.append(
                manifests.manifest_row(
                    JOB,
                    run_id,
                    r["video_id"],
                    r["status"],
                    reason=r["reason"],
                    duration_s=r["model_s"],
                    n_segments=r["n_segments"],
                    output=output,
                )
            )
            if done:
                result.processed += 1
                result.segments_processed += r["n_segments"] or 0
                result.model_s += r["model_s"] or 0.0
                if r["labels"] and len(self.timelines) < self.cfg.detect.timelines_logged:
                    self.timelines[r["video_id"]] = ([d for d in dets if d.video_id == r["video_id"]], r["duration_s"])
            else:
                result.failed += 1
                result.failures.append((r["video_id"], r["reason"]))
                log.warning("video %s failed: %s", r["video_id"], r["reason"])
        self.manifest_parts.append(_manifest(manifest))

    def finish(self, status: str, ground_truth: dict[str, Any]) -> DetectRunResult:
        """Write the manifest and close the MLflow run (``FINISHED`` or ``FAILED``) with metrics, tags and timelines."""
        from jobs import tracking

        result = self.result
        rows = pa.concat_tables(self.manifest_parts).to_pylist() if self.manifest_parts else []
        result.manifest_uri = self.lake.uri_of(manifests.write_manifest(self.lake, JOB, self.run_id, rows))
        result.elapsed_s = time.monotonic() - self.t_start
        pngs = plot_timelines(self.timelines, ground_truth, self.cfg.detect.timelines_logged) if status == "FINISHED" else {}
        tracking.finish_detect_run(
            self.tracking_uri,
            self.run_id,
            metrics=result.metrics(),
            tags={
                "star.partitions": "\n".join(result.partitions),
                "star.manifest": result.manifest_uri,
                "star.files": "\n".join(result.files)[:4900],
            },
            artifacts=pngs,
            status=status,
        )
        for path in pngs.values():
            os.unlink(path)
        return result


def _manifest(rows: Sequence[dict]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=schemas.MANIFEST)


def plot_timelines(timelines: dict, ground_truth: dict, limit: int) -> dict[str, str]:
    """Timeline PNGs (artifact name -> temporary file) of a few processed videos."""
    if not timelines or limit <= 0:
        return {}
    from jobs.plots import plot_timeline

    out = {}
    for video_id, (dets, duration_s) in list(timelines.items())[:limit]:
        gt = ground_truth.get(video_id)
        classes = sorted({d.label for d in dets} | ({i.label for i in gt.instances} if gt is not None else set()))
        fd, png = tempfile.mkstemp(suffix=".png", prefix=f"timeline-{video_id}-")
        os.close(fd)
        try:
            plot_timeline(video_id, dets, gt, classes, duration_s, png)
        except Exception as exc:  # a picture must never fail a finished detection run
            log.warning("timeline of %s not drawn: %s", video_id, exc)
            os.unlink(png)
            continue
        out[f"timelines/{video_id}.png"] = png
    return out
