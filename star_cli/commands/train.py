"""``star train --dataset NAME [--lake LAKE] [--workers N] [--gpu] [--run-name R] [--epochs E] [--config FILE] [KEY=VALUE ...]``.

Trains both STAR streams with Ray Train, logs the run to MLflow, registers the model and moves
the alias when the new model beats the holder on the test mAP. Re-running with the same
``--run-name`` resumes an interrupted run from its last checkpoint.
"""

from __future__ import annotations

import argparse

from star_cli.options import add_config_options, load, setting


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="dataset name in the lake (see `star datasets`)")
    parser.add_argument("--dataset-version", type=int, help="dataset version (default: latest)")
    parser.add_argument("--feature-set", help="feature set (default: the one the dataset was imported with)")
    setting(parser, "--lake", key="storage.lake_uri")
    setting(parser, "--workers", key="resources.workers")
    setting(parser, "--cpus-per-worker", key="resources.cpus_per_worker")
    setting(parser, "--gpu", key="resources.gpu", const=True, help="one GPU per worker")
    setting(parser, "--ray-address", key="resources.ray_address")
    setting(parser, "--run-name", key="train_run.run_name")
    setting(parser, "--epochs", key="train.epochs")
    setting(parser, "--eval-every", key="train.eval_every_epochs")
    setting(parser, "--model-name", key="train_run.model_name")
    setting(parser, "--alias", key="train_run.alias")
    setting(parser, "--no-alias", key="train_run.alias", const=None, help="never move the alias")
    setting(parser, "--experiment", key="train_run.experiment")
    setting(parser, "--max-failures", key="train_run.max_failures")
    add_config_options(parser, positional=True)


def run(args: argparse.Namespace) -> int:
    from jobs.train import train

    cfg = load(args)
    result = train(cfg, args.dataset, dataset_version=args.dataset_version, feature_set=args.feature_set)
    m = result.metrics
    print(f"run {result.run_name}: MLflow run {result.run_id} at {result.tracking_uri}")
    print(
        f"epochs: {result.epochs_completed}" + (f" (resumed after epoch {result.resumed_from_epoch})" if result.resumed_from_epoch else "")
    )
    maps = [(k.rsplit("_", 1)[-1], v) for k, v in sorted(m.items()) if k.startswith("test/map_")]
    if maps:
        print("test mAP@tIoU (%): " + "  ".join(f"{t}: {v:.2f}" for t, v in maps))
        print(
            f"avg 0.1:0.5 {m.get('test/avg_map_0.1_0.5', float('nan')):.2f} | avg 0.1:0.7 {m.get('test/avg_map_0.1_0.7', float('nan')):.2f}"
        )
    alias = "" if not result.alias_set else f" (alias {cfg.train_run.alias} -> this version)"
    print(f"model: {result.model_uri}{alias}")
    print(f"checkpoints: {result.checkpoint_dir}")
    return 0
