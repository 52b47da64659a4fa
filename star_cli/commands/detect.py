"""``star detect (--dataset NAME | --videos URI) [--lake LAKE] [--model models:/star@champion] ...``.

Bulk detection with Ray Data (see ``jobs.detect``): only videos without detections for the
model version are processed; detections go to
``<lake>/detections/model=<name>-v<version>/date=<date>/``; the run is tracked in MLflow
(experiment ``detect.experiment``, default ``star-detect``). Without ``--dataset``/``--videos``
every video of the feature set is considered (the nightly job). This is also the KubeRay RayJob's
entrypoint (infra/k8s/rayjob-detect.yaml).
"""

from __future__ import annotations

import argparse
import json

from star_cli.options import add_config_options, load, setting


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--dataset", help="detect on this dataset's videos (latest version unless --dataset-version)")
    src.add_argument("--videos", help="video URI, prefix, glob or @list file: extract missing features first, then detect")
    parser.add_argument("--dataset-version", type=int, help="dataset version (default: latest)")
    parser.add_argument("--split", choices=("train", "val", "test"), help="only this split of the dataset")
    parser.add_argument("--feature-set", help="feature set to read (default: the lake's only one)")
    parser.add_argument("--date", help="partition date YYYY-MM-DD (default: today, UTC)")
    parser.add_argument("--run-id", help="caller's run id (e.g. a Prefect flow run), recorded as the MLflow run name")
    parser.add_argument("--json", action="store_true", help="print the result as JSON to stdout")
    setting(parser, "--lake", key="storage.lake_uri")
    setting(parser, "--model", key="detect.model_uri", help="registry model URI: models:/NAME@ALIAS or models:/NAME/VERSION")
    setting(parser, "--batch-size", key="detect.batch_size")
    setting(parser, "--actors", key="resources.actors")
    setting(parser, "--gpu", key="resources.gpu", const=True, help="one GPU per actor")
    setting(parser, "--ray-address", key="resources.ray_address")
    setting(parser, "--tracking-uri", key="storage.mlflow_tracking_uri")
    setting(parser, "--experiment", key="detect.experiment")
    setting(parser, "--timelines", key="detect.timelines_logged")
    setting(parser, "--retry-failed", key="detect.retry_failed")
    add_config_options(parser)


def run(args: argparse.Namespace) -> int:
    from jobs.detect import DetectInputs, detect

    inputs = DetectInputs(dataset=args.dataset, dataset_version=args.dataset_version, split=args.split, videos=args.videos,
                          feature_set=args.feature_set, date=args.date, run_id=args.run_id)
    result = detect(load(args), inputs)
    print(json.dumps(result.to_dict(), indent=2, default=str) if args.json else result.summary())
    return 1 if result.failed and not result.processed else 0
