"""Localization benchmark: train STAR (both streams) and the STPN-style baseline on a dataset's train
split, evaluate on its test split with the THUMOS'14 protocol, optionally with the paper's ablations.

Rows (each a :class:`BenchmarkRow` with mAP@0.1..0.7 and both averages):
* main: STAR with the configured modules and localizer (``localize.localizer``);
* baseline: STPN-style (``star_core.baseline_stpn``) on the same data, proposals and NMS;
* ``ablation=True``, Table 1: every combination of the three modules on the stem network, switched
  through the config (Sparsity: ``loss.beta_sparsity``; Coverage: ``model.use_coverage`` and
  ``loss.gamma_coverage``; RAM: ``model.use_ram`` and ``loss.delta_ram``; a module that is off has
  its switch off and its loss weight 0). The all-modules row is the main model (not trained twice).
* ``ablation=True``, Table 2: the main model's detections with each localizer (Attention,
  ST-GradCAM, Attended ST-GradCAM), no retraining.

Evaluation follows the protocol recorded by the importer in ``dataset.json``: videos of the
``excluded`` split (and any listed in ``source.protocol.exclude_videos``) are not evaluated and
detections overlapping ``Ambiguous`` segments are not counted as false positives.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import resource
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from star_core.baseline_stpn import STPN_LOCALIZE, StpnConfig
from star_core.config import StarConfig, flatten, load_config, replace
from star_core.data import VideoFeatures, VideoLabels
from star_core.model.config import RefineConfig

log = logging.getLogger("star.benchmark")

MODULES = ("sparsity", "coverage", "ram")
# Table 1 rows in the paper's order: stem, one module, two modules, all.
TABLE1 = (
    (),
    ("sparsity",),
    ("coverage",),
    ("ram",),
    ("sparsity", "coverage"),
    ("sparsity", "ram"),
    ("coverage", "ram"),
    ("sparsity", "coverage", "ram"),
)
LOCALIZERS = (("attention", "Attention"), ("gradcam", "ST-GradCAM"), ("attended_gradcam", "Attended ST-GradCAM"))


@dataclass
class BenchmarkRow:
    """One evaluated model/localizer."""

    name: str
    table: str  # "main" | "addition" | "reference" | "baseline" | "upper_bound" | "table1" | "table2"
    map: dict[str, float]  # "0.1".."0.7" -> mAP %
    avg_0_1_0_5: float
    avg_0_1_0_7: float
    train_s: float = 0.0  # training wall time (0: reused a trained model)
    detect_s: float = 0.0
    n_detections: int = 0
    settings: dict[str, Any] = field(default_factory=dict)  # switches that define the row

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "table": self.table,
            "map": dict(self.map),
            "avg_0.1_0.5": self.avg_0_1_0_5,
            "avg_0.1_0.7": self.avg_0_1_0_7,
            "train_s": round(self.train_s, 2),
            "detect_s": round(self.detect_s, 2),
            "n_detections": self.n_detections,
            "settings": self.settings,
        }


@dataclass
class BenchmarkReport:
    """All rows plus the run's resources; ``to_json`` leads with the main row in `star evaluate` format."""

    dataset: str
    version: int
    feature_set: str
    n_train: int
    n_test: int
    exclude_videos: list[str]
    rows: list[BenchmarkRow]
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0  # this process
    worker_peak_rss_mb: float = 0.0  # largest Table 1 worker process (0 without workers)
    diagnostics: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def row(self, table: str) -> list[BenchmarkRow]:
        return [r for r in self.rows if r.table == table]

    @property
    def main(self) -> BenchmarkRow:
        return self.row("main")[0]

    def to_json(self) -> dict[str, Any]:
        main = self.main

        def first(table: str) -> dict[str, Any] | None:
            rows = self.row(table)
            return rows[0].to_json() if rows else None

        return {
            "map": dict(main.map),
            "avg_0.1_0.5": main.avg_0_1_0_5,
            "avg_0.1_0.7": main.avg_0_1_0_7,
            "main": main.to_json(),
            "baseline": first("baseline"),
            "paper_preset": first("reference"),
            "upper_bound": first("upper_bound"),
            "fraction_of_upper_bound": self.fraction_of_upper_bound(),
            "additions": [r.to_json() for r in self.row("addition")],
            "ablation": [r.to_json() for r in self.rows if r.table in ("table1", "table2")],
            "dataset": {
                "name": self.dataset,
                "version": self.version,
                "feature_set": self.feature_set,
                "n_train": self.n_train,
                "n_test": self.n_test,
            },
            "protocol": {"exclude_videos": self.exclude_videos, "ignore_ambiguous": True},
            "diagnostics": self.diagnostics,
            "wall_s": round(self.wall_s, 1),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "worker_peak_rss_mb": round(self.worker_peak_rss_mb, 1),
            "config": self.config,
        }

    def fraction_of_upper_bound(self) -> dict[str, float] | None:
        """The main row's averages as fractions of the supervised upper bound's (None without it)."""
        bound = self.row("upper_bound")
        if not bound:
            return None
        b, m = bound[0], self.main
        return {
            "avg_0.1_0.5": m.avg_0_1_0_5 / b.avg_0_1_0_5 if b.avg_0_1_0_5 > 0 else float("nan"),
            "avg_0.1_0.7": m.avg_0_1_0_7 / b.avg_0_1_0_7 if b.avg_0_1_0_7 > 0 else float("nan"),
        }

    def tables(self) -> str:
        """Printable tables: main and references, then Table 1 and Table 2 when present."""
        refs = [r for t in ("main", "addition", "reference", "baseline", "upper_bound") for r in self.row(t)]
        parts = [_format("STAR (default recipe) and its references, same data, same evaluator", refs)]
        frac = self.fraction_of_upper_bound()
        if frac:
            parts.append(
                f"STAR reaches {100 * frac['avg_0.1_0.7']:.0f} % of the supervised upper "
                f"bound (avg mAP 0.1:0.7; {100 * frac['avg_0.1_0.5']:.0f} % at 0.1:0.5)"
            )
        if self.row("table1"):
            parts.append(_format("Table 1: modules (stem + Sparsity / Coverage / RAM)", self.row("table1")))
        if self.row("table2"):
            parts.append(_format("Table 2: localizers (all modules)", self.row("table2")))
        workers = f" (Table 1 workers: {self.worker_peak_rss_mb:.0f} MB each at most)" if self.worker_peak_rss_mb else ""
        parts.append(
            f"wall time {self.wall_s:.0f} s, peak RSS {self.peak_rss_mb:.0f} "
            f"MB{workers}; train {self.n_train} videos, test {self.n_test} videos"
        )
        return "\n\n".join(parts)


def _format(title: str, rows: Sequence[BenchmarkRow]) -> str:
    if not rows:
        return title
    keys = list(rows[0].map)
    width = max(len(r.name) for r in rows) + 2
    head = f"{'':<{width}}" + "".join(f"{k:>7}" for k in keys) + f"{'avg.1:.5':>10}{'avg.1:.7':>10}{'train s':>9}"
    lines = [title, head]
    for r in rows:
        lines.append(
            f"{r.name:<{width}}" + "".join(f"{r.map[k]:7.2f}" for k in keys) + f"{r.avg_0_1_0_5:10.2f}{r.avg_0_1_0_7:10.2f}{r.train_s:9.0f}"
        )
    return "\n".join(lines)


def module_config(base: StarConfig, modules: Sequence[str]) -> StarConfig:
    """``base`` with exactly ``modules`` switched on (loss weights of the others set to 0)."""
    unknown = set(modules) - set(MODULES)
    if unknown:
        raise ValueError(f"unknown modules {sorted(unknown)}; expected some of {MODULES}")
    from star_core.model.config import LossConfig

    on, paper = set(modules), LossConfig()  # a weight switched on but 0 in ``base`` takes the paper's value
    changes: dict[str, Any] = {
        "loss.beta_sparsity": (base.loss.beta_sparsity or paper.beta_sparsity) if "sparsity" in on else 0.0,
        "model.use_coverage": "coverage" in on,
        "loss.gamma_coverage": (base.loss.gamma_coverage or paper.gamma_coverage) if "coverage" in on else 0.0,
        "model.use_ram": "ram" in on,
        "loss.delta_ram": (base.loss.delta_ram or paper.delta_ram) if "ram" in on else 0.0,
    }
    return replace(base, **changes)


def module_name(modules: Sequence[str]) -> str:
    names = {"sparsity": "Sparsity", "coverage": "Coverage", "ram": "RAM"}
    return "stem" + "".join(f" + {names[m]}" for m in modules)


def stpn_config(cfg: StarConfig) -> StpnConfig:
    """The STPN-style baseline's own settings: its defaults, ``benchmark.baseline_epochs`` and the main row's seed."""
    epochs = cfg.benchmark.baseline_epochs
    return dataclasses.replace(StpnConfig(), seed=cfg.train.seed, **({"epochs": epochs} if epochs is not None else {}))


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB; Linux reports ru_maxrss in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_split_pairs(
    cfg: StarConfig, dataset: str, version: int | None = None, feature_set: str | None = None
) -> tuple[Any, list[tuple[VideoFeatures, VideoLabels]], list[tuple[VideoFeatures, VideoLabels]], list[str], str]:
    """Dataset, (features, labels) of the train and test splits, excluded videos, feature set."""
    from star_core.io import datasets, feature_store, wtalc_import
    from star_core.io.lake import Lake

    lake = Lake(cfg.storage.lake_uri, cfg.storage.s3_endpoint_url)
    ds = datasets.load_dataset(lake, dataset, version)
    source = datasets.dataset_source(lake, dataset, ds.version)
    feature_set = feature_set or source.get("feature_set")
    if not feature_set:
        raise ValueError(f"dataset {dataset!r} v{ds.version} records no feature set; pass feature_set")
    excluded = sorted(set(datasets.SplitProtocol.of(source).exclude_videos) | {v.video_id for v in ds.split(wtalc_import.EXCLUDED_SPLIT)})
    train = [v for v in ds.split(cfg.benchmark.train_split) if v.video_id not in excluded]
    test = [v for v in ds.split(cfg.benchmark.test_split) if v.video_id not in excluded]
    for name, split in ((cfg.benchmark.train_split, train), (cfg.benchmark.test_split, test)):
        if not split:
            raise ValueError(
                f"dataset {dataset!r} v{ds.version} has no videos in split {name!r} (splits: {sorted({v.split for v in ds.videos})})"
            )
    feats = {f.video_id: f for f in feature_store.read_features(lake, feature_set, [v.video_id for v in train + test])}
    return ds, [(feats[v.video_id], v) for v in train], [(feats[v.video_id], v) for v in test], excluded, feature_set


def evaluate_detector(
    detector, test: Sequence[tuple[VideoFeatures, VideoLabels]], classes: Sequence[str], localize, exclude: Sequence[str], batch: int
) -> tuple[Any, float, int]:
    """(MapResult, detect seconds, number of detections) of ``detector`` on ``test`` (``star_core.metrics.evaluate_detector``)."""
    from star_core.metrics import evaluate_detector as evaluate

    ev = evaluate(detector, [f for f, _ in test], [lab for _, lab in test], classes, exclude, localize=localize, batch_videos=batch)
    return ev.result, ev.detect_s, ev.n_detections


def _row(name: str, table: str, result, train_s: float, detect_s: float, n_det: int, settings: dict) -> BenchmarkRow:
    return BenchmarkRow(name, table, dict(result.map), result.avg_0_1_0_5, result.avg_0_1_0_7, train_s, detect_s, n_det, settings)


def _table1_row(cfg: StarConfig, data: tuple[str, int, str], modules: tuple[str, ...], threads: int = 1) -> tuple[BenchmarkRow, float]:
    """Train and evaluate one Table 1 configuration in a worker process; returns (row, worker peak RSS MB)."""
    import torch

    from star_core.train_loop import fit

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[table1 worker]: %(message)s")
    torch.set_num_threads(threads)
    ds, train, test, excluded, _ = load_split_pairs(cfg, *data)
    name = module_name(modules)
    log.info("training %s: %d epochs x 2 streams", name, cfg.train.epochs)
    t0 = time.monotonic()
    detector = fit(train, ds.classes, module_config(cfg, modules), device=cfg.benchmark.device)
    train_s = time.monotonic() - t0
    result, det_s, n = evaluate_detector(detector, test, ds.classes, cfg.localize, excluded, cfg.benchmark.detect_batch)
    return _row(name, "table1", result, train_s, det_s, n, {"modules": list(modules)}), peak_rss_mb()


def run_benchmark(
    cfg: StarConfig,
    dataset: str,
    version: int | None = None,
    feature_set: str | None = None,
    on_row: Callable[[BenchmarkRow], None] | None = None,
) -> BenchmarkReport:
    """Train and evaluate every row of the benchmark (see module docstring); returns the report.

    With ``benchmark.processes > 1`` the Table 1 trainings run in that many worker processes (spawned, one
    torch thread each, each loading the data itself) while this process trains the main model and
    the baseline; the rows are the same as in a sequential run.

    Args:
        cfg: the configured STAR (main row) and ``benchmark`` (which rows; splits, processes, device).
        dataset, version, feature_set: the lake's dataset (None: latest version; the imported feature set).
        on_row: called with each row as soon as it is evaluated (progress reporting).

    Returns:
        A :class:`BenchmarkReport` with wall time and peak RSS of this process (and of the workers).
    """
    t_start = time.monotonic()
    ds, train, test, excluded, feature_set = load_split_pairs(cfg, dataset, version, feature_set)
    return benchmark_pairs(cfg, ds.name, ds.version, feature_set, ds.classes, train, test, excluded, on_row, t_start)


def benchmark_pairs(
    cfg: StarConfig,
    dataset: str,
    version: int,
    feature_set: str,
    classes: Sequence[str],
    train: Sequence[tuple[VideoFeatures, VideoLabels]],
    test: Sequence[tuple[VideoFeatures, VideoLabels]],
    excluded: Sequence[str],
    on_row: Callable[[BenchmarkRow], None] | None = None,
    t_start: float | None = None,
    refine_variants: Sequence[tuple[str, RefineConfig]] = (),
) -> BenchmarkReport:
    """The rows of :func:`run_benchmark` on (features, labels) pairs already in memory (also used by
    ``benchmarks/bench_protocol.py``, which generates its stand-ins without a lake).

    ``refine_variants``: (name, stage-2 settings) pairs, each self-trained on the main row's stage-1
    model (not retrained) and reported as an "addition" row: one stage-2 option measured on its own.
    """
    t_start = time.monotonic() if t_start is None else t_start
    bench = cfg.benchmark
    run = _BenchmarkRun(cfg, tuple(classes), train, test, excluded, on_row)
    log.info(
        "benchmark %s v%d: %d train / %d test videos, feature set %s, %d classes",
        dataset,
        version,
        len(train),
        len(test),
        feature_set,
        len(run.classes),
    )
    main_modules = tuple(m for m, on in zip(MODULES, (cfg.loss.beta_sparsity > 0, cfg.model.use_coverage, cfg.model.use_ram)) if on)
    table1_jobs = [tuple(m) for m in TABLE1 if not (tuple(m) == MODULES and main_modules == MODULES)] if bench.ablation else []
    with _table1_pool(cfg, (dataset, version, feature_set), table1_jobs) as futures:
        detector, main, diagnostics = run.main_rows(main_modules, refine_variants)
        run.reference_rows()
        table2 = run.table2_rows(detector) if bench.ablation else []
        del detector
        worker_rss = run.table1_rows(main, table1_jobs, futures) if bench.ablation else 0.0
        for row in table2:
            run.add(row)
    return BenchmarkReport(
        dataset=dataset,
        version=version,
        feature_set=feature_set,
        n_train=len(train),
        n_test=len(test),
        exclude_videos=list(excluded),
        rows=run.rows,
        wall_s=time.monotonic() - t_start,
        peak_rss_mb=peak_rss_mb(),
        worker_peak_rss_mb=worker_rss,
        diagnostics=diagnostics,
        config=flatten(cfg),
    )


@contextlib.contextmanager
def _table1_pool(cfg: StarConfig, data: tuple[str, int, str], jobs: Sequence[tuple[str, ...]]):
    """Futures of the Table 1 rows trained in ``benchmark.processes`` spawned workers ({} when sequential)."""
    if not jobs or cfg.benchmark.processes <= 1:
        yield {}
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(max_workers=cfg.benchmark.processes, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {modules: pool.submit(_table1_row, cfg, data, modules) for modules in jobs}
        log.info("Table 1: %d configurations submitted to %d worker processes", len(jobs), cfg.benchmark.processes)
        yield futures
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class _BenchmarkRun:
    """The rows of one benchmark, in report order: trains and evaluates each model on the same data."""

    def __init__(self, cfg: StarConfig, classes: tuple[str, ...], train, test, excluded: Sequence[str], on_row) -> None:
        self.cfg, self.bench, self.classes = cfg, cfg.benchmark, classes
        self.train, self.test, self.excluded, self.on_row = train, test, excluded, on_row
        self.rows: list[BenchmarkRow] = []

    def add(self, row: BenchmarkRow) -> None:
        self.rows.append(row)
        log.info(
            "%-36s avg mAP 0.1:0.5 %.2f  0.1:0.7 %.2f  (train %.0f s, detect %.0f s)",
            row.name,
            row.avg_0_1_0_5,
            row.avg_0_1_0_7,
            row.train_s,
            row.detect_s,
        )
        if self.on_row:
            self.on_row(row)

    def row(self, name: str, table: str, detector, localize, train_s: float, settings: dict) -> BenchmarkRow:
        """Evaluate ``detector`` on the test split with ``localize`` settings: one row."""
        result, det_s, n = evaluate_detector(detector, self.test, self.classes, localize, self.excluded, self.bench.detect_batch)
        return _row(name, table, result, train_s, det_s, n, settings)

    def main_rows(self, main_modules: tuple[str, ...], refine_variants: Sequence[tuple[str, RefineConfig]]):
        """The configured STAR (by default stage 1 + self-training), what stage 2 adds, and the stage-2 variants.

        Returns:
            ``(detector, main row, attention diagnostics)``.
        """
        cfg = self.cfg
        detector, train_s = _train_star("STAR", self.train, self.classes, cfg, self.bench.device)
        refined = detector.refiner is not None
        main_name = f"STAR ({module_name(main_modules)})" if len(main_modules) < 3 else "STAR (all modules)"
        main_name += " + self-training" if refined else ""
        settings = {"modules": list(main_modules), "localizer": cfg.localize.localizer, "refine_rounds": cfg.refine.rounds}
        main = self.row(main_name, "main", detector, cfg.localize, train_s, settings)
        self.add(main)
        diagnostics = _diagnostics(detector, self.test) if self.bench.diagnostics else {}
        if refined:  # the same stage-1 model without its head: what self-training adds
            loc = dataclasses.replace(cfg.localize, use_refiner=False)
            self.add(self.row("STAR stage 1 only (same model, no self-training)", "addition", detector, loc, 0.0, {"use_refiner": False}))
        for name, refine_cfg in refine_variants:
            t0 = time.monotonic()
            variant = _refit_stage2(detector, self.train, refine_cfg)
            variant_s = time.monotonic() - t0
            self.add(
                self.row(
                    f"stage 2 variant: {name}", "addition", variant, cfg.localize, variant_s, {"refine": dataclasses.asdict(refine_cfg)}
                )
            )
            del variant
        return detector, main, diagnostics

    def reference_rows(self) -> None:
        """The paper preset, the STPN-style baseline and the supervised upper bound (each when enabled)."""
        from star_core.baseline_stpn import fit_stpn

        cfg, bench = self.cfg, self.bench
        if bench.paper_reference:
            paper = load_config(preset="paper")
            paper = replace(paper, **{"train.seed": cfg.train.seed, "train.batch_size": cfg.train.batch_size})
            det_p, paper_s = _train_star("STAR paper preset", self.train, self.classes, paper, bench.device)
            self.add(self.row("STAR paper preset", "reference", det_p, paper.localize, paper_s, {"preset": "paper"}))
            del det_p
        if bench.baseline:
            stpn_cfg = stpn_config(cfg)
            t0 = time.monotonic()
            stpn = fit_stpn(
                self.train, self.classes, stpn_cfg, on_epoch=_epoch_progress("STPN-style baseline", stpn_cfg.epochs), device=bench.device
            )
            stpn_s = time.monotonic() - t0
            settings = {**dataclasses.asdict(stpn_cfg), "localize": dataclasses.asdict(STPN_LOCALIZE)}
            self.add(self.row("STPN-style baseline", "baseline", stpn, STPN_LOCALIZE, stpn_s, settings))
        if bench.upper_bound:
            head, bound_s = _train_upper_bound(self.train, self.classes, cfg.refine, bench.device)
            settings = {"supervision": "segment labels of the train split"}
            self.add(self.row("supervised upper bound (segment labels)", "upper_bound", head, cfg.localize, bound_s, settings))

    def table2_rows(self, detector) -> list[BenchmarkRow]:
        """Table 2: the main model's detections with each localizer (no retraining; reported last)."""
        loc = self.cfg.localize
        return [
            self.row(label, "table2", detector, dataclasses.replace(loc, localizer=localizer), 0.0, {"localizer": localizer})
            for localizer, label in LOCALIZERS
        ]

    def table1_rows(self, main: BenchmarkRow, jobs: Sequence[tuple[str, ...]], futures: dict) -> float:
        """Table 1: every module combination (from the workers' futures, or trained here); returns the workers' peak RSS (MB)."""
        from star_core.train_loop import fit

        worker_rss = 0.0
        for modules in TABLE1:
            modules = tuple(modules)
            if modules not in jobs:  # the all-modules row is the main model
                same = {"modules": list(modules), "same_as": "main"}
                self.add(BenchmarkRow(
                    module_name(modules), "table1", dict(main.map), main.avg_0_1_0_5, main.avg_0_1_0_7, main.train_s, main.detect_s,
                    main.n_detections, same,
                ))
            elif modules in futures:
                row, rss = futures[modules].result()
                worker_rss = max(worker_rss, rss)
                self.add(row)
            else:
                log.info("training %s: %d epochs x 2 streams", module_name(modules), self.cfg.train.epochs)
                t0 = time.monotonic()
                det_k = fit(self.train, self.classes, module_config(self.cfg, modules), device=self.bench.device)
                train_k = time.monotonic() - t0
                self.add(self.row(module_name(modules), "table1", det_k, self.cfg.localize, train_k, {"modules": list(modules)}))
        return worker_rss


def _epoch_progress(name: str, epochs: int) -> Callable[[int, dict[str, float]], None]:
    """on_epoch callback: a progress line per model with the epoch rate and ETA (every few seconds and at the end)."""
    from jobs.runtime import Progress

    progress = Progress(total=epochs, what=f"{name} epochs", logger=log)
    return lambda epoch, metrics: progress.update(done=1)


def _train_star(name: str, train, classes, star: StarConfig, device: str = "cpu"):
    from star_core.train_loop import fit

    log.info(
        "training %s: %d epochs x 2 streams%s",
        name,
        star.train.epochs,
        f" + {star.refine.rounds} self-training round(s)" if star.refine.rounds else "",
    )
    t0 = time.monotonic()
    detector = fit(train, classes, star, on_epoch=_epoch_progress(name, star.train.epochs), device=device)
    return detector, time.monotonic() - t0


def _refit_stage2(detector, train, refine_cfg: RefineConfig):
    """A copy of ``detector`` with a fresh stage-2 head self-trained with ``refine_cfg`` (stage 1 shared, not retrained)."""
    import copy

    from star_core.train_loop import refine_detector

    variant = copy.deepcopy(detector)
    variant.refiner = None
    return refine_detector(variant, train, refine_cfg).eval()


def _train_upper_bound(train, classes, refine_cfg, device: str = "cpu"):
    """The segment head trained on ground-truth segment labels (an evaluation aid: never a product path)."""
    from star_core import refine

    usable = [(f, lab) for f, lab in train if lab.labels]
    epochs = refine.round_epochs(refine_cfg, len(usable))
    log.info("training the supervised upper bound: %d epochs on segment labels", epochs)
    t0 = time.monotonic()
    targets = [refine.gt_segment_labels(f, lab, classes) for f, lab in usable]
    head = refine.fit_head(
        [f for f, _ in usable],
        targets,
        refine.multi_hot([lab for _, lab in usable], classes),
        len(classes),
        refine_cfg,
        on_epoch=_epoch_progress("upper bound", epochs),
        device=device,
    )
    return refine.HeadDetector(head, classes, refine_cfg), time.monotonic() - t0


def _diagnostics(detector, test: Sequence[tuple[VideoFeatures, VideoLabels]], chunk: int = 16) -> dict[str, float]:
    """Attention diagnostics on the test split, in chunks (weighted by videos) to bound memory."""
    from star_core.diagnostics import attention_diagnostics

    usable = [(f, lab) for f, lab in test if lab.instances and lab.labels]
    sums: dict[str, float] = {}
    total = 0
    for i in range(0, len(usable), chunk):
        part = usable[i : i + chunk]
        for k, v in attention_diagnostics(detector, part).items():
            sums[k] = sums.get(k, 0.0) + v * len(part)
        total += len(part)
    return {k: v / total for k, v in sums.items()} if total else {}
