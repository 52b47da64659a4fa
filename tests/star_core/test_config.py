"""The config loader (star_core.config): unknown keys, bad types, overrides, files, presets, replace, flatten.

Only the public functions are used (load_config, from_dict, to_dict, replace, flatten, presets, ConfigError).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from star_core import config as star_config
from star_core.config import ConfigError, StarConfig, flatten, from_dict, load_config, replace, to_dict


# ----- unknown keys ----------------------------------------------------------------------------
def test_an_unknown_top_level_key_is_rejected_with_a_hint():
    with pytest.raises(ConfigError, match=r"unknown config key 'trian' \(did you mean 'train'\?\)"):
        from_dict({"trian": {"lr": 1e-3}})


def test_an_unknown_nested_key_names_its_section_and_the_close_field():
    with pytest.raises(ConfigError, match=r"unknown config key train\.'ephocs' \(did you mean 'epochs'\?\)"):
        load_config(overrides=["train.ephocs=3"])


def test_an_unknown_key_without_a_close_field_has_no_hint():
    with pytest.raises(ConfigError) as info:
        from_dict({"storage": {"zzzzzz": 1}})
    assert "unknown config key storage.'zzzzzz'" in str(info.value) and "did you mean" not in str(info.value)


def test_a_section_given_as_a_scalar_is_rejected():
    with pytest.raises(ConfigError, match="config section 'train' must be a mapping, got int"):
        from_dict({"train": 5})


# ----- types -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "override, field",
    [("train.epochs=many", "epochs"), ("model.use_ram=[1, 2]", "use_ram"), ("train.lr=fast", "lr"), ("storage.lake_uri=[a]", "lake_uri")],
)
def test_a_value_of_the_wrong_type_is_rejected_naming_the_field(override, field):
    with pytest.raises(ConfigError, match="invalid config") as info:
        load_config(overrides=[override])
    assert field in str(info.value)


def test_values_are_typed_after_loading():
    cfg = load_config(overrides=["train.epochs=7", "train.lr=3e-4", "model.use_ram=false", "storage.s3_endpoint_url=null"])
    assert cfg.train.epochs == 7 and isinstance(cfg.train.epochs, int)
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)  # YAML reads '3e-4' as text; the boundary types it
    assert cfg.model.use_ram is False and cfg.storage.s3_endpoint_url is None


# ----- override parsing ------------------------------------------------------------------------
def test_an_override_without_equals_is_rejected():
    with pytest.raises(ConfigError, match="override 'train.lr' must look like section.key=value"):
        load_config(overrides=["train.lr"])


def test_an_override_keeps_everything_after_the_first_equals_and_may_be_empty():
    cfg = load_config(overrides=["storage.lake_uri=s3://b/p?x=1", " detect.model_uri =models:/star/3"])
    assert cfg.storage.lake_uri == "s3://b/p?x=1" and cfg.detect.model_uri == "models:/star/3"
    assert load_config(overrides=["storage.lake_uri="]).storage.lake_uri == ""


def test_an_override_below_a_value_is_rejected(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.001\n")
    with pytest.raises(ConfigError, match="override 'train.lr.x': 'lr' is not a config section"):
        load_config(path, overrides=["train.lr.x=1"])


# ----- files and precedence ----------------------------------------------------------------------
def test_defaults_then_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 7\n  batch_size: 4\nstorage:\n  lake_uri: s3://bucket/lake\n")
    cfg = load_config(path, overrides=["train.epochs=9"])
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.storage.lake_uri) == (9, 4, "s3://bucket/lake")
    assert cfg.model == StarConfig().model  # untouched sections keep their defaults


def test_json_files_and_empty_files_load(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"train": {"epochs": 3}}))
    assert load_config(tmp_path / "c.json").train.epochs == 3
    (tmp_path / "empty.yaml").write_text("")
    assert load_config(tmp_path / "empty.yaml") == StarConfig()


def test_a_file_whose_top_level_is_not_a_mapping_is_rejected(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- train\n- model\n")
    with pytest.raises(ConfigError, match=f"config file {path}: top level must be a mapping"):
        load_config(path)


def test_an_unknown_key_in_a_file_is_rejected(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  use_rma: false\n")
    with pytest.raises(ConfigError, match=r"model\.'use_rma' \(did you mean 'use_ram'\?\)"):
        load_config(path)


# ----- presets ---------------------------------------------------------------------------------
def _preset_values(name: str) -> dict:
    """The dotted values a shipped preset file sets (read independently of the loader)."""
    tree = yaml.safe_load((Path(star_config.__file__).parent / "presets" / f"{name}.yaml").read_text())
    return flatten(tree)


def test_the_paper_preset_is_shipped_and_sets_what_its_file_says():
    assert "paper" in star_config.presets()
    values = _preset_values("paper")
    assert values, "the paper preset sets nothing"
    got = flatten(load_config(preset="paper"))
    assert {k: got[k] for k in values} == values


# The model-relevant settings of `star` before the self-training recipe became the default
# (commit 3f99175): the paper preset must keep reproducing them, whatever the defaults become.
PAPER_ERA = {
    "train.lr": 1e-4, "train.epochs": 60, "train.batch_size": 16, "train.weight_decay": 5e-4, "train.sample_segments": 400,
    "model.hidden_dim": 512, "model.attn_dim": 256, "model.dropout": 0.2, "model.use_coverage": True, "model.use_ram": True,
    "model.assembly_norm": "sum", "model.label_order": "frequency", "model.energy_temperature": 1.0, "model.feature_norm": "none",
    "loss.beta_sparsity": 1e-4, "loss.gamma_coverage": 1e-4, "loss.delta_ram": 1e-6, "loss.background_weight": 0.0,
    "localize.localizer": "attended_gradcam", "localize.thresholds": [0.4, 0.5, 0.6], "localize.threshold_space": "log",
    "localize.min_length_segments": 2, "localize.proposal_score": "mean", "localize.class_score_weight": 1.0,
    "localize.min_class_prob": 0.1, "localize.nms_tiou": 0.5, "localize.attention_scale": "none",
    "refine.rounds": 0,
}


def test_the_paper_preset_reproduces_the_earlier_settings():
    got = flatten(load_config(preset="paper"))
    assert {k: list(got[k]) if isinstance(got[k], tuple) else got[k] for k in PAPER_ERA} == PAPER_ERA


def test_a_file_and_overrides_go_above_a_preset(tmp_path):
    values = _preset_values("paper")
    key = next(iter(values))
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  batch_size: 3\n")
    cfg = load_config(path, overrides=["train.seed=5"], preset="paper")
    flat = flatten(cfg)
    assert flat[key] == values[key] and cfg.train.batch_size == 3 and cfg.train.seed == 5


def test_an_unknown_preset_names_the_shipped_ones():
    with pytest.raises(ConfigError, match=r"unknown preset 'papr' \(did you mean 'paper'\?\); shipped: .*paper"):
        load_config(preset="papr")


# ----- replace, flatten, round trip ------------------------------------------------------------
def test_replace_changes_one_dotted_field_and_validates():
    cfg = StarConfig()
    new = replace(cfg, **{"train.lr": 1e-3, "storage.lake_uri": "/tmp/lake"})
    assert new.train.lr == 1e-3 and new.storage.lake_uri == "/tmp/lake"
    assert cfg == StarConfig()  # frozen: the original is unchanged
    assert new.model == cfg.model and new.train.epochs == cfg.train.epochs
    with pytest.raises(ConfigError, match=r"did you mean 'lr'"):
        replace(cfg, **{"train.lrr": 1e-3})
    with pytest.raises(ConfigError, match="invalid config"):
        replace(cfg, **{"train.epochs": "many"})


def test_flatten_gives_dotted_scalars_and_the_tree_round_trips():
    cfg = load_config(overrides=["train.epochs=11"])
    flat = flatten(cfg)
    assert flat["train.epochs"] == 11 and "storage.lake_uri" in flat
    assert not any(isinstance(v, dict) for v in flat.values())
    assert from_dict(to_dict(cfg)) == cfg
    tree: dict = {}
    for key, value in flat.items():
        section, _, leaf = key.rpartition(".")
        node = tree
        for part in section.split("."):
            node = node.setdefault(part, {})
        node[leaf] = value
    assert from_dict(tree) == cfg
