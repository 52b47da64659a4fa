"""benchmarks/bench_protocol.py on the small stand-in: every row per cell, stage-2 variants on the main row's stage-1 model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_protocol.py"
FAST = ["--set", "train.epochs=3", "--set", "train.lr=3e-3", "--set", "model.hidden_dim=32", "--set", "model.attn_dim=16",
        "--set", "refine.epochs=3", "--set", "refine.min_steps=10"]


def _module():
    spec = importlib.util.spec_from_file_location("bench_protocol", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_variants_share_stage_one_and_reports_are_written(tmp_path):
    bench = _module()
    argv = ["--settings", "context", "--seeds", "0", "--scale", "small", "--feat-dim", "32", "--paper-seeds", "", "--no-upper-bound",
            "--variant", "same:refine.fg_threshold=0.6", "--variant", "strict:refine.fg_threshold=0.9;refine.bg_threshold=0.1",
            "--out", str(tmp_path), "--tag", "t", *FAST]
    assert bench.main(argv) == 0
    doc = json.loads((tmp_path / "protocol-t.json").read_text())
    rows = {r["name"]: r for r in doc["results"]["context"]["0"]["rows"]}
    main = rows["STAR (all modules) + self-training"]
    # a variant equal to the main row's stage-2 settings retrains the same head on the same stage-1 model: same score
    assert rows["stage 2 variant: same"]["avg_0.1_0.7"] == pytest.approx(main["avg_0.1_0.7"])
    assert rows["stage 2 variant: strict"]["settings"]["refine"]["fg_threshold"] == 0.9
    assert "STPN-style baseline" in rows and "STAR paper preset" not in rows
    assert json.loads((tmp_path / "protocol-t.partial.json").read_text())["results"]["context"]["0"]["rows"]
    assert "| stage 2 variant: strict |" in (tmp_path / "protocol-t.md").read_text()


def test_variants_accept_only_stage_two_keys():
    bench = _module()
    assert bench.parse_variant("a:refine.fg_threshold=0.7;refine.proposal_thresholds=[0.1,0.9]") == (
        "a", ["refine.fg_threshold=0.7", "refine.proposal_thresholds=[0.1,0.9]"])
    with pytest.raises(SystemExit, match="not stage-2 keys"):
        bench.parse_variant("a:train.lr=1e-3")
