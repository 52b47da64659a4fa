"""`star benchmark`: STAR vs the STPN-style baseline (and the paper's ablations) on an imported dataset.

    star benchmark --lake ./star-lake --dataset th14-standin --ablation --json-out bench.json --epochs 40

What runs besides the configured STAR is the ``benchmark`` section of the config (``--ablation``,
``--no-baseline``... are shorthands for its keys).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from star_cli.options import add_config_options, load, setting


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="dataset name (train split to train, test split to evaluate)")
    parser.add_argument("--dataset-version", type=int, default=None, help="dataset version (default: latest)")
    parser.add_argument("--feature-set", default=None, help="feature set (default: the one recorded at import)")
    parser.add_argument(
        "--json-out", metavar="FILE", default=None, help="write the results as JSON to FILE (main row in `star evaluate` format)"
    )
    setting(parser, "--lake", key="storage.lake_uri")
    setting(parser, "--epochs", key="train.epochs", help="training epochs of every model")
    setting(parser, "--ablation", key="benchmark.ablation")
    setting(parser, "--no-baseline", key="benchmark.baseline", const=False, help="skip the STPN-style baseline")
    setting(parser, "--baseline-epochs", key="benchmark.baseline_epochs")
    setting(parser, "--no-paper-reference", key="benchmark.paper_reference", const=False, help="skip the paper-preset reference row")
    setting(parser, "--no-upper-bound", key="benchmark.upper_bound", const=False, help="skip the supervised upper bound (segment labels)")
    setting(parser, "--threads", key="benchmark.threads")
    setting(parser, "--processes", key="benchmark.processes")
    setting(parser, "--device", key="benchmark.device")
    add_config_options(parser)


def run(args: argparse.Namespace) -> int:
    import torch

    from jobs.benchmark import run_benchmark
    from star_core.io.atomic import atomic_local_path

    cfg = load(args)
    if cfg.train.epochs < 1:
        raise ValueError(f"train.epochs (--epochs) must be >= 1, got {cfg.train.epochs}")
    if cfg.benchmark.threads:
        torch.set_num_threads(cfg.benchmark.threads)
    report = run_benchmark(cfg, args.dataset, args.dataset_version, args.feature_set)
    print(report.tables())
    if args.json_out:
        out = Path(args.json_out)
        with atomic_local_path(out) as tmp:  # a reader never sees half a file
            Path(tmp).write_text(json.dumps(report.to_json(), indent=2, sort_keys=False, default=float))
        print(f"results: {out}")
    return 0
