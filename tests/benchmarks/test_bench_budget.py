"""benchmarks/bench_budget.py: held-out split and the per-epoch held-out loss curve on the small stand-in."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_budget.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_budget", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_heldout_split_is_seeded_disjoint_and_complete():
    bench = _module()
    fit, held = bench.heldout_split(50, 0.1, seed=3)
    assert len(held) == 5 and not set(fit) & set(held) and sorted(fit + held) == list(range(50))
    assert bench.heldout_split(50, 0.1, seed=3) == (fit, held) and bench.heldout_split(50, 0.1, seed=4) != (fit, held)
    assert len(bench.heldout_split(3, 0.1, seed=0)[1]) == 1  # at least one video held out


def test_curve_per_epoch_and_report(tmp_path):
    bench = _module()
    argv = ["--settings", "standard", "--seeds", "0", "--scale", "small", "--feat-dim", "32", "--epochs", "4", "--holdout", "0.25",
            "--set", "train.epochs=3", "--set", "train.lr=3e-3", "--set", "model.hidden_dim=32", "--set", "model.attn_dim=16",
            "--out", str(tmp_path), "--tag", "t"]
    assert bench.main(argv) == 0
    cell = json.loads((tmp_path / "budget-t.json").read_text())["results"]["standard"]["0"]
    assert [r["epoch"] for r in cell["curve"]] == [1, 2, 3, 4]
    assert cell["best_held"] == min(r["held_mean"] for r in cell["curve"])
    assert cell["held_at_budget"] == cell["curve"][2]["held_mean"] and cell["n_held"] >= 1
    assert cell["curve"][-1]["train_rgb"] < cell["curve"][0]["train_rgb"]  # it trains
    assert "| standard | 0 |" in (tmp_path / "budget-t.md").read_text()
