"""The issue-14 protocol: every row of `star benchmark` on several stand-in seeds and difficulty settings.

Defaults are chosen on this protocol, never on one run: for each difficulty setting of
``star_core.synth.DIFFICULTIES`` (fixed before any tuning) and each seed, the THUMOS'14-shaped
stand-in (real THUMOS'14 videos, durations and intervals; synthetic features) is generated in
memory and benchmarked with ``jobs.benchmark.benchmark_pairs`` (the same rows, models and
evaluator as `star benchmark`, without a lake round trip). Printed and written per setting:
one table with a column per seed, mean ± std, training wall time and the peak RSS.

    python benchmarks/bench_protocol.py --settings standard,context,weak --seeds 0,1,2 --feat-dim 256
    python benchmarks/bench_protocol.py --settings standard --seeds 0 --feat-dim 1024 --paper-seeds 0

``--feat-dim`` below 1024 makes the features cheaper (same generator, smaller projection); say so
when quoting the numbers. ``--paper-seeds`` limits the (slow, 60-epoch) paper-preset reference row
to some seeds. Results: ``<out>/protocol-<tag>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

log = logging.getLogger("bench_protocol")


def standin_pairs(difficulty: str, seed: int, feat_dim: int, scale: str = "full", splits: tuple[str, ...] = ("train", "test")):
    """(classes, train pairs, test pairs, excluded ids) of the full stand-in, generated in memory."""
    import numpy as np

    from star_core.data import VideoFeatures
    from star_core.io.wtalc_import import THUMOS14_EXCLUDED, read_wtalc_annotations, wtalc_labels
    from star_core.io.standin import default_annotations_dir, select_videos
    from star_core.synth import World, difficulty_config, generate_video

    ann = read_wtalc_annotations(default_annotations_dir())
    idx, classes = select_videos(ann, scale)
    world = World(classes, difficulty_config(difficulty, seed=seed, feat_dim=feat_dim))
    labels = wtalc_labels(ann)
    train, test = [], []
    for i in idx:
        video = labels[i]
        if video.split not in ("train", "test") or video.split not in splits:
            continue  # the excluded (mis-annotated) test videos, and splits not asked for
        sv = generate_video(world, video)
        feats = VideoFeatures(video.video_id, sv.rgb.astype(np.float32), sv.flow.astype(np.float32), duration_s=video.duration_s)
        (train if video.split == "train" else test).append((feats, video))
    return tuple(classes), train, test, list(THUMOS14_EXCLUDED)


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}" if values else "-"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def table(setting: str, cells: dict[int, dict]) -> str:
    """Markdown table of one setting: rows (models) x seeds, mean ± std, train s, peak RSS."""
    seeds = sorted(cells)
    names: list[str] = []
    for seed in seeds:
        for row in cells[seed]["rows"]:
            if row["name"] not in names:
                names.append(row["name"])
    head = "| row | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std | train s (mean) |"
    lines = [f"### {setting}: avg mAP 0.1:0.7 (avg 0.1:0.5 in the JSON)", "", head, "|" + "---|" * (len(seeds) + 3)]
    for name in names:
        vals, times, cols = [], [], []
        for seed in seeds:
            row = next((r for r in cells[seed]["rows"] if r["name"] == name), None)
            cols.append("-" if row is None else f"{row['avg_0.1_0.7']:.2f}")
            if row is not None:
                vals.append(row["avg_0.1_0.7"])
                times.append(row["train_s"])
        lines.append(f"| {name} | " + " | ".join(cols) + f" | {mean_std(vals)} | {statistics.mean(times) if times else 0:.0f} |")
    rss = max(cells[s]["peak_rss_mb"] for s in seeds)
    lines.append("")
    lines.append(f"peak RSS {rss:.0f} MB; wall {sum(cells[s]['wall_s'] for s in seeds):.0f} s for {len(seeds)} seed(s)")
    diag = [cells[s]["diagnostics"] for s in seeds if cells[s].get("diagnostics")]
    if diag:
        keys = sorted(diag[0])
        lines.append(
            "attention diagnostics of the default recipe's stage 1 (test split, mean over seeds): "
            + ", ".join(f"{k} {statistics.mean(d[k] for d in diag):.3f}" for k in keys)
        )
    return "\n".join(lines)


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``NAME:refine.key=value;refine.key=value`` -> (NAME, overrides); only stage-2 keys (the stage-1 model is shared)."""
    name, _, body = text.partition(":")
    overrides = [kv for kv in body.split(";") if kv]
    bad = [kv for kv in overrides if not kv.startswith("refine.")]
    if not name or bad:
        raise SystemExit(f"--variant {text!r}: want NAME:refine.key=value[;refine.key=value...]; not stage-2 keys: {bad}")
    return name, overrides


def run_cell(setting: str, seed: int, args: argparse.Namespace, paper: bool) -> dict:
    """One (setting, seed) cell: generate the stand-in, run every benchmark row; returns the cell's JSON."""
    import torch

    from jobs.benchmark import benchmark_pairs
    from star_core.config import load_config, replace

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(name)s[{setting} s{seed}]: %(message)s")
    torch.set_num_threads(args.threads)
    t0 = time.monotonic()
    classes, train, test, excluded = standin_pairs(setting, seed, args.feat_dim, args.scale)
    log.info("%s seed %d: stand-in generated in %.0f s", setting, seed, time.monotonic() - t0)
    while args.train_after and not Path(args.train_after).exists():  # the machine is busy with another measurement
        time.sleep(1.0)
    base = load_config(None, args.overrides)
    star = replace(base, **{"train.seed": seed, "refine.seed": seed})
    variants = [
        (name, replace(load_config(None, [*args.overrides, *kvs]), **{"refine.seed": seed}).refine)
        for name, kvs in map(parse_variant, args.variant)
    ]
    cfg = replace(
        star,
        **{
            "benchmark.baseline": not args.no_baseline,
            "benchmark.upper_bound": not args.no_upper_bound,
            "benchmark.paper_reference": paper,
            "benchmark.device": args.device,
        },
    )  # the baseline's seed: train.seed
    name = f"standin-{args.scale}-d{args.feat_dim}-s{seed}-{setting}"
    report = benchmark_pairs(cfg, f"standin-{setting}", seed, name, classes, train, test, excluded, refine_variants=variants)
    data = report.to_json()
    return {
        "rows": [r.to_json() for r in report.rows],
        "wall_s": report.wall_s,
        "peak_rss_mb": report.peak_rss_mb,
        "diagnostics": data["diagnostics"],
        "fraction_of_upper_bound": data["fraction_of_upper_bound"],
    }


def _write_partial(args: argparse.Namespace, results: dict) -> None:
    """The cells finished so far (``protocol-<tag>.partial.json``, replaced atomically): a run cut short keeps them."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".protocol-{args.tag or 'run'}.partial.json.tmp"
    tmp.write_text(json.dumps({"results": results}, indent=1, default=float))
    tmp.replace(out / f"protocol-{args.tag or 'run'}.partial.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default="standard,context,weak", help="difficulty settings (star_core.synth.DIFFICULTIES)")
    parser.add_argument("--seeds", default="0,1,2", help="stand-in and training seeds")
    parser.add_argument("--feat-dim", type=int, default=256, help="per-stream feature dimension of the stand-in (THUMOS'14 I3D: 1024)")
    parser.add_argument("--scale", default="full", choices=("full", "small"), help="stand-in size (small: a quick check of the script)")
    parser.add_argument("--paper-seeds", default=None, help="seeds that also train the paper preset (default: all; '' = none)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override of the main row")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:refine.k=v;...",
        help="extra row: stage 2 with these settings on the main row's stage-1 model (repeatable)",
    )
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--no-upper-bound", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per cell")
    parser.add_argument("--device", default="cpu", help="torch device of the trainings (cpu, cuda)")
    parser.add_argument("--jobs", type=int, default=1, help="cells run at once, one process each")
    parser.add_argument(
        "--train-after",
        default=None,
        metavar="FILE",
        help="generate the stand-ins, then wait for FILE to exist before training (another benchmark owns the device)",
    )
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="folder for the report")
    parser.add_argument("--tag", default=None, help="report name suffix")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for text in args.variant:
        parse_variant(text)

    settings = [s for s in args.settings.split(",") if s]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    paper_seeds = seeds if args.paper_seeds is None else [int(s) for s in args.paper_seeds.split(",") if s]
    cells = [(setting, seed) for setting in settings for seed in seeds]
    results: dict[str, dict[int, dict]] = {s: {} for s in settings}
    t0 = time.monotonic()
    if args.jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(run_cell, cell[0], cell[1], args, cell[1] in paper_seeds): cell for cell in cells}
            for future in as_completed(futures):
                setting, seed = futures[future]
                results[setting][seed] = future.result()
                log.info("%s seed %d done (%.0f s so far)", setting, seed, time.monotonic() - t0)
                _write_partial(args, results)
    else:
        for setting, seed in cells:
            results[setting][seed] = run_cell(setting, seed, args, seed in paper_seeds)
            log.info("%s seed %d done (%.0f s so far)", setting, seed, time.monotonic() - t0)
            _write_partial(args, results)
    where = f"device {args.device}, {args.jobs} cell(s) at once"
    md = [
        f"# Protocol report: settings {settings}, seeds {seeds}, D={args.feat_dim}, {args.scale} stand-in, main-row overrides "
        f"{args.overrides or 'none'}; {where}",
        "",
    ]
    md += [table(s, results[s]) + "\n" for s in settings]
    text = "\n".join(md)
    print(text)
    tag = args.tag or f"{'-'.join(settings)}-s{''.join(map(str, seeds))}-d{args.feat_dim}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "settings": settings,
        "seeds": seeds,
        "feat_dim": args.feat_dim,
        "scale": args.scale,
        "overrides": args.overrides,
        "variants": args.variant,
        "device": args.device,
        "jobs": args.jobs,
    }
    (out / f"protocol-{tag}.md").write_text(text)
    (out / f"protocol-{tag}.json").write_text(
        json.dumps({**meta, "results": results, "wall_s": time.monotonic() - t0}, indent=1, default=float)
    )
    print(f"report: {out / f'protocol-{tag}.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
