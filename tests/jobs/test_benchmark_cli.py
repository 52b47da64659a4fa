"""`star synth` -> `star import wtalc` -> `star benchmark --json` on the small stand-in (CI scale)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jobs.benchmark import TABLE1, module_config
from star_cli.cli import main
from star_core.config import StarConfig
from star_core.data import Detection
from star_core.io import datasets
from star_core.io.lake import Lake
from star_core.metrics import evaluate_detections

# Small model and a learning rate for a few dozen steps (the paper's 1e-4 needs far more steps).
FAST = [
    "--set",
    "train.lr=3e-3",
    "--set",
    "train.batch_size=4",
    "--set",
    "model.hidden_dim=64",
    "--set",
    "model.attn_dim=32",
    "--threads",
    "1",
]


def _chance_map(lake: Lake, dataset: str, seed: int = 0, draws: int = 5) -> float:
    """avg mAP(0.1:0.7) of random detections: random class, random position, ground-truth-like lengths."""
    ds = datasets.load_dataset(lake, dataset)
    test = ds.split("test")
    lengths = [i.t_end_s - i.t_start_s for v in ds.videos for i in v.instances]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(draws):
        dets = []
        for v in test:
            for _ in range(50):
                length = float(rng.choice(lengths))
                start = float(rng.uniform(0, max(v.duration_s - length, 0.0)))
                dets.append(Detection(v.video_id, str(rng.choice(ds.classes)), start, start + length, float(rng.random())))
        out.append(evaluate_detections(dets, test, ds.classes).avg_0_1_0_7)
    return float(np.mean(out))


@pytest.fixture(scope="module")
def small_lake(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    assert main(["synth", "--out", str(tmp / "standin"), "--scale", "small", "--seed", "0"]) == 0
    feats = tmp / "standin" / "Thumos14reduced-I3D-JOINTFeatures.npy"
    ann = tmp / "standin" / "Thumos14reduced-Annotations"
    lake = str(tmp / "lake")
    assert main(["import", "wtalc", "--features", str(feats), "--annotations", str(ann), "--lake", lake, "--dataset", "th14-small"]) == 0
    return tmp, lake


def test_benchmark_end_to_end_json(small_lake, capsys):
    tmp, lake = small_lake
    out = tmp / "bench.json"
    assert main(["benchmark", "--lake", lake, "--dataset", "th14-small", "--epochs", "30", "--json-out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "STAR (all modules) + self-training" in printed and "STPN-style baseline" in printed and "peak RSS" in printed
    assert "STAR paper preset" in printed and "supervised upper bound" in printed and "of the supervised upper bound" in printed
    doc = json.loads(out.read_text())
    # main row in the `star evaluate` format at the top level
    assert list(doc["map"]) == ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"]
    assert doc["avg_0.1_0.5"] == pytest.approx(np.mean([doc["map"][k] for k in ("0.1", "0.2", "0.3", "0.4", "0.5")]))
    assert doc["avg_0.1_0.7"] == pytest.approx(np.mean(list(doc["map"].values())))
    assert doc["main"]["map"] == doc["map"] and doc["baseline"]["name"] == "STPN-style baseline"
    assert doc["ablation"] == [] and doc["dataset"]["n_train"] == 8 and doc["dataset"]["n_test"] == 4
    assert doc["wall_s"] > 0 and doc["peak_rss_mb"] > 50 and doc["config"]["train.epochs"] == 30
    assert {"rgb/mean_alpha", "rgb/alpha_auc"} <= set(doc["diagnostics"])
    chance = _chance_map(Lake(lake), "th14-small")
    assert doc["avg_0.1_0.7"] > chance + 3.0, (doc["avg_0.1_0.7"], chance)
    assert doc["baseline"]["avg_0.1_0.7"] > chance + 3.0
    # the references trained in the same command (issue 14)
    assert doc["paper_preset"]["settings"] == {"preset": "paper"} and doc["paper_preset"]["train_s"] > 0
    assert doc["upper_bound"]["avg_0.1_0.7"] > chance + 3.0
    frac = doc["fraction_of_upper_bound"]
    assert frac["avg_0.1_0.7"] == pytest.approx(doc["avg_0.1_0.7"] / doc["upper_bound"]["avg_0.1_0.7"])
    assert [r["name"] for r in doc["additions"]] == ["STAR stage 1 only (same model, no self-training)"]
    assert doc["config"]["refine.rounds"] == 1


def test_benchmark_ablation_rows(small_lake):
    tmp, lake = small_lake
    out = tmp / "ablation.json"
    assert (
        main(
            [
                "benchmark",
                "--lake",
                lake,
                "--dataset",
                "th14-small",
                "--epochs",
                "2",
                "--ablation",
                "--no-baseline",
                "--processes",
                "2",
                "--json-out",
                str(out),
                *FAST,
            ]
        )
        == 0
    )
    doc = json.loads(out.read_text())
    names = [r["name"] for r in doc["ablation"]]
    assert names[:8] == [
        "stem",
        "stem + Sparsity",
        "stem + Coverage",
        "stem + RAM",
        "stem + Sparsity + Coverage",
        "stem + Sparsity + RAM",
        "stem + Coverage + RAM",
        "stem + Sparsity + Coverage + RAM",
    ]
    assert names[8:] == ["Attention", "ST-GradCAM", "Attended ST-GradCAM"]
    assert doc["baseline"] is None and doc["worker_peak_rss_mb"] > 50  # Table 1 trained in 2 worker processes
    assert doc["ablation"][-4]["settings"]["same_as"] == "main" and doc["ablation"][-4]["map"] == doc["map"]
    for row in doc["ablation"]:
        assert set(row) >= {"map", "avg_0.1_0.5", "avg_0.1_0.7", "table", "settings"}


def test_module_switches():
    base = StarConfig()
    stem = module_config(base, ())
    assert (stem.model.use_coverage, stem.model.use_ram, stem.loss.beta_sparsity, stem.loss.gamma_coverage, stem.loss.delta_ram) == (
        False,
        False,
        0.0,
        0.0,
        0.0,
    )
    full = module_config(stem, ("sparsity", "coverage", "ram"))  # weights off in the base come back at the paper's values
    assert (full.model.use_coverage, full.model.use_ram, full.loss.beta_sparsity, full.loss.gamma_coverage, full.loss.delta_ram) == (
        True,
        True,
        1e-4,
        1e-4,
        1e-6,
    )
    assert len(set(TABLE1)) == 8
    with pytest.raises(ValueError, match="unknown modules"):
        module_config(base, ("dropout",))


def test_benchmark_bad_input(small_lake, capsys):
    _, lake = small_lake
    assert main(["benchmark", "--lake", lake, "--dataset", "nope"]) == 2
    assert "no dataset named 'nope'" in capsys.readouterr().err
    assert main(["benchmark", "--lake", lake, "--dataset", "th14-small", "--epochs", "0"]) == 2
