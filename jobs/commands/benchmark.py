"""`star benchmark`: STAR vs the STPN-style baseline (and the paper's ablations) on an imported dataset.

    star benchmark --lake ./star-lake --dataset th14-standin --ablation --json bench.json --epochs 40
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lake", required=True, help="lake root (local path or s3://bucket/prefix)")
    parser.add_argument("--dataset", required=True, help="dataset name (train split to train, test split to evaluate)")
    parser.add_argument("--version", type=int, default=None, help="dataset version (default: latest)")
    parser.add_argument("--feature-set", default=None, help="feature set (default: the one recorded at import)")
    parser.add_argument("--ablation", action="store_true", help="add Table 1 (module combinations) and Table 2 (localizers)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the STPN-style baseline")
    parser.add_argument("--baseline-epochs", type=int, default=None, help="epochs of the STPN-style baseline (default: its own, StpnConfig.epochs)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs of every model (default: train.epochs of the config)")
    parser.add_argument("--preset", default=None, help="named settings of the main row, applied before --config (shipped: paper)")
    parser.add_argument("--config", default=None, help="YAML/JSON config file (model, loss, train, localize sections)")
    parser.add_argument("--no-paper-reference", action="store_true", help="skip the paper-preset reference row")
    parser.add_argument("--no-upper-bound", action="store_true", help="skip the supervised upper bound (segment labels)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override, e.g. --set train.lr=3e-4 (repeatable)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--workers", type=int, default=1, help="processes for the Table 1 trainings (each loads the data; 1 torch thread each)")
    parser.add_argument("--json", dest="json_out", default=None, help="write the results as JSON (main row in `star evaluate` format)")


def run(args: argparse.Namespace) -> int:
    import torch

    from jobs.benchmark import BenchmarkConfig, run_benchmark
    from star_core.baseline_stpn import StpnConfig
    from star_core.config import load_config
    from star_core.io.atomic import atomic_local_path

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = list(args.overrides)
    if args.epochs is not None:
        if args.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
        overrides.append(f"train.epochs={args.epochs}")
    star_cfg = load_config(args.config, overrides, preset=args.preset)
    cfg = BenchmarkConfig(
        lake_uri=args.lake,
        dataset=args.dataset,
        version=args.version,
        feature_set=args.feature_set,
        star=star_cfg,
        ablation=args.ablation,
        baseline=not args.no_baseline,
        paper_reference=not args.no_paper_reference,
        upper_bound=not args.no_upper_bound,
        stpn=StpnConfig() if args.baseline_epochs is None else StpnConfig(epochs=args.baseline_epochs),
        workers=max(1, args.workers),
    )
    report = run_benchmark(cfg)
    print(report.tables())
    if args.json_out:
        out = Path(args.json_out)
        with atomic_local_path(out) as tmp:  # a reader never sees half a file
            Path(tmp).write_text(json.dumps(report.to_json(), indent=2, sort_keys=False, default=float))
        print(f"results: {out}")
    return 0
