"""``star train --lake LAKE --dataset NAME [--workers N] [--gpu] [--run-name R] [--epochs E] [--config FILE] [key=value ...]``.

Trains both STAR streams with Ray Train, logs the run to MLflow, registers the model and moves
the alias when the new model beats the holder on the test mAP. Re-running with the same
``--run-name`` resumes an interrupted run from its last checkpoint.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lake", help="lake root (local path or s3://bucket/prefix); default: storage.lake_uri of the config")
    parser.add_argument("--dataset", required=True, help="dataset name in the lake (see `star datasets`)")
    parser.add_argument("--dataset-version", type=int, help="dataset version (default: latest)")
    parser.add_argument("--feature-set", help="feature set (default: the one the dataset was imported with)")
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers (default %(default)s)")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs reserved per worker (default %(default)s)")
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker")
    parser.add_argument("--run-name", help="checkpoint/run name; an existing name resumes that run (default: a fresh train-<time>-<id>)")
    parser.add_argument("--epochs", type=int, help="total epochs (shortcut for train.epochs=E)")
    parser.add_argument("--eval-every", type=int, help="evaluate on the test split every K epochs (default: train.eval_every_epochs)")
    parser.add_argument("--preset", help="named settings applied before --config (shipped: paper = the paper's literal STAR, no self-training)")
    parser.add_argument("--config", help="YAML/JSON config file (StarConfig tree)")
    parser.add_argument("--model-name", default="star", help="registered model name (default %(default)s; '' = do not register)")
    parser.add_argument("--alias", default="champion", help="alias moved to the new version when it beats the holder (default %(default)s)")
    parser.add_argument("--no-alias", action="store_true", help="never move the alias")
    parser.add_argument("--experiment", default="star", help="MLflow experiment (default %(default)s)")
    parser.add_argument("--ray-address", help="Ray cluster address (default: storage.ray_address, RAY_ADDRESS, else local)")
    parser.add_argument("--max-failures", type=int, default=1, help="worker failures recovered within the run (default %(default)s)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.lr=3e-4 model.hidden_dim=256")


def build_config(args: argparse.Namespace):
    """TrainJobConfig from parsed arguments (config file, then overrides, then shortcuts)."""
    from jobs.train import TrainJobConfig
    from star_core.config import load_config, replace

    overrides = list(args.overrides)
    star = load_config(args.config, overrides, preset=args.preset)
    if args.epochs is not None:
        star = replace(star, **{"train.epochs": args.epochs})
    return TrainJobConfig(
        lake_uri=args.lake or star.storage.lake_uri,
        dataset=args.dataset,
        dataset_version=args.dataset_version,
        feature_set=args.feature_set,
        star=star,
        workers=args.workers,
        use_gpu=args.gpu,
        run_name=args.run_name,
        model_name=args.model_name,
        alias=None if args.no_alias else args.alias,
        experiment=args.experiment,
        ray_address=args.ray_address,
        eval_every_epochs=args.eval_every,
        max_failures=args.max_failures,
        cpus_per_worker=args.cpus_per_worker,
    )


def run(args: argparse.Namespace) -> int:
    from jobs.train import train

    result = train(build_config(args))
    m = result.metrics
    print(f"run {result.run_name}: MLflow run {result.run_id} at {result.tracking_uri}")
    print(f"epochs: {result.epochs_completed}" + (f" (resumed after epoch {result.resumed_from_epoch})" if result.resumed_from_epoch else ""))
    maps = [(k.rsplit("_", 1)[-1], v) for k, v in sorted(m.items()) if k.startswith("test/map_")]
    if maps:
        print("test mAP@tIoU (%): " + "  ".join(f"{t}: {v:.2f}" for t, v in maps))
        print(f"avg 0.1:0.5 {m.get('test/avg_map_0.1_0.5', float('nan')):.2f} | avg 0.1:0.7 {m.get('test/avg_map_0.1_0.7', float('nan')):.2f}")
    alias = "" if not result.alias_set else f" (alias {args.alias} -> this version)"
    print(f"model: {result.model_uri}{alias}")
    print(f"checkpoints: {result.checkpoint_dir}")
    return 0
