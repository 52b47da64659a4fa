"""Does the default stage-1 budget under-train? Held-out video-level loss per epoch, per protocol cell.

Issue 14 asks that the training budget not under-train in any setting, judged without test intervals.
For each (difficulty setting, seed) cell of the protocol this trains STAR (the default config) on 90 %
of the stand-in's training videos for ``--epochs`` epochs and, after every epoch, measures on the other
10 % (held out from training, video-level labels only) the classification term of STAR's loss (the
video-level label-sequence cross-entropy, both streams, all segments, no sampling). Reported per cell:
the epoch with the lowest held-out loss, the held-out loss at the default budget against that minimum,
and the training loss. Test intervals are never read.

    python benchmarks/bench_budget.py --settings standard,context,weak --seeds 0,1,2 --feat-dim 1024 --epochs 60 \\
        --device cuda --jobs 9
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

log = logging.getLogger("bench_budget")


def heldout_split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(fit indices, held-out indices): a seeded random ``fraction`` of ``n`` videos held out (at least one)."""
    import numpy as np

    order = np.random.default_rng([seed, 14]).permutation(n)
    k = max(1, round(n * fraction))
    return sorted(order[k:].tolist()), sorted(order[:k].tolist())


def heldout_loss(trainer, items, cfg) -> dict[str, float]:
    """Mean classification term of STAR's loss per stream on held-out videos (eval mode, every segment)."""
    import torch

    from star_core.losses import star_loss
    from star_core.train_loop import STREAMS, collate

    det = trainer.detector
    was_training = det.training
    det.eval()
    sums = {s: 0.0 for s in STREAMS}
    with torch.no_grad():
        for b0 in range(0, len(items), 8):
            chunk = items[b0 : b0 + 8]
            batch = collate([(f.rgb, f.flow, seq, cnt) for f, seq, cnt in chunk], len(trainer.classes), trainer.device)
            for s in STREAMS:
                out = det.streams[s](batch[s], batch["mask"], batch["targets"])
                terms = star_loss(out, batch["targets"], batch["counts"], batch["mask"], cfg.loss)
                sums[s] += float(terms.classification) * len(chunk)
    det.train(was_training)
    return {s: v / len(items) for s, v in sums.items()}


def run_cell(setting: str, seed: int, args: argparse.Namespace) -> dict:
    import torch

    from bench_protocol import standin_pairs
    from star_core.config import load_config, replace
    from star_core.train_loop import Trainer, label_order

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(name)s[{setting} s{seed}]: %(message)s")
    torch.set_num_threads(args.threads)
    t0 = time.monotonic()
    classes, train, _, _ = standin_pairs(setting, seed, args.feat_dim, args.scale, splits=("train",))
    cfg = replace(load_config(None, args.overrides), **{"train.seed": seed})
    fit_idx, held_idx = heldout_split(len(train), args.holdout, seed)
    fit_pairs, held_pairs = [train[i] for i in fit_idx], [train[i] for i in held_idx]
    order = label_order([lab for _, lab in fit_pairs], classes, cfg.model.label_order)
    trainer = Trainer(classes, fit_pairs[0][0].feat_dim, cfg, order, device=args.device)
    held_items = trainer._items(held_pairs)
    curve = []
    for epoch in range(args.epochs):
        metrics = trainer.train_epoch(fit_pairs, epoch)
        held = heldout_loss(trainer, held_items, cfg)
        curve.append({"epoch": epoch + 1, "train_rgb": metrics["rgb/classification"], "train_flow": metrics["flow/classification"],
                      "held_rgb": held["rgb"], "held_flow": held["flow"], "held_mean": (held["rgb"] + held["flow"]) / 2})
    best = min(curve, key=lambda r: r["held_mean"])
    budget = cfg.train.epochs
    at_budget = curve[min(budget, len(curve)) - 1]
    log.info("%s seed %d: best held-out epoch %d (%.4f); at the default %d epochs %.4f (%.0f s)", setting, seed, best["epoch"],
             best["held_mean"], budget, at_budget["held_mean"], time.monotonic() - t0)
    return {"curve": curve, "best_epoch": best["epoch"], "best_held": best["held_mean"], "budget_epochs": budget,
            "held_at_budget": at_budget["held_mean"], "n_fit": len(fit_pairs), "n_held": len(held_pairs), "wall_s": time.monotonic() - t0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default="standard,context,weak")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--feat-dim", type=int, default=256)
    parser.add_argument("--scale", default="full", choices=("full", "small"))
    parser.add_argument("--epochs", type=int, default=60, help="epochs trained (the default budget is train.epochs)")
    parser.add_argument("--holdout", type=float, default=0.1, help="fraction of the training videos held out")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--tag", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    settings = [s for s in args.settings.split(",") if s]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    cells = [(s, seed) for s in settings for seed in seeds]
    results: dict[str, dict[int, dict]] = {s: {} for s in settings}
    if args.jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {cell: pool.submit(run_cell, cell[0], cell[1], args) for cell in cells}
            for (setting, seed), future in futures.items():
                results[setting][seed] = future.result()
    else:
        for setting, seed in cells:
            results[setting][seed] = run_cell(setting, seed, args)
    lines = [f"# Stage-1 budget: held-out video-level loss (D={args.feat_dim}, {args.epochs} epochs, {args.holdout:.0%} of the training "
             f"videos held out, device {args.device})", "",
             "| setting | seed | best held-out epoch | held-out loss: best | at the default budget | train loss at the budget |",
             "|---|---|---|---|---|---|"]
    for setting in settings:
        for seed in seeds:
            c = results[setting][seed]
            b = c["curve"][min(c["budget_epochs"], len(c["curve"])) - 1]
            lines.append(f"| {setting} | {seed} | {c['best_epoch']} | {c['best_held']:.4f} | {c['held_at_budget']:.4f} (epoch "
                         f"{c['budget_epochs']}) | {(b['train_rgb'] + b['train_flow']) / 2:.4f} |")
    bests = [results[s][seed]["best_epoch"] for s in settings for seed in seeds]
    lines += ["", f"best held-out epoch: median {statistics.median(bests):.0f}, range {min(bests)}-{max(bests)}"]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = args.tag or f"d{args.feat_dim}"
    (out / f"budget-{tag}.md").write_text(text + "\n")
    (out / f"budget-{tag}.json").write_text(
        json.dumps({"settings": settings, "seeds": seeds, "args": vars(args), "results": results}, indent=1)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
