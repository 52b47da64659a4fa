"""``star detect --lake LAKE (--dataset NAME | --videos URI) [--model models:/star@champion] ...``.

Bulk detection with Ray Data (see ``jobs.detect``): only videos without detections for the
model version are processed; detections go to
``<lake>/detections/model=<name>-v<version>/date=<date>/``; the run is tracked in MLflow
(experiment ``star-detect``). Without ``--dataset``/``--videos`` every video of the feature set
is considered (the nightly job).
"""

from __future__ import annotations

import argparse
import json

from star_core.config import DetectConfig, StorageConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d, s = DetectConfig(), StorageConfig()
    parser.add_argument("--lake", default=s.lake_uri, help="lake root (local path or s3://bucket/prefix); default %(default)s")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--dataset", help="detect on this dataset's videos (latest version unless --dataset-version)")
    src.add_argument("--videos", help="video URI, prefix, glob or @list file: extract missing features first, then detect")
    parser.add_argument("--dataset-version", type=int, help="dataset version (default: latest)")
    parser.add_argument("--split", choices=("train", "val", "test"), help="only this split of the dataset")
    parser.add_argument("--feature-set", help="feature set to read (default: the lake's only one)")
    parser.add_argument("--model", default=d.model_uri, help="registry model URI: models:/NAME@ALIAS or models:/NAME/VERSION; default %(default)s")
    parser.add_argument("--date", help="partition date YYYY-MM-DD (default: today, UTC)")
    parser.add_argument("--actors", type=int, default=d.num_actors, help="model-holding Ray actors (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="videos per batch (default %(default)s)")
    parser.add_argument("--gpu", action="store_true", help="one GPU per actor")
    parser.add_argument("--ray-address", default=s.ray_address, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else <lake>/mlflow.db)")
    parser.add_argument("--experiment", default="star-detect", help="MLflow experiment of detection runs (default %(default)s)")
    parser.add_argument("--run-id", help="caller's run id (e.g. a Prefect flow run), recorded as the MLflow run name")
    parser.add_argument("--timelines", type=int, default=d.timelines_logged, help="timeline PNGs logged to the MLflow run (default %(default)s)")
    parser.add_argument("--retry-failed", action="store_true", help="retry videos that failed before even if their features are unchanged")
    parser.add_argument("--config", help="YAML/JSON config file (StarConfig: detect.*, features.* for --videos, storage.*)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override, e.g. features.flow=farneback")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def build_config(args: argparse.Namespace):
    """DetectJobConfig from parsed arguments: config file and overrides, then explicit flags."""
    from jobs.detect import DetectJobConfig
    from star_core.config import load_config

    star = load_config(args.config, args.overrides)
    d, s = DetectConfig(), StorageConfig()

    def pick(flag, default, configured):
        # an explicit flag wins; otherwise the config file's value
        return flag if flag != default else configured

    return DetectJobConfig(
        lake_uri=pick(args.lake, s.lake_uri, star.storage.lake_uri),
        dataset=args.dataset,
        dataset_version=args.dataset_version,
        split=args.split,
        videos=args.videos,
        feature_set=args.feature_set,
        model_uri=pick(args.model, d.model_uri, star.detect.model_uri),
        batch_size=pick(args.batch_size, d.batch_size, star.detect.batch_size),
        num_actors=pick(args.actors, d.num_actors, star.detect.num_actors),
        use_gpu=args.gpu or star.detect.use_gpu,
        date=args.date,
        run_id=args.run_id,
        ray_address=args.ray_address or star.storage.ray_address,
        experiment=args.experiment,
        tracking_uri=args.tracking_uri or star.storage.mlflow_tracking_uri,
        s3_endpoint_url=star.storage.s3_endpoint_url,
        timelines_logged=pick(args.timelines, d.timelines_logged, star.detect.timelines_logged),
        retry_failed=args.retry_failed,
        features=star.features,
    )


def run(args: argparse.Namespace) -> int:
    from jobs.detect import detect

    result = detect(build_config(args))
    print(json.dumps(result.to_dict(), indent=2, default=str) if args.json else result.summary())
    return 1 if result.failed and not result.processed else 0
